"""The `action_segmentation` builder: MS-TCN-layout folders (GTEA, 50Salads, Breakfast).

Each test writes a tiny data set in the MS-TCN release layout (no scores.csv, bundle
lines with the ".txt" suffix, (D, T) features, "background" as the last class as in
GTEA), builds it and compares what comes back with the files themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hhjax.data import hha300
from hhjax.data import layout
from hhjax.data import splits

REPO = pathlib.Path(__file__).resolve().parents[1]
AS = hha300.ACTION_SEGMENTATION
CLASS_NAMES = ("take", "open", "pour", "close", "background")
D = 16
# Four videos; odd lengths, so a frame stride of 2 leaves a remainder.
LENGTHS = {"S1_Tea_C1": 13, "S1_Cheese_C1": 10, "S2_Tea_C1": 7, "S2_Cheese_C1": 9}
TWO_FOLDS = (("S1_Tea_C1", "S1_Cheese_C1"), ("S2_Tea_C1", "S2_Cheese_C1"))
FOUR_FOLDS = tuple((v,) for v in LENGTHS)


def _label_names(video: str) -> list[str]:
  """A few runs of classes per video, all five classes used somewhere."""
  offset = list(LENGTHS).index(video)
  return [CLASS_NAMES[(t // 3 + offset) % len(CLASS_NAMES)]
          for t in range(LENGTHS[video])]


def _features(video: str) -> np.ndarray:
  """(D, T) as on disk; each value encodes (video, dim, frame)."""
  index = list(LENGTHS).index(video)
  t = LENGTHS[video]
  return (index * 10000 + np.arange(D)[:, None] * 100
          + np.arange(t)[None, :]).astype(np.float32)


def _write_mstcn(root: pathlib.Path, folds=TWO_FOLDS) -> pathlib.Path:
  """A folder laid out like a data set of the MS-TCN release.

  Test split k holds fold k; train split k every other fold, as in the release.
  """
  for sub in ("features", "groundTruth", "splits"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  (root / "mapping.txt").write_text(
      "".join(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES)))
  for video in LENGTHS:
    np.save(root / "features" / f"{video}.npy", _features(video))
    (root / "groundTruth" / f"{video}.txt").write_text(
        "".join(name + "\n" for name in _label_names(video)))
  for k, fold in enumerate(folds, start=1):
    rest = [v for other in folds if other is not fold for v in other]
    (root / "splits" / f"test.split{k}.bundle").write_text(
        "".join(f"{v}.txt\n" for v in fold))
    (root / "splits" / f"train.split{k}.bundle").write_text(
        "".join(f"{v}.txt\n" for v in rest))
  return root


def _expected_labels(video: str) -> np.ndarray:
  return np.array([CLASS_NAMES.index(n) for n in _label_names(video)], np.int32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(manual dir, data dir) of `action_segmentation/mstcn_format`, built once."""
  root = _write_mstcn(tmp_path_factory.mktemp("mstcn") / "gtea_like")
  data_dir = tmp_path_factory.mktemp("tfds")
  hha300.build("mstcn_format", str(data_dir), str(root), dataset=AS)
  return root, data_dir


def _read_all(source) -> dict[str, dict]:
  return {source[i]["video"].decode(): source[i] for i in range(len(source))}


# --- building and reading back ---------------------------------------------------------

def test_examples_match_the_files(built):
  root, data_dir = built
  for split in ("train_split1", "test_split1", "train_split2", "test_split2"):
    source = hha300.load_source("mstcn_format", split, str(data_dir), dataset=AS)
    bundle = split.replace("_", ".")
    examples = _read_all(source)
    assert sorted(examples) == sorted(layout.read_split(root, bundle))
    for video, ex in examples.items():
      want = _features(video).T                                   # (T, D)
      assert ex["features"].dtype == np.float32
      np.testing.assert_array_equal(ex["features"], want)
      np.testing.assert_array_equal(ex["labels"], _expected_labels(video))
      assert ex["num_frames"] == LENGTHS[video]
      # No scores in the MS-TCN layout: the HHA300 keys hold "nothing known".
      assert ex["score"] == 0.0
      np.testing.assert_array_equal(ex["attributes"], np.zeros(6, np.int32))
      np.testing.assert_array_equal(ex["step_scores"], np.full(6, -1.0, np.float32))


