"""Model folders (`hhjax.export`) and video assessment (`hhjax.assess`).

* the export round-trips exactly, and a missing or altered file is named;
* the report is checked by hand on a prediction whose labels and scores are set;
* the model runner maps strided segments back to frames like a naive reference;
* the command runs on generated videos with a stand-in hand-pose extractor (no
  MediaPipe needed): bad videos fail one by one, the others are assessed;
* with MediaPipe installed (`hhjax[handpose]`) and `../shared` present, the command
  runs on a real clip, and MediaPipe's start-up lines stay off the terminal;
* a training run writes its model folder, which predicts what evaluation predicted.
"""

import base64
import csv
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hhjax import assess, export, handpose
from hhjax import video as video_lib
from hhjax.data import pipeline
from hhjax.models.heads.scorers import longest_runs
from hhjax.models.joint import create_model

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_CLIP = (REPO.parent / "shared" / "realdata" / "kaggle_handwash_s002"
             / "HandWash_002_A_01_G01.mp4")
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
HAS_DECORD = importlib.util.find_spec("decord") is not None
needs_decord = pytest.mark.skipif(not HAS_DECORD, reason="decord is needed to decode "
                                  "videos (pip install decord)")
CLASS_NAMES = ("background", "step1_palm_to_palm", "step2_palm_over_dorsum",
               "step3_fingers_interlaced", "step4_backs_of_fingers", "step5_thumbs",
               "step6_fingertips")


def _tiny_config(**dataset):
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in dataset.items():
    config.dataset[key] = value
  return config


def _tiny_model_folder(path, dim=handpose.FEATURE_DIM, stream="handpose", seed=0,
                       stats_seed=1, **dataset):
  """A randomly initialised tiny model written as a model folder; returns
  (folder, params, config, stats)."""
  config = _tiny_config(streams="all", standardize=True, frame_stride=2, **dataset)
  model = create_model(config)
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 16, dim)),
                               jnp.ones((1, 16)))["params"]
  rng = np.random.default_rng(stats_seed)
  stats = pipeline.FeatureStats(rng.normal(size=dim).astype(np.float32),
                                rng.uniform(0.5, 2.0, dim).astype(np.float32))
  folder = export.save(path, params, config, stats=stats, step=7, stream=stream)
  return folder, params, config, stats


@pytest.fixture(scope="module")
def hand_export(tmp_path_factory):
  """(folder, params, config, stats) of one tiny hand-pose model, written once."""
  return _tiny_model_folder(tmp_path_factory.mktemp("model") / "hands")


@pytest.fixture
def hand_model(hand_export):
  return hand_export[0]


@pytest.fixture
def model_copy(hand_export, tmp_path):
  """A copy of the tiny model's folder that a test may damage."""
  copy = tmp_path / "copy"
  shutil.copytree(hand_export[0], copy)
  return copy


# ---------------------------------------------------------------------------------------
# The model folder.


def test_export_round_trip(hand_export):
  folder, params, config, stats = hand_export
  assert sorted(p.name for p in folder.iterdir()) == sorted(
      [export.PARAMS_FILE, export.CONFIG_FILE, export.STATS_FILE, export.MANIFEST_FILE])
  loaded = export.load(folder)
  want = jax.tree_util.tree_flatten_with_path(params)[0]
  got = dict((jax.tree_util.keystr(p), v)
             for p, v in jax.tree_util.tree_flatten_with_path(loaded.params)[0])
  assert len(got) == len(want)
  for path, value in want:
    restored = got[jax.tree_util.keystr(path)]
    assert restored.dtype == value.dtype
    np.testing.assert_array_equal(restored, np.asarray(value))
  assert loaded.config.to_dict() == json.loads(config.to_json_best_effort())
  np.testing.assert_array_equal(loaded.stats.mean, stats.mean)
  np.testing.assert_array_equal(loaded.stats.std, stats.std)
  m = loaded.manifest
  for name, entry in m["files"].items():
    data = (folder / name).read_bytes()
    assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
  assert m["features"]["feature_dim"] == 212 and m["features"]["frame_stride"] == 2
  assert m["features"]["streams"] == "all" and m["features"]["standardize"] is True
  assert m["class_names"] == list(CLASS_NAMES) and m["step"] == 7
  assert m["score_range"] == [0.0, 6.0] and m["step_score_range"] == [0.0, 1.0]
  # The loaded model computes what the original does.
  x = np.random.default_rng(0).normal(size=(1, 16, 212)).astype(np.float32)
  mask = np.ones((1, 16), np.float32)
  a = jax.jit(create_model(config).apply)({"params": params}, x, mask)
  b = jax.jit(loaded.model.apply)({"params": loaded.params}, x, mask)
  np.testing.assert_array_equal(a["labels"], b["labels"])
  np.testing.assert_allclose(a["step_scores"], b["step_scores"], rtol=1e-6)


