"""MS-TCN and MS-TCN++ (`mstcn`, `mstcn_pp`): each against a naive NumPy forward pass,
the dual dilated layer against a hand-worked example, mask invariance, the registry,
parameter counts and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import config as base_config
from hhjax import losses
from hhjax.models import segmenters
from hhjax.models.segmenters.mstcn import MSTCN
from hhjax.models.segmenters.mstcn_pp import DualDilatedLayer, MSTCNPlusPlus


# ---------------------------------------------------------------- NumPy reference

def np_conv(x, p, dilation=1):
  """Naive 'same' conv of one video `x` (T, Ci) with Flax params `p` (kernel (K, Ci, Co),
  bias (Co,)): y[t] = b + sum_k x[t + (k - K//2) * dilation] @ W[k], zeros outside."""
  w, b = np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)
  k_size, t_len = w.shape[0], x.shape[0]
  y = np.tile(b, (t_len, 1))
  for t in range(t_len):
    for k in range(k_size):
      s = t + (k - k_size // 2) * dilation
      if 0 <= s < t_len:
        y[t] += x[s] @ w[k]
  return y


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def relu(z):
  return np.maximum(z, 0.0)


def np_stage(p, x, num_layers):
  """One MS-TCN stage on one video: (features, logits)."""
  h = np_conv(x, p["tcn"]["conv_in"])
  for i in range(num_layers):
    lp = p["tcn"][f"layer_{i}"]
    h = h + np_conv(relu(np_conv(h, lp["conv_dilated"], 2**i)), lp["conv_1x1"])
  return h, np_conv(h, p["classifier"])


def np_mstcn(params, x, num_stages, num_layers):
  out, inputs = [], x
  for s in range(num_stages):
    h, logits = np_stage(params[f"stage_{s}"], inputs, num_layers)
    out.append(logits)
    inputs = np_softmax(logits)
  return np.stack(out), h


def np_dual_layer(p, x, small, large):
  a = np_conv(x, p["conv_large"], large)
  b = np_conv(x, p["conv_small"], small)
  return x + relu(np_conv(np.concatenate([a, b], -1), p["conv_fusion"]))


def np_mstcn_pp(params, x, num_layers_pg, num_layers_r, num_refinements):
  pg = params["pg"]
  h = np_conv(x, pg["conv_in"])
  for l in range(num_layers_pg):
    h = np_dual_layer(pg[f"layer_{l}"], h, 2**l, 2**(num_layers_pg - 1 - l))
  logits = np_conv(h, pg["classifier"])
  out = [logits]
  for r in range(num_refinements):
    h, logits = np_stage(params[f"refinement_{r}"], np_softmax(logits), num_layers_r)
    out.append(logits)
  return np.stack(out), h


# ---------------------------------------------------------------- helpers

TINY = {
    "mstcn": dict(num_classes=3, num_stages=3, num_layers=4, channels=8,
                  dropout_rate=0.0),
    "mstcn_pp": dict(num_classes=3, num_layers_pg=4, num_layers_r=3, num_refinements=2,
                     channels=8, dropout_rate=0.0),
}
CLASSES = {"mstcn": MSTCN, "mstcn_pp": MSTCNPlusPlus}


def _padded_batch(rng, lengths, t, dims):
  """(x, mask) with garbage (large values) beyond each video's length."""
  x = rng.normal(size=(len(lengths), t, dims)).astype(np.float32)
  mask = np.zeros((len(lengths), t), np.float32)
  for i, n in enumerate(lengths):
    mask[i, :n] = 1
    x[i, n:] = rng.normal(size=(t - n, dims)) * 50
  return x, mask


def _init(model, x, mask):
  params = model.init(jax.random.key(0), x, mask)["params"]
  # Larger weights than the default init, so stages change each other's predictions.
  return jax.tree.map(lambda a: a * 2.0, params)


# ---------------------------------------------------------------- tests

def test_dual_dilated_layer_hand_worked_at_video_end():
  # One channel, T = 8, the video has 6 frames; frames 6-7 hold garbage.
  # Large dilation 4, taps (2, 0, 3): a[t] = 2 x[t-4] + 3 x[t+4].
  # Small dilation 1, taps (0, 1, -1): b[t] = x[t] - x[t+1].
  # Fusion weights (1, 1): out[t] = x[t] + relu(a[t] + b[t]).
  p = {"conv_large": {"kernel": np.array([2.0, 0.0, 3.0]).reshape(3, 1, 1),
                      "bias": np.zeros(1)},
       "conv_small": {"kernel": np.array([0.0, 1.0, -1.0]).reshape(3, 1, 1),
                      "bias": np.zeros(1)},
       "conv_fusion": {"kernel": np.ones((1, 2, 1)), "bias": np.zeros(1)}}
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
  x = np.array([1, 2, 3, 4, 5, 6, 100, -100], np.float32).reshape(1, 8, 1)
  mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], np.float32)
  layer = DualDilatedLayer(1, dilation_small=1, dilation_large=4, dropout_rate=0.5)
  got = np.asarray(layer.apply({"params": p}, x, mask))[0, :, 0]
  # By hand, frames past the video's end read as 0:
  # t=0: a=3*5=15,  b=1-2=-1 -> 1+14=15     t=1: a=3*6=18, b=2-3=-1 -> 2+17=19
  # t=2: a=3*x6=0,  b=-1 -> relu 0 -> 3     t=3: a=0,      b=-1 -> 4
  # t=4: a=2*1=2,   b=5-6=-1 -> 5+1=6       t=5: a=2*2=4,  b=6-x6=6 -> 6+10=16
  # Padded frames keep the input's values (the residual adds nothing there):
  # residual layers take inputs that are zero on padded frames (tcn.residual).
  np.testing.assert_allclose(got, [15, 19, 3, 4, 6, 16, 100, -100], rtol=1e-6)
  # The same with the naive loop on the 6 real frames.
  ref = np_dual_layer(p, x[0, :6].astype(np.float64), small=1, large=4)[:, 0]
  np.testing.assert_allclose(got[:6], ref, rtol=1e-6)
  # An input zero on its padded frames, as every stage gives, stays zero there.
  zeroed = x * mask[..., None]
  got = np.asarray(layer.apply({"params": p}, zeroed, mask))[0, :, 0]
  np.testing.assert_allclose(got, [15, 19, 3, 4, 6, 16, 0, 0], rtol=1e-6)


