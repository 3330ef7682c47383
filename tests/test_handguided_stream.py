"""The hand-guided feature stream: `hhjax.handguided` and `--stream hand_guided`.

Tiny on purpose: a 6-frame 64x48 video, random ResNet-18 weights, a 32-pixel frame
crop and 16-pixel hand cut-outs. The reference features are computed here from the
decoded frames with plain NumPy slicing and `resnet.ResNet` applied directly.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from hhjax import extract, handguided, handpose
from hhjax import video as video_lib
from hhjax.models.backbones import resnet
from hhjax.models.backbones import torchvision_weights

cv2 = pytest.importorskip("cv2")

T, HEIGHT, WIDTH = 6, 48, 64
FRAME, HAND = 32, 16
F = 512  # pooled width of ResNet-18
MEAN = np.array([0.485, 0.456, 0.406], np.float32)   # torchvision's ImageNet input
STD = np.array([0.229, 0.224, 0.225], np.float32)
# Hand centres (x, y) per frame, 0..1 across width and height; None: hand absent.
LEFT = [(0.30, 0.50), None, (0.40, 0.55), (0.45, 0.60), None, None]
RIGHT = [None, (0.05, 0.10), (0.80, 0.90), None, None, None]  # partly off the frame


def _write_video(path: pathlib.Path, frames: int = T, seed: int = 0) -> pathlib.Path:
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                           (WIDTH, HEIGHT))
  rng = np.random.default_rng(seed)
  for _ in range(frames):
    writer.write(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
  writer.release()
  assert video_lib.count_frames(path) == frames
  return path


def _hand_features(left=LEFT, right=RIGHT, seed: int = 0) -> np.ndarray:
  """(212, T) hand-pose features whose 21 landmarks average to the given centres."""
  rng = np.random.default_rng(seed)
  out = np.zeros((handpose.FEATURE_DIM, len(left)), np.float32)
  spread = np.linspace(-0.04, 0.04, handpose.NUM_LANDMARKS)
  for slot, centres in enumerate((left, right)):
    o = slot * handpose.HAND_DIM
    for t, centre in enumerate(centres):
      if centre is None:
        continue
      out[o:o + 63, t] = rng.normal(size=63)  # wrist-relative block: not used here
      out[o + 63:o + 105:2, t] = centre[0] + spread
      out[o + 64:o + 105:2, t] = centre[1] - spread[::-1]
      out[o + 105, t] = 1.0
  return out


def _normalise(images: np.ndarray) -> np.ndarray:
  return (images.astype(np.float32) / 255.0 - MEAN) / STD


def _cut_out(frame: np.ndarray, centre) -> np.ndarray:
  """A HAND x HAND window of the original frame centred on `centre`, zero padded."""
  x0 = int(np.floor(centre[0] * WIDTH - HAND / 2 + 0.5))
  y0 = int(np.floor(centre[1] * HEIGHT - HAND / 2 + 0.5))
  padded = np.pad(frame, ((HAND, HAND), (HAND, HAND), (0, 0)))
  return padded[y0 + HAND:y0 + 2 * HAND, x0 + HAND:x0 + 2 * HAND]


def _pooled(variables, images: np.ndarray) -> np.ndarray:
  return np.asarray(resnet.ResNet(18).apply(variables, _normalise(images)))


def _reference(frames, frame_vars, hand_vars, left=LEFT, right=RIGHT) -> np.ndarray:
  """(F + 2F, T): ResNet on the centre crop, then left and right cut-outs or zeros."""
  top, side = (HEIGHT - FRAME) // 2, (WIDTH - FRAME) // 2
  crops = frames[:, top:top + FRAME, side:side + FRAME]
  columns = [_pooled(frame_vars, crops)]                                  # (T, F)
  for centres in (left, right):
    patches = np.stack([_cut_out(f, c if c else (0.0, 0.0))
                        for f, c in zip(frames, centres)])
    feats = _pooled(hand_vars, patches)
    columns.append(np.where(np.array([c is not None for c in centres])[:, None],
                            feats, 0.0))
  return np.concatenate(columns, axis=1).T


@pytest.fixture(scope="module")
def weights():
  return handguided.random_variables(18, 0), handguided.random_variables(18, 1)


def test_features_equal_independent_computation(tmp_path, weights):
  frame_vars, hand_vars = weights
  path = _write_video(tmp_path / "clip.mp4")
  hands = _hand_features()
  # short_side = the frame's height: no resize, so the crop is plain slicing.
  extractor = handguided.HandGuidedExtractor(
    frame_vars, hand_vars, frame_size=FRAME, short_side=HEIGHT, hand_size=HAND,
    batch_size=4, decode_chunk=5)   # 6 frames: a padded last batch, a short chunk
  np.save(tmp_path / "hands.npy", hands)
  features = extractor.extract(path, tmp_path / "hands.npy")
  assert features.shape == (F + 2 * F, T) == (extractor.feature_dim, T)
  assert features.dtype == np.float32
  frames = video_lib.read_frames(path, short_side=None, crop=None)       # decoding only
  expected = _reference(frames, frame_vars, hand_vars)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5 * scale)
  # Absent hands are exact zeros; present ones are not.
  for slot, centres in enumerate((LEFT, RIGHT)):
    rows = features[F + slot * F:F + (slot + 1) * F]
    for t, centre in enumerate(centres):
      assert (np.abs(rows[:, t]).max() > 0) == (centre is not None), (slot, t)


def test_resize_and_hand_resize_follow_opencv(weights):
  frame_vars, hand_vars = weights
  frames = np.random.default_rng(3).integers(0, 255, (2, HEIGHT, WIDTH, 3), np.uint8)
  centres = np.array([[[0.5, 0.5], [0.2, 0.3]]] * 2, np.float32)
  extractor = handguided.HandGuidedExtractor(
    frame_vars, hand_vars, frame_size=FRAME, hand_size=8, hand_crop=HAND)
  small, patches = extractor.frame_inputs(frames, centres)
  assert small.shape == (2, FRAME, FRAME, 3) and patches.shape == (2, 2, 8, 8, 3)
  # Shorter side 48 -> 32 (width 64 -> 43), then the centre 32 columns: 5 .. 36.
  resized = cv2.resize(frames[0], (43, 32), interpolation=cv2.INTER_LINEAR)
  assert np.abs(small[0].astype(int) - resized[:, 5:37]).max() <= 1
  for slot in range(2):
    cut = _cut_out(frames[1], centres[1, slot])
    want = cv2.resize(cut, (8, 8), interpolation=cv2.INTER_LINEAR)
    assert np.abs(patches[1, slot].astype(int) - want).max() <= 1


def test_bad_inputs_are_refused_by_name(tmp_path, weights):
  frame_vars, hand_vars = weights
  path = _write_video(tmp_path / "clip.mp4")
  hands_dir = tmp_path / "hands"
  (hands_dir / "features").mkdir(parents=True)
  extractor = handguided.HandGuidedExtractor(
    frame_vars, hand_vars, frame_size=FRAME, hand_size=HAND, hands_dir=hands_dir)
  with pytest.raises(FileNotFoundError, match="clip.npy.*clip.mp4"):
    extractor.extract(path)
  # One frame fewer than the video: refused before any network runs, both files named.
  hands_file = hands_dir / "features" / "clip.npy"
  np.save(hands_file, _hand_features()[:, :T - 1])
  with pytest.raises(ValueError) as info:
    extractor.extract(path)
  message = str(info.value)
  assert str(hands_file) in message and str(path) in message
  assert f"for {T - 1} frames" in message and f"decodes to {T} frames" in message
  np.save(hands_file, np.zeros((handpose.FEATURE_DIM - 1, T), np.float32))
  with pytest.raises(ValueError, match=r"clip.npy: expected \(212, T\)"):
    extractor.extract(path)
  with pytest.raises(ValueError, match="depth must be one of"):
    handguided.HandGuidedExtractor(frame_vars, hand_vars, depth=20)
  with pytest.raises(ValueError, match="hand_variables do not match a ResNet-34"):
    handguided.HandGuidedExtractor(frame_vars, hand_vars, hand_depth=34)
  with pytest.raises(ValueError, match="short_side"):
    handguided.HandGuidedExtractor(frame_vars, hand_vars, frame_size=64, short_side=48)
  with pytest.raises(ValueError, match="hand_size"):
    handguided.HandGuidedExtractor(frame_vars, hand_vars, hand_size=0)


# -------------------------------------------------------------------------------------
# The command.


def _hand_pose_run(folder: pathlib.Path, features: dict, hand_model: int = 1) -> None:
  """What `--stream handpose --out folder` leaves: features/ and its manifest."""
  (folder / "features").mkdir(parents=True, exist_ok=True)
  for stem, array in features.items():
    np.save(folder / "features" / f"{stem}.npy", array)
  settings = {"stream": "handpose", "hhjax": extract.hhjax_version(),
              "feature_dim": handpose.FEATURE_DIM, "hand_model": hand_model,
              "fps": None, "max_frames": None}
  extract.write_manifest({"format": extract.MANIFEST_FORMAT, "settings": settings,
                          "videos": {stem: {"frames": int(a.shape[1])}
                                     for stem, a in features.items()}},
                         folder / extract.MANIFEST_FILE)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, weights):
  """One run of the command: a good clip, and one whose hand file is a frame short."""
  root = tmp_path_factory.mktemp("cli")
  videos = root / "videos"
  videos.mkdir()
  _write_video(videos / "clip.mp4")
  _write_video(videos / "short.mp4", seed=1)
  _hand_pose_run(root / "hands", {"clip": _hand_features(),
                                  "short": _hand_features()[:, :T - 1]})
  weights_file = root / "resnet18.npz"
  np.savez(weights_file, **torchvision_weights.state_dict_from_variables(weights[0]))
  args = ["--stream", "hand_guided", "--videos", str(videos),
          "--out", str(root / "out"), "--hands-from", str(root / "hands"),
          "--resnet-weights", str(weights_file),
          "--frame-size", str(FRAME), "--hand-size", str(HAND), "--batch-size", "4"]
  return root, args, weights_file


def test_command_writes_features_and_manifest(cli_run, weights, capfd):
  root, args, weights_file = cli_run
  assert extract.main(args) == 1  # short.mp4 failed
  err = capfd.readouterr().err
  hands_short = root / "hands" / "features" / "short.npy"
  assert f"{hands_short} holds hand positions for {T - 1} frames" in err
  assert str(root / "videos" / "short.mp4") in err and "1 video(s) failed" in err
  features = np.load(root / "out" / "features" / "clip.npy")
  assert features.shape == (F + 2 * F, T)
  assert not (root / "out" / "features" / "short.npy").exists()
  # One weights file serves both streams, at the sizes asked for.
  frame_vars = weights[0]
  want = handguided.HandGuidedExtractor(
    frame_vars, frame_vars, frame_size=FRAME, hand_size=HAND, batch_size=4).extract(
      root / "videos" / "clip.mp4", root / "hands" / "features" / "clip.npy")
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)
  manifest = json.loads((root / "out" / extract.MANIFEST_FILE).read_text())
  settings = manifest["settings"]
  sha = "sha256:" + hashlib.sha256(weights_file.read_bytes()).hexdigest()
  assert settings["stream"] == "hand_guided" and settings["feature_dim"] == 3 * F
  assert settings["backbone_weights"] == settings["hand_weights"] == sha
  assert (settings["depth"], settings["hand_depth"], settings["frame_size"],
          settings["short_side"], settings["hand_size"], settings["hand_crop"]) == (
            18, 18, FRAME, FRAME, HAND, HAND)
  hands_manifest = json.loads((root / "hands" / extract.MANIFEST_FILE).read_text())
  assert settings["hands_from"] == hands_manifest["settings"]
  assert "batch_size" not in settings
  assert manifest["videos"]["clip"]["frames"] == T and "short" not in manifest["videos"]


def test_rerun_with_other_settings_is_refused(cli_run, tmp_path, capfd):
  root, args, weights_file = cli_run
  out = root / "out" / "features"
  if not (out / "clip.npy").exists():
    assert extract.main(args) == 1
  before = (out / "clip.npy").read_bytes()
  capfd.readouterr()

  def refused(*changed) -> str:
    assert extract.main([*args, *changed]) == 2
    assert (out / "clip.npy").read_bytes() == before
    return capfd.readouterr().err

  old = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:12]
  err = refused("--depth", "34")
  assert "depth: 18 -> 34" in err and "hand_depth: 18 -> 34" in err
  assert "--overwrite" in err
  other = tmp_path / "other.npz"
  np.savez(other, **torchvision_weights.state_dict_from_variables(
    handguided.random_variables(18, 9)))
  new = hashlib.sha256(other.read_bytes()).hexdigest()[:12]
  err = refused("--hand-weights", str(other))
  assert f"hand_weights: sha256 {old}.. -> sha256 {new}.." in err
  assert "backbone_weights" not in err
  err = refused("--hand-crop", "24")
  assert "hand_crop: 16 -> 24" in err
  # Other hand positions: the hand-pose run's settings changed.
  manifest = root / "hands" / extract.MANIFEST_FILE
  saved = manifest.read_bytes()
  _hand_pose_run(root / "hands", {}, hand_model=0)
  try:
    err = refused()
    assert "hands_from:" in err
    assert "'hand_model': 1" in err and "'hand_model': 0" in err
  finally:
    manifest.write_bytes(saved)
  # Speed-only options and spelled-out defaults are the same settings: skipped.
  assert extract.main([*args, "--batch-size", "2", "--short-side", str(FRAME)]) == 1
  err = capfd.readouterr().err
  assert "skipping 1 video(s)" in err and (out / "clip.npy").read_bytes() == before


def test_command_arguments_are_checked(tmp_path, capsys):
  videos = tmp_path / "videos"
  videos.mkdir()
  base = ["--videos", str(videos), "--out", str(tmp_path / "out")]

  def error(*extra) -> str:
    with pytest.raises(SystemExit) as info:
      extract.main([*base, *extra])
    assert info.value.code == 2
    return capsys.readouterr().err

  assert "--hands-from DIR" in error("--stream", "hand_guided", "--random-weights")
  assert "no ResNet weights given" in error("--stream", "hand_guided", "--hands-from",
                                            str(tmp_path))
  assert "--hands-from: for --stream hand_guided only" in error(
    "--random-weights", "--hands-from", str(tmp_path))
  err = error("--stream", "hand_guided", "--random-weights", "--hands-from",
              str(tmp_path))
  assert f"no {extract.MANIFEST_FILE} there" in err
  assert "frame_size must be an integer >= 1" in error(
    "--stream", "hand_guided", "--random-weights", "--hands-from", str(tmp_path),
    "--frame-size", "0")
  assert "decode_ahead must be >= 0, got -1" in error(
    "--stream", "hand_guided", "--random-weights", "--hands-from", str(tmp_path),
    "--decode-ahead", "-1")
  assert not (tmp_path / "out").exists()