@pytest.mark.parametrize("segmenter, pool, dim", [("conv_transformer", "input", 12),
                                                  ("mstcn", "stage", 9)])
def test_input_dim_is_read_from_the_parameters(segmenter, pool, dim):
  config = _tiny_config(streams="all")
  config.model.segmenter = segmenter
  config.model.pool_features = pool
  shapes = jax.eval_shape(create_model(config).init, jax.random.key(0),
                          jnp.zeros((1, 8, dim)), jnp.ones((1, 8)))["params"]
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  assert export.input_dim(config, params) == dim
  config.model.channels = 6     # the parameters no longer fit the config
  with pytest.raises(ValueError, match="parameter"):
    export.input_dim(config, params)


@pytest.mark.parametrize("name, damage, expected", [
    (export.PARAMS_FILE, "delete", "params.msgpack is missing"),
    (export.STATS_FILE, "delete", "feature_stats.npz is missing"),
    (export.CONFIG_FILE, "flip", "config.json is corrupt"),
    (export.PARAMS_FILE, "flip", "params.msgpack is corrupt"),
    (export.MANIFEST_FILE, "truncate", "manifest.json: corrupt"),
    (export.MANIFEST_FILE, "delete", "manifest.json is missing"),
])
def test_load_names_the_missing_or_corrupt_file(model_copy, name, damage, expected):
  folder = model_copy
  path = folder / name
  if damage == "delete":
    path.unlink()
  elif damage == "flip":
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
  else:
    path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(export.ExportError) as info:
    export.load(folder)
  message = str(info.value)
  assert expected in message
  others = {export.PARAMS_FILE, export.CONFIG_FILE, export.STATS_FILE} - {name}
  assert not any(f"{other} is" in message for other in others), message


# ---------------------------------------------------------------------------------------
# The report, by hand.


def _hand_prediction():
  """60 frames at 10 fps: background, step 1 (1.0-3.0 s), step 3 (3.0-4.0 s), step 2
  (4.0-5.0 s), step 6 (5.0-5.5 s, scored below the done threshold), step 1 again
  (5.5-5.8 s), background; steps 4 and 5 absent."""
  labels = np.zeros(60, np.int64)
  labels[10:30] = 1
  labels[30:40] = 3
  labels[40:50] = 2
  labels[50:55] = 6
  labels[55:58] = 1
  return assess.Prediction(
      labels=labels, step_scores=np.array([0.9, 0.5, 0.8, 0.0, 0.0, 0.1]),
      video_score=2.3, seg_start=np.array([10, 40, 30, 0, 0, 50]),
      seg_end=np.array([30, 50, 40, 0, 0, 55]))


def test_report_by_hand():
  gt = _hand_prediction().labels.copy()
  gt[50:60] = 0                       # the truth: no step 6, no second step 1
  report = assess.build_report(_hand_prediction(), fps=10.0, class_names=CLASS_NAMES,
                               thresholds={"done": 0.25, "es": 0.7},
                               video={"name": "wash.mp4"}, ground_truth=gt)
  steps = {s["step"]: s for s in report["steps"]}
  assert [s["attribute"] for s in report["steps"]] == ["ES", "EN", "ES", "NE", "NE", "NE"]
  assert [s["done"] for s in report["steps"]] == [True, True, True, False, False, False]
  assert (steps[1]["start_s"], steps[1]["end_s"], steps[1]["duration_s"]) == (1.0, 3.0, 2.0)
  assert steps[1]["segments_s"] == [[1.0, 3.0], [5.5, 5.8]]
  assert (steps[2]["start_s"], steps[2]["end_s"]) == (4.0, 5.0)
  assert (steps[3]["start_s"], steps[3]["end_s"]) == (3.0, 4.0)
  assert steps[4]["start_s"] is None and steps[4]["segments_s"] == []
  assert "no segment" in steps[4]["reason"]
  assert steps[6]["start_s"] == 5.0 and "below the done threshold" in steps[6]["reason"]
  assert report["missing_steps"] == [4, 5, 6]
  assert report["out_of_order"] == [{"step": 3, "starts_before": [2]}]
  assert report["order"] == [1, 3, 2]
  assert report["steps_done"] == 3 and report["total_score"] == pytest.approx(2.3)
  assert report["video"]["duration_s"] == 6.0 and report["video"]["frames"] == 60
  assert report["video"]["name"] == "wash.mp4"
  assert all(0.0 <= s["score"] <= 1.0 for s in report["steps"])
  assert report["ground_truth"]["frame_accuracy"] == pytest.approx(100 * 52 / 60, abs=0.01)
  assert report["ground_truth"]["missing_steps"] == [4, 5, 6]

  assert json.loads(assess.dumps(report)) == report
  text = assess.format_summary(report)
  rows = [line for line in text.splitlines() if re.match(r"\s+\d ", line)]
  assert len(rows) == 6
  assert re.search(r"1 palm to palm\s+yes\s+ES\s+0\.90\s+1\.0 s\s+3\.0 s", text)
  assert re.search(r"4 backs of fingers\s+no\s+NE\s+0\.00\s+-\s+-", text)
  assert "missing: 4, 5, 6" in text and "3 starts before 2" in text