def test_dual_dilated_layer_two_channels_matches_loop():
  rng = np.random.default_rng(1)
  x, mask = _padded_batch(rng, [8, 5], 8, 2)
  layer = DualDilatedLayer(2, dilation_small=2, dilation_large=4, dropout_rate=0.5)
  params = layer.init(jax.random.key(3), x, mask)["params"]
  got = np.asarray(layer.apply({"params": params}, x, mask))
  for i, n in enumerate([8, 5]):
    ref = np_dual_layer(params, x[i, :n].astype(np.float64), small=2, large=4)
    np.testing.assert_allclose(got[i, :n], ref, rtol=1e-5, atol=1e-5)
    assert np.all(got[i, n:] == x[i, n:])   # padded frames: the input, nothing added


@pytest.mark.parametrize("name", ["mstcn", "mstcn_pp"])
def test_matches_naive_numpy_forward(name):
  rng = np.random.default_rng(0)
  lengths = [20, 13]
  x, mask = _padded_batch(rng, lengths, 20, 5)
  model = CLASSES[name](**TINY[name])
  params = _init(model, x, mask)
  out = model.apply({"params": params}, x, mask)
  cfg = TINY[name]
  for i, n in enumerate(lengths):
    xi = x[i, :n].astype(np.float64)
    if name == "mstcn":
      ref_logits, ref_h = np_mstcn(params, xi, cfg["num_stages"], cfg["num_layers"])
    else:
      ref_logits, ref_h = np_mstcn_pp(params, xi, cfg["num_layers_pg"],
                                      cfg["num_layers_r"], cfg["num_refinements"])
    np.testing.assert_allclose(out["logits"][:, i, :n], ref_logits, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(out["features"][i, :n], ref_h, rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(out["logits"][:, i, n:]) == 0)
  # Later stages really change the prediction (a meaningful comparison).
  assert not np.allclose(out["logits"][0], out["logits"][-1], atol=1e-2)


@pytest.mark.parametrize("name", ["mstcn", "mstcn_pp"])
def test_padded_video_gives_same_outputs_on_valid_frames(name):
  rng = np.random.default_rng(2)
  t, n = 40, 23
  model = CLASSES[name](**TINY[name])
  x, mask = _padded_batch(rng, [t, n], t, 6)
  params = _init(model, x, mask)
  batched = model.apply({"params": params}, x, mask)
  for i, length in enumerate([t, n]):
    alone = model.apply({"params": params}, x[i:i + 1, :length],
                        np.ones((1, length), np.float32))
    # float32 sums of activations of magnitude ~100 differ in their last bits with the
    # batch shape (XLA picks other loop orders): the tolerance is a few ulps of the
    # largest output, far below what a padded frame leaking in would change.
    for key, a, b in (("logits", batched["logits"][:, i, :length], alone["logits"][:, 0]),
                      ("features", batched["features"][i, :length], alone["features"][0])):
      scale = float(np.max(np.abs(b)))
      np.testing.assert_allclose(a, b, atol=1e-6 * max(scale, 1.0), rtol=1e-5,
                                 err_msg=key)


def test_registry_builds_with_own_section_and_shapes():
  m = base_config.get_config().model
  m.channels = 8
  m.num_layers = 3
  mstcn = segmenters.build("mstcn", m)
  assert isinstance(mstcn, MSTCN)
  assert (mstcn.num_stages, mstcn.num_layers, mstcn.channels, mstcn.dropout_rate,
          mstcn.input_dropout_rate) == (4, 3, 8, 0.5, 0.0)
  m.mstcn = {"num_stages": 2}
  assert segmenters.build("mstcn", m).num_stages == 2

  pp = segmenters.build("mstcn_pp", m)
  assert isinstance(pp, MSTCNPlusPlus)
  assert (pp.num_layers_pg, pp.num_layers_r, pp.num_refinements) == (11, 10, 3)
  m.mstcn_pp = {"num_layers_pg": 3, "num_layers_r": 2, "num_refinements": 1}
  pp = segmenters.build("mstcn_pp", m)
  assert (pp.num_layers_pg, pp.num_layers_r, pp.num_refinements) == (3, 2, 1)
  assert pp.channels == 8
  x, mask = jnp.ones((2, 16, 12)), jnp.ones((2, 16))
  for net, stages in [(segmenters.build("mstcn", m), 2), (pp, 2)]:
    out = jax.eval_shape(lambda: net.apply(net.init(jax.random.key(0), x, mask), x,
                                           mask))
    assert out["logits"].shape == (stages, 2, 16, 7)
    assert out["features"].shape == (2, 16, 8)

  m.mstcn_pp = {"num_stages": 5}
  with pytest.raises(ValueError, match="config.model.mstcn_pp"):
    segmenters.build("mstcn_pp", m)


@pytest.mark.parametrize("name,fields,match", [
    ("mstcn", dict(num_stages=0), "num_stages"),
    ("mstcn_pp", dict(num_refinements=-1), "mstcn_pp.num_refinements"),
    ("mstcn_pp", dict(num_layers_pg=0), "mstcn_pp.num_layers_pg"),
])
def test_bad_fields_raise_naming_the_field(name, fields, match):
  model = CLASSES[name](**dict(TINY[name], **fields))
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.ones((1, 8, 4)), jnp.ones((1, 8)))


