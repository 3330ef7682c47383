"""BCN: Local Barrier Pooling, Stage Cascade weights, boundary targets and the network
(padding invariance, shapes, registry, parameter count, loss gradients)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import losses
from hhjax.models import segmenters
from hhjax.models.segmenters import bcn


# ---------------------------------------------------------------- Local Barrier Pooling

def _lbp_reference(x, barrier, num_valid, window, alpha):
  """The paper's formula as a plain loop over one video: w_tt = 1 and
  w_ts = exp(-alpha * sum_{u=min(s,t)}^{max(s,t)} b_u) for 0 < |s - t| <= window // 2,
  neighbours restricted to the first num_valid frames."""
  t_len, c = x.shape
  out = np.zeros((t_len, c))
  half = window // 2
  for t in range(num_valid):
    num, den = np.zeros(c), 0.0
    for s in range(max(0, t - half), min(num_valid, t + half + 1)):
      if s == t:
        w = 1.0
      else:
        lo, hi = min(s, t), max(s, t)
        w = math.exp(-alpha * sum(barrier[u] for u in range(lo, hi + 1)))
      num += w * x[s]
      den += w
    out[t] = num / den
  return out


def test_lbp_hand_example_strong_barrier_separates_sides():
  # 10 frames, 8 real; frames 0-4 say class 0, frames 6-7 say class 1, frame 5 is a
  # strong barrier. Frames 8-9 are padding holding garbage.
  x = np.array([[1, 0], [0.8, 0], [1, 0], [0.6, 0], [1, 0],
                [0.5, 0.5], [0, 1], [0, 0.7], [9, 9], [9, 9]], np.float32)
  b = np.array([0.1, 0.2, 0.0, 0.1, 0.3, 30.0, 0.1, 0.2, 7.0, 7.0], np.float32)
  mask = np.array([1] * 8 + [0] * 2, np.float32)
  out = np.asarray(bcn.local_barrier_pooling(x[None], b[None], mask[None], 5, 1.0))[0]

  np.testing.assert_allclose(out, _lbp_reference(x, b, 8, 5, 1.0), rtol=1e-5, atol=1e-6)
  # Frame 0 by hand: neighbours 1 and 2, both with barrier sum 0.1 + 0.2 (+ 0.0).
  w = math.exp(-0.3)
  np.testing.assert_allclose(out[0], (x[0] + w * (x[1] + x[2])) / (1 + 2 * w), rtol=1e-6)
  # Nothing crosses the barrier: the left side never sees class 1, the right side never
  # sees class 0, and the barrier frame keeps its own prediction.
  assert np.all(out[:5, 1] < 1e-10)
  assert np.all(out[6:8, 0] < 1e-10)
  np.testing.assert_allclose(out[5], x[5], atol=1e-10)
  # Frame 7 pools only with 6 (5 is cut off, to e^-30): padding does not come in.
  w76 = math.exp(-(0.1 + 0.2))
  np.testing.assert_allclose(out[7], (x[7] + w76 * x[6]) / (1 + w76), rtol=1e-6,
                             atol=1e-10)
  np.testing.assert_array_equal(out[8:], 0.0)


def test_lbp_without_barriers_is_a_box_filter():
  x = np.arange(12, dtype=np.float32).reshape(1, 6, 2)
  out = np.asarray(bcn.local_barrier_pooling(x, np.zeros((1, 6), np.float32),
                                             np.ones((1, 6), np.float32), 3, 1.0))
  expected = np.stack([x[0, max(0, t - 1):t + 2].mean(0) for t in range(6)])
  np.testing.assert_allclose(out[0], expected, rtol=1e-6)


@pytest.mark.parametrize("window,alpha", [(1, 1.0), (7, 0.5), (9, 2.0)])
def test_lbp_matches_reference_on_random_batches(window, alpha):
  rng = np.random.default_rng(window)
  b_sz, t_len, c = 3, 20, 4
  x = rng.normal(size=(b_sz, t_len, c)).astype(np.float32)
  barrier = rng.uniform(0, 1.5, size=(b_sz, t_len)).astype(np.float32)
  lengths = np.array([20, 13, 4])
  mask = (np.arange(t_len)[None] < lengths[:, None]).astype(np.float32)
  fn = jax.jit(bcn.local_barrier_pooling, static_argnums=(3, 4))
  out = np.asarray(fn(x, barrier, mask, window, alpha))
  for i in range(b_sz):
    ref = _lbp_reference(x[i], barrier[i], lengths[i], window, alpha)
    np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-5)


def test_lbp_rejects_even_window():
  with pytest.raises(ValueError, match="odd"):
    bcn.local_barrier_pooling(jnp.zeros((1, 4, 2)), jnp.zeros((1, 4)), jnp.ones((1, 4)),
                              4, 1.0)


def test_sparse_barrier_hand_example():
  b = np.array([[0.9, 0.5, 0.2, 0.4, 0.35, 0.85, 0.1, 0.6, 0.2, 0.7]], np.float32)
  mask = np.array([[1] * 9 + [0]], np.float32)
  out = np.asarray(bcn.sparse_barrier(b, mask, 0.3, 0.8))
  # kept: 0 (> 0.8), 3 (local max > 0.3), 5 (> 0.8), 7 (local max > 0.3); frame 9 is
  # padding; frame 1 is no maximum, 4 is no maximum, 8 is the last real frame.
  expected = np.array([[0.9, 0, 0, 0.4, 0, 0.85, 0, 0.6, 0, 0]], np.float32)
  np.testing.assert_allclose(out, expected)


# --------------------------------------------------------------------- Stage Cascade

def test_cascade_weights_hand_example():
  conf = np.array([[[0.9, 0.5, 0.8, 0.3]],
                   [[0.95, 0.1, 0.85, 0.6]],
                   [[0.99, 0.99, 0.99, 0.99]]], np.float32)     # (S=3, B=1, T=4)
  mask = np.array([[1, 1, 1, 0]], np.float32)
  w = np.asarray(bcn.cascade_weights(conf, mask, 0.8))
  e = math.exp
  expected = np.array([[[1, 1, 1, 0]],
                       [[e(-0.9), e(0.5), e(0.8), 0]],         # 0.8 is not above 0.8
                       [[e(-0.95), e(0.1), e(-0.85), 0]]], np.float32)
  np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_stage_confidence_ground_truth_vs_max():
  probs = np.array([[[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]]], np.float32)  # (1, 1, 2, 3)
  logits = np.log(probs)
  np.testing.assert_allclose(bcn.stage_confidence(logits), [[[0.7, 0.6]]], rtol=1e-6)
  labels = np.array([[1, 0]])
  np.testing.assert_allclose(bcn.stage_confidence(logits, labels), [[[0.2, 0.1]]],
                             rtol=1e-6)


def test_fuse_stages_hand_example():
  p1 = np.array([0.9, 0.1])
  p2 = np.array([0.2, 0.8])
  logits = np.log(np.stack([p1, p2]))[:, None, None].astype(np.float32)  # (2,1,1,2)
  logits = np.concatenate([logits, np.zeros_like(logits)], axis=2)       # 2nd frame: pad
  w = np.array([[[1.0, 0.0]], [[math.exp(-0.9), 0.0]]], np.float32)
  mask = np.array([[1, 0]], np.float32)
  fused = np.asarray(bcn.fuse_stages(logits, w, mask))
  expected = (p1 + math.exp(-0.9) * p2) / (1 + math.exp(-0.9))
  np.testing.assert_allclose(fused[0, 0], expected, rtol=1e-6)
  np.testing.assert_array_equal(fused[0, 1], 0.0)


# ------------------------------------------------------------------ boundary targets

def _targets_reference(labels, num_valid, ratio):
  """Plain loop: union over label changes s of the frames with |t + 0.5 - s| < h_s."""
  lab = list(labels[:num_valid])
  runs, start = [], 0                       # (start, length) of every segment
  for t in range(1, num_valid + 1):
    if t == num_valid or lab[t] != lab[t - 1]:
      runs.append((start, t - start))
      start = t
  out = np.zeros(len(labels), np.float32)
  for (s0, l0), (s1, l1) in zip(runs[:-1], runs[1:]):
    h = max(1.0, ratio * max(l0, l1) / 2)
    for t in range(num_valid):
      if abs(t + 0.5 - s1) < h:
        out[t] = 1.0
  return out


def test_boundary_targets_hand_example():
  labels = np.array([[0] * 40 + [1] * 120,
                     [2] * 5 + [3] * 3 + [2] * 4 + [5] * 148])
  mask = np.array([[1] * 160, [1] * 12 + [0] * 148], np.float32)
  tgt = np.asarray(bcn.boundary_targets(labels, mask, 0.05))
  # Change at 40 between runs of 40 and 120: h = max(1, 0.05 * 120 / 2) = 3, so frame
  # centres t + 0.5 in (37, 43).
  assert np.flatnonzero(tgt[0]).tolist() == [37, 38, 39, 40, 41, 42]
  # Changes at 5 and 8 between short runs: h = 1; the padding's label 5 is no change.
  assert np.flatnonzero(tgt[1]).tolist() == [4, 5, 7, 8]


def test_boundary_targets_match_reference():
  rng = np.random.default_rng(0)
  b_sz, t_len = 4, 300
  labels = np.zeros((b_sz, t_len), np.int32)
  for i in range(b_sz):
    cur = 0
    for j in range(t_len):
      if rng.random() < (0.005 if i % 2 else 0.08):   # long and short segments
        cur = rng.integers(5)
      labels[i, j] = cur
  lengths = np.array([300, 251, 300, 17])
  mask = (np.arange(t_len)[None] < lengths[:, None]).astype(np.float32)
  tgt = np.asarray(jax.jit(bcn.boundary_targets, static_argnums=2)(labels, mask, 0.2))
  for i in range(b_sz):
    np.testing.assert_array_equal(tgt[i], _targets_reference(labels[i], lengths[i], 0.2))


def test_balanced_bce_hand_example():
  logits = np.array([[0.0, 0.0, math.log(3.0), 5.0]], np.float32)
  targets = np.array([[1, 0, 0, 1]], np.float32)
  mask = np.array([[1, 1, 1, 0]], np.float32)
  # p = 0.5, 0.5, 0.75: 0.5 * (-log 0.5) + 0.5 * mean(-log 0.5, -log 0.25)
  expected = 0.5 * math.log(2) + 0.5 * (math.log(2) + math.log(4)) / 2
  np.testing.assert_allclose(bcn.balanced_bce(logits, targets, mask), expected,
                             rtol=1e-6)


# ------------------------------------------------------------------------ the network

_TINY = dict(num_classes=3, num_stages=3, num_layers=3, channels=8, fusion_channels=4,
             bgm_channels=6, bgm_layers=2, lbp_in_window=3, lbp_out_window=5,
             lbp_post_window=7, lbp_post_repeats=2)
_DIM = 5


@pytest.fixture(scope="module")
def tiny():
  """A tiny BCN (2 cascade stages + fusion), its parameters (initialised once: the
  parameters do not depend on B or T) and its jitted apply."""
  model = bcn.BCN(**_TINY)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, _DIM)),
                               jnp.ones((1, 8)))
  return model, params, jax.jit(model.apply, static_argnames="train")


def test_padding_invariance(tiny):
  model, params, apply = tiny
  rng = np.random.default_rng(1)
  t_valid, t_pad = 17, 24
  x = rng.normal(size=(1, t_valid, _DIM)).astype(np.float32)
  garbage = rng.normal(size=(1, t_pad - t_valid, _DIM)).astype(np.float32) * 50
  x_pad = np.concatenate([x, garbage], axis=1)
  mask = np.ones((1, t_valid), np.float32)
  mask_pad = (np.arange(t_pad) < t_valid).astype(np.float32)[None]
  a = apply(params, x, mask)
  b = apply(params, x_pad, mask_pad)
  for key in ("logits", "cascade_weights"):
    np.testing.assert_allclose(b[key][:, :, :t_valid], a[key], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(b[key][:, :, t_valid:]), 0.0)
  for key in ("features", "barrier_logits"):
    np.testing.assert_allclose(b[key][:, :t_valid], a[key], rtol=1e-5, atol=1e-5)
  # The post-processing LBP is on at inference: it changes the final prediction.
  no_post = jax.jit(model.clone(lbp_post_repeats=0).apply)(params, x, mask)
  np.testing.assert_allclose(no_post["logits"][:-1], a["logits"][:-1], rtol=1e-6)
  assert not np.allclose(no_post["logits"][-1], a["logits"][-1])


def test_cascade_weights_follow_the_rules_in_the_forward_pass(tiny):
  _, params, apply = tiny
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 12, _DIM)).astype(np.float32)
  mask = np.ones((2, 12), np.float32)
  labels = rng.integers(3, size=(2, 12))
  for given in (None, labels):
    out = apply(params, x, mask, labels=given)
    logits = np.asarray(out["logits"][:-1], np.float64)       # (2, B, T, C)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    conf = (p.max(-1) if given is None
            else np.take_along_axis(p, labels[None, ..., None], -1)[..., 0])
    expected = np.ones_like(conf)
    expected[1:] = np.where(conf[:-1] > 0.8, np.exp(-conf[:-1]), np.exp(conf[:-1]))
    np.testing.assert_allclose(out["cascade_weights"], expected, rtol=1e-5)


def test_shapes_and_registry():
  cfg = {"num_classes": 5, "num_stages": 3, "num_layers": 2, "channels": 8,
         "attention": "linear",                 # another network's field: not taken
         "bcn": {"fusion_channels": 4, "bgm_channels": 6, "lbp_out_window": 5,
                 "lbp_post_window": 5}}
  model = segmenters.build("bcn", cfg)
  assert isinstance(model, bcn.BCN)
  assert (model.num_classes, model.channels, model.fusion_channels,
          model.lbp_out_window) == (5, 8, 4, 5)
  x = jnp.ones((2, 16, 7))
  mask = jnp.ones((2, 16)).at[1, 10:].set(0)
  out, _ = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), x, mask)
  assert out["logits"].shape == (3, 2, 16, 5)
  assert out["features"].shape == (2, 16, 4)
  assert out["barrier_logits"].shape == (2, 16)
  assert out["cascade_weights"].shape == (2, 2, 16)
  with pytest.raises(ValueError, match="does not take"):
    segmenters.build("bcn", {"bcn": {"lbp_widow": 5}})
  with pytest.raises(ValueError, match="lbp_in_window"):
    jax.eval_shape(bcn.BCN(lbp_in_window=4).init, jax.random.PRNGKey(0), x, mask)
  with pytest.raises(ValueError, match="num_stages"):
    jax.eval_shape(bcn.BCN(num_stages=1).init, jax.random.PRNGKey(0), x, mask)


def test_parameter_count_matches_authors_code():
  # The authors' model.py/bgm_block/models.py (MCG-NJU/BCN) at their 50Salads sizes:
  # 2048-d input, 19 classes, 12 layers x 256 maps, 3 cascade stages (stage s > 1 reads
  # 2048 + 256 (s - 1) channels), fusion stage 12 layers x 64 maps on 19 channels, and
  # the full BGM (2048 -> 256, 3 residual layers, -> 1). A stage of L layers, F maps,
  # input dim, C classes has (dim + 1) F + L (3 F^2 + F + F^2 + F) + (F + 1) C weights,
  # giving 11,441,164 for the stages and 1,312,769 for the BGM (the unused BatchNorm of
  # their residual layers, 512 per layer, is not counted).
  model = segmenters.build("bcn", {"num_classes": 19})
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 8, 2048)), jnp.ones((1, 8)))
  count = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(shapes))
  assert count == 11_441_164 + 1_312_769


def test_loss_terms_reweight_cross_entropy_and_send_gradients(tiny):
  model, params, apply = tiny
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 20, _DIM)).astype(np.float32)
  mask = np.ones((2, 20), np.float32)
  mask[1, 14:] = 0
  labels = np.repeat(np.array([[0, 1, 2, 1]]), 5, axis=1).repeat(2, 0)

  # Plain CE + cascade_reweight is the authors' balanced, adaptively weighted CE.
  out = apply(params, x, mask)
  terms = model.loss_terms(out, labels, mask, None)
  ce, _ = losses.stage_losses(out["logits"], labels, mask)
  logits = np.asarray(out["logits"][:-1], np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce_frames = -np.take_along_axis(logp, labels[None, ..., None], -1)[..., 0]
  gt = np.exp(-ce_frames)                                   # P(ground-truth class)
  weighted = 0.0
  for s in range(logits.shape[0]):
    w = np.ones_like(gt[0]) if s == 0 else np.where(gt[s - 1] > 0.8, np.exp(-gt[s - 1]),
                                                    np.exp(gt[s - 1]))
    w = w * mask
    w = w * mask.sum(1, keepdims=True) / w.sum(1, keepdims=True)
    weighted += (w * ce_frames[s] * mask).sum() / mask.sum()
  np.testing.assert_allclose(float(ce[:-1].sum() + terms["cascade_reweight"]), weighted,
                             rtol=1e-5)
  assert terms["cascade_reweight"] != 0.0
  # Zero weights switch the terms off.
  off = model.clone(barrier_weight=0.0, cascade_weight=0.0)
  assert off.loss_terms(out, labels, mask, None) == {}

  def forward(p):
    return model.apply(p, x, mask, train=True, rngs={"dropout": jax.random.PRNGKey(1)})

  def own_terms(p):
    return sum(model.loss_terms(forward(p), labels, mask, None).values())

  def final_ce(p):
    return losses.stage_losses(forward(p)["logits"], labels, mask)[0][-1]

  grads, grads_ce = jax.jit(lambda p: (jax.grad(own_terms)(p)["params"],
                                       jax.grad(final_ce)(p)["params"]))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  nonzero = lambda tree: any(np.abs(g).sum() > 0 for g in jax.tree_util.tree_leaves(tree))
  # barrier_bce reaches the BGM; cascade_reweight the second cascade stage (the BGM and
  # the stages share no parameters, so each is reached by its own term).
  assert nonzero(grads["bgm"]) and nonzero(grads["stage_1"])
  # The barriers shape the final prediction through LBP, so its CE reaches the BGM.
  assert nonzero(grads_ce["bgm"])