def test_report_thresholds_and_clipping():
  pred = _hand_prediction()
  pred.step_scores = np.array([1.3, 0.5, 0.8, 0.0, 0.0, 0.1])   # e.g. an MLP scorer
  report = assess.build_report(pred, fps=25.0, class_names=CLASS_NAMES,
                               thresholds={"done": 0.05, "es": 0.85})
  steps = report["steps"]
  assert steps[0]["score"] == 1.0 and any("clipped" in w for w in report["warnings"])
  assert [s["attribute"] for s in steps] == ["ES", "EN", "EN", "NE", "NE", "EN"]
  assert report["missing_steps"] == [4, 5]
  assert steps[0]["start_s"] == pytest.approx(10 / 25)
  assert report["video"]["duration_s"] == pytest.approx(60 / 25, abs=1e-3)


def test_html_embeds_the_timeline(tmp_path):
  report = assess.build_report(_hand_prediction(), fps=10.0, class_names=CLASS_NAMES,
                               thresholds={"done": 0.25, "es": 0.7},
                               video={"name": "a<b>.mp4"})
  png = b"\x89PNG fake bytes"
  page = assess.render_html(report, png)
  embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
  assert base64.b64decode(embedded) == png
  assert len(re.findall(r'<tr class="(?:NE|EN|ES)">', page)) == 6
  assert "a&lt;b&gt;.mp4" in page and "a<b>.mp4" not in page
  assert "Total score 2.30 of 6" in page


# ---------------------------------------------------------------------------------------
# The model runner, with a stand-in model whose labels come from the features.


class _LabelsFromFeatures:
  """Labels = argmax of the first 7 inputs; segments: the longest runs; scores fixed."""

  def __init__(self, scores):
    self.scores = jnp.asarray(scores, jnp.float32)
    self.seen = []

  def apply(self, variables, x, mask, train=False):
    del variables, train
    self.seen.append(x.shape)
    labels = jnp.argmax(x[..., :7], axis=-1) * mask.astype(jnp.int32)
    start, length = longest_runs(labels, mask, 6)
    scores = jnp.where(length > 0, self.scores[None], 0.0)
    return dict(labels=labels, step_scores=scores, video_score=scores.sum(-1),
                seg_start=start, seg_length=length)


def _naive_longest(labels, k):
  best, start = (0, 0), None
  for t, label in enumerate(list(labels) + [-1]):
    if label == k and start is None:
      start = t
    elif label != k and start is not None:
      if t - start > best[1] - best[0]:
        best = (start, t)
      start = None
  return best


