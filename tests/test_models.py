"""Segment selection, the Key Action Scorer and padding invariance of the joint model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import config as default_config
from hhjax import losses
from hhjax.models.heads import scorers as scorer
from hhjax.models.joint import JointModel, create_model
from hhjax.models.segmenters.conv_transformer import MultiStageModel


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


def _tiny_model(attention="linear", **kw):
  segmenter = MultiStageModel(num_stages=3, num_layers=4, channels=8, num_heads=2,
                              attention=attention, dropout_rate=0.0,
                              attention_dropout_rate=0.0)
  return JointModel(segmenter=segmenter, **kw)


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


def test_to_score_range_hand_example():
  scores = jnp.array([[0.0, 0.5, 1.0, 0.25]])
  length = jnp.array([[3, 2, 1, 0]])
  # Range (0, 4) over 4 steps: the identity, a missing step scores 0.
  np.testing.assert_allclose(scorer.to_score_range(scores, length, (0.0, 4.0), 4),
                             [[0.0, 0.5, 1.0, 0.0]])
  # Range (4, 12) over 4 steps: each step in [1, 3]; a missing step scores 1.
  np.testing.assert_allclose(scorer.to_score_range(scores, length, (4.0, 12.0), 4),
                             [[1.0, 2.0, 3.0, 1.0]])


def test_step_scores_follow_the_score_range():
  """The same parameters score in the data set's units: (lo, hi) = (10, 70) maps each
  KAS output s to 10/6 + 10 s, and a step with no segment to 10/6."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 20, 6)), jnp.float32)
  mask = jnp.ones((1, 20))
  gt = jnp.array([[0] * 5 + [2] * 10 + [4] * 5])
  base = _tiny_model()
  params = base.init(jax.random.key(0), x, mask)
  unit = base.apply(params, x, mask, gt_labels=gt)["step_scores"]
  wide = _tiny_model(score_range=(10.0, 70.0)).apply(params, x, mask, gt_labels=gt)
  expected = np.where(np.asarray(unit) > 0, 10 / 6 + 10 * np.asarray(unit), 10 / 6)
  np.testing.assert_allclose(wide["step_scores"], expected, rtol=1e-6)
  np.testing.assert_allclose(wide["video_score"], expected.sum(-1), rtol=1e-6)
  assert 10.0 <= float(wide["video_score"][0]) <= 70.0
  cfg = default_config.get_config()
  cfg.dataset.score_range = (10.0, 70.0)
  assert create_model(cfg).score_range == (10.0, 70.0)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_ablation_variants_score_as_their_names_say():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 16, 6)).astype(np.float32)
  mask = np.ones((2, 16), np.float32)
  gt = np.array([[0] * 4 + [1] * 6 + [3] * 6, [2] * 10 + [0] * 6], np.int32)

  def pooled_by_hand(b, start, length):
    return x[b, start:start + length].mean(0)

  # KAS with a fixed sigmoid: no lambda parameter; a step's score is the mean of the
  # plain sigmoids of its two branches.
  model = _tiny_model(learnable_sigmoid=False)
  params = model.init(jax.random.key(0), x, mask)["params"]
  assert set(params["scorer"]) == {"kernel", "bias"}
  out = model.apply({"params": params}, x, mask, gt_labels=gt)
  k, bias = np.asarray(params["scorer"]["kernel"]), np.asarray(params["scorer"]["bias"])
  want = _sigmoid(pooled_by_hand(0, 4, 6) @ k[0] + bias[0]).mean()      # step 1
  np.testing.assert_allclose(out["step_scores"][0, 0], want, rtol=1e-5)
  # Learnable sigmoid: lambda is a parameter per step and branch, and it scales x.
  model = _tiny_model()
  params = model.init(jax.random.key(0), x, mask)["params"]
  params["scorer"]["sigmoid"]["lam"] = jnp.full((6, 2), 2.5)
  out = model.apply({"params": params}, x, mask, gt_labels=gt)
  k, bias = np.asarray(params["scorer"]["kernel"]), np.asarray(params["scorer"]["bias"])
  want = _sigmoid(2.5 * (pooled_by_hand(1, 0, 10) @ k[1] + bias[1])).mean()  # step 2
  np.testing.assert_allclose(out["step_scores"][1, 1], want, rtol=1e-5)
  # The MLP scorer: Dense -> ReLU -> Dense per step, no sigmoid (scores may leave [0, 1]).
  model = _tiny_model(scorer="mlp")
  params = model.init(jax.random.key(0), x, mask)["params"]
  assert set(params["scorer"]) == {"w1", "b1", "w2", "b2"}
  out = model.apply({"params": params}, x, mask, gt_labels=gt)
  p = {n: np.asarray(v) for n, v in params["scorer"].items()}
  h = np.maximum(pooled_by_hand(0, 10, 6) @ p["w1"][2] + p["b1"][2], 0)   # step 3
  np.testing.assert_allclose(out["step_scores"][0, 2], h @ p["w2"][2, :, 0] + p["b2"][2, 0],
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "max", "lstm"])
def test_video_scoring_ignores_segments_and_padding(pool):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 12, 6)).astype(np.float32)
  mask = np.ones((1, 12), np.float32)
  model = _tiny_model(scoring="video", video_pool=pool)
  params = model.init(jax.random.key(0), x, mask)["params"]
  assert "scorer" not in params and "video_regressor" in params
  out = model.apply({"params": params}, x, mask)
  assert np.all(np.asarray(out["step_scores"]) == 0)
  # The segmentation network does not enter the score: perturb it, same score.
  moved = jax.tree.map(lambda a: a + 1.0, params["segmenter"])
  out2 = model.apply({"params": {**params, "segmenter": moved}}, x, mask)
  np.testing.assert_allclose(out2["video_score"], out["video_score"], rtol=1e-6)
  # Padding with garbage changes nothing.
  xp = np.concatenate([x, rng.normal(size=(1, 5, 6)).astype(np.float32) * 30], 1)
  mp = np.concatenate([mask, np.zeros((1, 5), np.float32)], 1)
  np.testing.assert_allclose(model.apply({"params": params}, xp, mp)["video_score"],
                             out["video_score"], rtol=1e-5, atol=1e-6)
  if pool != "lstm":   # the pooled feature through the MLP, by hand
    r = params["video_regressor"]
    h = x[0].mean(0) if pool == "mean" else x[0].max(0)
    for i in range(2):
      h = np.maximum(h @ np.asarray(r[f"hidden_{i}"]["kernel"])
                     + np.asarray(r[f"hidden_{i}"]["bias"]), 0)
    want = h @ np.asarray(r["out"]["kernel"])[:, 0] + np.asarray(r["out"]["bias"])[0]
    np.testing.assert_allclose(out["video_score"][0], want, rtol=1e-4, atol=1e-6)


