"""Tests for `python -m hhjax.clips`: folds, frame sampling and its cache, the 12 -> 7
mapping, the augmentations, and tiny 2-step "classify" and "localise" runs whose
written figures are recomputed from their saved predictions.

The data are six synthetic 32x24 clips of 12 frames (three people, actions 1, 3 and
11), written with OpenCV, with hand-pose features whose landmarks move frame by frame.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from hhjax import clips as clips_lib
from hhjax import handpose
from hhjax import provenance
from hhjax import video as video_lib
from hhjax.data import compose
from hhjax.models.vision import cnn_lstm, hand_localiser

cv2 = pytest.importorskip("cv2")
pytest.importorskip("decord")

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_CLIPS = REPO.parent / "shared" / "realdata" / "kaggle_handwash_train" / "clips.csv"
FRAMES, WIDTH, HEIGHT = 12, 32, 24
# (subject, action, who_step)
SPEC = [("a", 1, 1), ("a", 11, 0), ("b", 1, 1), ("b", 3, 2), ("c", 3, 2), ("c", 11, 0)]
# The Kaggle set's actions and their WHO steps (shared/realdata/README.md).
KAGGLE_WHO = {1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 4, 7: 5, 8: 5, 9: 6, 10: 6, 11: 0, 12: 0}


def _write_video(path, seed, frames=FRAMES):
  rng = np.random.default_rng(seed)
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                           (WIDTH, HEIGHT))
  base = rng.integers(40, 200, 3)
  for t in range(frames):
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + base.astype(np.uint8)
    x = (3 * t + seed) % (WIDTH - 8)
    frame[6:16, x:x + 8] = 255 - base.astype(np.uint8)      # a moving block
    writer.write(frame)
  writer.release()
  assert video_lib.count_frames(path) == frames


def _features(seed, frames=FRAMES):
  """(212, T): hand 0 everywhere but frame 5, hand 1 on even frames, moving."""
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(handpose.FEATURE_DIM, frames)).astype(np.float32)
  n = handpose.NUM_LANDMARKS
  for slot in range(2):
    o = slot * handpose.HAND_DIM
    t = np.arange(frames)
    f[o + 3 * n:o + 5 * n:2] = 0.2 + 0.05 * t + 0.3 * slot      # x of each landmark
    f[o + 3 * n + 1:o + 5 * n:2] = 0.7 - 0.04 * t               # y
    present = (t != 5) if slot == 0 else (t % 2 == 0)
    f[o + 5 * n] = present
    f[o:o + handpose.HAND_DIM, ~present] = 0.0
  return f


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("clips")
  videos = root / "videos"
  features = root / "features"
  videos.mkdir()
  features.mkdir()
  lines = ["clip,subject,action,who_step,split"]
  for i, (subject, action, step) in enumerate(SPEC):
    name = f"HW_{subject}_{action:02d}.mp4"
    _write_video(videos / name, seed=i)
    np.save(features / f"HW_{subject}_{action:02d}.npy", _features(i))
    lines.append(f"{name},{subject},{action},{step},train")
  (videos / "clips.csv").write_text("\n".join(lines) + "\n")
  return dict(root=root, videos=videos, features=features, csv=videos / "clips.csv")


def _config(tiny, task="classify", **data):
  config = clips_lib.get_config()
  config.task = task
  config.data.clips_csv = str(tiny["csv"])
  config.data.features_dir = str(tiny["features"])
  config.data.cache_dir = str(tiny["root"] / "cache")
  config.data.num_folds = 2
  config.data.frame_stride = 2
  config.data.frame_size = 16
  config.data.clip_length = 4
  config.data.eval_windows = 2
  for k, v in data.items():
    config.data[k] = v
  config.model.lstm_hidden = 8
  config.model.embed = 8
  config.model.head_hidden = 8
  config.num_train_steps = 2
  config.batch_size = 2
  config.log_every_steps = 1
  config.eval_batch_size = 4
  return config


# ----------------------------------------------------------------------------- folds


def test_folds_keep_people_apart_and_match_compose(tiny):
  clips = clips_lib.read_clip_list(tiny["csv"])
  groups = clips_lib.people_folds(clips, 2)
  assert groups == compose.leave_people_out_folds(["a", "b", "c"], 2)
  assert groups == [("a", "c"), ("b",)]
  for group in groups:
    train, test = clips_lib.split_clips(clips, group)
    assert {c.subject for c in test} == set(group)
    assert not {c.subject for c in train} & {c.subject for c in test}
    assert sorted(c.name for c in train + test) == sorted(c.name for c in clips)
  with pytest.raises(ValueError, match="config.data.num_folds"):
    clips_lib.people_folds(clips, 4)


def test_real_clip_list_folds_and_who_mapping():
  if not REAL_CLIPS.is_file():
    pytest.skip(f"{REAL_CLIPS} is absent")
  clips = clips_lib.read_clip_list(REAL_CLIPS)
  people = sorted({c.subject for c in clips})
  groups = clips_lib.people_folds(clips, 4)
  assert groups == compose.leave_people_out_folds(people, 4)
  assert sorted(p for g in groups for p in g) == people
  assert clips_lib.who_mapping(clips) == KAGGLE_WHO


# -------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_frames,stride,length,start",
                         [(12, 2, 4, 0), (12, 2, 4, 3), (13, 3, 4, 2), (45, 4, 32, 0),
                          (180, 4, 32, 13), (10, 4, 8, 0)])
def test_window_positions_are_clip_frame_indices(num_frames, stride, length, start):
  pos, mask = clips_lib.window_positions(num_frames, stride, length, start)
  idx, ref_mask = cnn_lstm.clip_frame_indices(num_frames, stride, length,
                                              start=start * stride)
  np.testing.assert_array_equal(mask, ref_mask)
  np.testing.assert_array_equal(pos[mask] * stride, idx[mask])
  # Padding repeats the last sampled frame.
  assert np.all(pos[~mask] == -(-num_frames // stride) - 1)


def test_cached_window_frames_are_the_clip_frame_indices_frames(tiny, tmp_path):
  path = tiny["videos"] / "HW_b_03.mp4"
  full = video_lib.read_frames(path, short_side=None, crop=None)      # (12, 24, 32, 3)
  cache = clips_lib.FrameCache(tmp_path, stride=3, size=8)
  sampled = cache.get(path)
  assert sampled.num_frames == FRAMES and sampled.frames.shape == (4, 8, 8, 3)
  for start in (0, 1, 2):
    pos, mask = clips_lib.window_positions(FRAMES, 3, 3, start)
    idx, _ = cnn_lstm.clip_frame_indices(FRAMES, 3, 3, start=3 * start)
    expected = clips_lib.resize_frames(full[idx[mask]], 8, 8)
    np.testing.assert_array_equal(sampled.frames[pos[mask]], expected)


def test_resize_frames_matches_opencv():
  frames = np.random.default_rng(0).integers(0, 256, (2, 24, 36, 3), dtype=np.uint8)
  for h, w in [(16, 16), (10, 30), (24, 36), (40, 20)]:
    ours = clips_lib.resize_frames(frames, h, w)
    for i in range(2):
      ref = cv2.resize(frames[i], (w, h), interpolation=cv2.INTER_LINEAR)
      assert np.abs(ours[i].astype(int) - ref.astype(int)).max() <= 1, (h, w)


def test_cache_is_reused_and_invalidated_by_a_setting_or_a_new_video(tiny, tmp_path):
  path = tmp_path / "clip.mp4"
  _write_video(path, seed=7)
  first = clips_lib.FrameCache(tmp_path / "cache", 2, 8)
  frames = first.get(path).frames
  assert first.decoded == 1
  assert first.get(path).frames is frames and first.decoded == 1      # in memory
  again = clips_lib.FrameCache(tmp_path / "cache", 2, 8)
  np.testing.assert_array_equal(again.get(path).frames, frames)
  assert again.decoded == 0                                           # from disk
  for stride, size in [(3, 8), (2, 10)]:
    other = clips_lib.FrameCache(tmp_path / "cache", stride, size)
    assert other.get(path).frames.shape == (-(-FRAMES // stride), size, size, 3)
    assert other.decoded == 1
  _write_video(path, seed=8)                                          # a new video
  stat = path.stat()
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  fresh = clips_lib.FrameCache(tmp_path / "cache", 2, 8)
  assert not np.array_equal(fresh.get(path).frames, frames)
  assert fresh.decoded == 1


def test_eval_starts_span_the_clip():
  assert clips_lib.eval_starts(45, 32, 3) == [0, 6, 13]
  assert clips_lib.eval_starts(6, 4, 2) == [0, 2]
  assert clips_lib.eval_starts(3, 4, 3) == [0]          # shorter than a window
  assert clips_lib.eval_starts(100, 32, 1) == [0]


# -------------------------------------------------------------------- labels, scores


def test_who_mapping_from_the_clip_list(tmp_path):
  path = tmp_path / "clips.csv"
  rows = [f"c{a:02d}.mp4,p{a % 3},{a},{s},train" for a, s in KAGGLE_WHO.items()]
  path.write_text("clip,subject,action,who_step,split\n" + "\n".join(rows) + "\n")
  clips = clips_lib.read_clip_list(path)
  assert clips_lib.who_mapping(clips) == KAGGLE_WHO
  path.write_text(path.read_text() + "x.mp4,p1,3,4,train\n")
  with pytest.raises(compose.ClipsError, match=r"action 3 .*'c03.mp4'.*'x.mp4'"):
    clips_lib.who_mapping(clips_lib.read_clip_list(path))


def test_classification_scores_hand_worked():
  # Actions 2 -> 3 (same WHO step 2), 11 -> 12 (both background), 1 -> 1, 4 -> 5.
  scores = clips_lib.classification_scores([2, 11, 1, 4], [3, 12, 1, 5], KAGGLE_WHO)
  assert scores == dict(acc_action=25.0, acc_who=75.0)
  # A predicted action the list never pairs with a WHO step is a wrong WHO class.
  assert clips_lib.classification_scores([1], [7], {1: 1})["acc_who"] == 0.0


# ---------------------------------------------------------------------- augmentation


def test_augment_clip_contrast_and_shift():
  x = np.arange(2 * 2 * 5 * 1, dtype=np.float32).reshape(2, 2, 5, 1) * 12.0
  out = clips_lib.augment_clip(x, shift=0, contrast=1.5)
  np.testing.assert_allclose(out, np.clip(128 + 1.5 * (x - 128), 0, 255))
  assert out.min() == 0.0                                   # 128 - 1.5 * 128 < 0
  right = clips_lib.augment_clip(x, shift=2)
  np.testing.assert_array_equal(right[:, :, :2], 0)
  np.testing.assert_array_equal(right[:, :, 2:], x[:, :, :3])
  left = clips_lib.augment_clip(x, shift=-1)
  np.testing.assert_array_equal(left[:, :, :4], x[:, :, 1:])
  np.testing.assert_array_equal(left[:, :, 4:], 0)
  np.testing.assert_array_equal(clips_lib.augment_clip(x), x)


def test_draw_augmentation_ranges():
  cfg = clips_lib.get_config().augment
  rng = np.random.default_rng(0)
  cfg.prob = 1.0
  draws = [clips_lib.draw_augmentation(rng, cfg, 100) for _ in range(200)]
  shifts = np.array([abs(s) for s, _ in draws])
  factors = np.array([f for _, f in draws])
  assert shifts.min() >= 5 and shifts.max() <= 20
  assert {np.sign(s) for s, _ in draws} == {-1, 1}
  assert factors.min() >= 0.9 and factors.max() <= 1.1 and factors.std() > 0
  cfg.prob = 0.0
  assert clips_lib.draw_augmentation(rng, cfg, 100) == (0, 1.0)


# ---------------------------------------------------------------------------- runs


def test_classify_run_results_equal_a_recomputation_from_predictions(tiny, tmp_path,
                                                                      capsys):
  config = _config(tiny)
  config.model.name = "convlstm"            # compiles in half the time of the CNN-LSTM
  config.model.convlstm_features = 4
  summary = clips_lib.run(config, tmp_path / "run")
  out = capsys.readouterr().out
  assert "fold 0 step 2/2: loss" in out and "fold 1 result:" in out
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["config"]["data"]["frame_size"] == 16
  assert set(saved["rows"]) == {"model", "handpose"}
  assert [f["test_people"] for f in saved["folds"]] == [["a", "c"], ["b"]]
  who = clips_lib.who_mapping(clips_lib.read_clip_list(tiny["csv"]))
  for fold in saved["folds"]:
    preds = json.loads((tmp_path / "run" / f"fold{fold['fold']}" /
                        "predictions.json").read_text())
    for row in ("model", "handpose"):
      rows = preds[row]
      assert {r["subject"] for r in rows} == set(fold["test_people"])
      acc = 100 * np.mean([r["pred_action"] == r["action"] for r in rows])
      acc_who = 100 * np.mean([who.get(r["pred_action"], -1) == r["who_step"]
                               for r in rows])
      assert fold["results"][row]["acc_action"] == pytest.approx(acc)
      assert fold["results"][row]["acc_who"] == pytest.approx(acc_who)
    for r in preds["model"]:
      assert r["pred_action"] == int(np.argmax(r["logits"])) + 1
      assert r["windows"] == 2                     # 6 sampled frames, windows of 4
  for row in ("model", "handpose"):
    for metric in ("acc_action", "acc_who"):
      values = [f["results"][row][metric] for f in saved["folds"]]
      stats = saved["mean_sd"][row][metric]
      assert stats["mean"] == pytest.approx(np.mean(values))
      assert stats["sd"] == pytest.approx(np.std(values, ddof=1))
  table = (tmp_path / "run" / "results.md").read_text()
  assert "| ConvLSTM | 12 actions |" in table and "logistic regression" in table
  assert summary["folds"][0]["results"] == saved["folds"][0]["results"]
  # Same seed, same figures and logits (frames now read from the disk cache).
  again = clips_lib.run(config, tmp_path / "again", folds=[1])
  assert again["folds"][0]["results"] == saved["folds"][1]["results"]
  first = json.loads((tmp_path / "run" / "fold1" / "predictions.json").read_text())
  second = json.loads((tmp_path / "again" / "fold1" / "predictions.json").read_text())
  assert first == second


def _f1_numpy(pred, target, t_l):
  """F1@T_L counted the paper's way, written out hand by hand."""
  tp = fp = fn = 0
  for p, t in zip(pred.reshape(-1, 3), target.reshape(-1, 3)):
    close = math.dist(p[1:], t[1:]) < t_l
    if p[0] > 0.5 and t[0] > 0.5 and close:
      tp += 1
    elif p[0] > 0.5:
      fp += 1
    elif t[0] > 0.5:
      fn += 1
  return 0.0 if tp == 0 else 200.0 * tp / (2 * tp + fp + fn)


