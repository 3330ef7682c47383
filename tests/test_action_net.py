"""ACTION-NET: GCN adjacency by hand, instance builders, padding and pooling
invariances, the context-aware attention against NumPy, ablations, parameter groups."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models.heads import action_net
from hhjax.models.heads.action_net import ActionNet, ContextAttention

F = 10


def _tiny(**overrides):
  # One width throughout: fewer distinct shapes to compile keeps the tests fast.
  fields = dict(num_segments=4, num_frames=3, dynamic_embed=(6, 6), static_embed=(6, 6),
                gcn_features=(6, 6), lstm_hidden=6, attention_hidden=6, head_hidden=6)
  fields.update(overrides)
  return ActionNet(**fields)


def _features(b, t, f=F, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, f)), jnp.float32)


def _mask(lengths, t):
  return jnp.asarray(np.arange(t)[None] < np.asarray(lengths)[:, None], jnp.float32)


VARIANTS = {
    "gcn": {},
    "gcn_temporal": {"adjacency": "temporal"},
    "none": {"context": "none"},
    "lstm": {"context": "lstm"},
    "bilstm": {"context": "bilstm"},
    "gcn_mean": {"pooling": "mean"},
    "avg_pooling": {"context": "none", "pooling": "mean"},
}


def test_gcn_adjacency_three_nodes_by_hand():
  # Nodes (0, 0), (3, 4), (0, 1): distances 5, 1 and sqrt(18) = 3 sqrt(2).
  f = jnp.array([[[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]])
  a01, a02, a12 = math.exp(-5.0), math.exp(-1.0), math.exp(-3.0 * math.sqrt(2.0))
  assert a01 == pytest.approx(0.006737947) and a02 == pytest.approx(0.367879441)
  assert a12 == pytest.approx(0.014370, abs=1e-6)
  # A + I: 1 (exp 0) + 1 (self-loop) on the diagonal; degrees are the row sums.
  a = [[2.0, a01, a02], [a01, 2.0, a12], [a02, a12, 2.0]]
  d = [sum(row) for row in a]
  expected = [[a[i][j] / math.sqrt(d[i] * d[j]) for j in range(3)] for i in range(3)]
  got = action_net.gcn_adjacency(f)
  np.testing.assert_allclose(got[0], expected, rtol=1e-6)
  # Entry (0, 2) written out: 0.367879 / sqrt(2.374617 * 2.382249) = 0.154673.
  assert float(got[0, 0, 2]) == pytest.approx(0.154673, abs=2e-6)
  # K = 2 halves the exponents; without self-loops the diagonal is exp(0) = 1.
  b01, b02, b12 = math.exp(-2.5), math.exp(-0.5), math.exp(-1.5 * math.sqrt(2.0))
  b = [[1.0, b01, b02], [b01, 1.0, b12], [b02, b12, 1.0]]
  e = [sum(row) for row in b]
  expected = [[b[i][j] / math.sqrt(e[i] * e[j]) for j in range(3)] for i in range(3)]
  got = action_net.gcn_adjacency(f, kernel_scale=2.0, self_loops=False)
  np.testing.assert_allclose(got[0], expected, rtol=1e-6)
  with pytest.raises(ValueError, match="kernel_scale"):
    action_net.gcn_adjacency(f, kernel_scale=0.0)


def test_temporal_adjacency_by_hand():
  e1, e2 = math.exp(-1.0), math.exp(-2.0)
  a = [[1.0, e1, e2], [e1, 1.0, e1], [e2, e1, 1.0]]
  d = [sum(row) for row in a]
  expected = [[a[i][j] / math.sqrt(d[i] * d[j]) for j in range(3)] for i in range(3)]
  np.testing.assert_allclose(action_net.temporal_adjacency(3), expected, rtol=1e-6)


def test_gcn_adjacency_gradient_is_finite_for_equal_instances():
  f = jnp.array([[[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]])
  grad = jax.grad(lambda v: action_net.gcn_adjacency(v).sum())(f)
  assert np.all(np.isfinite(grad))


def _segment_means_loop(x, lengths, n):
  out = np.zeros((x.shape[0], n, x.shape[2]))
  for b, length in enumerate(lengths):
    if length == 0:
      continue
    for k in range(n):
      start = k * length // n
      stop = max((k + 1) * length // n, start + 1)
      out[b, k] = x[b, start:stop].mean(0)
  return out


def test_instance_builders_by_hand():
  x = jnp.arange(10, dtype=jnp.float32).reshape(1, 10, 1)   # frame t holds t
  # 4 valid frames, 2 windows: frames 0-1 and 2-3.
  np.testing.assert_allclose(action_net.segment_means(x, _mask([4], 10), 2)[0, :, 0],
                             [0.5, 2.5])
  # 2 valid frames, 4 windows: frames 0, 0, 1, 1 repeat.
  np.testing.assert_allclose(action_net.segment_means(x, _mask([2], 10), 4)[0, :, 0],
                             [0, 0, 1, 1])
  # 10 frames, 4 centres: floor(1.25), floor(3.75), floor(6.25), floor(8.75).
  got = action_net.sample_frames(x, _mask([10], 10), 4)[0, :, 0]
  np.testing.assert_array_equal(got, [1, 3, 6, 8])
  np.testing.assert_array_equal(action_net.sample_frames(x, _mask([3], 10), 5)[0, :, 0],
                                [0, 0, 1, 2, 2])


@pytest.mark.parametrize("n", [1, 3, 7])
def test_instance_builders_match_loops_and_ignore_padding(n):
  lengths = [12, 5, 1, 0, 9]
  t = 12
  x = np.asarray(_features(len(lengths), t, 3, seed=n))
  mask = _mask(lengths, t)
  garbage = np.where(np.asarray(mask)[..., None] > 0, x, np.nan)    # NaN in padding
  got = jax.jit(action_net.segment_means, static_argnums=2)(garbage, mask, n)
  np.testing.assert_allclose(got, _segment_means_loop(x, lengths, n), rtol=1e-6,
                             atol=1e-6)
  expected = np.zeros((len(lengths), n, 3))
  for b, length in enumerate(lengths):
    for k in range(n):
      if length:
        expected[b, k] = x[b, int((k + 0.5) * length / n)]
  got = jax.jit(action_net.sample_frames, static_argnums=2)(garbage, mask, n)
  np.testing.assert_array_equal(got, expected.astype(np.float32))
  with pytest.raises(ValueError, match="n must be"):
    action_net.segment_means(x, mask, 0)


@pytest.fixture(scope="module")
def variant_outputs():
  """Each variant's scores on a batch (lengths 7 and 3) and on the same batch padded
  with NaN frames, from one set of parameters per variant."""
  x = _features(2, 7)
  mask = _mask([7, 3], 7)
  padded = jnp.concatenate([x, jnp.full((2, 5, F), jnp.nan)], axis=1)
  pad_mask = _mask([7, 3], 12)
  out = {}
  for name, fields in VARIANTS.items():
    net = _tiny(**fields)
    params = net.init(jax.random.key(0), x, mask)
    out[name] = (np.asarray(net.apply(params, x, mask)),
                 np.asarray(net.apply(params, padded, pad_mask)))
  return out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_padding_never_changes_the_score(name, variant_outputs):
  ref, padded = variant_outputs[name]
  assert ref.shape == (2,)
  np.testing.assert_allclose(padded, ref, rtol=1e-5, atol=1e-6)
  assert np.all((ref > 0) & (ref < 1))


def test_a_video_scores_the_same_alone_and_in_a_batch():
  net = _tiny()
  x = _features(2, 7)
  mask = _mask([7, 3], 7)
  params = net.init(jax.random.key(0), x, mask)
  np.testing.assert_allclose(net.apply(params, x[1:, :3], mask[1:, :3]),
                             net.apply(params, x, mask)[1:], rtol=1e-5, atol=1e-6)


def test_ablations_give_different_functions(variant_outputs):
  for a, b in itertools.combinations(variant_outputs, 2):
    assert not np.allclose(variant_outputs[a][0], variant_outputs[b][0], rtol=0,
                           atol=1e-6), (a, b)
  # Same parameters, pooling switched: mean pooling ignores the attention unit.
  x = _features(3, 9)
  mask = _mask([9, 6, 2], 9)
  attn, mean = _tiny(), _tiny(pooling="mean")
  params = attn.init(jax.random.key(1), x, mask)
  assert not np.allclose(attn.apply(params, x, mask), mean.apply(params, x, mask),
                         rtol=0, atol=1e-6)


def _stream_numpy(p, inst, kernel_scale):
  """NumPy transcription of one stream with the GCN unit and attention pooling."""
  f = inst
  for i in range(2):
    f = np.maximum(f @ p[f"embed_{i}"]["kernel"] + p[f"embed_{i}"]["bias"], 0)
  n = f.shape[1]
  out, weights = [], []
  for b in range(f.shape[0]):
    a = np.array([[math.exp(-np.linalg.norm(f[b, i] - f[b, j]) / kernel_scale)
                   for j in range(n)] for i in range(n)]) + np.eye(n)
    d = a.sum(1)
    a_hat = a / np.sqrt(d[:, None] * d[None, :])
    c = f[b]
    for i in range(2):
      c = np.maximum((a_hat @ c) @ p[f"gcn_{i}"]["kernel"] + p[f"gcn_{i}"]["bias"], 0)
    fused = np.concatenate([f[b], c], axis=-1)
    h = np.maximum(fused @ p["att_0"]["kernel"] + p["att_0"]["bias"], 0)
    e = (h @ p["att_1"]["kernel"] + p["att_1"]["bias"])[:, 0]
    w = np.exp(e - e.max())
    w /= w.sum()
    out.append(w @ fused)
    weights.append(w)
  return np.stack(out), np.stack(weights)


def test_context_attention_matches_numpy():
  stream = ContextAttention(embed=(8, 6), gcn_features=(6, 6), attention_hidden=4,
                            kernel_scale=2.0)
  inst = _features(2, 5, 7, seed=3)
  params = stream.init(jax.random.key(2), inst)
  feat, weights = stream.apply(params, inst)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params["params"])
  ref_feat, ref_weights = _stream_numpy(p, np.asarray(inst, np.float64), 2.0)
  assert feat.shape == (2, 12)
  np.testing.assert_allclose(feat, ref_feat, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_pooling_is_unchanged_by_duplicating_every_instance(pooling):
  stream = ContextAttention(embed=(8, 6), context="none", pooling=pooling,
                            attention_hidden=4)
  inst = _features(2, 4, 7, seed=4)
  params = stream.init(jax.random.key(3), inst)
  feat, weights = stream.apply(params, inst)
  for doubled in (jnp.repeat(inst, 2, axis=1), jnp.tile(inst, (1, 3, 1))):
    got, got_weights = stream.apply(params, doubled)
    np.testing.assert_allclose(got, feat, rtol=1e-5, atol=1e-6)
    copies = doubled.shape[1] // inst.shape[1]
    np.testing.assert_allclose(got_weights.sum(-1), 1.0, rtol=1e-6)
    assert float(got_weights.max()) == pytest.approx(float(weights.max()) / copies,
                                                     rel=1e-5)


def test_feature_gcn_stream_ignores_instance_order_temporal_does_not():
  inst = _features(1, 5, 7, seed=5)
  perm = jnp.array([3, 0, 4, 1, 2])
  feature = ContextAttention(embed=(8, 6), gcn_features=(6, 6), attention_hidden=4)
  params = feature.init(jax.random.key(4), inst)
  a, _ = feature.apply(params, inst)
  b, _ = feature.apply(params, inst[:, perm])
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  temporal = ContextAttention(embed=(8, 6), gcn_features=(6, 6), attention_hidden=4,
                              adjacency="temporal")
  a, _ = temporal.apply(params, inst)
  b, _ = temporal.apply(params, inst[:, perm])
  assert not np.allclose(a, b, rtol=0, atol=1e-6)


def test_gradients_are_finite_for_short_videos():
  net = _tiny()
  x = _features(2, 6)
  mask = _mask([6, 2], 6)          # 2 frames -> repeated, equal instances
  params = net.init(jax.random.key(0), x, mask)
  grads = jax.jit(jax.grad(lambda p: net.apply(p, x, mask).sum()))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["params"]["dynamic"]))


def test_feature_slices_feed_each_stream():
  net = _tiny(dynamic_dims=(0, 4), static_dims=(4, 8))
  x = _features(2, 6)
  mask = _mask([6, 4], 6)
  params = net.init(jax.random.key(0), x, mask)
  assert params["params"]["dynamic"]["embed_0"]["kernel"].shape[0] == 4
  ref = net.apply(params, x, mask)
  np.testing.assert_allclose(net.apply(params, x.at[..., 8:].add(5.0), mask), ref,
                             rtol=1e-6)
  for dim in (1, 5):
    assert not np.allclose(net.apply(params, x.at[..., dim].add(1.0), mask), ref)
  for field in ("dynamic_dims", "static_dims"):
    with pytest.raises(ValueError, match=f"config.model.action_net.{field}"):
      _tiny(**{field: (4, 11)}).init(jax.random.key(0), x, mask)


def test_attention_weights_dropout_and_param_groups():
  net = _tiny()
  x = _features(2, 8)
  mask = _mask([8, 5], 8)
  params = net.init(jax.random.key(0), x, mask)
  score, weights = net.apply(params, x, mask, return_attention=True)
  assert weights["dynamic"].shape == (2, 4) and weights["static"].shape == (2, 3)
  np.testing.assert_allclose(weights["dynamic"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(score, net.apply(params, x, mask, train=False))
  trained = [net.apply(params, x, mask, train=True, rngs={"dropout": jax.random.key(s)})
             for s in range(3)]
  assert any(not np.allclose(t, score) for t in trained)
  labels = action_net.param_labels(params)
  flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  for path, label in flat:
    assert label == ("head" if path[0].key == "head" else "attention")
  assert {label for _, label in flat} == {"head", "attention"}
  assert set(params["params"]) == {"dynamic", "static", "head"}


@pytest.mark.parametrize("field,value", [("context", "gru"), ("pooling", "max"),
                                         ("adjacency", "knn"), ("num_segments", 0),
                                         ("num_frames", -1), ("dropout_rate", 1.0)])
def test_bad_fields_name_the_config_field(field, value):
  x = _features(1, 4)
  with pytest.raises(ValueError, match=f"config.model.action_net.{field}"):
    _tiny(**{field: value}).init(jax.random.key(0), x, _mask([4], 4))