def test_video_level_model_without_segmenter():
  config = default_config.get_config()
  config.model.segmenter = "none"
  config.model.scoring = "video"
  config.model.video_pool = "lstm"
  model = create_model(config)
  x, mask = jnp.ones((2, 10, 5)), jnp.ones((2, 10))
  params = model.init(jax.random.key(0), x, mask)["params"]
  assert set(params) == {"video_regressor"}
  out = model.apply({"params": params}, x, mask)
  assert "logits" not in out and "labels" not in out
  batch = dict(labels=jnp.zeros((2, 10), jnp.int32), mask=mask, score=jnp.ones(2))
  loss, parts = model.loss(out, batch, config.loss)
  assert set(parts) == {"score_mse"}
  np.testing.assert_allclose(loss, np.mean((np.asarray(out["video_score"]) - 1) ** 2),
                             rtol=1e-5)
  config.model.scoring = "steps"
  with pytest.raises(ValueError, match="segmenter='none'"):
    create_model(config).init(jax.random.key(0), x, mask)


def test_per_stage_logits_and_defaults():
  model = create_model(default_config.get_config())
  seg = model.segmenter
  assert isinstance(seg, MultiStageModel)
  assert (seg.num_stages, seg.num_layers, seg.channels, model.num_classes,
          seg.attention) == (4, 10, 64, 7, "linear")
  x, mask = jnp.ones((1, 16, 12)), jnp.ones((1, 16))
  shapes = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, mask),
                                              x, mask))
  assert shapes["logits"].shape == (4, 1, 16, 7)


