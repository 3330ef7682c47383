"""Tests that `hhjax.data.hha300` keys every prepared build by its inputs.

A prepared copy must be reused only while the manual directory (its path and every file
read) or the synthetic preset and generator version are unchanged; otherwise it is
rebuilt (or `StaleBuildError` is raised), and what is read back comes from the current
inputs. Expected values are read straight from the files with numpy/csv, not through
`hhjax.data.layout`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hhjax.data import build as build_cli
from hhjax.data import hha300
from hhjax.data import layout
from hhjax.data import synthetic

REPO = pathlib.Path(__file__).resolve().parent.parent
DUMMY = REPO / "datasets" / "hha300" / "dummy_data"
SPLIT_SIZES = {"train": 3, "test": 2}


# --- helpers ---------------------------------------------------------------------------

def _copy_dummy(dst: pathlib.Path) -> pathlib.Path:
  """A private copy of the dummy manual directory (3 train + 2 test videos, D = 16)."""
  shutil.copytree(DUMMY, dst)
  return dst


def _class_names(root: pathlib.Path) -> list[str]:
  lines = (root / "mapping.txt").read_text().split("\n")
  pairs = [line.split() for line in lines if line.strip()]
  return [name for _, name in sorted((int(i), name) for i, name in pairs)]


def _score_rows(root: pathlib.Path) -> dict[str, dict]:
  with open(root / "scores.csv", newline="") as f:
    return {row["video"]: row for row in csv.DictReader(f)}


def _expected(root: pathlib.Path, video: str) -> dict:
  """What the example for `video` must hold, read from `root`'s files."""
  names = _class_names(root)
  return {
      "features": np.load(root / "features" / f"{video}.npy").T,   # (T, D)
      "labels": np.array([names.index(n) for n in
                          (root / "groundTruth" / f"{video}.txt").read_text().split()],
                         np.int32),   # (T,)
      "score": float(_score_rows(root)[video]["score"]),
  }