def test_predictor_maps_strided_segments_to_frames():
  config = ml_collections.ConfigDict(dict(dataset=dict(frame_stride=2, streams="all",
                                                       bucket_size=8)))
  model = _LabelsFromFeatures([0.9, 0.4, 0.8, 0.6, 0.3, 0.2])
  loaded = export.LoadedModel(model=model, params={}, config=config, stats=None,
                              manifest={"features": {"raw_feature_dim": 9}})
  frames = np.array([0] * 3 + [1] * 6 + [3] * 4 + [2] * 5 + [1] * 2 + [0] + [5] * 2)
  features = np.zeros((9, frames.size), np.float32)          # (D, T), T = 23
  features[frames, np.arange(frames.size)] = 1.0
  pred = assess.Predictor(loaded)(features)
  assert model.seen == [(1, 16, 9)]                          # 12 strided frames, padded
  want = np.repeat(frames[::2], 2)[:frames.size]             # each kept frame x2
  np.testing.assert_array_equal(pred.labels, want)
  for k in range(1, 7):     # absent steps (4, 6): an empty segment at frame 0
    assert (pred.seg_start[k - 1], pred.seg_end[k - 1]) == _naive_longest(want, k), k
  np.testing.assert_allclose(pred.step_scores, [0.9, 0.4, 0.8, 0, 0.3, 0], atol=1e-6)
  with pytest.raises(ValueError, match=r"\(9, T\)"):
    assess.Predictor(loaded)(features[:5])


def test_predictor_merges_short_runs_by_seconds(hand_export):
  """--min-segment-seconds: runs shorter than S seconds of the video are merged (here
  0.8 s at 10 frames/s with stride 2: 4 model frames) before the steps are scored."""
  from hhjax.models.segmenters import postprocess  # noqa: PLC0415
  loaded = export.load(hand_export[0])
  features = np.random.default_rng(3).normal(size=(handpose.FEATURE_DIM, 90)
                                             ).astype(np.float32)
  raw = assess.Predictor(loaded)(features, fps=10.0)
  merging = assess.Predictor(loaded, min_segment_seconds=0.8)
  assert merging.min_segment_frames(10.0) == 4
  merged = merging(features, fps=10.0)
  strided = raw.labels[::2]
  want = postprocess.merge_short_runs(jnp.asarray(strided[None]),
                                      jnp.ones((1, strided.size)), 4)[0]
  np.testing.assert_array_equal(merged.labels, np.repeat(np.asarray(want), 2)[:90])
  assert (merged.labels != raw.labels).any()       # the random model did flicker
  with pytest.raises(ValueError, match="frame rate"):
    merging(features)
  # 0 s merges nothing.
  np.testing.assert_array_equal(
      assess.Predictor(loaded, min_segment_seconds=0.0)(features, fps=10.0).labels,
      raw.labels)


def test_min_segment_seconds_is_refused_where_it_cannot_apply(capsys):
  with pytest.raises(SystemExit):
    assess.main(["--online", "0", "--min-segment-seconds", "1"])
  assert "--min-segment-seconds looks at the whole video" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    assess.main(["v.mp4", "--min-segment-seconds", "-1"])
  assert "must be >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Feature extractors from the manifest.


def test_i3d_weights_must_match_the_manifest(tmp_path, hand_model):
  loaded = export.load(hand_model)
  settings = dict(stream="i3d", mode="fast", chunk=16, margin=4, crop=193,
                  short_side=220, flow_size=32, flow_iterations=3, flow_outer=1,
                  flow_warps=1, flow_scales=1, rgb_weights="random:0",
                  flow_weights="random:1")
  loaded.manifest["features"] = dict(loaded.features, stream="i3d", fps=15.0,
                                     extraction=settings)
  options = assess.build_parser().parse_args(["v.mp4", "--max-frames", "5"])
  with pytest.raises(assess.AssessError, match="--random-weights"):
    assess.make_extractor(loaded, options)
  options.random_weights = True
  extractor = assess.make_extractor(loaded, options)
  cfg = extractor.config
  assert (cfg.mode, cfg.chunk, cfg.margin, cfg.size, cfg.resize_to, cfg.flow_size,
          cfg.fps, cfg.max_frames) == ("fast", 16, 4, 193, 220, 32, 15.0, 5)
  weights = tmp_path / "rgb.npz"
  weights.write_bytes(b"not these weights")
  settings.update(rgb_weights="sha256:" + "0" * 64, flow_weights="sha256:" + "1" * 64)
  options.random_weights = False
  with pytest.raises(assess.AssessError, match="--rgb-weights and --flow-weights"):
    assess.make_extractor(loaded, options)
  options.rgb_weights = str(weights)
  with pytest.raises(assess.AssessError, match=re.escape(str(weights))):
    assess.make_extractor(loaded, options)
  loaded.manifest["features"]["stream"] = "synthetic"
  with pytest.raises(assess.AssessError, match="synthetic"):
    assess.make_extractor(loaded, options)


# ---------------------------------------------------------------------------------------
# The command, with a stand-in hand-pose extractor.


