"""Tests for `hhjax.data.layout`: every bad input is named, a valid folder round-trips.

Also checks that the repository's `datasets/` folder (TFDS builders) cannot shadow the
HuggingFace `datasets` package.
"""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hhjax.data import layout

REPO = pathlib.Path(__file__).resolve().parent.parent
CLASS_NAMES = ("background", "step1_palm_to_palm", "step2_palm_over_dorsum",
               "step3_fingers_interlaced", "step4_backs_of_fingers", "step5_thumbs",
               "step6_fingertips")
D = 4
LENGTHS = {"vid_a": 12, "vid_b": 9, "vid_c": 7}
SPLITS = {"train": ("vid_a", "vid_b"), "test": ("vid_c",)}
HEADER = "video,score,step1,step2,step3,step4,step5,step6"
ROWS = {
    "vid_a": "vid_a,4.5,ES,ES,EN,ES,NE,EN",
    "vid_b": "vid_b,3.25,EN,EN,EN,EN,EN,EN",
    "vid_c": "vid_c,0.5,NE,NE,NE,NE,NE,ES",
}


def _labels(video: str) -> np.ndarray:
  return np.arange(LENGTHS[video], dtype=np.int32) % len(CLASS_NAMES)


def _features(video: str) -> np.ndarray:
  """(D, T), as on disk; each value encodes its (dim, frame) position."""
  t = LENGTHS[video]
  return (np.arange(D)[:, None] * 100 + np.arange(t)[None, :]).astype(np.float32)


