"""Tests of the provenance manifest of `python -m hhjax.extract`: reruns never mix settings.

Most tests replace the networks with a fast stand-in (features computed from the video
file's bytes and the weights' seed) so the command's bookkeeping runs in milliseconds;
one runs the real I3D pipeline on a real clip at the smallest settings.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil

import numpy as np
import pytest

from hhjax import extract, handpose

REALDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
QUICK = ["--random-weights", "--window", "9", "--batch-size", "3", "--max-frames", "3",
         "--flow-size", "32", "--flow-scales", "1", "--flow-warps", "1", "--flow-outer", "1",
         "--flow-iterations", "3", "--no-progress"]


def _fake_features(path, tag: float, dim: int) -> np.ndarray:
  """(dim, T) from the file's bytes: T and the values change when the file does."""
  data = pathlib.Path(path).read_bytes()
  frames = len(data) % 5 + 2
  value = int.from_bytes(hashlib.sha256(data).digest()[:2], "little") + tag
  return np.full((dim, frames), value, np.float32)


@pytest.fixture
def fake(monkeypatch):
  """Stand-ins for both streams; `fake.calls` lists the videos extracted, in order."""

  class Fake:
    calls: list[str] = []  # fresh per test: the class is defined anew

  class FakeI3D:
    def __init__(self, rgb_variables, flow_variables, config):
      self.tag = rgb_variables["seed"] + 0.5  # the weights show in the values

    def extract(self, path, on_frame=None):
      Fake.calls.append(pathlib.Path(path).name)
      return _fake_features(path, self.tag, 4)

  class FakeHands:
    def __init__(self, **kwargs):
      self.kwargs = kwargs

    def extract(self, path, on_frame=None):
      Fake.calls.append(pathlib.Path(path).name)
      return _fake_features(path, 0.25, handpose.FEATURE_DIM)

  monkeypatch.setattr(extract, "_load_stream",
                      lambda path, channels, seed: ({"seed": seed}, "stand-in"))
  monkeypatch.setattr(extract, "FeatureExtractor", FakeI3D)
  monkeypatch.setattr(handpose, "HandPoseExtractor", FakeHands)
  return Fake


def _videos(folder: pathlib.Path, names=("a.mp4", "b.mp4")) -> pathlib.Path:
  folder.mkdir(exist_ok=True)
  for i, name in enumerate(names):
    (folder / name).write_bytes(np.random.default_rng(i).bytes(100 + i))
  return folder


def _run(tmp_path, *extra) -> int:
  args = ["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
          "--no-progress", *extra]
  if "--stream" not in extra and "--rgb-weights" not in extra:
    args.append("--random-weights")
  return extract.main(args)


def _manifest(tmp_path) -> dict:
  return json.loads((tmp_path / "out" / extract.MANIFEST_FILE).read_text())


def _features(tmp_path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in (tmp_path / "out" / "features").glob("*.npy")}