def test_localise_run_writes_f1_from_aligned_frames(tiny, tmp_path):
  config = _config(tiny, "localise", frame_stride=3)
  config.batch_size = 4
  summary = clips_lib.run(config, tmp_path / "run", folds=[0])
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["folds"][0]["results"] == summary["folds"][0]["results"]
  results = saved["folds"][0]["results"]
  assert set(results) == {"model", "constant"}
  npz = np.load(tmp_path / "run" / "fold0" / "predictions.npz")
  assert len(npz["pred"]) == 4 * 4                  # 4 held-out clips, frames 0,3,6,9
  for row, pred in (("model", npz["pred"]), ("constant", npz["constant"])):
    assert set(results[row]) == {"f1@0.05", "f1@0.1", "f1@0.2", "f1@0.3"}
    for key, value in results[row].items():
      assert 0.0 <= value <= 100.0
      assert value == pytest.approx(_f1_numpy(pred, npz["target"], float(key[3:])))
  # Each target is the hand pose of the very frame the image came from.
  for name, frame, target in zip(npz["clip"], npz["frame"], npz["target"]):
    features = np.load(tiny["features"] / f"{pathlib.Path(str(name)).stem}.npy")
    np.testing.assert_array_equal(
        target, hand_localiser.labels_from_landmarks(features[:, frame]))
  assert set(npz["frame"].tolist()) == {0, 3, 6, 9}
  # The constant row: on the sampled frames 0, 3, 6, 9 hand 0 always shows, hand 1
  # on frames 0 and 6 only.
  assert npz["constant"][0, 0] == 1.0 and npz["constant"][0, 3] == pytest.approx(0.5)