def _read_all(source) -> dict[str, dict]:
  return {ex["video"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def _assert_source_matches(source, root: pathlib.Path, split: str):
  """Every example of `source` equals `root`'s files, and the videos are the bundle's."""
  examples = _read_all(source)
  bundle = [v.removesuffix(".txt")   # MS-TCN bundles may name the groundTruth file
            for v in (root / "splits" / f"{split}.bundle").read_text().split()]
  assert sorted(examples) == sorted(bundle)
  for video, ex in examples.items():
    want = _expected(root, video)
    np.testing.assert_array_equal(ex["features"], want["features"])
    np.testing.assert_array_equal(ex["labels"], want["labels"])
    assert ex["score"] == pytest.approx(want["score"], abs=1e-6)


def _alter(root: pathlib.Path) -> pathlib.Path:
  """Gives every video of `root` other features, labels and scores (same layout)."""
  names = _class_names(root)
  rows = _score_rows(root)
  for k, video in enumerate(sorted(rows)):
    path = root / "features" / f"{video}.npy"
    np.save(path, (np.load(path) * 2.0 + 1.0).astype(np.float32))
    gt = root / "groundTruth" / f"{video}.txt"
    labels = gt.read_text().split()
    frame = k % len(labels)
    labels[frame] = names[6] if labels[frame] != names[6] else names[1]
    gt.write_text("".join(n + "\n" for n in labels))
    rows[video]["score"] = f"{float(rows[video]['score']) + 0.5:.4f}"
  _write_scores(root, rows)
  return root


def _write_scores(root: pathlib.Path, rows: dict[str, dict]):
  fields = list(next(iter(rows.values())))
  with open(root / "scores.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())


def _relabel(root: pathlib.Path, video: str) -> np.ndarray:
  """Rewrites `video`'s groundTruth with other (valid) labels; returns them, (T,)."""
  names = _class_names(root)
  gt = root / "groundTruth" / f"{video}.txt"
  old = [names.index(n) for n in gt.read_text().split()]
  new = np.array([(c % 6) + 1 if i % 3 else 0 for i, c in enumerate(old)], np.int32)
  assert not np.array_equal(new, old)
  gt.write_text("".join(names[c] + "\n" for c in new))
  return new


def _rebuild_lines(text: str) -> list[str]:
  """The "... - rebuilding" lines among stderr (TFDS's progress bars are there too)."""
  return [line for line in text.splitlines() if line.endswith(" - rebuilding")]


def _record_files(builder) -> dict[str, int]:
  """mtime_ns of each ArrayRecord file of a build."""
  folder = pathlib.Path(builder.data_dir)
  files = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.array_record*")}
  assert files
  return files


@pytest.fixture
def tiny_preset(monkeypatch):
  """Replaces `synthetic_small` by a few short, 8-d videos (3 train + 2 test)."""
  tiny = dataclasses.replace(
      synthetic.PRESETS["synthetic_small"], num_train=3, num_test=2, num_people=4,
      feature_dim=8, min_len=30, mean_len=40.0, max_len=50, std_len=5.0)
  monkeypatch.setitem(synthetic.PRESETS, "synthetic_small", tiny)
  return tiny


# --- manual configs --------------------------------------------------------------------

def test_other_manual_dir_with_the_same_data_dir_reads_the_new_data(tmp_path, capsys):
  folder_a = _copy_dummy(tmp_path / "a")
  folder_b = _alter(_copy_dummy(tmp_path / "b"))
  data_dir = str(tmp_path / "tfds")
  hha300.build("features", data_dir=data_dir, manual_dir=str(folder_a))
  _assert_source_matches(
      tfds.data_source("hha300/features", data_dir=data_dir)["train"], folder_a, "train")
  capsys.readouterr()

  for split in SPLIT_SIZES:
    source = hha300.load_source("features", split, data_dir=data_dir,
                                manual_dir=str(folder_b))
    _assert_source_matches(source, folder_b, split)
  # B really differs from A, so the comparison above could not pass on A's data.
  video = "hha_train_000"
  assert not np.array_equal(_expected(folder_a, video)["features"],
                            _expected(folder_b, video)["features"])
  # One rebuild (for the first split), naming the move; the second split reuses it.
  (line,) = _rebuild_lines(capsys.readouterr().err)
  assert line.startswith(f"hha300/features: manual directory changed from "
                         f"{folder_a.resolve()} to {folder_b.resolve()} (")


@pytest.mark.parametrize("edit", ["groundTruth", "scores.csv"])
def test_edited_annotation_is_rebuilt_and_read(tmp_path, capsys, edit):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  hha300.build("features", data_dir=data_dir, manual_dir=str(folder))
  capsys.readouterr()
  if edit == "groundTruth":
    video, split, changed = "hha_train_001", "train", "groundTruth/hha_train_001.txt"
    new_labels = _relabel(folder, video)
  else:
    video, split, changed = "hha_test_000", "test", "scores.csv"
    rows = _score_rows(folder)
    rows[video]["score"] = "5.1234"
    _write_scores(folder, rows)

  source = hha300.load_source("features", split, data_dir=data_dir,
                              manual_dir=str(folder))
  ex = _read_all(source)[video]
  if edit == "groundTruth":
    np.testing.assert_array_equal(ex["labels"], new_labels)
  else:
    assert ex["score"] == pytest.approx(5.1234, abs=1e-6)
  _assert_source_matches(source, folder, split)
  assert _rebuild_lines(capsys.readouterr().err) == [
      f"hha300/features: manual directory changed ({changed} modified) - rebuilding"]


def test_on_change_error_names_what_changed_and_keeps_the_build(tmp_path):
  folder_a = _copy_dummy(tmp_path / "a")
  folder_b = _copy_dummy(tmp_path / "b")
  data_dir = str(tmp_path / "tfds")
  builder = hha300.build("features", data_dir=data_dir, manual_dir=str(folder_a))
  before = _record_files(builder)

  # An edited file, by name.
  _relabel(folder_a, "hha_train_002")
  with pytest.raises(hha300.StaleBuildError) as raised:
    hha300.load_source("features", "train", data_dir=data_dir,
                       manual_dir=str(folder_a), on_change="error")
  assert raised.value.changes == (
      "manual directory changed (groundTruth/hha_train_002.txt modified)",)
  assert "groundTruth/hha_train_002.txt modified" in str(raised.value)

  # A moved folder, from A to B; B holds what A held at build time (copied with its
  # timestamps), so the move is the only change.
  with pytest.raises(hha300.StaleBuildError) as raised:
    hha300.build("features", data_dir=data_dir, manual_dir=str(folder_b),
                 on_change="error")
  assert raised.value.changes == (
      f"manual directory changed from {folder_a.resolve()} to {folder_b.resolve()}",)
  assert str(folder_b.resolve()) in str(raised.value)

  # A video added to a split: its two files are added, the bundle and scores modified.
  for sub, suffix in (("features", ".npy"), ("groundTruth", ".txt")):
    shutil.copy(folder_a / sub / f"hha_train_000{suffix}",
                folder_a / sub / f"hha_train_003{suffix}")
  with open(folder_a / "splits" / "train.bundle", "a") as f:
    f.write("hha_train_003\n")
  rows = _score_rows(folder_a)
  rows["hha_train_003"] = dict(rows["hha_train_000"], video="hha_train_003")
  _write_scores(folder_a, rows)
  with pytest.raises(hha300.StaleBuildError) as raised:
    hha300.build("features", data_dir=data_dir, manual_dir=str(folder_a),
                 on_change="error")
  (change,) = raised.value.changes
  assert ("2 files added: features/hha_train_003.npy, groundTruth/hha_train_003.txt"
          in change)
  assert ("3 files modified: groundTruth/hha_train_002.txt, scores.csv, "
          "splits/train.bundle") in change

  # Nothing was touched: the old copy is still there, as it was.
  assert _record_files(builder) == before
  _assert_source_matches(tfds.data_source("hha300/features", data_dir=data_dir)["test"],
                         DUMMY, "test")


def test_unchanged_inputs_reuse_the_build(tmp_path, monkeypatch, capsys):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  first = hha300.ensure_built("features", data_dir=data_dir, manual_dir=str(folder))
  assert first.action == "built" and first.changes == ()
  before = _record_files(first.builder)

  calls = []
  original = hha300.Hha300.download_and_prepare

  def counting(self, **kwargs):
    calls.append(self.builder_config.name)
    return original(self, **kwargs)

  monkeypatch.setattr(hha300.Hha300, "download_and_prepare", counting)
  # The same folder, also named by a relative path.
  monkeypatch.chdir(tmp_path)
  for manual_dir in (str(folder), "manual", "./manual/"):
    again = hha300.ensure_built("features", data_dir=data_dir, manual_dir=manual_dir)
    assert again.action == "reused"
  source = hha300.load_source("features", "test", data_dir=data_dir,
                              manual_dir=str(folder), on_change="error")
  assert len(source) == SPLIT_SIZES["test"]
  assert calls == []
  assert _record_files(first.builder) == before
  assert "rebuilding" not in capsys.readouterr().err


def test_fingerprint_file_records_the_inputs(tmp_path):
  folder = _copy_dummy(tmp_path / "manual")
  builder = hha300.build("features", data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(folder))
  stored = json.loads((pathlib.Path(builder.data_dir) / hha300.FINGERPRINT_FILE)
                      .read_text())
  assert stored["summary"] == {"manual_dir": str(folder.resolve()), "files": 14}
  files = stored["inputs"]["files"]
  # mapping + scores + 2 bundles + 5 videos x (groundTruth, features)
  assert len(files) == 14
  npy = folder / "features" / "hha_test_001.npy"
  assert files["features/hha_test_001.npy"] == {"size": npy.stat().st_size,
                                                "mtime_ns": npy.stat().st_mtime_ns}
  assert files["mapping.txt"]["size"] == (folder / "mapping.txt").stat().st_size
  assert stored["version"] == str(hha300.Hha300.VERSION)


def test_build_without_fingerprint_counts_as_changed(tmp_path, capsys):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  builder = hha300.build("features", data_dir=data_dir, manual_dir=str(folder))
  (pathlib.Path(builder.data_dir) / hha300.FINGERPRINT_FILE).unlink()
  with pytest.raises(hha300.StaleBuildError, match="no input fingerprint"):
    hha300.build("features", data_dir=data_dir, manual_dir=str(folder), on_change="error")
  capsys.readouterr()
  result = hha300.ensure_built("features", data_dir=data_dir, manual_dir=str(folder))
  assert result.action == "rebuilt"
  assert "no input fingerprint" in capsys.readouterr().err
  assert (pathlib.Path(result.builder.data_dir) / hha300.FINGERPRINT_FILE).is_file()
  assert hha300.ensure_built("features", data_dir=data_dir,
                             manual_dir=str(folder)).action == "reused"


def test_plain_tfds_build_writes_the_fingerprint(tmp_path):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  builder = tfds.builder("hha300/features", data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
  assert hha300.ensure_built("features", data_dir=data_dir,
                             manual_dir=str(folder)).action == "reused"


def test_without_manual_dir_the_build_is_checked_against_its_own_folder(tmp_path):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  hha300.build("features", data_dir=data_dir, manual_dir=str(folder))
  # TFDS's default folder is absent: the folder the copy was built from is checked.
  assert hha300.ensure_built("features", data_dir=data_dir).action == "reused"
  new_labels = _relabel(folder, "hha_test_001")
  result = hha300.ensure_built("features", data_dir=data_dir)
  assert result.action == "rebuilt"
  ex = _read_all(result.builder.as_data_source(split="test"))["hha_test_001"]
  np.testing.assert_array_equal(ex["labels"], new_labels)


def test_without_manual_dir_tfds_default_folder_wins_when_present(tmp_path):
  folder = _copy_dummy(tmp_path / "manual")
  data_dir = tmp_path / "tfds"
  hha300.build("features", data_dir=str(data_dir), manual_dir=str(folder))
  default = _copy_dummy(data_dir / "downloads" / "manual")
  _alter(default)
  result = hha300.ensure_built("features", data_dir=str(data_dir))
  assert result.action == "rebuilt"
  assert str(default.resolve()) in result.changes[0]
  for split in SPLIT_SIZES:
    _assert_source_matches(result.builder.as_data_source(split=split), default, split)


def test_unusable_new_inputs_keep_the_old_build(tmp_path):
  folder_a = _copy_dummy(tmp_path / "a")
  folder_b = _copy_dummy(tmp_path / "b")
  (folder_b / "scores.csv").unlink()
  data_dir = str(tmp_path / "tfds")
  builder = hha300.build("features", data_dir=data_dir, manual_dir=str(folder_a))
  before = _record_files(builder)
  with pytest.raises(layout.LayoutError, match="scores.csv"):
    hha300.build("features", data_dir=data_dir, manual_dir=str(folder_b))
  with pytest.raises(layout.LayoutError, match="does not exist"):
    hha300.build("features", data_dir=data_dir, manual_dir=str(tmp_path / "nope"))
  assert _record_files(builder) == before
  # Still stale next time: never reused for B.
  with pytest.raises(hha300.StaleBuildError, match="scores.csv removed"):
    hha300.build("features", data_dir=data_dir, manual_dir=str(folder_b),
                 on_change="error")


def test_on_change_is_checked(tmp_path):
  with pytest.raises(ValueError, match="on_change"):
    hha300.build("features", data_dir=str(tmp_path), manual_dir=str(DUMMY),
                 on_change="ignore")


# --- synthetic configs -----------------------------------------------------------------

def test_synthetic_preset_or_generator_change_is_rebuilt(tmp_path, monkeypatch, capsys,
                                                          tiny_preset):
  data_dir = str(tmp_path / "tfds")
  first = hha300.ensure_built("synthetic_small", data_dir=data_dir)
  assert first.action == "built"
  assert {k: v.num_examples for k, v in first.builder.info.splits.items()} == SPLIT_SIZES
  assert hha300.ensure_built("synthetic_small", data_dir=data_dir).action == "reused"

  # One more training video.
  monkeypatch.setitem(synthetic.PRESETS, "synthetic_small",
                      dataclasses.replace(tiny_preset, num_train=4))
  with pytest.raises(hha300.StaleBuildError, match="num_train: 3 -> 4"):
    hha300.build("synthetic_small", data_dir=data_dir, on_change="error")
  capsys.readouterr()
  second = hha300.ensure_built("synthetic_small", data_dir=data_dir)
  assert second.action == "rebuilt"
  assert second.builder.info.splits["train"].num_examples == 4
  assert len(hha300.load_source("synthetic_small", "train", data_dir=data_dir)) == 4
  assert _rebuild_lines(capsys.readouterr().err) == [
      "hha300/synthetic_small: synthetic preset 'synthetic_small' changed "
      "(num_train: 3 -> 4) - rebuilding"]

  # Same fields, newer generator.
  monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
  third = hha300.ensure_built("synthetic_small", data_dir=data_dir)
  assert third.action == "rebuilt"
  assert third.changes == (
      f"synthetic generator version changed from {synthetic.GENERATOR_VERSION - 1} to "
      f"{synthetic.GENERATOR_VERSION}",)
  assert hha300.ensure_built("synthetic_small", data_dir=data_dir).action == "reused"


# --- command line ----------------------------------------------------------------------

def test_cli_reports_reused_built_rebuilt_and_stops_on_error(tmp_path, capsys):
  folder = _copy_dummy(tmp_path / "manual")
  args = ["--config", "features", "--manual_dir", str(folder),
          "--data_dir", str(tmp_path / "tfds")]

  def run(*extra):
    status = build_cli.main(args + list(extra))
    out, err = capsys.readouterr()
    summary = [line for line in out.splitlines() if line.startswith("hha300/features ")]
    assert len(summary) == (status == 0)
    return status, summary[0] if summary else "", err

  status, first, _ = run()
  assert status == 0 and " built in " in first
  status, line, _ = run("--on-change", "error")
  assert status == 0 and " reused in " in line
  _relabel(folder, "hha_train_000")
  status, line, err = run("--on-change", "error")
  assert status == 3 and line == ""
  assert "groundTruth/hha_train_000.txt modified" in err
  status, line, err = run()
  assert status == 0 and " rebuilt in " in line
  assert _rebuild_lines(err) == ["hha300/features: manual directory changed "
                                 "(groundTruth/hha_train_000.txt modified) - rebuilding"]
