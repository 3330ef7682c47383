"""Tests of the 2-D backbones (ResNet + temporal shift, MobileNetV2, AlexNet) and the
torchvision weight import.

Without torch: the temporal shift against a loop transcription, adaptive pooling
against torch's bin rule written out, the expected checkpoint keys against the
architectures written out here, weight round trips and error messages. With torch and
torchvision: random-weight torchvision models (BatchNorm statistics perturbed) loaded
into the Flax modules give the same outputs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models.backbones import alexnet as alexnet_lib
from hhjax.models.backbones import mobilenet_v2 as mobilenet_lib
from hhjax.models.backbones import resnet as resnet_lib
from hhjax.models.backbones import torchvision_weights as tw

# Parity bound, relative to the largest absolute reference output.
REL_TOL = 1e-4


# --------------------------------------------------------------------------------------
# Temporal shift.


def _shift_reference(x, num_segments, fold):
  """Loop transcription of TSM's shift on (N, H, W, C): frame t takes channels
  [0, fold) from frame t + 1 and [fold, 2 fold) from frame t - 1 of its clip."""
  n, _, _, c = x.shape
  out = np.zeros_like(x)
  for i in range(n):
    t = i % num_segments
    for ch in range(c):
      if ch < fold:
        if t + 1 < num_segments:
          out[i, :, :, ch] = x[i + 1, :, :, ch]
      elif ch < 2 * fold:
        if t > 0:
          out[i, :, :, ch] = x[i - 1, :, :, ch]
      else:
        out[i, :, :, ch] = x[i, :, :, ch]
  return out


@pytest.mark.parametrize(
  "channels, fraction, folds",
  [(64, 0.25, 8), (20, 0.125, 1), (40, 0.15, 3), (16, 1.0, 8), (7, 0.0, 0),
   (3, 0.5, 0)],
)
def test_shifted_channels_hand_values(channels, fraction, folds):
  # (64, 0.25) is TSM's n_div=8 on 64 channels: 64 // 8 = 8 each way.
  assert resnet_lib.shifted_channels(channels, fraction) == folds


@pytest.mark.parametrize(
  "num_segments, clips, channels, fraction, fold",
  [(4, 2, 16, 0.25, 2), (3, 1, 20, 0.125, 1), (2, 3, 6, 1.0, 3), (1, 2, 8, 0.5, 2)],
)
def test_temporal_shift_matches_loops(num_segments, clips, channels, fraction, fold):
  rng = np.random.default_rng(num_segments)
  x = rng.normal(size=(clips * num_segments, 2, 3, channels)).astype(np.float32)
  shift = jax.jit(resnet_lib.temporal_shift, static_argnums=(1, 2))
  out = np.asarray(shift(x, num_segments, fraction))
  np.testing.assert_array_equal(out, _shift_reference(x, num_segments, fold))


def test_temporal_shift_errors_name_the_argument():
  x = jnp.zeros((6, 2, 2, 8))
  with pytest.raises(ValueError, match="not a multiple of num_segments=4"):
    resnet_lib.temporal_shift(x, 4, 0.25)
  with pytest.raises(ValueError, match="fraction must be in"):
    resnet_lib.temporal_shift(x, 3, 1.5)
  with pytest.raises(ValueError, match="num_segments must be >= 1"):
    resnet_lib.temporal_shift(x, 0, 0.25)
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    resnet_lib.temporal_shift(jnp.zeros((6, 2, 8)), 3, 0.25)


def _random_variables(model, shape, seed=0):
  """Random variables for `model` (positive BatchNorm variances), without running its
  initialisers: `init` compiles one initialiser per shape, slow on a busy CPU."""
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    value = rng.normal(size=leaf.shape).astype(np.float32)
    if path[-1].key == "var":
      value = np.abs(value) + 0.5
    if path[-1].key == "kernel":
      value /= np.sqrt(np.prod(leaf.shape[:-1]))  # keeps activations O(1)
    return value

  return jax.tree_util.tree_map_with_path(draw, abstract)


def test_resnet_shift_mixes_frames_of_a_clip_only():
  # Clips of 3 frames. One batch holds three copies of 2 clips: as is, frame 1 bumped,
  # frame 4 bumped; shifting never mixes clips, so the copies do not interact.
  x = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype(np.float32)
  bump1, bump4 = x.copy(), x.copy()
  bump1[1] += 1.0
  bump4[4] += 1.0
  batch = np.concatenate([x, bump1, bump4])  # (18, 16, 16, 3)
  shifted = resnet_lib.ResNet(18, temporal_shift=0.25, num_segments=3)
  variables = _random_variables(shifted, (6, 16, 16, 3))

  def changed(model):
    out = np.asarray(model.apply(variables, batch)).reshape(3, 6, -1)
    return [list(np.abs(out[k] - out[0]).max(axis=1) > 1e-6) for k in (1, 2)]

  # 8 shifted blocks carry a change to every frame of its clip and to no other.
  assert changed(shifted) == [[True] * 3 + [False] * 3, [False] * 3 + [True] * 3]
  plain = resnet_lib.ResNet(18, num_segments=3)
  assert changed(plain) == [[False, True, False, False, False, False],
                            [False, False, False, False, True, False]]


def test_resnet_rejects_bad_settings_and_batches():
  with pytest.raises(ValueError, match="not a multiple of num_segments=4"):
    resnet_lib.ResNet(18, temporal_shift=0.25, num_segments=4).init(
      jax.random.key(0), jnp.zeros((6, 16, 16, 3))
    )
  with pytest.raises(ValueError, match="depth must be one of"):
    resnet_lib.ResNet(20)
  with pytest.raises(ValueError, match="shift_place must be one of"):
    resnet_lib.ResNet(18, shift_place="middle")
  with pytest.raises(ValueError, match="temporal_shift must be in"):
    resnet_lib.ResNet(18, temporal_shift=-0.1)
  with pytest.raises(ValueError, match=r"images must be \(N, H, W, C\)"):
    resnet_lib.ResNet(18).init(jax.random.key(0), jnp.zeros((16, 16, 3)))


# --------------------------------------------------------------------------------------
# Adaptive pooling, channel rounding, output shapes.


def test_adaptive_pool_bins_hand_example():
  # 5 -> 3: floor(0), ceil(5/3)=2 | floor(5/3)=1, ceil(10/3)=4 | floor(10/3)=3, 5.
  assert alexnet_lib.adaptive_pool_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
  assert alexnet_lib.adaptive_pool_bins(1, 6) == [(0, 1)] * 6
  assert alexnet_lib.adaptive_pool_bins(12, 6) == [(0, 2), (2, 4), (4, 6), (6, 8),
                                                   (8, 10), (10, 12)]
  x = jnp.arange(5, dtype=jnp.float32).reshape(1, 5, 1, 1)
  pooled = alexnet_lib.adaptive_avg_pool(x, (3, 1))
  np.testing.assert_allclose(np.asarray(pooled)[0, :, 0, 0], [0.5, 2.0, 3.5])


def _adaptive_pool_reference(x, out_h, out_w):
  n, h, w, c = x.shape
  out = np.zeros((n, out_h, out_w, c), np.float64)
  for i in range(out_h):
    h0, h1 = (i * h) // out_h, int(np.ceil((i + 1) * h / out_h))
    for j in range(out_w):
      w0, w1 = (j * w) // out_w, int(np.ceil((j + 1) * w / out_w))
      out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("shape, out", [((2, 7, 5, 3), (6, 6)), ((1, 13, 4, 2), (3, 2)),
                                        ((1, 3, 2, 2), (6, 6))])
def test_adaptive_avg_pool_matches_loops(shape, out):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(alexnet_lib.adaptive_avg_pool(x, out)),
    _adaptive_pool_reference(x, *out),
    rtol=1e-5, atol=1e-6,
  )


@pytest.mark.parametrize(
  "value, rounded",
  # 11.2: rounds to 8, which loses > 10%, so one step up; 8.4 -> 8 loses < 10%.
  [(32, 32), (11.2, 16), (8.4, 8), (12, 16), (72, 72), (1280, 1280), (3, 8),
   (100, 104)],
)
def test_make_divisible_hand_values(value, rounded):
  assert mobilenet_lib.make_divisible(value) == rounded


def test_output_shapes_and_input_checks():
  x = jnp.zeros((1, 64, 64, 3))
  alex = alexnet_lib.AlexNet()
  variables = jax.eval_shape(alex.init, jax.random.key(0), x)
  assert "classifier_1" not in variables["params"]  # features-only: no classifier
  assert jax.eval_shape(alex.apply, variables, x).shape == (1, 9216)
  fc7 = alexnet_lib.AlexNet(feature_layer="fc7")
  variables = jax.eval_shape(fc7.init, jax.random.key(0), x)
  assert jax.eval_shape(fc7.apply, variables, x).shape == (1, 4096)
  fmap = jax.eval_shape(lambda v, x: alex.apply(v, x, return_map=True), variables, x)
  assert fmap.shape == (1, 1, 1, 256)
  with pytest.raises(ValueError, match="must be >= 63"):
    alex.init(jax.random.key(0), jnp.zeros((1, 62, 64, 3)))
  net = mobilenet_lib.MobileNetV2(num_classes=5, width_mult=0.5)
  y = jnp.zeros((2, 64, 96, 3))
  variables = jax.eval_shape(net.init, jax.random.key(0), y)
  assert jax.eval_shape(net.apply, variables, y).shape == (2, 5)
  fmap = jax.eval_shape(lambda v, x: net.apply(v, x, return_map=True), variables, y)
  assert fmap.shape == (2, 2, 3, 1280)  # width 0.5 keeps the last layer at 1280
  res = resnet_lib.ResNet(50)
  variables = jax.eval_shape(res.init, jax.random.key(0), y)
  fmap = jax.eval_shape(lambda v, x: res.apply(v, x, return_map=True), variables, y)
  assert fmap.shape == (2, 2, 3, 2048) and res.feature_dim == 2048


# --------------------------------------------------------------------------------------
# torchvision key layouts, written out from the architectures.


def _conv_bn(shapes, conv, bn, cin, cout, k, groups=1):
  shapes[f"{conv}.weight"] = (cout, cin // groups, k, k)
  for leaf in ("weight", "bias", "running_mean", "running_var"):
    shapes[f"{bn}.{leaf}"] = (cout,)


def _resnet_spec(depth, num_classes):
  counts = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
  bottleneck = depth >= 50
  shapes = {}
  _conv_bn(shapes, "conv1", "bn1", 3, 64, 7)
  cin = 64
  for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
    for i in range(count):
      p = f"layer{stage}.{i}"
      cout = planes * (4 if bottleneck else 1)
      if bottleneck:
        _conv_bn(shapes, f"{p}.conv1", f"{p}.bn1", cin, planes, 1)
        _conv_bn(shapes, f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
        _conv_bn(shapes, f"{p}.conv3", f"{p}.bn3", planes, cout, 1)
      else:
        _conv_bn(shapes, f"{p}.conv1", f"{p}.bn1", cin, planes, 3)
        _conv_bn(shapes, f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
      if i == 0 and (stage > 1 or cin != cout):
        _conv_bn(shapes, f"{p}.downsample.0", f"{p}.downsample.1", cin, cout, 1)
      cin = cout
  if num_classes:
    shapes["fc.weight"], shapes["fc.bias"] = (num_classes, cin), (num_classes,)
  return shapes


def _mobilenet_spec(num_classes):
  # Width 1.0: every count below is already a multiple of 8.
  shapes = {}
  _conv_bn(shapes, "features.0.0", "features.0.1", 3, 32, 3)
  cin, index = 32, 1
  for t, c, n, _ in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                     (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
    for _ in range(n):
      p, hidden, j = f"features.{index}.conv", cin * t, 0
      if t != 1:
        _conv_bn(shapes, f"{p}.0.0", f"{p}.0.1", cin, hidden, 1)
        j = 1
      _conv_bn(shapes, f"{p}.{j}.0", f"{p}.{j}.1", hidden, hidden, 3, groups=hidden)
      _conv_bn(shapes, f"{p}.{j + 1}", f"{p}.{j + 2}", hidden, c, 1)
      cin, index = c, index + 1
  _conv_bn(shapes, f"features.{index}.0", f"features.{index}.1", cin, 1280, 1)
  if num_classes:
    shapes["classifier.1.weight"] = (num_classes, 1280)
    shapes["classifier.1.bias"] = (num_classes,)
  return shapes


def _alexnet_spec(num_classes):
  shapes = {}
  layers = [("features.0", 3, 64, 11), ("features.3", 64, 192, 5),
            ("features.6", 192, 384, 3), ("features.8", 384, 256, 3),
            ("features.10", 256, 256, 3)]
  for name, cin, cout, k in layers:
    shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)
  if num_classes:
    for name, fin, fout in [("classifier.1", 9216, 4096), ("classifier.4", 4096, 4096),
                            ("classifier.6", 4096, num_classes)]:
      shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (fout, fin), (fout,)
  return shapes


SPECS = {
  "resnet18": lambda k: _resnet_spec(18, k),
  "resnet50": lambda k: _resnet_spec(50, k),
  "mobilenet_v2": _mobilenet_spec,
  "alexnet": _alexnet_spec,
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_expected_keys_match_architecture(name):
  assert tw.expected_shapes(name) == SPECS[name](1000)
  features_only = tw.create_model(name, num_classes=None)
  assert tw.expected_shapes(name, features_only) == SPECS[name](None)


def _random_state_dict(name, num_classes=1000, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32)
          for k, s in SPECS[name](num_classes).items()}


# --------------------------------------------------------------------------------------
# Loading without torch.

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias",
               ("params", "scale"): "weight", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}


def _to_torchvision(variables):
  """Flax variables -> torchvision-named NumPy dict, written independently here."""
  out = {}

  def walk(tree, collection, modules):
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(value, collection, modules + key.split("_"))
        continue
      value = np.asarray(value)
      if key == "kernel" and value.ndim == 4:
        value = np.moveaxis(value, (0, 1, 2, 3), (2, 3, 1, 0))  # HWIO -> OIHW
      elif key == "kernel":
        value = value.T
      out[".".join(modules + [_TORCH_LEAF[(collection, key)]])] = value

  for collection in ("params", "batch_stats"):
    walk(jax.tree.map(np.asarray, dict(variables.get(collection, {}))), collection, [])
  return out


def test_resnet18_state_dict_lands_in_the_right_places():
  sd = _random_state_dict("resnet18", num_classes=10)
  sd["bn1.num_batches_tracked"] = np.array(7)  # ignored
  v = tw.load_state_dict("resnet18", sd)
  p, s = v["params"], v["batch_stats"]
  # Spot checks by explicit indexing: OIHW [o, i, h, w] is HWIO [h, w, i, o].
  assert p["conv1"]["kernel"][2, 5, 1, 17] == sd["conv1.weight"][17, 1, 2, 5]
  assert (p["layer2_0"]["downsample_0"]["kernel"][0, 0, 63, 100]
          == sd["layer2.0.downsample.0.weight"][100, 63, 0, 0])
  assert p["fc"]["kernel"][300, 7] == sd["fc.weight"][7, 300]
  np.testing.assert_array_equal(p["layer4_1"]["bn2"]["scale"],
                                sd["layer4.1.bn2.weight"])
  np.testing.assert_array_equal(p["layer4_1"]["bn2"]["bias"], sd["layer4.1.bn2.bias"])
  np.testing.assert_array_equal(s["layer3_0"]["bn1"]["mean"],
                                sd["layer3.0.bn1.running_mean"])
  np.testing.assert_array_equal(s["layer3_0"]["bn1"]["var"],
                                sd["layer3.0.bn1.running_var"])
  back = _to_torchvision(v)
  del sd["bn1.num_batches_tracked"]
  assert back.keys() == sd.keys()
  for key in sd:
    np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
  library_back = tw.state_dict_from_variables(v)
  for key in sd:
    np.testing.assert_array_equal(library_back[key], sd[key], err_msg=key)


@pytest.mark.parametrize(
  "name, model, shape",
  [("mobilenet_v2", mobilenet_lib.MobileNetV2(num_classes=3, width_mult=0.35),
    (1, 32, 32, 3)),
   ("resnet18", resnet_lib.ResNet(18, temporal_shift=0.25, num_segments=2),
    (2, 16, 16, 3))],
)
def test_random_flax_variables_round_trip(name, model, shape):
  # Random values everywhere (BatchNorm statistics included), so mix-ups would show.
  variables = _random_variables(model, shape)
  loaded = tw.load_state_dict(name, _to_torchvision(variables), model=model)
  flat, _ = jax.tree_util.tree_flatten_with_path(variables)
  loaded_flat = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  assert len(flat) == len(loaded_flat)
  for path, value in flat:
    np.testing.assert_array_equal(loaded_flat[path], value, err_msg=str(path))


def test_mismatch_error_lists_every_problem_at_once():
  sd = _random_state_dict("resnet18")
  del sd["layer2.0.downsample.0.weight"]
  del sd["bn1.running_var"]
  sd["layer5.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
  sd["layer3.1.bn2.running_var"] = np.zeros((255,), np.float32)
  with pytest.raises(tw.WeightMismatchError) as info:
    tw.load_state_dict("resnet18", sd)
  err = info.value
  assert isinstance(err, KeyError) and isinstance(err, ValueError)
  assert sorted(err.missing) == ["bn1.running_var", "layer2.0.downsample.0.weight"]
  assert err.unexpected == ["layer5.0.conv1.weight"]
  assert err.mismatched == {"layer3.1.bn2.running_var": ((256,), (255,))}
  message = str(err)
  for text in ("missing key 'layer2.0.downsample.0.weight'",
               "missing key 'bn1.running_var'",
               "unexpected key 'layer5.0.conv1.weight'",
               "misshapen key 'layer3.1.bn2.running_var': expected shape (256,), "
               "found (255,)", "resnet18"):
    assert text in message


def test_classifier_is_dropped_for_features_only_modules():
  sd = _random_state_dict("resnet18", num_classes=1000)
  v = tw.load_state_dict("resnet18", sd, model=resnet_lib.ResNet(18))
  assert "fc" not in v["params"]
  sd_alex = _random_state_dict("alexnet", num_classes=7)
  v = tw.load_state_dict("alexnet", sd_alex, model=alexnet_lib.AlexNet())
  assert sorted(v["params"]) == [
    "features_0", "features_10", "features_3", "features_6", "features_8"
  ]
  v = tw.load_state_dict("alexnet", sd_alex,
                         model=alexnet_lib.AlexNet(feature_layer="fc7"))
  assert "classifier_4" in v["params"] and "classifier_6" not in v["params"]
  # A features-only checkpoint loads into the default (features-only) module.
  no_head = {k: x for k, x in sd.items() if not k.startswith("fc.")}
  assert "fc" not in tw.load_state_dict("resnet18", no_head)["params"]
  # Default: num_classes read off the checkpoint.
  default = tw.load_state_dict("alexnet", sd_alex)
  assert default["params"]["classifier_6"]["bias"].shape == (7,)


def test_class_count_mismatch_is_a_clear_error():
  sd = _random_state_dict("resnet18", num_classes=1000)
  ten = resnet_lib.ResNet(18, num_classes=10)
  with pytest.raises(tw.WeightMismatchError, match="classifier has 1000 classes") as err:
    tw.load_state_dict("resnet18", sd, model=ten)
  assert "num_classes=10" in str(err.value) and "num_classes=None" in str(err.value)
  assert set(err.value.mismatched) == {"fc.weight", "fc.bias"}
  # A features-only checkpoint for a module that wants a classifier: the fc is missing.
  no_head = {k: x for k, x in sd.items() if not k.startswith("fc.")}
  with pytest.raises(tw.WeightMismatchError, match="missing key 'fc.weight'"):
    tw.load_state_dict("resnet18", no_head, model=resnet_lib.ResNet(18, num_classes=10))


def test_bad_names_and_models():
  with pytest.raises(ValueError, match="model_name must be one of"):
    tw.load_state_dict("vgg16", {})
  with pytest.raises(ValueError, match="needs a ResNet"):
    tw.load_state_dict("resnet18", {}, model=alexnet_lib.AlexNet())
  with pytest.raises(ValueError, match="depth 50"):
    tw.expected_shapes("resnet18", resnet_lib.ResNet(50))


def test_load_file_npz_and_missing_torch(tmp_path, monkeypatch):
  sd = _random_state_dict("alexnet", num_classes=4)
  path = tmp_path / "alexnet.npz"
  np.savez(path, **sd)
  v = tw.load_file("alexnet", path)
  np.testing.assert_array_equal(v["params"]["classifier_6"]["kernel"],
                                sd["classifier.6.weight"].T)
  with pytest.raises(ValueError, match=r"expected a \.pth / \.pt"):
    tw.load_file("alexnet", tmp_path / "alexnet.bin")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  with pytest.raises(ImportError, match="pip install torch"):
    tw.load_file("alexnet", tmp_path / "alexnet.pth")


# --------------------------------------------------------------------------------------
# Parity with torchvision (needs torch and torchvision).


@pytest.fixture(scope="module")
def tv():
  """torchvision's resnet / mobilenetv2 / alexnet model modules."""
  pytest.importorskip("torch", reason="torchvision parity tests need torch")
  try:
    import torchvision.models  # noqa: F401, PLC0415
  except ImportError:
    pytest.skip("torchvision parity tests need torchvision (pip install torchvision)")
  except (RuntimeError, OSError):
    # A torchvision whose compiled ops do not load (e.g. a CUDA build beside a CPU
    # torch) fails in its package __init__; the model definitions are plain Python,
    # so load them with that __init__ skipped.
    for key in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
      del sys.modules[key]
    spec = importlib.util.find_spec("torchvision")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["torchvision"] = package
  return types.SimpleNamespace(
    **{m: importlib.import_module(f"torchvision.models.{m}")
       for m in ("resnet", "mobilenetv2", "alexnet")}
  )