def _write_video(path, frames=24, fps=12.0, size=(64, 48), seed=0):
  cv2 = pytest.importorskip("cv2")
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
  rng = np.random.default_rng(seed)
  for _ in range(frames):
    writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
  writer.release()
  assert video_lib.count_frames(path) == frames
  return path


class _FakeHands:
  """Hand-pose features of the right shape; no hand at all in videos named nohands*."""

  def __init__(self, max_frames=None):
    self.max_frames = max_frames

  def expected_frames(self, path):
    return video_lib.count_frames(path, None, self.max_frames)

  def extract(self, path, on_frame=None):
    t = self.expected_frames(path)
    rng = np.random.default_rng(len(pathlib.Path(path).name))
    features = rng.normal(size=(handpose.FEATURE_DIM, t)).astype(np.float32)
    present = 0.0 if pathlib.Path(path).name.startswith("nohands") else 1.0
    for slot in range(2):
      features[slot * handpose.HAND_DIM + handpose.HAND_DIM - 1] = present
    return features


@needs_decord
def test_command_assesses_good_videos_and_names_bad_ones(tmp_path, hand_model,
                                                         monkeypatch, capfd):
  monkeypatch.setattr(assess, "make_extractor",
                      lambda loaded, options: _FakeHands(options.max_frames))
  videos = tmp_path / "videos"
  videos.mkdir()
  _write_video(videos / "good1.mp4", seed=1)
  _write_video(videos / "good2.mp4", frames=30, seed=2)
  _write_video(videos / "nohands.mp4", seed=3)
  (videos / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  truth = tmp_path / "truth"
  truth.mkdir()
  (truth / "good1.txt").write_text("\n".join(["background"] * 10
                                             + ["step2_palm_over_dorsum"] * 14) + "\n")
  out = tmp_path / "out"

  status = assess.main([str(videos), "--model", str(hand_model), "--out", str(out),
                        "--ground-truth", str(truth), "--no-progress"])
  captured = capfd.readouterr()
  assert status == 1
  errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
  assert len(errors) == 2, captured.err
  assert any("broken.mp4" in e and "cannot be opened" in e for e in errors)
  assert any("nohands.mp4" in e and "no hands detected" in e for e in errors)
  for noise in ("moov atom", "ERROR opening"):    # FFmpeg's own lines are filtered
    assert noise not in captured.err, captured.err

  for stem, frames in (("good1", 24), ("good2", 30)):
    report = json.loads((out / f"{stem}.json").read_text())
    assert report["video"]["frames"] == frames and report["video"]["fps"] == 12.0
    assert report["video"]["duration_s"] == pytest.approx(frames / 12.0, abs=1e-3)
    assert len(report["steps"]) == 6
    lo, hi = report["score_range"]
    assert all(lo / 6 <= s["score"] <= hi / 6 for s in report["steps"])
    assert report["total_score"] == pytest.approx(
        sum(s["score"] for s in report["steps"]), abs=1e-3)
    for s in report["steps"]:
      if s["start_s"] is not None:
        assert s["start_s"] == pytest.approx(s["start_frame"] / 12.0, abs=1e-3)
        assert 0 <= s["start_s"] < s["end_s"] <= frames / 12.0 + 1e-9
    assert report["model"]["features"]["stream"] == "handpose"
    assert report["model"]["step"] == 7
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / f"{stem}.html").read_text()
    embedded = re.search(r'base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == (out / f"{stem}.png").read_bytes()
    assert f"{stem}.mp4" in captured.out
  good1 = json.loads((out / "good1.json").read_text())
  assert good1["ground_truth"]["steps_done"] == [2]
  assert "ground_truth" not in json.loads((out / "good2.json").read_text())
  assert not (out / "nohands.json").exists() and not (out / "broken.json").exists()

  with (out / assess.SUMMARY_FILE).open() as f:
    rows = {row["video"]: row for row in csv.DictReader(f)}
  assert set(rows) == {"good1", "good2", "nohands", "broken"}
  assert rows["good1"]["status"] == "ok" and rows["broken"]["status"] == "failed"
  assert "no hands detected" in rows["nohands"]["error"]
  assert float(rows["good1"]["total_score"]) == pytest.approx(good1["total_score"])
  assert rows["good1"]["step1"] == good1["steps"][0]["attribute"]


@needs_decord
def test_command_refuses_a_broken_model_folder(tmp_path, hand_model, monkeypatch,
                                               capsys):
  monkeypatch.setattr(assess, "make_extractor",
                      lambda loaded, options: _FakeHands(options.max_frames))
  video = _write_video(tmp_path / "wash.mp4")
  broken = tmp_path / "model"
  broken.mkdir()
  for name in (export.CONFIG_FILE, export.STATS_FILE, export.MANIFEST_FILE):
    (broken / name).write_bytes((hand_model / name).read_bytes())
  out = tmp_path / "out"
  status = assess.main([str(video), "--model", str(broken), "--out", str(out)])
  err = capsys.readouterr().err
  assert status == 1
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "params.msgpack is missing" in errors[0], err
  assert not (out / "wash.json").exists()

  monkeypatch.setattr(assess, "DEFAULT_MODEL", tmp_path / "absent")
  assert assess.main([str(video), "--out", str(out)]) == 1
  err = capsys.readouterr().err
  assert "none is shipped" in err and "--model" in err


def test_quiet_native_logs_keeps_real_errors(capfd):
  with handpose.quiet_native_logs():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\n"
                b"W0000 00:00:1795961916.104904     365 inference_feedback_manager.cc:114]"
                b" Feedback manager requires a model with a single signature inference.\n"
                b"E0000 00:00:1795961916.2 123 calculator.cc:1] a real failure\n")
    print("from python", file=sys.stderr)
  lines = capfd.readouterr().err.splitlines()
  assert sorted(lines) == ["E0000 00:00:1795961916.2 123 calculator.cc:1] a real failure",
                           "from python"]


