"""Online assessment (`python -m hhjax.assess --online`).

A tiny causal model (random parameters, exported with `hhjax.export`) and a stand-in
per-frame extractor (a fixed random projection of the frame's pixels) run over the
first frames of a real clip; the streamed labels must equal `stream_video` on the same
features and the offline runner on the whole sequence (the model is causal), and the
report files must have the offline report's keys.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import assess, export, handpose
from hhjax import video as video_lib
from hhjax.data import pipeline
from hhjax.inference.streaming import debounce_labels, stream_video
from hhjax.models.joint import create_model

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_CLIP = (REPO.parent / "shared" / "realdata" / "kaggle_handwash_s002"
             / "HandWash_002_A_01_G01.mp4")
FRAMES = 40
FPS = 10.0


def _tiny_config(segmenter):
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset.streams, config.dataset.standardize = "all", True
  config.dataset.frame_stride = 2
  config.model.segmenter = segmenter
  return config


def _folder(path, segmenter):
  config = _tiny_config(segmenter)
  model = create_model(config)
  dim = handpose.FEATURE_DIM
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, dim)),
                               jnp.ones((1, 16)))["params"]
  rng = np.random.default_rng(1)
  stats = pipeline.FeatureStats(rng.normal(size=dim).astype(np.float32),
                                rng.uniform(0.5, 2.0, dim).astype(np.float32))
  return export.save(path, params, config, stats=stats, step=3, stream="handpose",
                     fps=FPS)


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory):
  return _folder(tmp_path_factory.mktemp("online") / "causal", "causal_conv_transformer")


def _fake_features(frame):
  """(212,) a fixed function of the frame: block means through a random projection,
  both hands marked present."""
  small = frame[::16, ::16].astype(np.float32).reshape(-1) / 255.0
  proj = np.random.default_rng(small.size).normal(size=(handpose.FEATURE_DIM,
                                                        small.size))
  out = (proj @ small / np.sqrt(small.size)).astype(np.float32)
  for slot in range(2):
    out[slot * handpose.HAND_DIM + handpose.HAND_DIM - 1] = 1.0
  return out


@pytest.fixture
def fake_frames(monkeypatch):
  seen = []

  def features(frame):
    seen.append(frame.shape)
    return _fake_features(frame)

  monkeypatch.setattr(assess, "make_frame_features",
                      lambda loaded, options: contextlib.nullcontext(features))
  return seen


@pytest.mark.skipif(not REAL_CLIP.exists(), reason="../shared real clip is absent")
def test_online_report_matches_streaming_and_offline(tmp_path, causal_model,
                                                     fake_frames, capsys):
  out = tmp_path / "out"
  status = assess.main(["--online", str(REAL_CLIP), "--model", str(causal_model),
                        "--out", str(out), "--max-frames", str(FRAMES),
                        "--stable-seconds", "0"])
  captured = capsys.readouterr()
  assert status == 0, captured.err
  assert len(fake_frames) == FRAMES
  assert "\r" in captured.err and "frames/s" in captured.err       # the live line

  # The same frames, decoded independently, through the same features.
  frames = np.concatenate(list(video_lib.iter_frames(
      REAL_CLIP, fps=FPS, short_side=None, crop=None, max_frames=FRAMES)))
  features = np.stack([_fake_features(f) for f in frames], axis=1)     # (212, T)
  loaded = export.load(causal_model)
  streamed = stream_video(loaded.model, loaded.params, features.T[::2],
                          stats=loaded.stats)
  want = pipeline.upsample(streamed["labels"], 2, FRAMES)
  offline = assess.Predictor(loaded)(features)
  np.testing.assert_array_equal(offline.labels, want)

  report = json.loads((out / f"{REAL_CLIP.stem}.json").read_text())
  assert report["video"]["frames"] == FRAMES and report["video"]["fps"] == FPS
  got = np.zeros(FRAMES, np.int64)
  for s in report["steps"]:
    for a, b in s["segments_s"]:
      got[round(a * FPS):round(b * FPS)] = s["step"]
  np.testing.assert_array_equal(got, want)
  lo, hi = report["score_range"]
  scores = np.clip(streamed["step_scores"][-1], lo / 6, hi / 6)
  np.testing.assert_allclose([s["score"] for s in report["steps"]], scores, atol=1e-4)

  # Same keys as the offline report of the same clip.
  off_dir = tmp_path / "offline"
  monkeypatch_extract = assess.make_extractor
  try:
    assess.make_extractor = lambda loaded, options: _Whole(features)
    assert assess.main([str(REAL_CLIP), "--model", str(causal_model), "--out",
                        str(off_dir), "--max-frames", str(FRAMES), "--no-progress"]) == 0
  finally:
    assess.make_extractor = monkeypatch_extract
  off = json.loads((off_dir / f"{REAL_CLIP.stem}.json").read_text())
  assert set(off) == set(report)
  assert set(off["steps"][0]) == set(report["steps"][0])
  assert [s["attribute"] for s in off["steps"]] == [s["attribute"] for s in
                                                    report["steps"]]
  for suffix in (".png", ".html"):
    assert (out / f"{REAL_CLIP.stem}{suffix}").stat().st_size > 0

  # By default a new label is reported once it has lasted 0.5 s: the committed labels
  # of `debounce_labels` over the model's steps (every 2nd frame).
  k = assess.stable_steps(0.5, FPS, 2)
  stable_dir = tmp_path / "stable"
  assert assess.main(["--online", str(REAL_CLIP), "--model", str(causal_model), "--out",
                      str(stable_dir), "--max-frames", str(FRAMES)]) == 0
  stable = json.loads((stable_dir / f"{REAL_CLIP.stem}.json").read_text())
  got = np.zeros(FRAMES, np.int64)
  for s in stable["steps"]:
    for a, b in s["segments_s"]:
      got[round(a * FPS):round(b * FPS)] = s["step"]
  np.testing.assert_array_equal(
      got, pipeline.upsample(debounce_labels(streamed["labels"], k), 2, FRAMES))
  with pytest.raises(assess.AssessError, match="stable-seconds"):
    assess.stable_steps(-1.0, FPS, 2)


class _Whole:
  def __init__(self, features):
    self.features = features

  def expected_frames(self, path):
    return self.features.shape[1]

  def extract(self, path, on_frame=None):
    return self.features


def test_offline_model_is_refused(tmp_path, fake_frames, capsys):
  folder = _folder(tmp_path / "offline", "conv_transformer")
  status = assess.main(["--online", "0", "--model", str(folder), "--out",
                        str(tmp_path / "out"), "--no-progress"])
  err = capsys.readouterr().err
  assert status == 1
  assert "online mode needs a causal model" in err
  assert 'config.model.segmenter="causal_conv_transformer"' in err
  assert not fake_frames


def test_bad_camera_index_is_one_clear_error(tmp_path, causal_model, fake_frames,
                                             capfd):
  pytest.importorskip("cv2")
  status = assess.main(["--online", "57", "--model", str(causal_model), "--out",
                        str(tmp_path / "out"), "--no-progress"])
  err = capfd.readouterr().err
  assert status == 1
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert errors == ["error: camera 57 cannot be opened (no such device, or it is in "
                    "use); give a video file or another camera index"], err
  assert not list((tmp_path / "out").iterdir())


@pytest.mark.skipif(not REAL_CLIP.exists(), reason="../shared real clip is absent")
def test_a_camera_is_read_in_real_time_thinned_to_the_models_rate(tmp_path, causal_model,
                                                                   monkeypatch, capsys):
  """`--online 0` through the camera path: OpenCV's VideoCapture stood in for by one
  playing the real clip at 30 fps in real time (BGR frames, as a camera gives them).
  The frames reach the extractor as RGB, thinned to the model's 10 fps by arrival
  time, and the report is the streaming model's on exactly the frames kept."""
  cv2 = pytest.importorskip("cv2")
  real_capture = cv2.VideoCapture

  class PlayedCamera:
    def __init__(self, index):
      assert index == 0
      self.capture = real_capture(str(REAL_CLIP))
      self.next_time = None

    def isOpened(self):
      return self.capture.isOpened()

    def get(self, prop):
      return 30.0 if prop == cv2.CAP_PROP_FPS else self.capture.get(prop)

    def read(self):
      import time
      now = time.perf_counter()
      self.next_time = (now if self.next_time is None else self.next_time) + 1 / 30
      if self.next_time > now:
        time.sleep(self.next_time - now)
      return self.capture.read()

    def release(self):
      self.capture.release()

  monkeypatch.setattr(cv2, "VideoCapture", PlayedCamera)
  kept = []

  def features(frame):
    kept.append(frame.copy())
    return _fake_features(frame)

  monkeypatch.setattr(assess, "make_frame_features",
                      lambda loaded, options: contextlib.nullcontext(features))
  out = tmp_path / "out"
  status = assess.main(["--online", "0", "--model", str(causal_model), "--out",
                        str(out), "--max-frames", "20", "--stable-seconds", "0"])
  captured = capsys.readouterr()
  assert status == 0, captured.err
  assert len(kept) == 20 and "frames/s" in captured.err
  # RGB, not BGR: the first kept frame is the clip's first frame as hhjax decodes it.
  first = next(video_lib.iter_frames(REAL_CLIP, short_side=None, crop=None))[0]
  rgb_error = np.abs(kept[0].astype(float) - first).mean()
  bgr_error = np.abs(kept[0][..., ::-1].astype(float) - first).mean()
  assert rgb_error < 3.0 < bgr_error
  # Thinned to about every third frame of the 30 fps camera: 20 kept frames span about
  # 2 s of the clip, not 0.7 s.
  decoded = np.concatenate(list(video_lib.iter_frames(
      REAL_CLIP, short_side=None, crop=None, max_frames=90)))
  last = int(np.argmin([np.abs(kept[-1].astype(float) - f).mean() for f in decoded]))
  assert 40 <= last <= 66, last        # unthinned it would be 19
  # The report: the streaming model on the features of exactly these frames.
  loaded = export.load(causal_model)
  feats = np.stack([_fake_features(f) for f in kept])
  streamed = stream_video(loaded.model, loaded.params, feats[::2], stats=loaded.stats)
  want = pipeline.upsample(streamed["labels"], 2, len(kept))
  report = json.loads((out / "camera0.json").read_text())
  assert report["video"]["frames"] == 20 and report["video"]["fps"] == FPS
  got = np.zeros(len(kept), np.int64)
  for s in report["steps"]:
    for a, b in s["segments_s"]:
      got[round(a * FPS):round(b * FPS)] = s["step"]
  np.testing.assert_array_equal(got, want)
