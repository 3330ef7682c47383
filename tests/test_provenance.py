"""Tests of hhjax.provenance: the code a result was made with, recorded and compared."""

import json
import pathlib
import shutil
import subprocess

import pytest

from hhjax import provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root: pathlib.Path, *args: str) -> str:
  return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                        text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
  root = tmp_path / "repo"
  (root / "hhjax").mkdir(parents=True)
  (root / "configs").mkdir()
  (root / "hhjax" / "model.py").write_text("LAYERS = 10\n")
  (root / "configs" / "run.py").write_text("STEPS = 5\n")
  (root / "README.md").write_text("readme\n")
  _git(root, "init", "-q")
  _git(root, "add", "-A")
  _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
  return root


def _version(root):
  provenance.checkout_version.cache_clear()
  return provenance.checkout_version(root)


def test_a_clean_checkout_is_its_commit_and_a_docs_only_commit_is_the_same_code(checkout):
  version = _version(checkout)
  assert version["commit"] == _git(checkout, "rev-parse", "HEAD")
  assert version["changes"] is None and len(version["tree"]) == 12
  label = provenance.code_label(version)
  assert label == f"{version['tree']}, jax {version['jax']}"
  (checkout / "README.md").write_text("docs only\n")
  _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "docs")
  docs = _version(checkout)
  assert docs["commit"] != version["commit"] and provenance.code_label(docs) == label
  (checkout / "configs" / "run.py").write_text("STEPS = 7\n")
  _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "cfg")
  assert provenance.code_label(_version(checkout)) != label


def test_edits_to_the_code_change_the_label_and_the_same_edits_give_the_same_one(checkout):
  clean = provenance.code_label(_version(checkout))
  (checkout / "README.md").write_text("other readme\n")   # not code
  assert provenance.code_label(_version(checkout)) == clean
  (checkout / "hhjax" / "model.py").write_text("LAYERS = 12\n")
  edited = _version(checkout)
  assert edited["changes"] and len(edited["changes"]) == 12
  assert provenance.code_label(edited) != clean and "+ changes" in provenance.code_label(edited)
  assert _version(checkout)["changes"] == edited["changes"]   # the same edit, the same digest
  (checkout / "hhjax" / "model.py").write_text("LAYERS = 14\n")
  assert _version(checkout)["changes"] != edited["changes"]
  (checkout / "hhjax" / "model.py").write_text("LAYERS = 10\n")
  (checkout / "configs" / "new.py").write_text("STEPS = 6\n")   # an untracked config
  assert _version(checkout)["changes"] is not None


def test_outside_a_checkout_there_is_no_commit():
  version = _version(None)
  assert version["commit"] is None and version["changes"] is None
  assert "(no git commit)" in provenance.code_label(version)
  assert provenance.code_label(None) == provenance.UNRECORDED


def test_starts_are_recorded_and_only_those_that_trained_count(tmp_path, monkeypatch):
  assert provenance.trained_with(tmp_path) == [provenance.UNRECORDED]
  versions = iter([dict(hhjax="0.1.0", jax="0.10.2", commit="0" * 40, tree=t * 12,
                        changes=None) for t in "abc"])
  monkeypatch.setattr(provenance, "code_version", lambda: next(versions))
  provenance.record_start(tmp_path, 0, 100)     # trained from the start with a...
  provenance.record_start(tmp_path, 40, 100)    # ...resumed with b...
  provenance.record_start(tmp_path, 100, 100)   # ...and rerun, finished, with c
  lines = (tmp_path / provenance.CODE_FILE).read_text().splitlines()
  assert [json.loads(x)["step"] for x in lines] == [0, 40, 100]
  assert provenance.trained_with(tmp_path) == ["a" * 12 + ", jax 0.10.2",
                                               "b" * 12 + ", jax 0.10.2"]


def test_the_note_names_which_results_ran_which_code():
  assert provenance.mixed_note({"fold 0": "x", "fold 1": "x"}) is None
  assert provenance.mixed_note({}) is None
  note = provenance.mixed_note({"fold 0": "x", "fold 1": "y", "fold 2": "x"})
  assert note == "code differs: fold 0, fold 2: x; fold 1: y"
  assert provenance.mixed_note({"a": ["x", "y"], "b": ["x"]}) == (
    "code differs: a: x then y; b: x")