def test_bad_input_shapes_raise():
  model = MSTCN(**TINY["mstcn"])
  with pytest.raises(ValueError, match="mstcn: mask shape"):
    model.init(jax.random.key(0), jnp.ones((1, 8, 4)), jnp.ones((1, 9)))
  with pytest.raises(ValueError, match="mstcn_pp: features must be"):
    MSTCNPlusPlus(**TINY["mstcn_pp"]).init(jax.random.key(0), jnp.ones((8, 4)),
                                           jnp.ones((8,)))


def _count(model, dims):
  x, mask = jnp.ones((1, 8, dims)), jnp.ones((1, 8))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, mask))["params"]
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))


def test_parameter_counts_at_default_sizes():
  # The authors' PyTorch modules (yabufarha/ms-tcn and sj-li/MS-TCN2, model.py) hold
  # Conv1d weights + biases only; summing them for 2048-d input, 64 maps, 7 classes:
  d, c, k = 2048, 64, 7
  conv = lambda cin, cout, size=1: cin * cout * size + cout
  residual = conv(c, c, 3) + conv(c, c)                 # dilated k=3 + 1x1
  stage = lambda cin, layers: conv(cin, c) + layers * residual + conv(c, k)
  mstcn = stage(d, 10) + 3 * stage(k, 10)
  assert mstcn == 794_972                               # ~0.80M, as usually reported
  assert _count(MSTCN(), d) == mstcn

  dual = 2 * conv(c, c, 3) + conv(2 * c, c)             # two dilated + 1x1 fusion
  pg = conv(d, c) + 11 * dual + conv(c, k)
  mstcn_pp = pg + 3 * stage(k, 10)
  assert mstcn_pp == 992_412                            # ~0.99M
  assert _count(MSTCNPlusPlus(), d) == mstcn_pp