def _write_valid(root: pathlib.Path) -> pathlib.Path:
  """A small valid manual directory."""
  for sub in ("features", "groundTruth", "splits"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  (root / "mapping.txt").write_text(
      "".join(f"{i} {n}\n" for i, n in enumerate(CLASS_NAMES)))
  for video in LENGTHS:
    np.save(root / "features" / f"{video}.npy", _features(video))
    (root / "groundTruth" / f"{video}.txt").write_text(
        "".join(CLASS_NAMES[c] + "\n" for c in _labels(video)))
  for split, videos in SPLITS.items():
    (root / "splits" / f"{split}.bundle").write_text("".join(v + "\n" for v in videos))
  (root / "scores.csv").write_text(HEADER + "\n" + "\n".join(ROWS.values()) + "\n")
  return root


@pytest.fixture
def root(tmp_path) -> pathlib.Path:
  return _write_valid(tmp_path / "manual")


def _error(root, **kwargs) -> str:
  with pytest.raises(layout.LayoutError) as raised:
    layout.validate_manual_dir(root, **kwargs)
  return str(raised.value)


# --- valid input ----------------------------------------------------------------------

def test_valid_layout_round_trips(root):
  summary = layout.validate_manual_dir(root, num_classes=7)
  assert summary.class_names == CLASS_NAMES
  assert summary.splits == SPLITS
  assert summary.feature_dim == D
  assert summary.num_frames == LENGTHS
  for split, videos in SPLITS.items():
    examples = list(layout.iter_examples(root, split))
    assert [key for key, _ in examples] == list(videos)
    for video, ex in examples:
      assert ex["video"] == video
      assert ex["features"].dtype == np.float32
      np.testing.assert_array_equal(ex["features"], _features(video).T)   # (T, D)
      assert ex["labels"].dtype == np.int32
      np.testing.assert_array_equal(ex["labels"], _labels(video))
      assert ex["num_frames"] == LENGTHS[video] and ex["num_frames"].dtype == np.int32
      assert ex["score"].dtype == np.float32
      assert ex["score"] == pytest.approx(float(ROWS[video].split(",")[1]))
      codes = ROWS[video].split(",")[2:]
      np.testing.assert_array_equal(ex["attributes"],
                                    [("NE", "EN", "ES").index(c) for c in codes])
      assert ex["attributes"].dtype == np.int32
      # No step score columns: every step score is "unknown".
      np.testing.assert_array_equal(ex["step_scores"], np.full(6, -1, np.float32))
      assert ex["step_scores"].dtype == np.float32


def test_step_score_columns_and_txt_suffix_in_bundles(root):
  (root / "splits" / "train.bundle").write_text("vid_a.txt\n\nvid_b.txt\n")
  cols = ",".join(f"step{k}_score" for k in range(1, 7))
  (root / "scores.csv").write_text(
      f"{HEADER},{cols}\n"
      f"{ROWS['vid_a']},0.9,0.8,0.4,0.95,0,0.3\n"
      f"{ROWS['vid_b']},0.5,0.5,0.5,,0.5,0.5\n"
      f"{ROWS['vid_c']},0,0,0,0,0,0.5\n")
  examples = dict(layout.iter_examples(root, "train"))
  assert list(examples) == ["vid_a", "vid_b"]
  np.testing.assert_allclose(examples["vid_a"]["step_scores"],
                             [0.9, 0.8, 0.4, 0.95, 0, 0.3])
  np.testing.assert_allclose(examples["vid_b"]["step_scores"],
                             [0.5, 0.5, 0.5, -1, 0.5, 0.5])   # empty cell = unknown


def test_read_mapping_orders_by_index(tmp_path):
  path = tmp_path / "mapping.txt"
  path.write_text("1 step\n0 background\n\n2 other step name\n")
  assert list(layout.read_mapping(path).items()) == [
      ("background", 0), ("step", 1), ("other step name", 2)]


def test_load_video(root):
  class_index = layout.read_mapping(root / "mapping.txt")
  ex = layout.load_video(root, "vid_b", class_index)
  assert set(ex) == {"video", "features", "labels", "num_frames"}
  assert ex["features"].shape == (LENGTHS["vid_b"], D)


# --- missing things -------------------------------------------------------------------

def test_missing_manual_dir(tmp_path):
  message = _error(tmp_path / "nowhere")
  assert "nowhere" in message and "does not exist" in message


def test_missing_files_are_all_listed(root):
  (root / "scores.csv").unlink()
  (root / "splits" / "test.bundle").unlink()
  (root / "features" / "vid_a.npy").unlink()
  (root / "groundTruth" / "vid_b.txt").unlink()
  message = _error(root)
  assert "4 problems" in message
  assert f"{root / 'scores.csv'}: file not found" in message
  assert f"{root / 'splits' / 'test.bundle'}: file not found" in message
  assert f"{root / 'features' / 'vid_a.npy'}: file not found (video 'vid_a')" in message
  assert (f"{root / 'groundTruth' / 'vid_b.txt'}: file not found (video 'vid_b')"
          in message)


def test_missing_directories_are_named_once(root):
  for path in (root / "features").iterdir():
    path.unlink()
  (root / "features").rmdir()
  (root / "mapping.txt").unlink()
  message = _error(root)
  assert f"{root / 'features'}: directory not found" in message
  assert f"{root / 'mapping.txt'}: file not found" in message
  assert "vid_a.npy" not in message   # not repeated per video


def test_iter_examples_checks_before_yielding(root):
  (root / "features" / "vid_b.npy").unlink()
  examples = layout.iter_examples(root, "train")
  with pytest.raises(layout.LayoutError, match="vid_b.npy: file not found"):
    next(examples)   # fails before vid_a is yielded


# --- bad videos -----------------------------------------------------------------------

def test_length_mismatch_names_video_and_both_lengths(root):
  np.save(root / "features" / "vid_a.npy", np.zeros((D, 10), np.float32))
  message = _error(root)
  assert "video 'vid_a'" in message
  assert "groundTruth/vid_a.txt has 12 frames" in message
  assert "features/vid_a.npy has 10" in message


def test_unknown_class_names_file_and_lines(root):
  lines = [CLASS_NAMES[c] for c in _labels("vid_b")]
  lines[2] = lines[6] = "step7_elbows"
  lines[4] = "Background"
  (root / "groundTruth" / "vid_b.txt").write_text("\n".join(lines) + "\n")
  message = _error(root)
  gt = root / "groundTruth" / "vid_b.txt"
  assert f"{gt}: unknown class 'step7_elbows' at lines 3, 7" in message
  assert f"{gt}: unknown class 'Background' at line 5" in message


def test_nan_and_inf_name_video_and_first_bad_frame(root):
  features = _features("vid_c")
  features[2, 4] = np.nan
  features[0, 6] = np.inf
  np.save(root / "features" / "vid_c.npy", features)
  message = _error(root)
  assert f"{root / 'features' / 'vid_c.npy'}: NaN or inf in 2 frame(s)" in message
  assert "first at frame 4" in message
  # Only the header is read without the value check...
  layout.validate_manual_dir(root, check_values=False)
  # ...and then the video fails as it is loaded.
  with pytest.raises(layout.LayoutError, match=r"vid_c\.npy: NaN or inf"):
    list(layout.iter_examples(root, "test"))


def test_float64_overflowing_float32_counts_as_inf(root):
  features = _features("vid_c").astype(np.float64)
  features[1, 3] = 1e300
  np.save(root / "features" / "vid_c.npy", features)
  assert "first at frame 3" in _error(root)


@pytest.mark.parametrize("shape", [(D,), (D, 12, 1)])
def test_feature_file_with_wrong_ndim(root, shape):
  np.save(root / "features" / "vid_a.npy", np.zeros(shape, np.float32))
  message = _error(root)
  assert f"{root / 'features' / 'vid_a.npy'}: expected a 2-D (D, T) array" in message
  assert f"ndim {len(shape)}" in message


def test_unreadable_feature_file(root):
  (root / "features" / "vid_a.npy").write_bytes(b"not an npy file")
  assert f"{root / 'features' / 'vid_a.npy'}: cannot be read" in _error(root)


def test_feature_dims_must_agree(root):
  np.save(root / "features" / "vid_c.npy", np.zeros((D + 1, 7), np.float32))
  message = _error(root)
  assert "most have D=4" in message and "features/vid_c.npy has D=5" in message


# --- bad scores.csv -------------------------------------------------------------------

def test_malformed_score_rows_are_all_reported(root):
  (root / "scores.csv").write_text(
      HEADER + "\n"
      + ROWS["vid_a"] + "\n"
      + "vid_b,3.25,EN,EN,EN,EN,EN\n"        # line 3: 7 columns
      + "vid_c,high,NE,NE,NE,NE,NE,ES\n"     # line 4: score not a number
      + "vid_d,1.0,NE,XX,NE,NE,es,ES\n"      # line 5: two bad attributes
      + "vid_e,nan,NE,NE,NE,NE,NE,ES\n")     # line 6: score not finite
  path = root / "scores.csv"
  message = _error(root)
  assert f"{path}:3: expected 8 columns" in message and "got 7" in message
  assert f"{path}:4: score 'high' is not a number" in message
  assert f"{path}:5: step2 is 'XX', expected one of NE, EN, ES" in message
  assert "step5 is 'es'" in message
  assert f"{path}:6: score 'nan' is not finite" in message
  # Videos named by bad rows are not also reported as missing from scores.csv.
  assert "no row for" not in message


def test_duplicate_video_in_scores(root):
  (root / "scores.csv").write_text(
      HEADER + "\n" + "\n".join(ROWS.values()) + "\n" + ROWS["vid_b"] + "\n")
  message = _error(root)
  assert f"{root / 'scores.csv'}:5: video 'vid_b' repeats (first at line 3)" in message


def test_split_video_without_scores(root):
  (root / "scores.csv").write_text(HEADER + "\n" + ROWS["vid_a"] + "\n")
  message = _error(root)
  assert "scores.csv: no row for 1 video(s)" in message and "vid_b" in message
  assert "test.bundle: vid_c" in message


def test_scores_without_rows(root):
  (root / "scores.csv").write_text(HEADER + "\n")
  message = _error(root)
  assert "scores.csv: no row for 2 video(s)" in message
  assert "no row for 1 video(s)" in message


def test_bad_header(root):
  (root / "scores.csv").write_text("video,score,step1,step2,step3,step4,step6,"
                                   "step1_score,extra\n")
  message = _error(root)
  assert "header lacks column(s) ['step5']" in message
  assert "unknown column(s) ['extra']" in message
  assert "all six or none" in message


def test_bad_step_score(root):
  cols = ",".join(f"step{k}_score" for k in range(1, 7))
  (root / "scores.csv").write_text(
      f"{HEADER},{cols}\n" + ROWS["vid_a"] + ",1,1,1,1,1,x\n")
  assert "scores.csv:2: step6_score 'x' is not a number" in _error(root)


def test_scores_outside_the_range_name_file_line_and_video(root):
  cols = ",".join(f"step{k}_score" for k in range(1, 7))
  (root / "scores.csv").write_text(
      f"{HEADER},{cols}\n"
      + ROWS["vid_a"] + ",1,1,1,1,1,1\n"                       # line 2: in range
      + "vid_b,6.5,EN,EN,EN,EN,EN,EN,1,1,1,1,1,1\n"           # line 3: score > 6
      + "vid_c,-0.5,NE,NE,NE,NE,NE,ES,0,0,0,0,0,1.25\n")      # line 4: both low/high
  path = root / "scores.csv"
  message = _error(root, score_range=(0.0, 6.0))
  assert f"{path}:3: video 'vid_b' has score 6.5, outside the score range [0, 6]" \
      in message
  assert f"{path}:4: video 'vid_c' has score -0.5" in message
  assert "video 'vid_c' has step6_score 1.25, outside the step score range [0, 1]" \
      in message
  assert f"{path}:2:" not in message
  # Without a range nothing is checked; a wider range accepts every row.
  layout.validate_manual_dir(root)
  rows = layout.read_scores(path, score_range=(-6.0, 12.0))
  assert rows["vid_b"].score == 6.5 and rows["vid_c"].step_scores[5] == 1.25


# --- bad mapping and bundles ----------------------------------------------------------

def test_bad_mapping(root):
  (root / "mapping.txt").write_text("0 background\nx step\n0 again\n3 step3\n")
  message = _error(root)
  path = root / "mapping.txt"
  assert f"{path}:2: class index 'x' is not an integer" in message
  assert f"{path}:3: class index 0 repeats (first at line 1)" in message
  assert "missing [1, 2]" in message


def test_num_classes_is_checked(root):
  assert "lists 7 classes, expected 5" in _error(root, num_classes=5)


def test_bundle_problems(root):
  (root / "splits" / "train.bundle").write_text("vid_a\nvid_a.txt\n")
  (root / "splits" / "test.bundle").write_text("vid_c\nvid_a\n")
  message = _error(root)
  assert "train.bundle:2: video 'vid_a' repeats (first at line 1)" in message
  assert "video 'vid_a' is in both" in message


# --- the repository does not shadow HuggingFace `datasets` ----------------------------

def test_repo_has_no_datasets_package():
  assert not (REPO / "datasets" / "__init__.py").exists()
  assert not (REPO / "datasets" / "hha300" / "__init__.py").exists()


def _fake_datasets_package(tmp_path) -> pathlib.Path:
  """A folder holding a top-level package `datasets` that stands in for HuggingFace's."""
  fake_site = tmp_path / "site"
  (fake_site / "datasets").mkdir(parents=True)
  (fake_site / "datasets" / "__init__.py").write_text('MARKER = "fake-hf-datasets"\n')
  return fake_site


def test_import_datasets_is_not_shadowed(tmp_path):
  fake_site = _fake_datasets_package(tmp_path)
  # The repository root comes first, as it does when running from a checkout: a
  # `datasets/__init__.py` there would win over the real package and fail this test.
  code = textwrap.dedent(f"""
      import sys
      sys.path[:0] = [{str(REPO)!r}, {str(fake_site)!r}]
      import hhjax
      import hhjax.data.hha300
      loaded = sys.modules.get("datasets")
      assert loaded is None or getattr(loaded, "MARKER", None), loaded
      import datasets
      assert getattr(datasets, "MARKER", None) == "fake-hf-datasets", datasets
      assert hhjax.__file__.startswith({str(REPO)!r}), hhjax.__file__
      assert "tensorflow" not in sys.modules
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("ok")


def test_pytest_collection_does_not_shadow_datasets(tmp_path):
  # pytest's importlib mode names the builder test `datasets.hha300.<module>` and
  # imports (or, failing that, makes up) the parent `datasets`: it must find the real
  # package, not the repository folder.
  fake_site = _fake_datasets_package(tmp_path)
  code = textwrap.dedent(f"""
      import sys
      sys.path[:0] = [{str(REPO)!r}, {str(fake_site)!r}]
      import pytest
      rc = pytest.main(["-q", "-p", "no:cacheprovider",
                        "datasets/hha300/hha300_dataset_builder_test.py",
                        "-k", "config_validates_its_arguments"])
      import datasets
      assert getattr(datasets, "MARKER", None) == "fake-hf-datasets", datasets
      print("ok")
      sys.exit(int(rc))
  """)
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  assert "ok" in result.stdout
