"""Tests of hhjax.video: decoding, sampling, resize + centre crop, chunking, bad files."""

import pathlib

import numpy as np
import pytest

from hhjax import video

pytest.importorskip("decord", reason="decord is needed to decode videos")

REALDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def _clip(folder: str) -> pathlib.Path:
  clips = sorted((REALDATA / folder).glob("*.mp4"))
  if not clips:
    pytest.skip(f"no real clips in {REALDATA / folder} (the shared real-data folder is absent)")
  return clips[0]


def test_video_info_of_a_real_clip():
  info = video.video_info(_clip("kaggle_handwash_s002"))
  assert (info.width, info.height) == (720, 480)
  assert info.fps == pytest.approx(30.0, abs=0.5)
  assert info.frames > 30
  assert info.duration == pytest.approx(info.frames / info.fps)


def test_chunks_shapes_and_prefix():
  path = _clip("kaggle_handwash_s002")
  chunks = list(video.iter_frames(path, max_frames=20, chunk_size=8))
  assert [c.shape for c in chunks] == [(8, 224, 224, 3), (8, 224, 224, 3), (4, 224, 224, 3)]
  assert all(c.dtype == np.uint8 for c in chunks)
  # Chunking does not change the frames.
  whole = video.read_frames(path, max_frames=20, chunk_size=64)
  np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_decoding_ahead_in_a_thread_gives_the_same_chunks():
  path = _clip("kaggle_handwash_s002")
  chunks = list(video.read_ahead(video.iter_frames(path, max_frames=20, chunk_size=8), 2))
  assert [len(c) for c in chunks] == [8, 8, 4]
  np.testing.assert_array_equal(np.concatenate(chunks), video.read_frames(path, max_frames=20))


def test_configurable_resize_and_crop():
  path = _clip("kaggle_handwash_train")  # 360x240
  frames = video.read_frames(path, max_frames=3, short_side=200, crop=None)
  assert frames.shape == (3, 200, 300, 3)
  frames = video.read_frames(path, max_frames=3, short_side=240, crop=193)
  assert frames.shape == (3, 193, 193, 3)


def test_resize_matches_opencv_bilinear():
  cv2 = pytest.importorskip("cv2")
  path = _clip("kaggle_handwash_s002")
  raw = video.read_frames(path, max_frames=2, short_side=None, crop=None)  # (2, 480, 720, 3)
  ours = video.resize_crop(raw, 256, 224)
  ref = np.stack([cv2.resize(f, (384, 256), interpolation=cv2.INTER_LINEAR) for f in raw])
  ref = ref[:, 16:240, 80:304]
  assert np.abs(ours.astype(int) - ref).max() <= 1


def test_fps_sampling():
  np.testing.assert_array_equal(video.sample_indices(10, 30.0, 15.0), [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(video.sample_indices(10, 30.0), np.arange(10))
  np.testing.assert_array_equal(video.sample_indices(10, 30.0, 10.0, max_frames=2), [0, 3])
  path = _clip("kaggle_handwash_train")
  info = video.video_info(path)
  frames = video.read_frames(path, fps=info.fps / 3, max_frames=4, crop=None)
  full = video.read_frames(path, max_frames=10, crop=None)
  np.testing.assert_array_equal(frames, full[[0, 3, 6, 9]])
  # count_frames says how many frames iter_frames will yield, without decoding them.
  assert video.count_frames(path) == info.frames
  assert video.count_frames(path, fps=info.fps / 3) == len(
      video.read_frames(path, fps=info.fps / 3, crop=None, short_side=60))
  assert video.count_frames(path, max_frames=4) == 4


@pytest.mark.parametrize("content", [b"", b"random"])
def test_corrupt_or_empty_file_raises_naming_it(tmp_path, content):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(np.random.default_rng(0).bytes(4096) if content else b"")
  with pytest.raises(video.VideoError, match="bad.mp4"):
    video.iter_frames(bad)
  with pytest.raises(video.VideoError, match="bad.mp4"):
    video.video_info(bad)


def test_missing_file_raises_naming_it(tmp_path):
  with pytest.raises(video.VideoError, match="nothere.mp4"):
    video.video_info(tmp_path / "nothere.mp4")