def test_frame_count_mismatch_is_refused_naming_the_clip(tiny, tmp_path):
  features = tmp_path / "features"
  features.mkdir()
  for p in tiny["features"].iterdir():
    array = np.load(p)
    np.save(features / p.name, array[:, :11] if p.stem == "HW_c_03" else array)
  config = _config(tiny, "localise", frame_stride=3, features_dir=str(features))
  with pytest.raises(compose.ClipsError, match=r"HW_c_03\.mp4 \(12 decoded frames, "
                                               r"11 feature columns\)"):
    clips_lib.run(config, tmp_path / "run")
  assert not (tmp_path / "run" / "results.json").exists()


# --------------------------------------------------------------------------- errors


def test_bad_inputs_are_named(tiny, tmp_path):
  config = _config(tiny, clips_csv=str(tmp_path / "none.csv"))
  with pytest.raises(FileNotFoundError, match=r"none\.csv.*config\.data\.clips_csv"):
    clips_lib.run(config, tmp_path / "run")
  config = _config(tiny, videos_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"6 clip video\(s\).*HW_a_01\.mp4"):
    clips_lib.run(config, tmp_path / "run")
  features = tmp_path / "features"
  features.mkdir()
  config = _config(tiny, features_dir=str(features))
  with pytest.raises(compose.ClipsError, match=r"HW_b_03\.npy"):
    clips_lib.run(config, tmp_path / "run")
  config = _config(tiny)
  config.model.name = "resnet"
  with pytest.raises(ValueError, match=r"model\.name='resnet'.*'cnn_lstm', 'convlstm'"):
    clips_lib.run(config, tmp_path / "run")
  config = _config(tiny)
  config.model.cnn = "vgg"
  with pytest.raises(ValueError, match=r"model\.cnn='vgg'.*'small', 'alexnet'"):
    clips_lib.run(config, tmp_path / "run")
  config = _config(tiny, "segment")
  with pytest.raises(ValueError, match=r"task='segment'.*'classify', 'localise'"):
    clips_lib.run(config, tmp_path / "run")
  config = _config(tiny)
  with pytest.raises(ValueError, match=r"folds \[5\]"):
    clips_lib.run(config, tmp_path / "run", folds=[5])