@pytest.mark.parametrize("name", ["mstcn", "mstcn_pp"])
def test_gradients_reach_every_stage_through_the_softmax(name):
  rng = np.random.default_rng(4)
  x, mask = _padded_batch(rng, [24, 17], 24, 5)
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 24)), jnp.int32)
  model = CLASSES[name](**TINY[name])
  params = model.init(jax.random.key(0), x, mask)["params"]
  assert segmenters.loss_terms(model, {}, labels, mask, None) == {}   # shared loss only

  def shared(p):
    ce, smooth = losses.stage_losses(model.apply({"params": p}, x, mask)["logits"],
                                     labels, mask)
    return ce.sum() + 0.15 * smooth.sum()

  def last_stage_ce(p):
    ce, _ = losses.stage_losses(model.apply({"params": p}, x, mask)["logits"], labels,
                                mask)
    return ce[-1]

  grads = jax.grad(shared)(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path
  # The last stage's loss alone trains the first stage (softmax inputs not detached).
  first = "stage_0" if name == "mstcn" else "pg"
  g_last = jax.grad(last_stage_ce)(params)[first]
  assert max(np.abs(np.asarray(a)).max() for a in jax.tree.leaves(g_last)) > 0


@pytest.mark.parametrize("name", ["mstcn", "mstcn_pp"])
def test_dropout_only_in_training_and_padding_stays_zero(name):
  rng = np.random.default_rng(5)
  x, mask = _padded_batch(rng, [16, 9], 16, 5)
  model = CLASSES[name](**dict(TINY[name], dropout_rate=0.5, input_dropout_rate=0.5))
  params = model.init(jax.random.key(0), x, mask)["params"]
  ev = model.apply({"params": params}, x, mask)
  tr = model.apply({"params": params}, x, mask, train=True,
                   rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(ev["logits"], tr["logits"])
  assert np.all(np.asarray(tr["logits"][:, 1, 9:]) == 0)
