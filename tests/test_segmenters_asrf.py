"""ASRF: boundary targets, boundary-based refinement, boundary loss and GS-TMSE against
hand-worked examples and naive NumPy loops; padding invariance, registry, size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models import segmenters
from hhjax.models.segmenters import asrf


def _tiny(**kw):
  fields = dict(num_classes=5, num_stages=3, num_layers=3, channels=8, dropout_rate=0.0)
  fields.update(kw)
  return asrf.ASRF(**fields)


def _logit(p):
  p = np.asarray(p, np.float64)
  return np.log(p) - np.log1p(-p)


def test_boundary_targets_hand_example():
  labels = np.array([[2, 2, 2, 0, 0, 1, 1, 1, 3, 3, 0, 0],
                     [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]])
  mask = np.array([[1] * 10 + [0] * 2, [1] * 12])
  # Row 0: starts at 0, 3, 5, 8; the change 3 -> 0 at frame 10 is padding.
  want = np.array([[1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0],
                   [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], np.float32)
  np.testing.assert_array_equal(asrf.boundary_targets(labels, mask), want)


# Class probabilities of 12 frames (C = 3); argmax per frame in the comment.
_PROBS = np.array([
    [0.6, 0.3, 0.1],    # 0 -> 0
    [0.3, 0.6, 0.1],    # 1 -> 1
    [0.7, 0.2, 0.1],    # 2 -> 0
    [0.1, 0.5, 0.4],    # 3 -> 1
    [0.1, 0.5, 0.4],    # 4 -> 1
    [0.05, 0.05, 0.9],  # 5 -> 2
    [0.05, 0.05, 0.9],  # 6 -> 2
    [0.5, 0.3, 0.2],    # 7 -> 0
    [0.2, 0.6, 0.2],    # 8 -> 1
    [0.1, 0.7, 0.2],    # 9 -> 1
    [0.9, 0.05, 0.05],  # 10 -> 0 (padding in row 0)
    [0.9, 0.05, 0.05],  # 11 -> 0 (padding in row 0)
])


def _refinement_case():
  probs = np.stack([_PROBS, _PROBS.copy()])
  probs[1, 10:] = [0.05, 0.9, 0.05]                       # row 1: frames 10, 11 -> 1
  # Row 0 (10 real frames): frame 3 (0.9) and frame 7 (0.8) are peaks above 0.5;
  # frame 2 (0.6) lies next to the larger frame 3, frame 8 (0.6) next to frame 7; frame
  # 5 (0.45) is a peak below the threshold; frame 9 (0.7) is the last real frame, so no
  # boundary although its padded neighbour is low.
  # Row 1 (12 real frames): a flat top 0.8, 0.8 at frames 5-6 is no strict peak.
  bprob = np.array([
      [0.3, 0.1, 0.6, 0.9, 0.1, 0.45, 0.2, 0.8, 0.6, 0.7, 0.01, 0.01],
      [0.4, 0.4, 0.4, 0.4, 0.4, 0.8, 0.8, 0.4, 0.4, 0.4, 0.4, 0.4]])
  mask = np.array([[1] * 10 + [0] * 2, [1] * 12], np.float32)
  # Two BRB stages: the first one says "boundary everywhere"; only the last counts.
  boundary_logits = np.stack([np.full_like(bprob, 5.0), _logit(bprob)]).astype(np.float32)
  garbage = np.zeros((1, 2, 12, 3), np.float32)           # an earlier ASB stage
  logits = np.concatenate([garbage, np.log(probs)[None]], 0).astype(np.float32)
  return {"logits": jnp.asarray(logits), "boundary_logits": jnp.asarray(boundary_logits)
          }, jnp.asarray(mask)


def test_boundary_peaks_hand_example():
  outputs, mask = _refinement_case()
  prob = jax.nn.sigmoid(outputs["boundary_logits"][-1])
  peaks = np.asarray(asrf.boundary_peaks(prob, mask, 0.5))
  assert np.flatnonzero(peaks[0]).tolist() == [0, 3, 7]
  assert np.flatnonzero(peaks[1]).tolist() == [0]


def test_refinement_hand_example():
  outputs, mask = _refinement_case()
  model = asrf.ASRF(num_classes=3, boundary_threshold=0.5)
  labels = jax.jit(lambda o, m: segmenters.predict_labels(model, o, m))(outputs, mask)
  # Row 0, segments [0,3) [3,7) [7,10):
  #   [0,3): votes 0,1,0 -> 0.
  #   [3,7): votes 1,1,2,2 tie; probability sums: class 1 = .5+.5+.05+.05 = 1.1,
  #          class 2 = .4+.4+.9+.9 = 2.6 -> 2.
  #   [7,10): votes 0,1,1 -> 1 (the padded frames' two votes for 0 would flip it).
  # Row 1, one segment: votes 0 x3, 1 x7, 2 x2 -> 1 everywhere.
  want = np.array([[0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 0, 0], [1] * 12])
  np.testing.assert_array_equal(labels, want)
  assert labels.dtype == jnp.int32
  # The plain argmax differs: the refinement is what predict_labels returns.
  assert not np.array_equal(np.argmax(outputs["logits"][-1], -1) * mask, want)
  # Threshold 0.4: frame 5 (0.45) now splits [3,7) into [3,5) -> 1 and [5,7) -> 2; the
  # 0.4 plateau of row 1 has no strict peak.
  low = asrf.ASRF(num_classes=3, boundary_threshold=0.4).predict_labels(outputs, mask)
  np.testing.assert_array_equal(low, [[0, 0, 0, 1, 1, 2, 2, 1, 1, 1, 0, 0], [1] * 12])


def _naive_boundary_loss(z, labels, mask, pos_weight, lam):
  """NumPy loop: lam x sum over stages of the mean pos-weighted BCE on real frames."""
  s_b, b, t = z.shape
  if pos_weight is None:
    n = pos = 0
    for i in range(b):
      for j in range(t):
        if mask[i, j]:
          n += 1
          pos += int(j == 0 or labels[i, j] != labels[i, j - 1])
    pos_weight = n / pos
  total = 0.0
  for s in range(s_b):
    acc, n = 0.0, 0
    for i in range(b):
      for j in range(t):
        if not mask[i, j]:
          continue
        y = 1.0 if (j == 0 or labels[i, j] != labels[i, j - 1]) else 0.0
        sig = 1.0 / (1.0 + np.exp(-z[s, i, j]))
        acc += -(pos_weight * y * np.log(sig) + (1 - y) * np.log(1 - sig))
        n += 1
    total += acc / n
  return lam * total


@pytest.mark.parametrize("pos_weight", [None, 3.5])
def test_boundary_loss_matches_numpy(pos_weight):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 3, 9)).astype(np.float32) * 2
  labels = np.array([[0, 0, 1, 1, 1, 2, 2, 0, 0],
                     [3, 3, 3, 1, 1, 4, 0, 0, 0],
                     [1, 2, 1, 2, 1, 2, 1, 2, 1]])
  # Row 1 has 7 real frames (its change at frame 6 is real, the rest padding);
  # row 2 is a filler row (mask zeroed).
  mask = np.array([[1] * 9, [1] * 7 + [0] * 2, [0] * 9], np.float32)
  model = asrf.ASRF(boundary_weight=0.3, boundary_pos_weight=pos_weight or 0.0)
  terms = model.loss_terms({"boundary_logits": jnp.asarray(z)}, labels, mask, None)
  want = _naive_boundary_loss(z.astype(np.float64), labels, mask, pos_weight, 0.3)
  assert set(terms) == {"boundary"}
  np.testing.assert_allclose(terms["boundary"], want, rtol=1e-5)


def test_gstmse_matches_numpy():
  rng = np.random.default_rng(2)
  s, b, t, c, d = 2, 2, 8, 4, 5
  logits = rng.normal(size=(s, b, t, c)).astype(np.float32) * 3
  x = rng.normal(size=(b, t, d)).astype(np.float32) * 0.5
  mask = np.array([[1] * 8, [1] * 5 + [0] * 3], np.float32)
  sigma, tau, weight = 0.7, 1.5, 2.0
  outputs = {"logits": jnp.asarray(logits), "boundary_logits": jnp.zeros((1, b, t)),
             "frame_similarity": asrf.frame_similarity(jnp.asarray(x), mask, sigma)}
  model = asrf.ASRF(gstmse_weight=weight, gstmse_sigma=sigma)
  terms = model.loss_terms(outputs, np.zeros((b, t), np.int32), mask, {"tau": tau})
  # Naive: per stage, the sum over real pairs of w_t x mean_c min(d^2, tau^2), divided
  # by the number of real pairs; summed over stages.
  want = 0.0
  for k in range(s):
    acc, pairs = 0.0, 0
    for i in range(b):
      for j in range(1, t):
        if not (mask[i, j] and mask[i, j - 1]):
          continue
        w = np.exp(-np.sqrt(((x[i, j] - x[i, j - 1]) ** 2).sum()) / (2 * sigma**2))
        lp = logits[k, i, j] - np.log(np.exp(logits[k, i, j]).sum())
        lq = logits[k, i, j - 1] - np.log(np.exp(logits[k, i, j - 1]).sum())
        acc += w * np.minimum((lp - lq) ** 2, tau**2).mean()
        pairs += 1
    want += acc / pairs
  np.testing.assert_allclose(terms["gstmse"], weight * want, rtol=1e-5)
  assert "boundary" in terms


def test_padded_video_gives_same_outputs_on_valid_frames():
  rng = np.random.default_rng(0)
  t, pad, d = 29, 19, 6
  model = _tiny(num_stages=2, gstmse_weight=1.0)
  x = rng.normal(size=(1, t, d)).astype(np.float32)
  mask = np.ones((1, t), np.float32)
  params = model.init(jax.random.key(0), x, mask)
  # Sharper heads, so that the labels and boundaries are non-trivial.
  def sharpen(path, a):
    return a * 3.0 if path[1].key.startswith(("classifier", "boundary")) else a
  params = jax.tree_util.tree_map_with_path(sharpen, params)
  out = model.apply(params, x, mask)
  xp = np.concatenate([x, rng.normal(size=(1, pad, d)).astype(np.float32) * 50], 1)
  maskp = np.concatenate([mask, np.zeros((1, pad), np.float32)], 1)
  outp = model.apply(params, xp, maskp)
  for key, axis in (("logits", 2), ("boundary_logits", 2), ("features", 1),
                    ("frame_similarity", 1)):
    valid = np.take(np.asarray(outp[key]), np.arange(t), axis=axis)
    padded = np.take(np.asarray(outp[key]), np.arange(t, t + pad), axis=axis)
    np.testing.assert_allclose(valid, out[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert np.all(padded == 0), key
  labels = model.predict_labels(out, mask)
  labelsp = model.predict_labels(outp, maskp)
  np.testing.assert_array_equal(labelsp[:, :t], labels)
  assert np.all(np.asarray(labelsp[:, t:]) == 0)
  # A non-trivial case: several classes, and interior boundaries that change the labels.
  assert len(set(np.asarray(labels[0]).tolist())) > 1
  prob = jax.nn.sigmoid(out["boundary_logits"][-1])
  assert np.asarray(asrf.boundary_peaks(prob, mask, 0.5))[0, 1:].any()
  assert not np.array_equal(labels, np.argmax(out["logits"][-1], -1))
  gt = rng.integers(0, 5, size=(1, t)).astype(np.int32)
  gtp = np.pad(gt, ((0, 0), (0, pad)))
  terms = model.loss_terms(out, gt, mask, {"tau": 4.0})
  termsp = model.loss_terms(outp, gtp, maskp, {"tau": 4.0})
  for name in ("boundary", "gstmse"):
    np.testing.assert_allclose(termsp[name], terms[name], rtol=1e-5, err_msg=name)


def test_registry_shapes_and_own_section():
  cfg = {"num_classes": 5, "num_stages": 3, "num_layers": 2, "channels": 8,
         "dropout_rate": 0.0, "attention": "linear",       # a field ASRF does not take
         "asrf": {"num_stages_brb": 2, "boundary_threshold": 0.6}}
  model = segmenters.build("asrf", cfg)
  assert isinstance(model, asrf.ASRF)
  assert (model.num_stages, model.num_stages_asb, model.num_stages_brb,
          model.boundary_threshold, model.boundary_weight) == (3, None, 2, 0.6, 0.1)
  x, mask = jnp.ones((2, 20, 6)), jnp.ones((2, 20))
  out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, mask),
                                           x, mask))
  assert out["logits"].shape == (3, 2, 20, 5)        # the ASB stages (num_stages)
  assert out["boundary_logits"].shape == (2, 2, 20)  # the BRB stages (own section)
  assert out["features"].shape == (2, 20, 8)
  assert out["frame_similarity"].shape == (2, 20)
  with pytest.raises(ValueError, match="config.model.asrf has fields"):
    segmenters.build("asrf", {"asrf": {"lambda_b": 0.1}})


@pytest.mark.parametrize("fields,name", [
    (dict(num_stages_brb=0), "num_stages_brb"),
    (dict(num_stages=0), "num_stages_asb"),
    (dict(boundary_threshold=1.5), "boundary_threshold"),
    (dict(boundary_pos_weight=-1.0), "boundary_pos_weight"),
])
def test_bad_fields_raise_naming_the_field(fields, name):
  model = _tiny(**fields)
  x, mask = jnp.ones((1, 8, 4)), jnp.ones((1, 8))
  with pytest.raises(ValueError, match=f"config.model.asrf.{name}"):
    model.init(jax.random.key(0), x, mask)


def test_parameter_count_at_default_sizes():
  # The authors' ActionSegmentRefinementFramework (yiskw713/asrf, libs/models/tcn.py)
  # with in_channel 2048, n_features 64, n_layers 10, n_stages_asb = n_stages_brb = 4,
  # counted layer by layer (a Conv1d(i, o, k) has i*o*k + o parameters): the shared
  # conv_in and 10 layers, the class and boundary 1x1 heads, 3 single stages C -> C and
  # 3 single stages 1 -> 1. For 50Salads (19 classes) this gives 1,296,400.
  d, f, n_layers, c = 2048, 64, 10, 19
  conv = lambda i, o, k=1: i * o * k + o
  layer = conv(f, f, 3) + conv(f, f)
  stage = lambda i, o: conv(i, f) + n_layers * layer + conv(f, o)
  want = (conv(d, f) + n_layers * layer + conv(f, c) + conv(f, 1)
          + 3 * stage(c, c) + 3 * stage(1, 1))
  assert want == 1_296_400
  model = asrf.ASRF(num_classes=c)
  x, mask = jnp.ones((1, 4, d)), jnp.ones((1, 4))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, mask))
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == want


def test_loss_terms_send_finite_nonzero_gradients_to_their_branches():
  rng = np.random.default_rng(3)
  model = _tiny(num_stages_brb=2)
  x = rng.normal(size=(2, 24, 6)).astype(np.float32)
  mask = np.array([[1] * 24, [1] * 17 + [0] * 7], np.float32)
  labels = np.repeat(rng.integers(0, 5, size=(2, 6)), 4, axis=1).astype(np.int32)
  params = model.init(jax.random.key(0), x, mask)

  def grads_of(m):
    def loss(p):
      terms = m.loss_terms(m.apply(p, x, mask), labels, mask, {"tau": 4.0})
      return sum(terms.values())
    return jax.grad(loss)(params)["params"]

  grads = grads_of(model)
  norm = lambda tree: float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(tree)))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # The boundary loss trains the shared backbone and the BRB, never the ASB.
  for name in ("shared", "boundary_0", "brb_stage_1", "boundary_1"):
    assert norm(grads[name]) > 0, name
  for name in ("asb_stage_1", "classifier_1", "classifier_0"):
    assert norm(grads[name]) == 0, name
  # GS-TMSE reaches the ASB stages.
  grads = grads_of(model.clone(gstmse_weight=1.0))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  for name in ("asb_stage_1", "classifier_1", "classifier_2"):
    assert norm(grads[name]) > 0, name