def test_whole_video_assessors_from_the_config():
  """video_pool='action_net' / 'sa_rnn' build those heads from config.model.<name>;
  ACTION-NET's sigmoid is mapped onto the score range; the ranking loss joins in."""
  from hhjax.models.heads import action_net, sa_rnn  # noqa: PLC0415
  config = default_config.get_config()
  config.model.segmenter = "none"
  config.model.scoring = "video"
  config.model.video_pool = "action_net"
  config.model.action_net.num_segments = 3
  config.model.action_net.num_frames = 2
  config.dataset.score_range = (2.0, 12.0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 212)), jnp.float32)
  mask = jnp.ones((2, 9)).at[1, 6:].set(0)
  model = create_model(config)
  params = model.init(jax.random.key(0), x, mask)["params"]
  out = model.apply({"params": params}, x, mask)
  head = action_net.ActionNet(num_segments=3, num_frames=2)
  unit = head.apply({"params": params["video_regressor"]}, x, mask)
  np.testing.assert_allclose(out["video_score"], 2.0 + 10.0 * np.asarray(unit),
                             rtol=1e-6)
  config.model.video_pool = "sa_rnn"
  config.model.sa_rnn.num_segments = 4
  model = create_model(config)
  params = model.init(jax.random.key(0), x, mask)["params"]
  out = model.apply({"params": params}, x, mask)
  raw = sa_rnn.SpatialAttentionRNN(num_segments=4).apply(
      {"params": params["video_regressor"]}, x, mask)
  np.testing.assert_allclose(out["video_score"], raw, rtol=1e-6)   # unbounded, as is
  config.loss.ranking_weight = 1.0
  batch = dict(labels=jnp.zeros((2, 9), jnp.int32), mask=mask, score=jnp.array([5., 3.]))
  _, parts = model.loss(out, batch, config.loss)
  np.testing.assert_allclose(parts["ranking"],
                             max(0.0, 1.0 - float(raw[0] - raw[1])), rtol=1e-5)
  config.model.sa_rnn.channels_typo = 3
  with pytest.raises(ValueError, match=r"config\.model\.sa_rnn has unknown field"):
    create_model(config).init(jax.random.key(0), x, mask)


def test_ranking_needs_batches_of_two_and_old_runs_resume():
  config = default_config.get_config()
  config.loss.ranking_weight = 1.0
  with pytest.raises(ValueError, match=r"config\.batch_size=1: set it to 2"):
    default_config.check_config(config)
  config.batch_size = 4
  default_config.check_config(config)
  config.loss.ranking_tie_weight = -0.1
  with pytest.raises(ValueError, match=r"config\.loss\.ranking_tie_weight must be >= 0"):
    default_config.check_config(config)
  # A run saved before the assessors' sections and the ranking loss existed resumes.
  saved = default_config.get_config().to_dict()
  del saved["model"]["action_net"], saved["model"]["sa_rnn"]
  del saved["loss"]["ranking_weight"], saved["loss"]["ranking_margin"]
  del saved["loss"]["ranking_tie_tolerance"], saved["loss"]["ranking_tie_weight"]
  del saved["optimizer"], saved["momentum"], saved["lr_multipliers"]
  assert default_config.resume_conflicts(saved, default_config.get_config().to_dict()) \
      == []


def test_residual_layers_add_only_on_real_frames_and_match_the_masked_sum(monkeypatch):
  """`tcn.residual` (x + masked(h)) against the masked sum it replaces,
  masked(x + h): a stage's outputs and every parameter gradient are bit-identical,
  with dropout on, and its padded frames are zero."""
  from hhjax.models import tcn
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 40, 5)).astype(np.float32)
  mask = np.ones((2, 40), np.float32)
  mask[1, 23:] = 0
  x[1, 23:] = 1e3                      # garbage past the end of the second video
  stage = tcn.SingleStage(num_layers=5, channels=8, dropout_rate=0.5)
  params = stage.init(jax.random.key(0), x, mask)["params"]
  target = rng.normal(size=(2, 40, 8)).astype(np.float32)

  def run():
    def loss(p):
      out = stage.apply({"params": p}, x, mask, train=True,
                        rngs={"dropout": jax.random.key(1)})
      return jnp.sum(out * target), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(out), grads

  # One layer by hand: padded frames keep the input, real frames get x + h.
  h = rng.normal(size=(2, 40, 5)).astype(np.float32)
  got = np.asarray(tcn.residual(jnp.asarray(x), jnp.asarray(h), jnp.asarray(mask)))
  np.testing.assert_array_equal(got[0], x[0] + h[0])
  np.testing.assert_array_equal(got[1, :23], x[1, :23] + h[1, :23])
  np.testing.assert_array_equal(got[1, 23:], x[1, 23:])
  out, grads = run()
  monkeypatch.setattr(tcn, "residual", lambda x, h, mask: tcn.masked(x + h, mask))
  ref_out, ref_grads = run()
  np.testing.assert_array_equal(out, ref_out)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.all(out[1, 23:] == 0)