# ---------------------------------------------------------------------------------------
# The real thing: MediaPipe on a real clip.


@pytest.mark.skipif(not HAS_MEDIAPIPE, reason='mediapipe is not installed (pip install '
                    '"hhjax[handpose]")')
@needs_decord
def test_command_on_a_real_clip_with_mediapipe(tmp_path, hand_model):
  if not REAL_CLIP.is_file():
    pytest.skip(f"{REAL_CLIP} is absent (../shared beside the repository)")
  out = tmp_path / "out"
  run = subprocess.run(
      [sys.executable, "-m", "hhjax.assess", str(REAL_CLIP), "--model", str(hand_model),
       "--out", str(out), "--max-frames", "30", "--no-progress"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr
  for noise in ("Feedback manager", "XNNPACK", "absl::InitializeLog"):
    assert noise not in run.stderr, run.stderr
  report = json.loads((out / f"{REAL_CLIP.stem}.json").read_text())
  assert report["video"]["frames"] == 30 and report["video"]["fps"] == 30.0
  assert report["video"]["duration_s"] == 1.0
  assert report["video"]["source_frames"] > 30
  assert report["model"]["features"]["extraction"]["mediapipe"]
  assert "palm to palm" in run.stdout
  features = handpose.HandPoseExtractor(max_frames=30).extract(REAL_CLIP)
  assert handpose.presence(features).max() == 1.0     # hands were found in it


# ---------------------------------------------------------------------------------------
# Training writes the model folder.


def test_training_writes_a_model_folder_that_predicts_like_evaluation(tmp_path):
  from hhjax.training import loop  # noqa: PLC0415
  config = _tiny_config(data_dir=str(tmp_path / "tfds"))
  config.num_train_steps = 3
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.tensorboard = False
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, workdir)
  loaded = export.load(workdir / export.EXPORT_DIR)
  m = loaded.manifest
  assert m["step"] == 3 and m["training"]["videos"] == 3
  assert m["features"]["feature_dim"] == 16 and m["features"]["stream"] == "unknown"
  assert m["thresholds"]["basis"] == "graded"
  again = export.export_run(workdir, tmp_path / "again")
  reloaded = export.load(again)
  for key in ("thresholds", "training", "features", "class_names", "step"):
    assert reloaded.manifest[key] == m[key], key
  params = reloaded.params
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  predictor = assess.Predictor(loaded)
  manual = pathlib.Path(config.dataset.manual_dir)
  lines = (workdir / "predictions.jsonl").read_text().splitlines()
  assert lines
  for line in lines:
    saved = json.loads(line)
    pred = predictor(np.load(manual / "features" / f"{saved['video']}.npy"))
    np.testing.assert_array_equal(pred.labels, saved["frame_labels"])
    np.testing.assert_allclose(pred.step_scores, saved["step_scores"], atol=1e-4)
