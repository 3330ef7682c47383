"""Attention against naive per-frame formulas (eq. 2 and eq. 3-4 of Li et al.)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models import attention


def _inputs(seed=0, b=2, t=11, h=3, d=5):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=(b, t, h, d)).astype(np.float32) for _ in range(3))
  mask = np.ones((b, t), np.float32)
  mask[1, 7:] = 0.0   # second video has 7 real frames
  return q, k, v, mask


def _naive_linear(q, k, v, mask):
  """Eq. 4, frame by frame: sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)."""
  phi = lambda x: np.where(x > 0, x, np.expm1(x)) + 1.0
  b, t, h, _ = q.shape
  out = np.zeros((b, t, h, v.shape[-1]), np.float32)
  for bi in range(b):
    valid = [j for j in range(t) if mask[bi, j]]
    for i in valid:
      for hi in range(h):
        w = np.array([phi(q[bi, i, hi]) @ phi(k[bi, j, hi]) for j in valid])
        out[bi, i, hi] = (w[:, None] * v[bi, valid, hi]).sum(0) / w.sum()
  return out


def _naive_softmax(q, k, v, mask):
  """Eq. 2, frame by frame, over the real frames only."""
  out = np.zeros_like(q)
  b, t, h, d = q.shape
  for bi in range(b):
    valid = [j for j in range(t) if mask[bi, j]]
    for i in valid:
      for hi in range(h):
        s = np.array([q[bi, i, hi] @ k[bi, j, hi] for j in valid]) / np.sqrt(d)
        w = np.exp(s - s.max())
        out[bi, i, hi] = (w[:, None] * v[bi, valid, hi]).sum(0) / w.sum()
  return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_attention_equals_naive_eq4(seed):
  q, k, v, mask = _inputs(seed)
  got = attention.linear_attention(q, k, v, mask, eps=0.0)
  np.testing.assert_allclose(got, _naive_linear(q, k, v, mask), rtol=1e-4, atol=1e-5)


def test_linear_attention_keeps_heads_apart_with_value_width_unlike_key_width():
  """Values of another width than the keys (e = 2, d = 5), and one head's values made
  huge: the other heads' outputs must not move (nothing crosses from one head to
  another)."""
  q, k, _, mask = _inputs(4)
  v = np.random.default_rng(5).normal(size=q.shape[:3] + (2,)).astype(np.float32)
  got = np.asarray(attention.linear_attention(q, k, v, mask, eps=0.0))
  assert got.shape == v.shape
  np.testing.assert_allclose(got, _naive_linear(q, k, v, mask), rtol=1e-4, atol=1e-5)
  v_loud = v.copy()
  v_loud[:, :, 1] *= 1e4
  loud = np.asarray(attention.linear_attention(q, k, v_loud, mask, eps=0.0))
  np.testing.assert_allclose(loud[:, :, [0, 2]], got[:, :, [0, 2]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_attention_equals_naive_eq2(seed):
  q, k, v, mask = _inputs(seed)
  got = attention.softmax_attention(q, k, v, mask)
  np.testing.assert_allclose(got, _naive_softmax(q, k, v, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", [attention.linear_attention, attention.softmax_attention])
def test_padded_frames_neither_attend_nor_are_attended(fn):
  q, k, v, mask = _inputs(3)
  out = np.asarray(fn(q, k, v, mask))
  assert np.all(out[1, 7:] == 0.0)           # padded queries give nothing
  k2, v2 = k.copy(), v.copy()
  k2[1, 7:] = 1e3                            # garbage in padded keys/values ...
  v2[1, 7:] = -1e3
  np.testing.assert_allclose(fn(q, k2, v2, mask), out, rtol=1e-5, atol=1e-6)  # ... unseen


def test_linear_attention_is_not_softmax_attention():
  """Each kind equals its own naive formula (linear: the elu+1 kernel of eq. 4,
  softmax: eq. 2), and on the same q, k, v the two differ by far more than that
  agreement tolerance (guards against one silently calling the other)."""
  q, k, v, mask = _inputs(4)
  real = mask.astype(bool)
  lin = np.asarray(attention.linear_attention(q, k, v, mask))
  soft = np.asarray(attention.softmax_attention(q, k, v, mask))
  np.testing.assert_allclose(lin, _naive_linear(q, k, v, mask), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(soft, _naive_softmax(q, k, v, mask), rtol=1e-4, atol=1e-4)
  # Mean |difference| over real frames: 0.16 on these inputs; 0.05 is 500 times the
  # tolerance above.
  assert np.abs(lin - soft)[real].mean() > 0.05


def _naive_module(params, x, mask, kind, num_heads):
  """The module by hand: Q/K/V = x W + b split into `num_heads` heads of C/H channels
  each, per-head attention by the naive formulas, heads concatenated, then W_out."""
  p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()}
       for name, layer in params["params"].items()}
  b, t, c = x.shape
  d = c // num_heads
  heads = {}
  for name in ("query", "key", "value"):
    w = p[name]["kernel"].reshape(c, num_heads * d)              # head h: cols h*d..
    heads[name] = (x @ w + p[name]["bias"].reshape(-1)).reshape(b, t, num_heads, d)
  naive = _naive_linear if kind == "linear" else _naive_softmax
  att = naive(heads["query"], heads["key"], heads["value"], mask)  # (B, T, H, d)
  return att.reshape(b, t, c) @ p["out"]["kernel"].reshape(c, c) + p["out"]["bias"]


@pytest.mark.parametrize("kind", ["linear", "softmax", "none"])
def test_multi_head_module_shapes_and_none(kind):
  x = np.random.default_rng(0).normal(size=(2, 9, 8)).astype(np.float32)
  mask = np.ones((2, 9), np.float32)
  mask[1, 6:] = 0.0
  module = attention.MultiHeadAttention(kind, num_heads=2)
  params = module.init(jax.random.key(0), x, mask)
  out = np.asarray(module.apply(params, x, mask))
  assert out.shape == x.shape
  if kind == "none":
    assert not jax.tree.leaves(params)
    np.testing.assert_array_equal(out, np.zeros_like(x))
    return
  assert params["params"]["query"]["kernel"].shape == (8, 2, 4)    # 2 heads of 4
  want = _naive_module(params, x.astype(np.float64), mask, kind, 2)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
  # Attending with all 8 channels as one head gives another output: the split matters.
  one_head = _naive_module(
      {"params": {n: ({"kernel": np.asarray(l["kernel"]).reshape(8, 1, 8),
                       "bias": np.asarray(l["bias"]).reshape(1, 8)} if n != "out" else
                      {"kernel": np.asarray(l["kernel"]).reshape(1, 8, 8),
                       "bias": l["bias"]})
                  for n, l in params["params"].items()}},
      x.astype(np.float64), mask, kind, 1)
  assert np.abs(one_head - want).max() > 1e-2


def test_unknown_kind_is_a_clear_error():
  x, mask = jnp.ones((1, 4, 8)), jnp.ones((1, 4))
  with pytest.raises(ValueError, match="linear.*softmax.*none"):
    attention.MultiHeadAttention("performer").init(jax.random.key(0), x, mask)
