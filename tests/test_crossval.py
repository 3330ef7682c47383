"""Tests for `hhjax.crossval` (and the `hha300/handwash` builder config it reads): the
completeness rules on hand-worked examples, and a whole two-fold run on composed washes."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

from hhjax import crossval, metrics, provenance, reporting
from hhjax.data import compose, hha300, layout

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_missing_steps_exact_by_hand():
  gt = [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]]
  pred = [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0]]
  assert metrics.missing_steps_exact(pred, gt) == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match="shape"):
    metrics.missing_steps_exact([[1, 1]], gt)


def test_steps_done_and_min_frames_by_hand():
  labels = np.array([0, 1, 1, 1, 2, 0, 3, 3, 3, 3, 3, 6])
  np.testing.assert_array_equal(crossval.steps_done_by_frames(labels, 1),
                                [1, 1, 1, 0, 0, 1])
  np.testing.assert_array_equal(crossval.steps_done_by_frames(labels, 3),
                                [1, 0, 1, 0, 0, 0])
  # Video 0 did steps 1 and 3 (2 is a stray frame); video 1 did steps 1-3.
  preds = [labels, np.array([1, 1, 1, 2, 2, 2, 3, 3, 3])]
  gt_done = np.array([[1, 0, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
  assert crossval.choose_min_frames(preds, gt_done, candidates=(1, 2, 3, 4)) == 2


def test_mean_sd_skips_undefined_folds():
  folds = [dict(joint=dict(acc=80.0, spearman=0.5)), dict(joint=dict(acc=90.0,
                                                                     spearman=math.nan))]
  for f in folds:
    for key, _ in crossval.COLUMNS:
      f["joint"].setdefault(key, 1.0)
  stats = crossval.mean_sd(folds, "joint")
  assert stats["acc"][:2] == pytest.approx((85.0, np.std([80, 90], ddof=1)))
  assert stats["spearman"][0] == 0.5 and math.isnan(stats["spearman"][1])
  assert stats["spearman"][2] == 1


def test_fold_indices_needs_numbered_folds(tmp_path):
  with pytest.raises(layout.LayoutError, match="does not exist.*hhjax.data.compose"):
    crossval.fold_indices(tmp_path / "absent")
  (tmp_path / "splits").mkdir()
  with pytest.raises(layout.LayoutError, match="no split bundles"):
    crossval.fold_indices(tmp_path)
  for name in ("fold0", "fold2", "train"):
    (tmp_path / "splits" / f"{name}.bundle").write_text("v\n")
  with pytest.raises(layout.LayoutError, match=r"found folds \[0, 2\]"):
    crossval.fold_indices(tmp_path)
  (tmp_path / "splits" / "fold1.bundle").write_text("v\n")
  assert crossval.fold_indices(tmp_path) == [0, 1, 2]
  assert crossval.check_folds(tmp_path, [2, 0]) == [0, 1, 2]
  with pytest.raises(ValueError, match=r"folds \[3, 5\] are not among the data set's "
                                       r"folds \[0, 1, 2\]"):
    crossval.check_folds(tmp_path, [1, 5, 3])


def test_timeline_png(tmp_path):
  if importlib.util.find_spec("matplotlib") is None:
    pytest.skip("matplotlib is not installed")
  gt = np.repeat([0, 1, 2, 0, 3], 30)
  path = tmp_path / "t.png"
  reporting.plot_timelines(path, [("gt", gt), ("pred", np.roll(gt, 5))],
                           ["bg", "a", "b", "c"], fps=10, title="x")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="length"):
    reporting.plot_timelines(path, [("gt", gt), ("pred", gt[:-1])], ["bg", "a", "b", "c"])


def _clips(num_people=4, dim=8, seed=0):
  """Single-step clips whose features name their step (one-hot + noise)."""
  rng = np.random.default_rng(seed)
  clips, features = [], {}
  for p in range(num_people):
    for step in range(7):
      clip = compose.Clip(name=f"p{p}_s{step}.mp4", subject=f"p{p}", action=step,
                          who_step=step)
      clips.append(clip)
      length = int(rng.integers(20, 40))
      array = rng.normal(0, 0.3, (dim, length)).astype(np.float32)
      array[step] += 2.0
      features[clip.stem] = array
  return clips, features


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
  root = tmp_path_factory.mktemp("handwash")
  clips, features = _clips()
  washes = compose.compose_washes(clips, features, washes_per_person=3, seed=1,
                                  skip_prob=0.3)
  compose.write_layout(root / "layout", washes, folds=2)
  return root, washes


def _config(root):
  spec = importlib.util.spec_from_file_location("tiny", ROOT / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset.config = "handwash"
  config.dataset.manual_dir = str(root / "layout")
  config.dataset.data_dir = str(root / "tfds")
  config.dataset.streams = "all"
  config.dataset.standardize = True
  config.dataset.bucket_size = 64
  return config


def test_handwash_builder_reads_every_fold(composed):
  root, washes = composed
  builder = hha300.build("handwash", data_dir=str(root / "tfds_b"),
                         manual_dir=str(root / "layout"))
  assert set(builder.info.splits) == {"fold0", "fold1"}
  both = builder.as_data_source(split="fold0+fold1")
  assert len(both) == len(washes)
  by_name = {w.name: w for w in washes}
  for i in range(len(both)):
    ex = both[i]
    wash = by_name[ex["video"].decode()]
    np.testing.assert_array_equal(ex["features"], wash.features.T)
    np.testing.assert_array_equal(ex["labels"], wash.labels)


def test_two_fold_run(composed, tmp_path, capsys):
  root, washes = composed
  config = _config(root)
  results = crossval.cross_validate(config, tmp_path)
  out = capsys.readouterr().out
  assert "mean ± sd over 2 folds" in out and "per-frame classifier" in out
  assert "per held-out person" in out
  saved = json.loads((tmp_path / "crossval.json").read_text())
  assert [f["fold"] for f in saved["folds"]] == [0, 1]
  people = [set(f["people"]) for f in saved["folds"]]
  assert people == [{"p0", "p2"}, {"p1", "p3"}]
  for f in saved["folds"]:
    assert f["washes"] + f["train_washes"] == len(washes)
    assert sorted(f["by_person"]) == f["people"]
    assert sum(r["washes"] for r in f["by_person"].values()) == f["washes"]
    # The joint row is the fold run's own evaluation, read back.
    run = json.loads((tmp_path / f"fold{f['fold']}" / "eval_results.json").read_text())
    (joint_run,) = run.values()
    for key in ("acc", "edit", "f1@50", "spearman"):
      assert f["joint"][key] == pytest.approx(joint_run[key], nan_ok=True)
    # The features name the step: a per-frame classifier segments them well and, from
    # its frame counts, names the left-out steps of most washes.
    assert f["per_frame"]["acc"] > 90
    assert f["per_frame"]["missing_exact"] >= 50
  # Washes of the held-out people only, each once, with the attributes they were given.
  predicted = [json.loads(line) for k in (0, 1)
               for line in (tmp_path / f"fold{k}" / "predictions.jsonl").open()]
  by_name = {w.name: w for w in washes}
  assert sorted(p["video"] for p in predicted) == sorted(by_name)
  for p in predicted:
    assert p["gt_attributes"] == [layout.ATTRIBUTES[a]
                                  for a in by_name[p["video"]].attributes]
  if importlib.util.find_spec("matplotlib") is not None:
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
  assert len(results) == 2
  # Both folds were trained here, by this code, and the report says which.
  label = provenance.code_label(provenance.code_version())
  assert [f["code"] for f in saved["folds"]] == [[label], [label]]
  assert f"code: {label}" in out and "code differs" not in out


def test_folds_trained_by_other_code_are_named_in_the_report():
  folds = [dict(fold=0, code=["abc, jax 0.10.2"]), dict(fold=1, code=["abc, jax 0.10.2"])]
  assert crossval.code_line(folds) == "code: abc, jax 0.10.2"
  folds.append(dict(fold=2, code=["def, jax 0.10.2"]))
  assert crossval.code_line(folds) == (
    "WARNING code differs: fold 0, fold 1: abc, jax 0.10.2; fold 2: def, jax 0.10.2")
