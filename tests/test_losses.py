"""The training losses against a naive NumPy transcription of MS-TCN's loss.

Per stage: cross-entropy averaged over the real frames, and the smoothing loss, the
mean over real neighbour pairs and classes of min((log p_t - log p_{t-1})^2, tau^2),
with the earlier frame detached; plus the (weighted) video-score MSE and the optional
per-step score MSE. Every reference below is written loop by loop from that
definition, not through `hhjax.losses`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import losses


def _log_softmax(z: np.ndarray) -> np.ndarray:
  z = z.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _naive_stage_losses(logits, labels, mask, tau):
  """Frame by frame: `(ce, smooth)`, each `(S,)`."""
  s_count, b_count, t_count, c_count = logits.shape
  ce, smooth = np.zeros(s_count), np.zeros(s_count)
  for s in range(s_count):
    ce_sum, frames, sm_sum, pairs = 0.0, 0, 0.0, 0
    for b in range(b_count):
      logp = _log_softmax(logits[s, b])                     # (T, C)
      for t in range(t_count):
        if mask[b, t]:
          ce_sum -= logp[t, labels[b, t]]
          frames += 1
        if t > 0 and mask[b, t] and mask[b, t - 1]:
          for c in range(c_count):
            sm_sum += min((logp[t, c] - logp[t - 1, c]) ** 2, tau ** 2)
          pairs += 1
    ce[s] = ce_sum / frames
    smooth[s] = sm_sum / (pairs * c_count)
  return ce, smooth


def _inputs(seed=0, s=2, b=3, t=9, c=5, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.normal(size=(s, b, t, c))).astype(np.float32)
  labels = rng.integers(0, c, size=(b, t)).astype(np.int32)
  mask = np.ones((b, t), np.float32)
  mask[1, 6:] = 0.0      # a video of 6 frames
  mask[2, 3:] = 0.0      # and one of 3
  return logits, labels, mask


@pytest.mark.parametrize("seed,tau", [(0, 4.0), (1, 2.0), (2, 3.0)])
def test_stage_losses_equal_naive_mstcn_loss(seed, tau):
  logits, labels, mask = _inputs(seed)
  ce, smooth = losses.stage_losses(logits, labels, mask, tau)
  want_ce, want_smooth = _naive_stage_losses(logits, labels, mask, tau)
  np.testing.assert_allclose(ce, want_ce, rtol=1e-5)
  np.testing.assert_allclose(smooth, want_smooth, rtol=1e-5)
  # The clamp is active on some entries but not all (else tau would not be tested),
  # so clamping at tau instead of tau^2 gives another value.
  logp = _log_softmax(logits)
  d2 = (logp[:, :, 1:] - logp[:, :, :-1]) ** 2
  assert 0.2 < (d2 > tau ** 2).mean() < 0.8
  _, wrong = _naive_stage_losses(logits, labels, mask, np.sqrt(tau))
  assert np.abs(wrong - smooth).max() > 1e-2


def test_padded_frames_and_pairs_touching_them_contribute_nothing():
  logits, labels, mask = _inputs(3)
  ce, smooth = losses.stage_losses(logits, labels, mask, 2.0)
  garbage = logits.copy()
  garbage[:, mask == 0] = 50.0 * np.random.default_rng(4).normal(
      size=garbage[:, mask == 0].shape)
  other_labels = np.where(mask == 0, (labels + 1) % logits.shape[-1], labels)
  ce2, smooth2 = losses.stage_losses(garbage, other_labels, mask, 2.0)
  np.testing.assert_allclose(ce2, ce, rtol=1e-6)
  np.testing.assert_allclose(smooth2, smooth, rtol=1e-6)


def test_smoothing_gradient_flows_into_the_later_frame_only():
  """The earlier frame of each pair is detached (as MS-TCN's `p.detach()[:, :, :-1]`):
  d smooth / d logits equals the hand-derived gradient of the later frame's term, and
  is zero on the first frame."""
  s, b, t, c, tau = 1, 1, 4, 3, 100.0        # tau large: no clamp, smooth gradient
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(s, b, t, c)).astype(np.float32)
  labels = rng.integers(0, c, size=(b, t)).astype(np.int32)
  mask = np.ones((b, t), np.float32)
  grad = np.asarray(jax.grad(
      lambda z: losses.stage_losses(z, labels, mask, tau)[1].sum())(jnp.asarray(logits)))
  logp = _log_softmax(logits[0, 0])                          # (T, C)
  p = np.exp(logp)
  want = np.zeros((t, c))
  pairs = t - 1
  for i in range(1, t):
    # d/dlogp_i of mean_c (logp_i - const)^2 over all pairs and classes ...
    g_logp = 2.0 * (logp[i] - logp[i - 1]) / (pairs * c)
    # ... through log_softmax: dlogp_c/dz_k = [c == k] - p_k.
    want[i] = g_logp - p[i] * g_logp.sum()
  np.testing.assert_allclose(grad[0, 0], want, rtol=1e-4, atol=1e-7)
  assert np.all(grad[0, 0, 0] == 0.0)                  # the first frame is only "earlier"
  assert np.abs(grad[0, 0, -1]).max() > 1e-3           # the last frame only "later"


def _joint_inputs(seed=0, b=3, t=8, s=2, c=4):
  rng = np.random.default_rng(seed)
  logits, labels, mask = _inputs(seed, s=s, b=b, t=t, c=c)
  outputs = dict(logits=jnp.asarray(logits),
                 video_score=jnp.asarray(rng.uniform(0, 6, b), jnp.float32),
                 step_scores=jnp.asarray(rng.uniform(0, 1, (b, 6)), jnp.float32))
  step_scores = rng.uniform(0, 1, (b, 6)).astype(np.float32)
  step_scores[0, [1, 4]] = -1.0                  # unknown step scores
  step_scores[2, :] = -1.0
  batch = dict(labels=labels, mask=mask, score=rng.uniform(0, 6, b).astype(np.float32),
               step_scores=step_scores, weight=np.ones(b, np.float32))
  return outputs, batch


def _naive_joint(outputs, batch, smooth_weight, tau, score_weight, step_score_weight):
  ce, smooth = _naive_stage_losses(np.asarray(outputs["logits"]), batch["labels"],
                                   batch["mask"], tau)
  score_mse = np.mean((np.asarray(outputs["video_score"], np.float64) - batch["score"])
                      ** 2)
  errs = [(float(outputs["step_scores"][i, j]) - batch["step_scores"][i, j]) ** 2
          for i in range(len(batch["score"])) for j in range(6)
          if batch["step_scores"][i, j] >= 0]
  step_mse = float(np.mean(errs))
  total = (ce.sum() + smooth_weight * smooth.sum() + score_weight * score_mse
           + step_score_weight * step_mse)
  return total, dict(ce=ce.sum(), smooth=smooth.sum(), score_mse=score_mse,
                     step_score_mse=step_mse)


def test_joint_loss_by_hand():
  outputs, batch = _joint_inputs(0)
  kw = dict(smooth_weight=0.15, tau=2.0, score_weight=0.7, step_score_weight=0.3)
  loss, parts = losses.joint_loss(outputs, batch, **kw)
  want, want_parts = _naive_joint(outputs, batch, **kw)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert set(parts) == set(want_parts)
  for k, v in want_parts.items():
    np.testing.assert_allclose(float(parts[k]), v, rtol=1e-5, err_msg=k)
  # Off by default: no per-step term, and the total drops it.
  loss0, parts0 = losses.joint_loss(outputs, batch, **{**kw, "step_score_weight": 0.0})
  assert "step_score_mse" not in parts0
  np.testing.assert_allclose(float(loss0), want - 0.3 * want_parts["step_score_mse"],
                             rtol=1e-5)


def test_filler_rows_change_nothing():
  """Rows of weight 0 (added to fill the last batch) leave the loss and its parts as
  without them, however wrong their predictions and whatever their mask says."""
  outputs, batch = _joint_inputs(1)
  kw = dict(smooth_weight=0.15, tau=4.0, score_weight=1.0, step_score_weight=0.5)
  loss, parts = losses.joint_loss(outputs, batch, **kw)
  rng = np.random.default_rng(9)
  filled_out = dict(
      logits=jnp.concatenate([outputs["logits"],
                              jnp.asarray(30 * rng.normal(size=(2, 2, 8, 4)),
                                          jnp.float32)], axis=1),
      video_score=jnp.concatenate([outputs["video_score"], jnp.array([100., -50.])]),
      step_scores=jnp.concatenate([outputs["step_scores"], jnp.full((2, 6), 9.0)]))
  filled = dict(
      labels=np.concatenate([batch["labels"], np.zeros((2, 8), np.int32)]),
      mask=np.concatenate([batch["mask"], np.ones((2, 8), np.float32)]),  # "real"
      score=np.concatenate([batch["score"], np.zeros(2, np.float32)]),
      step_scores=np.concatenate([batch["step_scores"], np.zeros((2, 6), np.float32)]),
      weight=np.concatenate([batch["weight"], np.zeros(2, np.float32)]))
  loss2, parts2 = losses.joint_loss(filled_out, filled, **kw)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  for k in parts:
    np.testing.assert_allclose(float(parts2[k]), float(parts[k]), rtol=1e-6, err_msg=k)
  # The same rows with weight 1 do change it (so the comparison above can fail).
  filled["weight"] = np.ones(5, np.float32)
  loss3, _ = losses.joint_loss(filled_out, filled, **kw)
  assert abs(float(loss3) - float(loss)) > 1.0


def test_video_level_model_has_only_score_terms():
  outputs, batch = _joint_inputs(2)
  del outputs["logits"]
  batch["weight"] = np.array([1.0, 0.0, 1.0], np.float32)
  loss, parts = losses.joint_loss(outputs, batch, score_weight=2.0)
  vs = np.asarray(outputs["video_score"], np.float64)
  want = ((vs[0] - batch["score"][0]) ** 2 + (vs[2] - batch["score"][2]) ** 2) / 2
  assert set(parts) == {"score_mse"}
  np.testing.assert_allclose(float(parts["score_mse"]), want, rtol=1e-5)
  np.testing.assert_allclose(float(loss), 2.0 * want, rtol=1e-5)


def test_ranking_term_by_hand():
  """Videos scored 3, 1, 1 and a filler row; predictions 0.5, 1.0, 2.0, 9.0. Ordered
  pairs with different scores: (0, 1) and (0, 2); hinge max(0, 1 - (p_i - p_j)) =
  1.5 and 2.5, mean 2.0. The tie (1, 2) and the filler row count for nothing."""
  outputs = dict(video_score=jnp.array([0.5, 1.0, 2.0, 9.0]))
  batch = dict(score=jnp.array([3.0, 1.0, 1.0, 0.0]), weight=jnp.array([1, 1, 1, 0]),
               labels=jnp.zeros((4, 2), jnp.int32), mask=jnp.ones((4, 2)))
  base, _ = losses.joint_loss(outputs, batch, score_weight=0.0)
  loss, parts = losses.joint_loss(outputs, batch, score_weight=0.0, ranking_weight=0.5)
  np.testing.assert_allclose(parts["ranking"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(loss - base, 0.5 * 2.0, rtol=1e-6)
  _, wide = losses.joint_loss(outputs, batch, ranking_weight=1.0, ranking_margin=3.0)
  np.testing.assert_allclose(wide["ranking"], (3.5 + 4.5) / 2, rtol=1e-6)
  assert "ranking" not in losses.joint_loss(outputs, batch)[1]
  # The tie (1, 2) pulled together: + 0.25 x |1.0 - 2.0| (the filler row still ignored).
  _, tied = losses.joint_loss(outputs, batch, ranking_weight=1.0, ranking_tie_weight=0.25)
  np.testing.assert_allclose(tied["ranking"], 2.0 + 0.25 * 1.0, rtol=1e-6)
  # A tolerance of 2.5 makes 3 vs 1 a tie too: every pair tied, mean |dp| = (0.5 + 1.5
  # + 1.0) / 3.
  _, loose = losses.joint_loss(outputs, batch, ranking_weight=1.0, ranking_tie_weight=1.0,
                               ranking_tie_tolerance=2.5)
  np.testing.assert_allclose(loose["ranking"], 3.0 / 3, rtol=1e-6)