def test_command_prints_errors_without_traceback(tmp_path):
  missing = tmp_path / "absent" / "clips.csv"
  res = subprocess.run(
      [sys.executable, "-m", "hhjax.clips", "--config", "configs/clips_cnn_lstm.py",
       "--workdir", str(tmp_path / "w"), f"--config.data.clips_csv={missing}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert res.returncode == 1
  assert str(missing) in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------- configs, weights


def _keys(cfg, prefix=""):
  out = set()
  for k, v in cfg.items():
    out |= _keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
  return out


@pytest.mark.parametrize("name",
                         ["clips_cnn_lstm", "clips_convlstm", "clips_localiser",
                          "clips_tsm"])
def test_clip_configs_have_exactly_the_clips_keys(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert _keys(config) == _keys(clips_lib.get_config())
  clips_lib.check_config(config)


def test_torchvision_weights_replace_the_cnn(tmp_path):
  import jax  # noqa: PLC0415
  from hhjax.models.backbones import alexnet, torchvision_weights  # noqa: PLC0415
  module = alexnet.AlexNet(num_classes=None)
  shapes = torchvision_weights.expected_shapes("alexnet", module)
  rng = np.random.default_rng(0)
  state = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  np.savez(tmp_path / "alexnet.npz", **state)
  model = cnn_lstm.CNNLSTM(cnn="alexnet", lstm_hidden=4, embed=4, head_hidden=4)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros((1, 2, 64, 64, 3), np.float32)))
  variables = clips_lib.load_backbone_weights(
      abstract, "cnn", "alexnet", str(tmp_path / "alexnet.npz"), module,
      "model.cnn_weights")
  cnn = variables["params"]["cnn"]
  # torch conv weights (O, I, kh, kw) are Flax kernels (kh, kw, I, O).
  np.testing.assert_array_equal(cnn["features_0"]["kernel"],
                                state["features.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(cnn["features_10"]["bias"], state["features.10.bias"])
  assert variables["params"]["embed"] is abstract["params"]["embed"]
  with pytest.raises(ValueError, match="no torchvision checkpoint fits the 'small'"):
    clips_lib.load_backbone_weights(abstract, "cnn", "small", "x.npz", module, "f")


# --------------------------------------------------------------------------- frames


def test_frame_boxes_are_eq_2_3_with_the_whole_frame_as_the_crop():
  from hhjax.models.vision import hand_guided
  # By hand: a 64-pixel window at (100, 50) of a 360x240 frame.
  np.testing.assert_allclose(
      clips_lib.frame_boxes(np.array([[100.0, 50.0, 64.0, 64.0]]), 360, 240),
      [[100 / 360, 50 / 240, 64 / 360, 64 / 240]], rtol=1e-6)
  # A square frame resized to S with no crop: the paper's eq. 2-3 give the same box.
  h, s = 240, 64
  box = np.array([37.0, -12.0, 48.0, 48.0])
  paper = hand_guided.crop_alignment(np.r_[box[:2] * s / h, box[2:]], np.zeros(2),
                                     frame_height=h, crop_size=s, out_size=s)
  np.testing.assert_allclose(clips_lib.frame_boxes(box, h, h), paper, rtol=1e-6)


def test_hand_inputs_are_cut_from_the_sampled_original_frames(tiny, tmp_path):
  from hhjax import handguided
  clip = tiny["videos"] / "HW_a_01.mp4"
  features = np.load(tiny["features"] / "HW_a_01.npy")
  got = clips_lib.decode_hand_inputs(clip, 3, features, crop=10, size=6, name="a")
  frames = np.concatenate(list(video_lib.iter_frames(clip, short_side=None,
                                                     crop=None)))
  index = np.arange(0, FRAMES, 3)
  centres, present = handguided.hand_positions(features)
  patches, boxes = handguided.hand_cut_outs(frames[index], centres[index], 10, 6)
  np.testing.assert_array_equal(got.patches, patches)
  assert got.patches.shape == (4, 2, 6, 6, 3)
  np.testing.assert_allclose(got.boxes, boxes / [WIDTH, HEIGHT, WIDTH, HEIGHT])
  np.testing.assert_array_equal(got.present, present[index])
  assert not got.present[:, 1][[1, 3]].any()       # hand 1 shows on even frames only
  # A feature file one column short: the decoded count comes back, and the loader
  # names the clip.
  assert clips_lib.decode_hand_inputs(clip, 3, features[:, :11], 10, 6, "a") == FRAMES
  config = _config(tiny, "frames")
  clips = [c for c in clips_lib.read_clip_list(tiny["csv"]) if c.name == "HW_a_01.mp4"]
  with pytest.raises(compose.ClipsError, match=r"HW_a_01\.mp4 \(12 decoded frames, "
                                               r"11 feature columns\)"):
    clips_lib.load_hand_inputs(clips, {clips[0].name: clip},
                               {clips[0].name: features[:, :11]}, config)


def _frames_config(tiny, **frames):
  config = _config(tiny, "frames", frame_stride=3, frame_size=16)
  config.frames.hand_crop = 8
  config.frames.hand_size = 8
  for k, v in frames.items():
    config.frames[k] = v
  return config


def test_frames_run_scores_every_sampled_frame_and_the_hand_pose_row(tiny, tmp_path):
  config = _frames_config(tiny)
  summary = clips_lib.run(config, tmp_path / "run", folds=[0])
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  fold = saved["folds"][0]
  assert fold["results"] == summary["folds"][0]["results"]
  assert set(fold["results"]) == {"model", "handpose_frame"}
  npz = np.load(tmp_path / "run" / "fold0" / "predictions.npz")
  # People a and c held out: 4 clips, sampled frames 0, 3, 6, 9 of each, once.
  assert fold["test_frames"] == len(npz["model"]) == 16
  pairs = sorted(zip(npz["clip"].tolist(), npz["frame"].tolist()))
  assert pairs == sorted((c, f) for c in ("HW_a_01.mp4", "HW_a_11.mp4", "HW_c_03.mp4",
                                          "HW_c_11.mp4") for f in (0, 3, 6, 9))
  who = clips_lib.who_mapping(clips_lib.read_clip_list(tiny["csv"]))
  for row in ("model", "handpose_frame"):
    assert fold["results"][row] == pytest.approx(clips_lib.classification_scores(
        npz["action"], npz[row], who))
    assert fold["results"][row]["acc_action"] == pytest.approx(
        100 * np.mean(npz[row] == npz["action"]))
  assert npz["action"].tolist() == [int(str(c)[5:7]) for c in npz["clip"]]
  table = (tmp_path / "run" / "results.md").read_text()
  assert ("| ResNet-18, TSM shift 0.25, + hand stream (ResNet-18, aligned) | 12 "
          "actions |") in table
  assert "| hand pose per frame + logistic regression | 7 WHO classes |" in table


def test_frames_ablation_without_shift_or_hands_needs_no_features(tiny, tmp_path):
  config = _frames_config(tiny, temporal_shift=0.0, use_hand_stream=False)
  config.baseline.handpose = False
  config.data.features_dir = str(tmp_path / "nowhere")
  summary = clips_lib.run(config, tmp_path / "run", folds=[1])
  assert summary["rows"] == {"model": "ResNet-18, no shift"}
  assert summary["folds"][0]["test_frames"] == 8        # person b: 2 clips x 4 frames
  for bad, match in ((dict(backbone_depth=0), "config.frames.backbone_depth=0"),
                     (dict(temporal_shift=1.5), "config.frames.temporal_shift=1.5"),
                     (dict(fusion="sum"), "config.frames.fusion='sum'")):
    with pytest.raises(ValueError, match=re.escape(match)):
      clips_lib.check_config(_frames_config(tiny, **bad))


def test_torchvision_resnets_fill_both_streams_of_the_frames_model(tmp_path):
  import jax  # noqa: PLC0415
  from hhjax.models.backbones import resnet, torchvision_weights  # noqa: PLC0415
  shapes = torchvision_weights.expected_shapes("resnet18", resnet.ResNet(18))
  rng = np.random.default_rng(0)
  for name in ("frames", "hands"):
    state = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    np.savez(tmp_path / f"{name}.npz", **state)
  config = clips_lib.get_config()
  config.data.clip_length = 2
  config.frames.backbone_weights = str(tmp_path / "frames.npz")
  config.frames.hand_weights = str(tmp_path / "hands.npz")
  model = clips_lib.build_frame_model(config)
  inputs = (np.zeros((1, 2, 32, 32, 3), np.float32), np.zeros((1, 2, 2, 16, 16, 3),
            np.float32), np.full((1, 2, 2, 4), 0.25, np.float32),
            np.ones((1, 2, 2), np.float32))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
  variables = clips_lib.load_frame_weights(abstract, config.frames)
  for name, submodule in (("frames", "backbone"), ("hands", "hand")):
    state = np.load(tmp_path / f"{name}.npz")
    np.testing.assert_array_equal(variables["params"][submodule]["conv1"]["kernel"],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        variables["batch_stats"][submodule]["bn1"]["mean"], state["bn1.running_mean"])
  assert variables["params"]["classifier"] is abstract["params"]["classifier"]
  config.frames.use_hand_stream = False
  with pytest.raises(ValueError, match="frames.hand_weights needs a ResNet hand stream"):
    clips_lib.load_frame_weights(abstract, config.frames)


def test_folds_run_apart_into_one_workdir_make_one_table_of_same_settings(
    tiny, tmp_path, capsys):
  config = _config(tiny, "localise", frame_stride=3)
  config.batch_size = 4
  work = tmp_path / "run"
  first = clips_lib.run(config, work, folds=[0])["folds"][0]
  saved = json.loads((work / "fold0" / "result.json").read_text())
  assert saved["result"] == first and saved["config"]["task"] == "localise"
  capsys.readouterr()
  # Fold 1 alone, later, into the same workdir: the table holds both folds.
  config.log_every_steps = 2                     # changes no result
  summary = clips_lib.run(config, work, folds=[1])
  assert f"fold 0: read back from {work / 'fold0' / 'result.json'}" in (
      capsys.readouterr().out)
  assert [f["fold"] for f in summary["folds"]] == [0, 1]
  assert summary["folds"][0] == first
  on_disk = json.loads((work / "results.json").read_text())
  assert on_disk["mean_sd"]["model"]["f1@0.1"]["folds"] == 2
  assert on_disk["mean_sd"]["model"]["f1@0.1"]["mean"] == pytest.approx(np.mean(
      [f["results"]["model"]["f1@0.1"] for f in summary["folds"]]))
  table = (work / "results.md").read_text()
  assert "fold 0 (a, c)" in table and "over 2 folds;" in table
  # Each fold records the code that ran it, and the table names it.
  label = provenance.code_label(provenance.code_version())
  assert saved["code"] == provenance.code_version() and first["code"] == label
  assert f"Code: {label}." in table and "Warning" not in table
  # Fold 0 made by other code: still read back (same settings), and the table says so.
  other = dict(saved, code=dict(saved["code"], commit="f" * 40, tree="f" * 12,
                                changes=None))
  (work / "fold0" / "result.json").write_text(json.dumps(other, indent=2))
  clips_lib.run(config, work, folds=[1])
  assert f"(same settings; code {'f' * 12}, jax " in capsys.readouterr().out
  other_label = provenance.code_label(other["code"])
  assert (f"**Warning: code differs: fold 0: {other_label}; fold 1: {label}.**"
          in (work / "results.md").read_text())
  (work / "fold0" / "result.json").write_text(json.dumps(saved, indent=2))
  # Other settings: fold 0 is left out, naming the field, and its file is kept.
  config.learning_rate = 5e-4
  summary = clips_lib.run(config, work, folds=[1])
  out = capsys.readouterr().out
  assert "fold 0:" in out and "other settings" in out
  assert "learning_rate: 0.001 -> 0.0005" in out
  assert [f["fold"] for f in summary["folds"]] == [1]
  assert "over 2 folds (1 in this table);" in (work / "results.md").read_text()
  assert (work / "fold0" / "result.json").read_text() == json.dumps(saved, indent=2)
  # A damaged file is named and left out, not a crash.
  (work / "fold0" / "result.json").write_text("{")
  summary = clips_lib.run(config, work, folds=[1])
  assert "is not a fold result" in capsys.readouterr().out
  assert [f["fold"] for f in summary["folds"]] == [1]