def _perturbed(torch_model, seed=0):
  """Eval-mode model with random BatchNorm affine parameters and statistics."""
  import torch  # noqa: PLC0415

  gen = torch.Generator().manual_seed(seed)
  for module in torch_model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      c = module.num_features
      module.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
      module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
      module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
      module.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)
  return torch_model.eval()


def _torch_forward(torch_model, images_nhwc):
  import torch  # noqa: PLC0415

  with torch.no_grad():
    return torch_model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2))).numpy()


def _assert_close(ours, ref):
  ours = np.asarray(ours)
  assert ours.shape == ref.shape
  err = np.abs(ours - ref).max() / np.abs(ref).max()
  assert err < REL_TOL, f"relative error {err:.2e}"


@pytest.mark.parametrize(
  "name, factory, shape",
  [("resnet18", "resnet.resnet18", (2, 32, 32, 3)),
   ("resnet50", "resnet.resnet50", (1, 32, 32, 3)),
   ("mobilenet_v2", "mobilenetv2.mobilenet_v2", (2, 32, 32, 3)),
   ("alexnet", "alexnet.alexnet", (1, 64, 64, 3)),
   ("alexnet", "alexnet.alexnet", (1, 100, 79, 3))],  # non-integral 5x4 -> 6x6 bins
)
def test_logits_match_torchvision(tv, name, factory, shape):
  import torch  # noqa: PLC0415

  module, fn = factory.split(".")
  torch.manual_seed(0)
  torch_model = _perturbed(getattr(getattr(tv, module), fn)(weights=None))
  sd = torch_model.state_dict()
  assert tw.expected_shapes(name) == {
    k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")
  }
  images = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  variables = tw.load_state_dict(name, sd)  # torch tensors, num_classes 1000
  model = tw.create_model(name, num_classes=1000)
  _assert_close(model.apply(variables, images), _torch_forward(torch_model, images))


