"""Training losses (jittable, mask-aware).

Per stage: frame-wise cross-entropy + `smooth_weight` x the truncated MSE of
log-probability differences between neighbouring frames (MS-TCN's smoothing loss,
threshold `tau`), plus `score_weight` x the MSE between predicted and true video scores.
Padded frames, and neighbour pairs touching a padded frame, contribute nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def stage_losses(logits, labels, mask, tau: float = 4.0):
  """Cross-entropy and truncated-MSE smoothing loss for each stage.

  Args:
    logits: `(S, B, T, C)` per-stage logits.
    labels: `(B, T)` int frame labels.
    mask: `(B, T)` 1 for real frames.
    tau: truncation threshold on |log p_t - log p_{t-1}|.

  Returns:
    `(ce, smooth)`, each `(S,)`: cross-entropy averaged over the batch's real frames, and
    the smoothing loss averaged over real neighbour pairs and classes.
  """
  m = mask.astype(logits.dtype)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None])  # (S, B, T)
  ce = (ce * m).sum((1, 2)) / jnp.maximum(m.sum(), 1.0)
  logp = jax.nn.log_softmax(logits, axis=-1)
  # Only the later frame gets a gradient, as MS-TCN does (the earlier one is detached).
  diff = logp[:, :, 1:] - jax.lax.stop_gradient(logp[:, :, :-1])          # (S, B, T-1, C)
  tmse = jnp.minimum(diff**2, tau**2).mean(-1)
  pair = m[:, 1:] * m[:, :-1]
  smooth = (tmse * pair).sum((1, 2)) / jnp.maximum(pair.sum(), 1.0)
  return ce, smooth


def example_mask(batch) -> jnp.ndarray:
  """(B, T) frame mask with filler rows (`weight` 0) zeroed."""
  mask = batch["mask"]
  weight = batch.get("weight")
  if weight is not None:
    mask = mask * weight[:, None].astype(mask.dtype)
  return mask


def _weighted_mean(err, weight):
  if weight is None:
    return err.mean()
  w = weight.astype(err.dtype)
  return (err * w).sum() / jnp.maximum(w.sum(), 1.0)


def joint_loss(outputs, batch, *, smooth_weight: float = 0.15, tau: float = 4.0,
               score_weight: float = 1.0, step_score_weight: float = 0.0,
               ranking_weight: float = 0.0, ranking_margin: float = 1.0,
               ranking_tie_tolerance: float = 0.0, ranking_tie_weight: float = 0.0):
  """The shared training loss and its parts.

  Args:
    outputs: the joint model's output dict: `video_score` (B,), and where the model
      segments, `logits` (S, B, T, C); with `step_score_weight`, `step_scores` (B, 6).
    batch: dict with `labels` (B, T), `mask` (B, T), `score` (B,), optionally
      `weight` (B,) (0 for padding examples added to fill a batch) and `step_scores`
      (B, 6) (negative where unknown).
    smooth_weight, tau, score_weight: loss weights.
    step_score_weight: weight of the per-step score MSE over the steps whose score the
      data gives (0: off).
    ranking_weight, ranking_margin: weight and margin of the pairwise hinge ranking
      loss over the batch's pairs of videos with different scores
      (`hhjax.ranking.pairwise_ranking_loss`; 0: off). It needs batches of two or more
      videos.
    ranking_tie_tolerance, ranking_tie_weight: scores this close are tied; tied pairs
      are skipped (weight 0) or their predictions pulled together by that weight.

  Returns:
    `(loss, parts)` with parts `ce`, `smooth` (where the model segments), `score_mse`
    and, when on, `step_score_mse` and `ranking` (scalars).
  """
  weight = batch.get("weight")
  loss = 0.0
  parts = {}
  if "logits" in outputs:
    ce, smooth = stage_losses(outputs["logits"], batch["labels"], example_mask(batch),
                              tau)
    loss = ce.sum() + smooth_weight * smooth.sum()
    parts.update(ce=ce.sum(), smooth=smooth.sum())
  score_mse = _weighted_mean((outputs["video_score"] - batch["score"]) ** 2, weight)
  loss = loss + score_weight * score_mse
  parts["score_mse"] = score_mse
  if step_score_weight:
    target = batch["step_scores"]
    known = (target >= 0).astype(outputs["step_scores"].dtype)            # (B, 6)
    if weight is not None:
      known = known * weight[:, None].astype(known.dtype)
    err = (outputs["step_scores"] - target) ** 2 * known
    step_mse = err.sum() / jnp.maximum(known.sum(), 1.0)
    loss = loss + step_score_weight * step_mse
    parts["step_score_mse"] = step_mse
  if ranking_weight:
    from hhjax import ranking  # noqa: PLC0415
    rank = ranking.pairwise_ranking_loss(outputs["video_score"], batch["score"], weight,
                                         margin=ranking_margin,
                                         tie_tolerance=ranking_tie_tolerance,
                                         tie_weight=ranking_tie_weight)
    loss = loss + ranking_weight * rank
    parts["ranking"] = rank
  return loss, parts
