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


def _flow_only_extractor(decode_chunk: int, flow_batch: int) -> extract.FeatureExtractor:
  """A FeatureExtractor with a tiny TV-L1 setting and no I3D networks."""
  config = extract.ExtractConfig(flow_size=32, flow_scales=1, flow_warps=1, flow_outer=1,
                                 flow_iterations=3, decode_chunk=decode_chunk,
                                 flow_batch=flow_batch)
  extractor = extract.FeatureExtractor.__new__(extract.FeatureExtractor)
  extractor.config = config
  extractor.flow_batch = flow_batch
  extractor._gray = extract._gray_fn()
  extractor._chunk_flow = extract._chunk_flow_fn(224, 32, 1, 1, 3, 1, flow_batch)
  return extractor


@pytest.mark.parametrize("decode_chunk,flow_batch,atol", [(2, 1, 0.0), (3, 1, 0.0),
                                                          (4, 2, 2e-4), (8, 8, 2e-4)])
def test_chunked_flow_is_the_flow_of_each_pair_and_the_last_frame_repeats_it(
    decode_chunk, flow_batch, atol):
  """Flows computed a chunk per call, across chunk boundaries and with padded calls, are
  the TV-L1 flow of each consecutive pair computed on its own: bit for bit one after
  another, within rounding side by side (a few TV-L1 iterations: little amplification)."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (240, 240, 3), dtype=np.uint8)
  shifts = (0, 2, 4, 5, 7)
  frames = np.stack([base[s:s + 224, s // 2:s // 2 + 224] for s in shifts])  # (5, 224, 224, 3)
  gray = extract._gray_fn()
  pair = extract._pair_flow_fn(224, 32, 1, 1, 3, 1)
  expected = [np.asarray(pair(gray(frames[t]), gray(frames[t + 1]))) for t in range(4)]
  assert not np.allclose(expected[0], expected[3], atol=1e-2)  # the pairs differ
  extractor = _flow_only_extractor(decode_chunk, flow_batch)
  chunks = [frames[i:i + decode_chunk] for i in range(0, len(frames), decode_chunk)]
  out = list(extractor.frame_inputs(chunks))
  assert len(out) == len(frames)
  for t, (rgb, flow) in enumerate(out):
    np.testing.assert_array_equal(rgb, frames[t])
    assert flow.shape == (224, 224, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, expected[min(t, 3)], atol=atol, rtol=0,
                               err_msg=f"frame {t}")
  single = list(extractor.frame_inputs([frames[:1]]))
  assert len(single) == 1 and not single[0][1].any()


def test_chunk_flows_checks_its_frame_count():
  extractor = _flow_only_extractor(2, 1)
  grays = np.zeros((4, 224, 224), np.uint8)
  with pytest.raises(ValueError, match="expected 2..3 grey frames, got 4"):
    extractor.chunk_flows(grays)


@pytest.mark.parametrize("field,value,match", [
  ("flow_batch", 0, "flow_batch must be 1..decode_chunk"),
  ("flow_batch", 33, "flow_batch must be 1..decode_chunk \\(32\\)"),
  ("decode_ahead", -1, "decode_ahead must be >= 0"),
  ("decode_chunk", 0, "decode_chunk must be >= 1"),
])
def test_speed_settings_are_checked(field, value, match):
  with pytest.raises(ValueError, match=match):
    extract.ExtractConfig(**{field: value})


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


def _grid_reference(fmap: np.ndarray, grid: int) -> np.ndarray:
  """A loop-by-loop transcription: pairs of time positions averaged, then each cell
  the mean over rows floor(i H / G) .. ceil((i + 1) H / G) - 1 and the same for
  columns; cells row-major, channels last."""
  b, t, h, w, c = fmap.shape
  out = np.zeros((b, t - 1, grid, grid, c))
  for j in range(t - 1):
    pair = (fmap[:, j] + fmap[:, j + 1]) / 2
    for gy in range(grid):
      for gx in range(grid):
        r0, r1 = int(np.floor(gy * h / grid)), int(np.ceil((gy + 1) * h / grid))
        c0, c1 = int(np.floor(gx * w / grid)), int(np.ceil((gx + 1) * w / grid))
        out[:, j, gy, gx] = pair[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out.reshape(b, t - 1, grid * grid * c)


@pytest.mark.parametrize("grid", [1, 2, 3, 7])
def test_grid_features_match_a_loop_transcription(grid):
  from hhjax.models.backbones import i3d  # noqa: PLC0415
  fmap = np.random.default_rng(grid).normal(size=(2, 3, 7, 7, 5)).astype(np.float32)
  got = np.asarray(i3d.grid_features(fmap, grid))
  np.testing.assert_allclose(got, _grid_reference(fmap, grid), rtol=1e-5, atol=1e-6)


def test_one_cell_grid_is_the_pooled_feature():
  import flax.linen as nn  # noqa: PLC0415
  from hhjax.models.backbones import i3d  # noqa: PLC0415
  fmap = np.random.default_rng(0).normal(size=(1, 4, 7, 7, 6)).astype(np.float32)
  pooled = nn.avg_pool(fmap, (2, 7, 7), strides=(1, 1, 1), padding="VALID")[:, :, 0, 0]
  np.testing.assert_allclose(np.asarray(i3d.grid_features(fmap, 1)), pooled, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="grid=8"):
    i3d.grid_features(fmap, 8)


def test_grid_settings_are_checked_and_recorded(tmp_path):
  with pytest.raises(ValueError, match="grid must be 0 .* or 1..7 for a 224 px crop"):
    extract.ExtractConfig(grid=8)
  assert extract.ExtractConfig(grid=3).stream_dim == 9 * 1024
  base = ["--videos", str(tmp_path), "--out", str(tmp_path / "o"), "--random-weights"]
  args = extract.build_parser().parse_args(base + ["--grid", "2"])
  settings = extract.provenance(args)
  assert settings["grid"] == 2 and settings["feature_dim"] == 2 * 4 * 1024
  assert "grid" not in extract.provenance(extract.build_parser().parse_args(base))
  with pytest.raises(SystemExit):
    extract.main(["--stream", "handpose", "--videos", str(tmp_path), "--out",
                  str(tmp_path / "o"), "--grid", "2"])


def test_extractor_writes_the_grid_of_the_mixed_5c_map():
  """The extractor's grid path (uint8 scaling, the network up to Mixed_5c, the grid,
  the window mean) against the map computed directly and pooled by the loop reference."""
  import jax  # noqa: PLC0415
  from hhjax.models.backbones import i3d  # noqa: PLC0415
  variables = extract.random_variables(3, seed=0)
  # 64 px: a 2 x 2 Mixed_5c map (the grid path takes any size), cheap to run.
  frames = np.random.default_rng(0).integers(0, 256, size=(1, 9, 64, 64, 3), dtype=np.uint8)
  got = np.asarray(extract._features_fn(400, 3, True, 2)(variables, frames))
  model = i3d.InceptionI3d(final_endpoint="Mixed_5c")
  fmap = np.asarray(jax.jit(model.apply)(variables,
                                         frames.astype(np.float32) / 127.5 - 1.0))
  want = _grid_reference(fmap, 2).mean(axis=1)
  assert got.shape == (1, 4 * 1024)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