def test_features_match_torchvision(tv):
  import torch  # noqa: PLC0415

  torch.manual_seed(1)
  images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  resnet = _perturbed(tv.resnet.resnet18(weights=None))
  sd = resnet.state_dict()
  resnet.fc = torch.nn.Identity()
  model = resnet_lib.ResNet(18)
  variables = tw.load_state_dict("resnet18", sd, model=model)
  _assert_close(model.apply(variables, images), _torch_forward(resnet, images))

  alex = tv.alexnet.alexnet(weights=None).eval()
  sd = alex.state_dict()
  images = np.random.default_rng(3).normal(size=(1, 70, 66, 3)).astype(np.float32)
  for layer, head in (("pool", torch.nn.Identity()), ("fc7", alex.classifier[:6])):
    alex.classifier = head
    model = alexnet_lib.AlexNet(feature_layer=layer)
    variables = tw.load_state_dict("alexnet", sd, model=model)
    _assert_close(model.apply(variables, images), _torch_forward(alex, images))


def test_adaptive_avg_pool_matches_torch(tv):
  import torch  # noqa: PLC0415

  for h, w in ((5, 4), (1, 1), (13, 7), (6, 6)):
    x = np.random.default_rng(h).normal(size=(2, h, w, 3)).astype(np.float32)
    ref = torch.nn.functional.adaptive_avg_pool2d(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), (6, 6)
    ).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(alexnet_lib.adaptive_avg_pool(x, 6)), ref,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("place", ["residual", "block"])
