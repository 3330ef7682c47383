"""Tests of hhjax.models.backbones.i3d: parity with the PyTorch reference, checkpoint mapping and I/O."""

import functools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models.backbones import i3d

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "i3d"
# Parity bound, relative to the largest absolute reference value.
REL_TOL = 1e-3


# --------------------------------------------------------------------------------------
# Golden parity (reference outputs of the PyTorch port with random weights).


@pytest.fixture(scope="module")
def golden_rgb():
  path = GOLDEN_DIR / "i3d_rgb_golden.npz"
  if not path.is_file():
    pytest.skip(f"{path} is absent: I3D parity tests need ../shared/golden/i3d beside the repo")
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden_flow(golden_rgb):
  path = GOLDEN_DIR / "i3d_flow_golden.npz"
  if not path.is_file():
    pytest.skip(f"{path} is absent: I3D parity tests need ../shared/golden/i3d beside the repo")
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _state_dict(golden):
  return {k[len("param/"):]: v for k, v in golden.items() if k.startswith("param/")}


@pytest.fixture(scope="module")
def stream_outputs(golden_rgb, golden_flow):
  """Runs each stream once (jitted) and caches (ours, reference) logits and features."""
  cache = {}

  def run(stream):
    if stream not in cache:
      state_dict = _state_dict(golden_rgb)
      golden = golden_rgb
      if stream == "flow":
        state_dict.update(_state_dict(golden_flow))  # only Conv3d_1a_7x7 differs
        golden = golden_flow
      in_channels = golden["clip_uint8_nthwc"].shape[-1]
      variables = i3d.params_from_torch(state_dict, in_channels=in_channels)
      model = i3d.InceptionI3d(in_channels=in_channels)
      clip = golden["clip_uint8_nthwc"].astype(np.float32) / 127.5 - 1.0  # (1, 32, 224, 224, C)
      logits, features = jax.jit(functools.partial(model.apply, train=False))(variables, clip)
      ref_logits = golden["logits"].transpose(0, 2, 1)  # (N, classes, T') -> (N, T', classes)
      ref_features = golden["features"][:, :, :, 0, 0].transpose(0, 2, 1)  # (N, T', 1024)
      cache[stream] = (np.asarray(logits), ref_logits, np.asarray(features), ref_features)
    return cache[stream]

  return run


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_golden_parity(stream, stream_outputs, record_property):
  logits, ref_logits, features, ref_features = stream_outputs(stream)
  assert logits.shape == ref_logits.shape == (1, 3, 400)
  assert features.shape == ref_features.shape == (1, 3, 1024)
  for name, ours, ref in (("logits", logits, ref_logits), ("features", features, ref_features)):
    err = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    print(f"I3D {stream} {name}: max abs error {err:.3g}, max |ref| {scale:.3g}, "
          f"relative {err / scale:.3g}")
    record_property(f"{stream}_{name}_max_abs_error", err)
    assert err <= REL_TOL * scale, f"{stream} {name}: max abs error {err} > {REL_TOL} * {scale}"


def test_reference_shapes_match_golden_state_dict(golden_rgb, golden_flow):
  expected = {k: v.shape for k, v in _state_dict(golden_rgb).items()}
  assert i3d.reference_shapes(in_channels=3) == expected
  flow = i3d.reference_shapes(in_channels=2)
  first = "Conv3d_1a_7x7.conv3d.weight"
  assert flow[first] == golden_flow["param/" + first].shape == (64, 2, 7, 7, 7)


# --------------------------------------------------------------------------------------
# Mapping errors and I/O (synthetic state dicts; no golden files needed).


