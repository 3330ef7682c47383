"""Builds `hha300/features` from `dummy_data/` and reads it back, without TensorFlow.

A plain pytest test: TFDS's `DatasetBuilderTestCase` imports TensorFlow. What it would
check (split sizes, decodable examples) is checked here against the files themselves.
"""

import csv
import dataclasses
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hhjax.data import hha300
from hhjax.data import layout

HERE = pathlib.Path(__file__).resolve().parent
DUMMY = HERE / "dummy_data"

CLASS_NAMES = [
    "background",
    "step1_palm_to_palm",
    "step2_palm_over_dorsum",
    "step3_fingers_interlaced",
    "step4_backs_of_fingers",
    "step5_thumbs",
    "step6_fingertips",
]
SPLIT_SIZES = {"train": 3, "test": 2}


def _expected(video: str) -> dict:
  """The example for `video`, straight from dummy_data's files."""
  features = np.load(DUMMY / "features" / f"{video}.npy").T
  names = (DUMMY / "groundTruth" / f"{video}.txt").read_text().split()
  with open(DUMMY / "scores.csv", newline="") as f:
    row = next(r for r in csv.DictReader(f) if r["video"] == video)
  return {
      "features": features,
      "labels": np.array([CLASS_NAMES.index(n) for n in names], np.int32),
      "score": float(row["score"]),
      "attributes": np.array([["NE", "EN", "ES"].index(row[f"step{k}"])
                              for k in range(1, 7)], np.int32),
      "step_scores": np.array([float(row[f"step{k}_score"]) for k in range(1, 7)],
                              np.float32),
  }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("tfds")
  hha300.build("features", data_dir=str(path), manual_dir=str(DUMMY))
  return path


def test_split_sizes_and_info(data_dir):
  builder = tfds.builder("hha300/features", data_dir=str(data_dir))
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == SPLIT_SIZES
  assert builder.info.metadata["class_names"] == CLASS_NAMES
  assert builder.info.metadata["attribute_names"] == ["NE", "EN", "ES"]
  assert builder.info.metadata["feature_dim"] == 16


def test_examples_match_dummy_data(data_dir):
  sources = tfds.data_source("hha300/features", data_dir=str(data_dir))
  for split, size in SPLIT_SIZES.items():
    source = sources[split]
    assert len(source) == size
    seen = set()
    for i in range(size):
      example = source[i]
      video = example["video"].decode()
      seen.add(video)
      want = _expected(video)
      num_frames = want["labels"].shape[0]
      assert example["features"].dtype == np.float32
      assert example["features"].shape == (num_frames, 16)
      np.testing.assert_array_equal(example["features"], want["features"])
      assert example["labels"].dtype == np.int32
      np.testing.assert_array_equal(example["labels"], want["labels"])
      assert example["num_frames"] == num_frames
      assert example["score"] == pytest.approx(want["score"], abs=1e-6)
      np.testing.assert_array_equal(example["attributes"], want["attributes"])
      np.testing.assert_allclose(example["step_scores"], want["step_scores"], atol=1e-6)
    assert seen == set(layout.read_split(DUMMY, split))


def test_reads_back_without_the_builder_class(data_dir):
  builder = tfds.builder_from_directory(
      str(data_dir / "hha300" / "features" / "1.0.0"))
  assert builder.info.metadata["class_names"] == CLASS_NAMES
  example = builder.as_data_source(split="test")[0]
  assert example["features"].shape[1] == 16


def test_load_source_reuses_the_build(data_dir):
  source = hha300.load_source("features", "train", data_dir=str(data_dir))
  assert len(source) == SPLIT_SIZES["train"]


def test_no_tensorflow_was_imported(data_dir):
  del data_dir   # the build and reads above must not have pulled TensorFlow in
  assert "tensorflow" not in sys.modules


def test_synthetic_config_goes_through_the_same_reader(tmp_path, monkeypatch):
  synthetic = pytest.importorskip("hhjax.data.synthetic")
  tiny = dataclasses.replace(
      synthetic.PRESETS["synthetic_small"], num_train=3, num_test=2, num_people=4,
      feature_dim=8, min_len=30, mean_len=40.0, max_len=50, std_len=5.0)
  monkeypatch.setitem(synthetic.PRESETS, "synthetic_small", tiny)
  builder = tfds.builder("hha300/synthetic_small", data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == SPLIT_SIZES
  assert builder.info.metadata["feature_dim"] == 8
  example = tfds.data_source("hha300/synthetic_small", data_dir=str(tmp_path))["test"][0]
  assert example["features"].shape == (example["num_frames"], 8)
  assert example["labels"].max() < len(CLASS_NAMES)
  # The generated layout is scratch: nothing of it is left in the download folder.
  leftovers = list((tmp_path / "downloads").glob("hha300_*"))
  assert not leftovers


def test_manual_dir_is_rejected_for_synthetic_configs(tmp_path):
  with pytest.raises(ValueError, match="manual_dir applies only"):
    hha300.build("synthetic_small", data_dir=str(tmp_path), manual_dir=str(DUMMY))


def test_unknown_config_is_named(tmp_path):
  with pytest.raises(ValueError, match="'nope'"):
    hha300.build("nope", data_dir=str(tmp_path))


def test_missing_manual_dir_is_a_layout_error(tmp_path):
  with pytest.raises(layout.LayoutError, match="does not exist"):
    hha300.build("features", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nope"))


def test_bad_manual_dir_fails_before_writing(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "mapping.txt").write_text("0 background\n1 step1_palm_to_palm\n")
  with pytest.raises(layout.LayoutError) as raised:
    hha300.build("features", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  message = str(raised.value)
  for missing in ("scores.csv", "train.bundle", "test.bundle", "features",
                  "groundTruth"):
    assert missing in message
  assert "lists 2 classes, expected 7" in message
  assert not list((tmp_path / "tfds").glob("hha300/features/1.0.0/*.array_record*"))


def test_config_validates_its_arguments():
  with pytest.raises(ValueError, match="source"):
    hha300.Hha300Config(name="x", source="web")
  with pytest.raises(ValueError, match="preset"):
    hha300.Hha300Config(name="x", source="synthetic")
  with pytest.raises(ValueError, match="preset"):
    hha300.Hha300Config(name="x", source="manual", preset="synthetic")


def test_folder_entry_point_is_the_same_builder():
  # What `tfds build datasets/hha300` does to find the builder, minus TensorFlow.
  from tensorflow_datasets.core import community
  from tensorflow_datasets.core import utils
  module = "hha300.hha300_dataset_builder"
  try:
    with utils.add_sys_path(HERE.parent):
      builder_cls = community.builder_cls_from_module(module)
  finally:   # leave no top-level `hha300` module behind for other tests
    for name in (module, "hha300"):
      sys.modules.pop(name, None)
  assert issubclass(builder_cls, hha300.Hha300)
  assert builder_cls.name == "hha300"
  assert tfds.builder_cls("hha300") is hha300.Hha300