def test_metadata(built):
  _, data_dir = built
  builder = tfds.builder(f"{AS}/mstcn_format", data_dir=str(data_dir))
  meta = builder.info.metadata
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert meta["class_names"] == list(CLASS_NAMES)
  assert meta["feature_dim"] == D
  assert meta["has_scores"] is False
  # GTEA's "background" is its last class; MS-TCN's evaluation leaves it out by name.
  assert meta["background_classes"] == [4]
  assert meta["bundles"]["train.split1"] == "train_split1"


def test_each_video_is_stored_once(built):
  _, data_dir = built
  builder = tfds.builder(f"{AS}/mstcn_format", data_dir=str(data_dir))
  sizes = {name: s.num_examples for name, s in builder.info.splits.items()}
  assert sizes == {"test_split1": 2, "test_split2": 2}
  expressions = builder.info.metadata["split_expressions"]
  assert expressions["train_split1"] == "test_split2"
  assert expressions["train_split2"] == "test_split1"
  assert hha300.resolve_split(builder, "train.split1") == "test_split2"
  with pytest.raises(ValueError, match="no split 'val_split1'.*train_split1"):
    hha300.resolve_split(builder, "val_split1")


def test_known_config_serves_train_splits_as_sums(tmp_path):
  root = _write_mstcn(tmp_path / "gtea", folds=FOUR_FOLDS)
  data_dir = str(tmp_path / "tfds")
  builder = hha300.build("gtea", data_dir, str(root), dataset=AS)
  assert sorted(builder.info.splits) == [f"test_split{k}" for k in range(1, 5)]
  assert builder.info.metadata["split_expressions"]["train_split1"] == \
      "test_split2+test_split3+test_split4"
  assert builder.info.metadata["sample_rate"] == 1
  train = _read_all(hha300.load_source("gtea", "train_split1", data_dir, dataset=AS))
  assert sorted(train) == sorted(list(LENGTHS)[1:])
  for video, ex in train.items():
    np.testing.assert_array_equal(ex["features"], _features(video).T)


def test_named_config_needs_all_its_bundles(tmp_path):
  root = _write_mstcn(tmp_path / "two_splits")
  with pytest.raises(layout.LayoutError) as raised:
    hha300.build("gtea", str(tmp_path / "tfds"), str(root), dataset=AS)
  message = str(raised.value)
  for k in (3, 4):
    assert f"train.split{k}.bundle: file not found" in message
    assert f"test.split{k}.bundle: file not found" in message
  assert "split1" not in message


def test_missing_files_are_named(tmp_path):
  root = _write_mstcn(tmp_path / "manual")
  (root / "features" / "S2_Tea_C1.npy").unlink()
  (root / "groundTruth" / "S1_Cheese_C1.txt").unlink()
  with pytest.raises(layout.LayoutError) as raised:
    hha300.build("mstcn_format", str(tmp_path / "tfds"), str(root), dataset=AS)
  message = str(raised.value)
  assert f"{root / 'features' / 'S2_Tea_C1.npy'}: file not found" in message
  assert f"{root / 'groundTruth' / 'S1_Cheese_C1.txt'}: file not found" in message
  assert "scores.csv" not in message   # not required for these data sets
  assert not list((tmp_path / "tfds").glob(f"{AS}/*/*/*.array_record*"))


def test_train_and_test_of_one_split_must_not_overlap(tmp_path):
  root = _write_mstcn(tmp_path / "manual")
  # Leak a test video of split 1 into its training bundle (in split 2's train it is
  # fine: there it is a training video).
  with (root / "splits" / "train.split1.bundle").open("a") as f:
    f.write("S1_Tea_C1.txt\n")
  with pytest.raises(layout.LayoutError, match=r"'S1_Tea_C1' is in both .*split1"):
    hha300.build("mstcn_format", str(tmp_path / "tfds"), str(root), dataset=AS)


def test_scores_csv_stays_required_for_hha300(tmp_path):
  root = _write_mstcn(tmp_path / "manual")
  bundles = layout.list_splits(root)
  summary = layout.validate_manual_dir(root, bundles, require_scores=False)
  assert summary.has_scores is False and summary.class_names == CLASS_NAMES
  with pytest.raises(layout.LayoutError, match="scores.csv: file not found"):
    layout.validate_manual_dir(root, bundles)


