"""Tests of hhjax.extract: temporal layout, windowing, weights policy and the command line."""

import pathlib
import shutil

import numpy as np
import pytest

from hhjax import extract

REALDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# Tiny TV-L1 settings and a short window keep the end-to-end run to a few windows.
QUICK = ["--random-weights", "--window", "9", "--batch-size", "3", "--max-frames", "3",
         "--flow-size", "32", "--flow-scales", "1", "--flow-warps", "1", "--flow-outer", "1",
         "--flow-iterations", "3", "--no-progress"]


def test_feature_centres_and_layouts():
  np.testing.assert_array_equal(extract.feature_centres(64), 9 + 8 * np.arange(7))
  np.testing.assert_array_equal(extract.feature_centres(21), [6, 14])
  assert extract.dense_offset(21) == 10
  assert extract.dense_offset(9) == 6
  start, kept = extract.fast_layout(64, 16)
  assert start == -17 and list(kept) == [1, 2, 3, 4]
  with pytest.raises(ValueError):
    extract.fast_layout(60, 16)
  with pytest.raises(ValueError):
    extract.fast_layout(64, 0)  # 7 positions per chunk cannot cover a step of 64 frames


def _index_model(mode):
  """Stand-in for the network: each output position returns the frame value at its centre."""

  def compute(stacked):
    outs = []
    for x in stacked:  # (B, L, 1): the value of a frame is its index (negated in stream 2)
      centres = extract.feature_centres(x.shape[1]).round().astype(int)
      per_position = x[:, centres, :]  # (B, T', 1)
      outs.append(per_position.mean(axis=1) if mode == "dense" else per_position)
    return outs

  return compute


@pytest.mark.parametrize("mode,kwargs", [
  ("dense", dict(window=21, batch_size=3)),
  ("dense", dict(window=9, batch_size=4)),
  ("fast", dict(chunk=64, margin=16, batch_size=2)),
  ("fast", dict(chunk=16, margin=4, batch_size=1)),
])
@pytest.mark.parametrize("length", [1, 2, 9, 50])
def test_windows_map_features_to_frames(mode, kwargs, length):
  config = extract.ExtractConfig(mode=mode, **kwargs)
  extractor = object.__new__(extract.FeatureExtractor)  # no network needed
  extractor.config = config
  inputs = ((np.full((1,), t, np.float32), np.full((1,), -t, np.float32))
            for t in range(length))
  features = extractor.features_from_inputs(inputs, compute=_index_model(mode))
  assert features.shape == (2, length) and features.dtype == np.float32
  np.testing.assert_array_equal(features[1], -features[0])
  t = np.arange(length)
  if mode == "dense":
    inner = (t >= 12) & (t < length - 12)  # windows without clamped frames
  else:
    inner = t <= 8 * ((length - 1) // 8)  # up to the last grid centre inside the video
  np.testing.assert_allclose(features[0][inner], t[inner], atol=1e-5)
  assert np.all(np.diff(features[0]) >= -1e-6)  # clamped edges stay monotone


def test_last_frame_repeats_flow():
  config = extract.ExtractConfig(flow_size=32, flow_scales=1, flow_warps=1, flow_outer=1,
                                 flow_iterations=3)
  extractor = extract.FeatureExtractor.__new__(extract.FeatureExtractor)
  extractor.config = config
  extractor._gray = extract._gray_fn()
  extractor._pair_flow = extract._pair_flow_fn(224, 32, 1, 1, 3, 1)
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (240, 240, 3), dtype=np.uint8)
  frames = np.stack([base[s:s + 224, s:s + 224] for s in (0, 2, 4)])  # (3, 224, 224, 3)
  out = list(extractor.frame_inputs([frames[:2], frames[2:]]))
  assert len(out) == 3
  for (rgb, flow), frame in zip(out, frames):
    np.testing.assert_array_equal(rgb, frame)
    assert flow.shape == (224, 224, 2) and np.isfinite(flow).all()
    assert np.abs(flow).max() <= 1.0
  np.testing.assert_array_equal(out[2][1], out[1][1])
  single = list(extractor.frame_inputs([frames[:1]]))
  assert len(single) == 1 and not single[0][1].any()


def test_random_weights_are_seeded():
  a = extract.random_variables(2, seed=3)
  b = extract.random_variables(2, seed=3)
  c = extract.random_variables(2, seed=4)
  for path in (("Conv3d_1a_7x7", "conv3d", "kernel"), ("Mixed_5c", "b1b", "conv3d", "kernel")):
    ka, kb, kc = a["params"], b["params"], c["params"]
    for key in path:
      ka, kb, kc = ka[key], kb[key], kc[key]
    np.testing.assert_array_equal(ka, kb)
    assert not np.array_equal(ka, kc)
  assert a["params"]["Conv3d_1a_7x7"]["conv3d"]["kernel"].shape == (7, 7, 7, 2, 64)


def test_refuses_without_weights(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    extract.main(["--videos", str(tmp_path), "--out", str(tmp_path / "out")])
  assert exit_info.value.code != 0
  err = capsys.readouterr().err
  assert "--random-weights" in err and "useless" in err
  assert not (tmp_path / "out").exists()


def test_command_line_on_real_clips(tmp_path, capsys):
  clips = sorted((REALDATA / "kaggle_handwash_train").glob("*.mp4"))[:2]
  if len(clips) < 2:
    pytest.skip(f"needs two real clips in {REALDATA / 'kaggle_handwash_train'} (absent)")
  videos = tmp_path / "videos"
  videos.mkdir()
  for i, clip in enumerate(clips):
    shutil.copy(clip, videos / f"clip{i}.mp4")
  (videos / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  out = tmp_path / "out"
  args = ["--videos", str(videos), "--out", str(out), *QUICK]

  assert extract.main(args) == 1  # the corrupt file fails, the others come out
  err = capsys.readouterr().err
  assert "bad.mp4" in err and "1 failed" in err
  features_dir = out / "features"
  assert sorted(p.name for p in features_dir.iterdir()) == ["clip0.npy", "clip1.npy"]
  first = {}
  for name in ("clip0", "clip1"):
    array = np.load(features_dir / f"{name}.npy")
    assert array.shape == (2048, 3) and array.dtype == np.float32
    assert np.isfinite(array).all()
    assert array[:1024].std() > 0 and array[1024:].std() > 0
    first[name] = array

  # Second run: clip0 is skipped (untouched), clip1 is recomputed identically.
  mtime = (features_dir / "clip0.npy").stat().st_mtime_ns
  (features_dir / "clip1.npy").unlink()
  assert extract.main(args) == 1
  err = capsys.readouterr().err
  assert "skipping 1 video" in err and "bad.mp4" in err
  assert (features_dir / "clip0.npy").stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(np.load(features_dir / "clip1.npy"), first["clip1"])
  assert not list(features_dir.glob(".*tmp"))