def test_manifest_records_settings_and_videos(tmp_path, fake):
  videos = _videos(tmp_path / "videos")
  assert _run(tmp_path, "--mode", "fast", "--fps", "15") == 0
  manifest = _manifest(tmp_path)
  settings = manifest["settings"]
  assert settings["stream"] == "i3d" and settings["hhjax"] == extract.hhjax_version()
  assert settings["rgb_weights"] == "random:0" and settings["flow_weights"] == "random:1"
  assert (settings["mode"], settings["chunk"], settings["margin"]) == ("fast", 64, 16)
  assert "window" not in settings and "batch_size" not in settings  # no effect on values
  assert (settings["fps"], settings["short_side"], settings["crop"],
          settings["flow_size"]) == (15.0, 256, 224, 224)
  for name in ("a", "b"):
    entry = manifest["videos"][name]
    st = (videos / f"{name}.mp4").stat()
    assert entry["source"] == f"{name}.mp4"
    assert (entry["size"], entry["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert entry["frames"] == np.load(tmp_path / "out" / "features" / f"{name}.npy").shape[1]
  assert not list((tmp_path / "out" / "features").glob(".*"))  # no temporary files left


def test_weights_are_identified_by_sha256(tmp_path):
  (tmp_path / "rgb.npz").write_bytes(b"rgb weights")
  args = extract.build_parser().parse_args(
    ["--videos", "v", "--out", "o", "--rgb-weights", str(tmp_path / "rgb.npz"),
     "--random-weights", "--seed", "7"])
  settings = extract.provenance(args)
  assert settings["rgb_weights"] == "sha256:" + hashlib.sha256(b"rgb weights").hexdigest()
  assert settings["flow_weights"] == "random:8"
  # Spelled-out defaults and speed-only options leave the settings as they are.
  same = extract.build_parser().parse_args(
    ["--videos", "v", "--out", "o", "--rgb-weights", str(tmp_path / "rgb.npz"),
     "--random-weights", "--seed", "7", "--short-side", "256", "--flow-size", "224",
     "--batch-size", "1", "--decode-chunk", "8", "--chunk", "32"])
  assert extract.provenance(same) == settings
  assert extract.settings_differences({"hhjax": "0.1.0"}, {"hhjax": "0.1.7"}) == []
  assert extract.settings_differences({"hhjax": "0.1.0"}, {"hhjax": "0.2.0"}) == [
    "hhjax: 0.1.0 -> 0.2.0"]


def test_rerun_with_other_weights_mode_or_stream_is_refused(tmp_path, fake, capsys):
  _videos(tmp_path / "videos")
  assert _run(tmp_path, "--stream", "handpose", "--hand-model", "0") == 0
  assert fake.calls == ["a.mp4", "b.mp4"]
  before = _features(tmp_path)

  def refused(*extra) -> str:
    fake.calls.clear()
    assert _run(tmp_path, *extra) == 2
    assert fake.calls == [] and _features(tmp_path) == before
    return capsys.readouterr().err

  err = refused()
  assert "stream: handpose -> i3d" in err and "--overwrite" in err and "--out" in err
  assert "hand_model: 0 -> (not recorded)" in err
  err = refused("--stream", "handpose")
  assert "hand_model: 0 -> 1" in err and "stream:" not in err

  # The same check between two I3D runs: other weights, other mode.
  assert _run(tmp_path, "--overwrite") == 0
  (tmp_path / "rgb.npz").write_bytes(b"pretrained rgb")
  (tmp_path / "flow.npz").write_bytes(b"pretrained flow")
  rgb_sha = hashlib.sha256(b"pretrained rgb").hexdigest()
  before = _features(tmp_path)
  err = refused("--rgb-weights", str(tmp_path / "rgb.npz"), "--flow-weights",
                str(tmp_path / "flow.npz"))
  assert f"rgb_weights: random:0 -> sha256 {rgb_sha[:12]}.." in err
  assert "flow_weights: random:1 -> sha256" in err and "mode:" not in err
  err = refused("--mode", "fast")
  assert "mode: dense -> fast" in err and "chunk: (not recorded) -> 64" in err


def test_overwrite_reextracts_and_updates_manifest(tmp_path, fake):
  _videos(tmp_path / "videos")
  assert _run(tmp_path) == 0
  old = _features(tmp_path)
  stray = tmp_path / "out" / "features" / "gone.npy"  # a video no longer in --videos
  np.save(stray, np.zeros((4, 2), np.float32))
  fake.calls.clear()
  assert _run(tmp_path, "--seed", "5", "--overwrite") == 0
  assert fake.calls == ["a.mp4", "b.mp4"]
  new = _features(tmp_path)
  assert sorted(new) == ["a.npy", "b.npy"]  # the stray file is gone
  assert all(new[name] != old[name] for name in new)
  manifest = _manifest(tmp_path)
  assert manifest["settings"]["rgb_weights"] == "random:5"
  assert sorted(manifest["videos"]) == ["a", "b"]
  np.testing.assert_array_equal(np.load(tmp_path / "out" / "features" / "a.npy"),
                                _fake_features(tmp_path / "videos" / "a.mp4", 5.5, 4))


def test_same_settings_skip_listed_videos_only(tmp_path, fake):
  _videos(tmp_path / "videos")
  assert _run(tmp_path, "--batch-size", "2") == 0
  fake.calls.clear()
  # Speed-only options and spelled-out defaults are the same settings.
  assert _run(tmp_path, "--batch-size", "7", "--short-side", "256") == 0
  assert fake.calls == []
  (tmp_path / "out" / "features" / "b.npy").unlink()
  assert _run(tmp_path) == 0
  assert fake.calls == ["b.mp4"]
  assert sorted(_manifest(tmp_path)["videos"]) == ["a", "b"]
  # Listed without its .npy (an interrupted commit): extracted again, not refused.
  manifest = _manifest(tmp_path)
  (tmp_path / "out" / "features" / "a.npy").unlink()
  fake.calls.clear()
  assert _run(tmp_path) == 0 and fake.calls == ["a.mp4"]
  assert _manifest(tmp_path)["videos"]["a"] == manifest["videos"]["a"]


def test_npy_without_manifest_entry_is_refused(tmp_path, fake, capsys):
  _videos(tmp_path / "videos")
  features = tmp_path / "out" / "features"
  features.mkdir(parents=True)
  np.save(features / "a.npy", np.ones((4, 3), np.float32))  # e.g. from an older hhjax
  np.save(features / "other.npy", np.ones((4, 3), np.float32))
  assert _run(tmp_path) == 2
  err = capsys.readouterr().err
  assert "a.npy, other.npy" in err and "not listed" in err and "--overwrite" in err
  assert fake.calls == [] and not (tmp_path / "out" / extract.MANIFEST_FILE).exists()
  # Beside a manifest too: a file it does not list is refused, the listed ones are fine.
  assert _run(tmp_path, "--overwrite") == 0
  np.save(features / "other.npy", np.ones((4, 3), np.float32))
  fake.calls.clear()
  assert _run(tmp_path) == 2
  err = capsys.readouterr().err
  assert "other.npy" in err and "a.npy" not in err and fake.calls == []


def test_same_stem_collision_is_an_error(tmp_path, fake, capsys):
  videos = _videos(tmp_path / "videos", ("a.avi", "a.mp4", "b.mp4"))
  assert _run(tmp_path) == 2
  err = capsys.readouterr().err
  assert f"{videos / 'a.avi'} and {videos / 'a.mp4'} -> a.npy" in err
  assert "b.mp4" not in err
  assert fake.calls == [] and not (tmp_path / "out" / "features").exists()


def test_changed_source_is_reextracted(tmp_path, fake, capsys):
  videos = _videos(tmp_path / "videos")
  assert _run(tmp_path) == 0
  old = _features(tmp_path)
  with open(videos / "a.mp4", "ab") as f:
    f.write(b"more frames")
  fake.calls.clear()
  assert _run(tmp_path) == 0
  assert fake.calls == ["a.mp4"]
  err = capsys.readouterr().err
  assert "extracting 1 video(s) again whose source file changed" in err and "a.mp4" in err
  assert _features(tmp_path)["b.npy"] == old["b.npy"]
  entry = _manifest(tmp_path)["videos"]["a"]
  assert entry["size"] == (videos / "a.mp4").stat().st_size
  np.testing.assert_array_equal(np.load(tmp_path / "out" / "features" / "a.npy"),
                                _fake_features(videos / "a.mp4", 0.5, 4))
  # Same size, new mtime (a file rewritten in place) also counts as changed.
  st = (videos / "b.mp4").stat()
  os.utime(videos / "b.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  fake.calls.clear()
  assert _run(tmp_path) == 0 and fake.calls == ["b.mp4"]


def test_interrupted_run_resumes(tmp_path, fake, monkeypatch):
  _videos(tmp_path / "videos", ("a.mp4", "b.mp4", "c.mp4"))
  stand_in = extract.FeatureExtractor
  calls = fake.calls

  class Interrupted(stand_in):
    def extract(self, path, on_frame=None):
      if pathlib.Path(path).name == "b.mp4":
        raise KeyboardInterrupt
      return super().extract(path, on_frame)

  monkeypatch.setattr(extract, "FeatureExtractor", Interrupted)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path)
  assert sorted(_manifest(tmp_path)["videos"]) == ["a"]  # written as a finished
  monkeypatch.setattr(extract, "FeatureExtractor", stand_in)
  calls.clear()
  assert _run(tmp_path) == 0 and calls == ["b.mp4", "c.mp4"]
  assert not list((tmp_path / "out" / "features").glob(".*"))


def test_worker_outputs_are_committed_by_the_main_process(tmp_path, fake, monkeypatch):
  """--workers: workers leave temporary files; the main process lists and renames them."""
  _videos(tmp_path / "videos")
  features = tmp_path / "out" / "features"
  seen = []

  class InlinePool:  # the spawn pool's interface, run in this process
    def __init__(self, processes, initializer, initargs):
      initializer(*initargs)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def imap_unordered(self, fn, jobs):
      for job in reversed(jobs):
        outcome = fn(job)
        stem = outcome.path.stem
        seen.append((stem, (features / f"{stem}.npy").exists(), outcome.temp.exists(),
                     stem in _manifest(tmp_path)["videos"]))
        yield outcome

  class Context:
    Pool = InlinePool

  monkeypatch.setattr(multiprocessing, "get_context", lambda method: Context)
  assert _run(tmp_path, "--stream", "handpose", "--workers", "2") == 0
  assert seen == [("b", False, True, False), ("a", False, True, False)]
  manifest = _manifest(tmp_path)
  assert manifest["settings"]["stream"] == "handpose"
  assert manifest["settings"]["mediapipe"] == extract._package_version("mediapipe")
  for name in ("a", "b"):
    assert manifest["videos"][name]["frames"] == np.load(features / f"{name}.npy").shape[1]
  assert not list(features.glob(".*"))


def test_real_clip_rerun(tmp_path, capsys):
  clips = sorted((REALDATA / "kaggle_handwash_train").glob("*.mp4"))[:1]
  if not clips:
    pytest.skip(f"needs a real clip in {REALDATA / 'kaggle_handwash_train'} (absent)")
  videos = tmp_path / "videos"
  videos.mkdir()
  shutil.copy(clips[0], videos / "clip.mp4")
  args = ["--videos", str(videos), "--out", str(tmp_path / "out"), *QUICK]
  assert extract.main(args) == 0
  manifest = _manifest(tmp_path)
  assert manifest["videos"]["clip"]["frames"] == 3
  assert manifest["settings"]["flow_iterations"] == 3
  assert np.load(tmp_path / "out" / "features" / "clip.npy").shape == (2048, 3)
  assert extract.main(args) == 0
  assert "0 extracted, 1 skipped" in capsys.readouterr().err
  assert extract.main([*args, "--flow-iterations", "4"]) == 2
  assert "flow_iterations: 3 -> 4" in capsys.readouterr().err