def test_builds_are_keyed_by_their_inputs(tmp_path):
  root = _write_mstcn(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  assert hha300.ensure_built("mstcn_format", data_dir, str(root),
                             dataset=AS).action == "built"
  assert hha300.ensure_built("mstcn_format", data_dir, str(root),
                             dataset=AS).action == "reused"
  names = _label_names("S2_Tea_C1")
  names[0] = "pour" if names[0] != "pour" else "take"
  (root / "groundTruth" / "S2_Tea_C1.txt").write_text("".join(n + "\n" for n in names))
  with pytest.raises(hha300.StaleBuildError) as raised:
    hha300.ensure_built("mstcn_format", data_dir, str(root), dataset=AS,
                        on_change="error")
  assert f"{AS}/mstcn_format" in str(raised.value)
  assert "groundTruth/S2_Tea_C1.txt modified" in str(raised.value)
  result = hha300.ensure_built("mstcn_format", data_dir, str(root), dataset=AS)
  assert result.action == "rebuilt"
  source = hha300.load_source("mstcn_format", "test_split2", data_dir, dataset=AS)
  labels = _read_all(source)["S2_Tea_C1"]["labels"]
  assert CLASS_NAMES[labels[0]] == names[0]


# --- split planning and cross-validation -----------------------------------------------

def test_plan_splits_stores_only_what_is_not_a_union():
  bundles = {
      "test.split1": ("a", "b"), "test.split2": ("c",), "test.split3": ("d", "e"),
      "train.split1": ("c", "d", "e"),           # = test.split2 + test.split3
      "train.split2": ("e", "d", "b", "a"),      # = test.split1 + test.split3
      "extra": ("a", "c", "f"),                  # f is in no stored bundle
      "partial": ("a", "c"),                     # cuts through test.split1
  }
  plan = hha300.plan_splits(bundles)
  assert set(plan.stored) == {"test_split1", "test_split2", "test_split3", "extra",
                              "partial"}
  assert plan.expressions["train_split1"] == "test_split2+test_split3"
  assert plan.expressions["train_split2"] == "test_split1+test_split3"
  assert plan.stored["extra"] == "extra"
  for name in plan.stored:
    assert plan.expressions[name] == name


def test_plan_splits_names_clashing_bundles(tmp_path):
  with pytest.raises(layout.LayoutError) as raised:
    hha300.plan_splits({"train.a": ("x",), "train_a": ("y",)}, tmp_path)
  message = str(raised.value)
  assert str(tmp_path / "splits" / "train.a.bundle") in message
  assert str(tmp_path / "splits" / "train_a.bundle") in message
  assert "'train_a'" in message


def test_cv_splits(tmp_path):
  counts = {"gtea": 4, "50salads": 5, "breakfast": 4}
  for name, count in counts.items():
    pairs = hha300.cv_splits(name)
    assert pairs == [(f"train_split{k}", f"test_split{k}") for k in range(1, count + 1)]
  root = _write_mstcn(tmp_path / "manual")
  for k in (10, 3):   # listed in number order, not text order
    for part in ("train", "test"):
      (root / "splits" / f"{part}.split{k}.bundle").write_text("S1_Tea_C1.txt\n")
  (root / "splits" / "train.orphan.bundle").write_text("S1_Tea_C1.txt\n")
  assert hha300.cv_splits("mstcn_format", root) == [
      (f"train_split{k}", f"test_split{k}") for k in (1, 2, 3, 10)]
  with pytest.raises(ValueError, match="needs the manual directory"):
    hha300.cv_splits("mstcn_format")
  with pytest.raises(ValueError, match="'ucf101'"):
    hha300.cv_splits("ucf101")


def test_named_configs_record_the_releases_facts():
  facts = {c.name: (c.num_classes, c.num_splits, c.sample_rate)
           for c in hha300.ActionSegmentation.BUILDER_CONFIGS}
  assert facts == {"gtea": (11, 4, 1), "50salads": (19, 5, 2), "breakfast": (48, 4, 1),
                   "mstcn_format": (None, None, 1)}


# --- configs and training --------------------------------------------------------------

def _load_config(name: str, *args):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


@pytest.mark.parametrize("name, classes, stride, steps", [
    ("mstcn_gtea", 11, 1, 50 * 21), ("mstcn_50salads", 19, 2, 50 * 40),
    ("mstcn_breakfast", 48, 1, 50 * 1284)])
def test_configs(name, classes, stride, steps):
  config = _load_config(name)
  assert config.dataset.name == AS
  assert config.model.num_classes == classes
  assert config.dataset.frame_stride == stride
  assert (config.dataset.train_split, config.dataset.eval_split) == \
      ("train_split1", "test_split1")
  assert config.loss.score_weight == 0.0
  assert (config.learning_rate, config.batch_size, config.num_train_steps) == \
      (5e-4, 1, steps)
  split3 = _load_config(name, "3")
  assert (split3.dataset.train_split, split3.dataset.eval_split) == \
      ("train_split3", "test_split3")
  with pytest.raises(ValueError, match="has splits 1.."):
    _load_config(name, "9")


def _tiny(config, root: pathlib.Path, data_dir: pathlib.Path):
  """configs/tiny.py's model and run length on the test folder."""
  config.dataset.config = "mstcn_format"
  config.dataset.manual_dir = str(root)
  config.dataset.data_dir = str(data_dir)
  config.dataset.bucket_size = 32
  config.dataset.num_threads = 1
  config.model.num_classes = len(CLASS_NAMES)
  config.model.num_stages = 2
  config.model.num_layers = 3
  config.model.channels = 8
  config.model.num_heads = 2
  config.batch_size = 4   # the test session's 4 host devices (conftest.py)
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.progress_bar = False
  return config


def test_load_split_dispatches_on_the_dataset_name(built, tmp_path):
  root, data_dir = built
  config = _tiny(_load_config("mstcn_50salads"), root, data_dir)
  data = splits.load_split(config, "train_split2")
  assert sorted(data.names) == ["S1_Cheese_C1", "S1_Tea_C1"]
  assert data.class_names == CLASS_NAMES
  assert data.background_classes == (4,)
  assert data.has_scores is False
  assert data.raw_feature_dim == D
  for name, labels in zip(data.names, data.labels):
    np.testing.assert_array_equal(labels, _expected_labels(name))
  config.dataset.name = "ucf101"
  with pytest.raises(ValueError) as raised:
    splits.load_split(config, "train_split1")
  assert "'ucf101'" in str(raised.value)
  assert "'hha300'" in str(raised.value) and f"'{AS}'" in str(raised.value)
  config.dataset.name = AS
  config.model.num_classes = 19
  with pytest.raises(ValueError, match="num_classes=19 but .* has 5 classes"):
    splits.load_split(config, "train_split1")


def test_trains_end_to_end_with_a_frame_stride(built, tmp_path, capsys):
  from hhjax.training import loop   # noqa: PLC0415
  root, data_dir = built
  config = _tiny(_load_config("mstcn_50salads"), root, data_dir)
  assert config.dataset.frame_stride == 2
  workdir = tmp_path / "run"
  result = loop.train_and_evaluate(config, workdir)
  for key in ("acc", "edit", "f1@10", "f1@25", "f1@50"):
    assert 0.0 <= result[key] <= 100.0, (key, result[key])
  # Every true score is 0, so their rank correlation is undefined.
  assert math.isnan(result["spearman"])
  # Predictions are scored at the full frame rate: the accuracy is that of the
  # written per-frame predictions against the ground-truth files.
  rows = [json.loads(line) for line in
          (workdir / "predictions.jsonl").read_text().splitlines()]
  assert sorted(r["video"] for r in rows) == ["S1_Cheese_C1", "S1_Tea_C1"]
  correct = total = 0
  for r in rows:
    pred = np.array(r["frame_labels"])
    assert pred.shape == (LENGTHS[r["video"]],)
    correct += int((pred == _expected_labels(r["video"])).sum())
    total += pred.size
  assert result["acc"] == pytest.approx(100.0 * correct / total)
  # The results table shows '-' for the undefined correlation.
  out = capsys.readouterr().out
  header = next(line for line in out.splitlines() if "Sp.Corr" in line)
  row = out.splitlines()[out.splitlines().index(header) + 2]
  column = header.split().index("Sp.Corr") - len(header.split())
  assert row.split()[column] == "-"


def test_folder_entry_point_is_the_same_builder():
  # What `tfds build datasets/action_segmentation` does to find the builder, minus
  # TensorFlow.
  from tensorflow_datasets.core import community   # noqa: PLC0415
  from tensorflow_datasets.core import utils   # noqa: PLC0415
  module = "action_segmentation.action_segmentation_dataset_builder"
  try:
    with utils.add_sys_path(REPO / "datasets"):
      builder_cls = community.builder_cls_from_module(module)
  finally:   # leave no top-level `action_segmentation` module behind
    for name in (module, "action_segmentation"):
      sys.modules.pop(name, None)
  assert issubclass(builder_cls, hha300.ActionSegmentation)
  assert builder_cls.name == AS
  assert tfds.builder_cls(AS) is hha300.ActionSegmentation