def test_temporal_shift_resnet_matches_shifted_torchvision(tv, place):
  import torch  # noqa: PLC0415

  segments, fraction = 2, 0.25

  class Shifted(torch.nn.Module):
    """Runs `inner` on TSM-shifted input (N, C, H, W), written with index loops."""

    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, x):
      fold = int(x.shape[1] * fraction / 2)
      out = x.clone()
      out[:, :2 * fold] = 0
      for i in range(x.shape[0]):
        t = i % segments
        if t + 1 < segments:
          out[i, :fold] = x[i + 1, :fold]
        if t > 0:
          out[i, fold:2 * fold] = x[i - 1, fold:2 * fold]
      return self.inner(out)

  torch.manual_seed(2)
  torch_model = _perturbed(tv.resnet.resnet18(weights=None))
  sd = torch_model.state_dict()
  for stage in (torch_model.layer1, torch_model.layer2, torch_model.layer3,
                torch_model.layer4):
    for i, block in enumerate(stage):
      if place == "residual":
        block.conv1 = Shifted(block.conv1)
      else:
        stage[i] = Shifted(block)
  model = resnet_lib.ResNet(18, num_classes=1000, temporal_shift=fraction,
                            num_segments=segments, shift_place=place)
  variables = tw.load_state_dict("resnet18", sd, model=model)
  images = np.random.default_rng(4).normal(size=(4, 32, 32, 3)).astype(np.float32)
  ours = model.apply(variables, images)
  _assert_close(ours, _torch_forward(torch_model, images))
  unshifted = resnet_lib.ResNet(18, num_classes=1000)
  plain = np.asarray(unshifted.apply(variables, images))
  assert np.abs(plain - np.asarray(ours)).max() > 1e-3  # the shift matters here


def test_pth_file_with_torch(tv, tmp_path):
  import torch  # noqa: PLC0415

  mobilenet = tv.mobilenetv2.mobilenet_v2(weights=None, num_classes=3, width_mult=0.5)
  sd = mobilenet.state_dict()
  path = tmp_path / "m.pth"
  torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
  model = mobilenet_lib.MobileNetV2(num_classes=3, width_mult=0.5)
  from_file = tw.load_file("mobilenet_v2", path, model=model)
  direct = tw.load_state_dict("mobilenet_v2", sd, model=model)
  jax.tree.map(np.testing.assert_array_equal, from_file, direct)
  assert tw.expected_shapes("mobilenet_v2", model) == {
    k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")
  }