def _random_state_dict(in_channels=3, num_classes=400, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in i3d.reference_shapes(in_channels, num_classes).items():
    value = rng.standard_normal(shape, dtype=np.float32)
    out[name] = np.abs(value) + 0.5 if name.endswith("running_var") else value
  return out


@pytest.fixture(scope="module")
def state_dict():
  return _random_state_dict(num_classes=10)


def test_params_from_torch_layout(state_dict):
  variables = i3d.params_from_torch(state_dict, num_classes=10)
  assert set(variables) == {"params", "batch_stats"}
  kernel = variables["params"]["Mixed_4b"]["b1b"]["conv3d"]["kernel"]
  weight = state_dict["Mixed_4b.b1b.conv3d.weight"]  # (out, in, t, h, w)
  np.testing.assert_array_equal(kernel, weight.transpose(2, 3, 4, 1, 0))
  assert kernel.shape == (3, 3, 3, 96, 208)
  bn_stats = variables["batch_stats"]["Conv3d_1a_7x7"]["bn"]
  np.testing.assert_array_equal(bn_stats["var"], state_dict["Conv3d_1a_7x7.bn.running_var"])
  np.testing.assert_array_equal(
    variables["params"]["logits"]["conv3d"]["bias"], state_dict["logits.conv3d.bias"]
  )
  assert "bn" not in variables["params"]["logits"]


def test_missing_key_is_named(state_dict):
  broken = dict(state_dict)
  del broken["Mixed_4b.b1b.bn.running_var"]
  with pytest.raises(i3d.CheckpointMismatchError) as info:
    i3d.params_from_torch(broken, num_classes=10)
  assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
  assert "missing key 'Mixed_4b.b1b.bn.running_var'" in str(info.value)
  assert info.value.missing == ["Mixed_4b.b1b.bn.running_var"]


def test_unexpected_key_is_named_and_num_batches_tracked_ignored(state_dict):
  extra = dict(state_dict)
  extra["Mixed_4b.b1b.bn.num_batches_tracked"] = np.array(7)
  i3d.params_from_torch(extra, num_classes=10)  # ignored
  extra["Mixed_4b.b3a.conv3d.weight"] = np.zeros((1, 1, 1, 1, 1), np.float32)
  expected = r"unexpected key 'Mixed_4b\.b3a\.conv3d\.weight'"
  with pytest.raises(i3d.CheckpointMismatchError, match=expected):
    i3d.params_from_torch(extra, num_classes=10)


def test_misshapen_key_names_expected_and_found_shapes(state_dict):
  broken = dict(state_dict)
  broken["Mixed_4b.b1b.conv3d.weight"] = np.zeros((208, 96, 1, 3, 3), np.float32)
  with pytest.raises(i3d.CheckpointMismatchError) as info:
    i3d.params_from_torch(broken, num_classes=10)
  message = str(info.value)
  assert (
    "'Mixed_4b.b1b.conv3d.weight': expected shape (208, 96, 3, 3, 3), found (208, 96, 1, 3, 3)"
  ) in message
  # A flow checkpoint read as RGB: the first layer is named, with a hint about in_channels.
  expected = r"Conv3d_1a_7x7\.conv3d\.weight.*\(64, 2, 7, 7, 7\)(.|\n)*in_channels=2"
  with pytest.raises(ValueError, match=expected):
    i3d.params_from_torch(state_dict, in_channels=2, num_classes=10)


def _assert_trees_identical(a, b):
  flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  flat_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(flat_a, flat_b):
    assert x.dtype == y.dtype and x.shape == y.shape, path
    np.testing.assert_array_equal(x, y, err_msg=str(path))


def test_npz_round_trip(state_dict, tmp_path):
  variables = i3d.params_from_torch(state_dict, num_classes=10)
  i3d.save_npz(variables, tmp_path / "from_variables.npz")
  _assert_trees_identical(i3d.load_pretrained(tmp_path / "from_variables.npz"), variables)
  loaded = i3d.load_npz(tmp_path / "from_variables.npz")
  assert loaded.keys() == state_dict.keys()  # stored under the reference names
  for name, value in state_dict.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  i3d.save_npz(state_dict, tmp_path / "from_state_dict.npz")
  reloaded = i3d.load_pretrained(tmp_path / "from_state_dict.npz", num_classes=10)
  _assert_trees_identical(reloaded, variables)
  with pytest.raises(i3d.CheckpointMismatchError, match="in_channels=2"):
    i3d.load_pretrained(tmp_path / "from_state_dict.npz", in_channels=2)


def test_save_npz_refuses_incomplete_weights(state_dict, tmp_path):
  broken = dict(state_dict)
  del broken["logits.conv3d.bias"]
  with pytest.raises(i3d.CheckpointMismatchError, match="logits.conv3d.bias"):
    i3d.save_npz(broken, tmp_path / "broken.npz")
  assert not (tmp_path / "broken.npz").exists()


def test_load_pretrained_rejects_unknown_suffix(tmp_path):
  with pytest.raises(ValueError, match=r"\.pt/\.pth"):
    i3d.load_pretrained(tmp_path / "weights.ckpt")


def test_torch_checkpoint_without_torch(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
  with pytest.raises(ImportError, match="pip install torch"):
    i3d.load_torch_checkpoint(tmp_path / "rgb_imagenet.pt")


def test_torch_checkpoint_round_trip(tmp_path):
  torch = pytest.importorskip(
    "torch", reason="torch is optional; the .pt reader is checked when it is installed"
  )
  state_dict = _random_state_dict(in_channels=2, num_classes=5, seed=1)
  saved = {name: torch.from_numpy(value) for name, value in state_dict.items()}
  saved["Conv3d_1a_7x7.bn.num_batches_tracked"] = torch.tensor(3)
  torch.save(saved, tmp_path / "flow.pt")
  loaded = i3d.load_torch_checkpoint(tmp_path / "flow.pt")
  for name, value in state_dict.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  _assert_trees_identical(
    i3d.load_pretrained(tmp_path / "flow.pt", in_channels=2),
    i3d.params_from_torch(state_dict, in_channels=2, num_classes=5),
  )


# --------------------------------------------------------------------------------------
# Shapes (traced with jax.eval_shape: no compute).


def _out_frames(t):
  # /2 (Conv3d_1a), /2 (MaxPool3d_4a), /2 (MaxPool3d_5a), then the 2-frame VALID pool.
  return math.ceil(t / 8) - 1


@pytest.mark.parametrize(
  "shape, num_classes, expected_grid",
  [
    ((2, 32, 224, 224, 3), 400, None),
    ((1, 16, 224, 224, 3), 400, None),
    ((1, 33, 200, 210, 2), 7, None),
    ((1, 9, 193, 193, 3), 400, None),  # smallest accepted input
    ((1, 64, 256, 288, 3), 400, (2, 3)),  # larger frames keep the pooled grid, like the reference
  ],
)
def test_output_shapes(shape, num_classes, expected_grid):
  model = i3d.InceptionI3d(num_classes=num_classes, in_channels=shape[-1])
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  logits, features = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  grid = () if expected_grid is None else expected_grid
  t_out = _out_frames(shape[1])
  assert logits.shape == (shape[0], t_out, *grid, num_classes)
  assert features.shape == (shape[0], t_out, *grid, 1024)


def test_train_mode_traces_with_dropout_and_batch_stats():
  model = i3d.InceptionI3d(num_classes=7)
  x = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)

  def train_step(variables, x, key):
    return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

  (logits, features), updates = jax.eval_shape(train_step, variables, x, jax.random.key(1))
  assert logits.shape == (2, 1, 7) and features.shape == (2, 1, 1024)
  assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(
    variables["batch_stats"]
  )


@pytest.mark.parametrize(
  "shape",
  [(1, 8, 224, 224, 3), (1, 32, 192, 224, 3), (1, 32, 224, 224, 2), (32, 224, 224, 3)],
)
def test_bad_inputs_raise(shape):
  model = i3d.InceptionI3d()
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  with pytest.raises(ValueError, match="InceptionI3d"):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def test_same_padding():
  assert i3d.same_padding(224, 7, 2) == (2, 3)  # divisible: k - s = 5, smaller half first
  assert i3d.same_padding(225, 7, 2) == (3, 3)  # remainder 1: k - 1 = 6
  assert i3d.same_padding(7, 2, 2) == (0, 1)
  assert i3d.same_padding(16, 1, 1) == (0, 0)
