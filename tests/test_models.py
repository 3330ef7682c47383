"""Segment selection, the Key Action Scorer and padding invariance of the joint model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import losses
from hhjax.models import scorer
from hhjax.models.joint import JointModel


def _longest_run_reference(labels, num_valid, step):
  """Plain Python: earliest longest run of `step` among the first num_valid frames."""
  best_start, best_len, t = 0, 0, 0
  while t < num_valid:
    if labels[t] == step:
      u = t
      while u < num_valid and labels[u] == step:
        u += 1
      if u - t > best_len:
        best_start, best_len = t, u - t
      t = u
    else:
      t += 1
  return best_start, best_len


@pytest.mark.parametrize("seed", range(5))
def test_longest_runs_match_plain_python(seed):
  rng = np.random.default_rng(seed)
  b, t = 6, 40
  # Sticky random sequences, so runs of several frames and ties both occur.
  labels = np.zeros((b, t), np.int32)
  for i in range(b):
    cur = rng.integers(7)
    for j in range(t):
      if rng.random() < 0.3:
        cur = rng.integers(7)
      labels[i, j] = cur
  num_valid = rng.integers(1, t + 1, size=b)
  num_valid[0] = t
  mask = (np.arange(t)[None] < num_valid[:, None]).astype(np.float32)
  labels_with_garbage = np.where(mask > 0, labels, 3)   # padding must not extend runs
  start, length = jax.jit(scorer.longest_runs)(labels_with_garbage, mask)
  for i in range(b):
    for s in range(1, 7):
      ref = _longest_run_reference(labels[i], num_valid[i], s)
      assert (int(start[i, s - 1]), int(length[i, s - 1])) == (ref if ref[1] else (0, 0))


def test_pool_segments_hand_example():
  feats = jnp.arange(12, dtype=jnp.float32).reshape(1, 6, 2)  # frame t = (2t, 2t+1)
  start = jnp.array([[1, 0]])
  length = jnp.array([[3, 0]])
  pooled = scorer.pool_segments(feats, start, length)
  np.testing.assert_allclose(pooled[0, 0], [4.0, 5.0])   # mean of frames 1..3
  np.testing.assert_allclose(pooled[0, 1], [0.0, 0.0])   # empty run


def test_learnable_sigmoid_init_and_fixed_variant():
  x = jnp.array([[-1.0, 0.0, 2.0]])
  learn = scorer.LearnableSigmoid((3,), learnable=True)
  params = learn.init(jax.random.key(0), x)
  np.testing.assert_array_equal(params["params"]["lam"], np.ones(3))
  lam = jnp.array([2.0, 1.0, 0.5])
  got = learn.apply({"params": {"lam": lam}}, x)
  np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.array([2.0, 1.0, 0.5]) * x)),
                             rtol=1e-6)
  fixed = scorer.LearnableSigmoid((3,), learnable=False)
  assert not jax.tree.leaves(fixed.init(jax.random.key(0), x))


def test_key_action_scorer_is_branch_mean_of_sigmoids():
  kas = scorer.KeyActionScorer(num_steps=6, num_branches=2)
  pooled = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6, 5)), jnp.float32)
  p = kas.init(jax.random.key(1), pooled)["params"]
  got = kas.apply({"params": p}, pooled)
  x = np.einsum("bsf,sfk->bsk", pooled, p["kernel"]) + p["bias"]
  ref = (1 / (1 + np.exp(-np.asarray(p["sigmoid"]["lam"]) * x))).mean(-1)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert got.shape == (3, 6) and np.all((got > 0) & (got < 1))


def _tiny_model(**kw):
  return JointModel(num_stages=3, num_layers=4, channels=8, num_heads=2,
                    dropout_rate=0.0, attention_dropout_rate=0.0, **kw)


@pytest.mark.parametrize("kind", ["linear", "softmax", "none"])
@pytest.mark.parametrize("pool", ["input", "stage"])
def test_padded_video_gives_same_outputs_on_valid_frames(kind, pool):
  rng = np.random.default_rng(0)
  t, pad = 37, 27
  x = rng.normal(size=(1, t, 6)).astype(np.float32)
  model = _tiny_model(attention=kind, pool_features=pool)
  params = model.init(jax.random.key(0), x, np.ones((1, t)))
  # Scale up the classifier so predictions have several steps (non-trivial runs).
  params = jax.tree.map(lambda a: a * 3.0, params)
  out = model.apply(params, x, np.ones((1, t)))
  xp = np.concatenate([x, rng.normal(size=(1, pad, 6)).astype(np.float32) * 50], 1)
  maskp = np.concatenate([np.ones((1, t)), np.zeros((1, pad))], 1)
  outp = model.apply(params, xp, maskp)
  np.testing.assert_allclose(outp["logits"][:, :, :t], out["logits"], rtol=1e-4,
                             atol=1e-5)
  assert np.all(np.asarray(outp["logits"][:, :, t:]) == 0)
  np.testing.assert_array_equal(outp["labels"][:, :t], out["labels"])
  np.testing.assert_array_equal(outp["seg_length"], out["seg_length"])
  np.testing.assert_allclose(outp["step_scores"], out["step_scores"], rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(outp["video_score"], out["video_score"], rtol=1e-4)
  assert len(set(np.asarray(out["labels"][0]).tolist())) > 1   # a non-trivial case
  # The loss too: padding adds nothing.
  labels = rng.integers(0, 7, size=(1, t)).astype(np.int32)
  batch = dict(labels=labels, mask=np.ones((1, t), np.float32), score=np.array([2.0]))
  batchp = dict(labels=np.pad(labels, ((0, 0), (0, pad))), mask=maskp.astype(np.float32),
                score=np.array([2.0]))
  np.testing.assert_allclose(losses.joint_loss(outp, batchp)[0],
                             losses.joint_loss(out, batch)[0], rtol=1e-5)


def test_step_without_run_scores_zero_and_video_score_is_sum():
  model = _tiny_model()
  x = jnp.ones((1, 20, 6))
  params = model.init(jax.random.key(0), x, jnp.ones((1, 20)))
  gt = jnp.array([[0] * 5 + [2] * 10 + [4] * 5])   # only steps 2 and 4 present
  out = model.apply(params, x, jnp.ones((1, 20)), gt_labels=gt)
  scores = np.asarray(out["step_scores"][0])
  assert scores[[0, 2, 4, 5]].tolist() == [0, 0, 0, 0]
  assert np.all(scores[[1, 3]] > 0)
  np.testing.assert_allclose(out["video_score"][0], scores.sum(), rtol=1e-6)
  np.testing.assert_array_equal(out["seg_start"][0, [1, 3]], [5, 15])
  np.testing.assert_array_equal(out["seg_length"][0, [1, 3]], [10, 5])


@pytest.mark.parametrize("opts", [dict(scorer="mlp"), dict(learnable_sigmoid=False),
                                  dict(scoring="video")])
def test_ablation_variants_run_and_differ_in_parameters(opts):
  x, mask = jnp.ones((2, 16, 6)), jnp.ones((2, 16))
  base = _tiny_model().init(jax.random.key(0), x, mask)["params"]
  var = _tiny_model(**opts).init(jax.random.key(0), x, mask)["params"]
  out = _tiny_model(**opts).apply({"params": var}, x, mask)
  assert out["video_score"].shape == (2,)
  assert jax.tree.structure(base) != jax.tree.structure(var)


def test_per_stage_logits_and_defaults():
  model = JointModel()
  assert (model.num_stages, model.num_layers, model.channels, model.num_classes,
          model.attention) == (4, 10, 64, 7, "linear")
  x, mask = jnp.ones((1, 16, 12)), jnp.ones((1, 16))
  shapes = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, mask),
                                              x, mask))
  assert shapes["logits"].shape == (4, 1, 16, 7)
