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


def joint_loss(outputs, batch, *, smooth_weight: float = 0.15, tau: float = 4.0,
               score_weight: float = 1.0):
  """The full training loss and its parts.

  Args:
    outputs: the joint model's output dict (`logits`, `video_score`).
    batch: dict with `labels` (B, T), `mask` (B, T), `score` (B,) and optionally
      `weight` (B,): 0 for padding examples added to fill a batch.
    smooth_weight, tau, score_weight: loss weights.

  Returns:
    `(loss, parts)` with parts `ce`, `smooth`, `score_mse` (scalars).
  """
  mask = batch["mask"]
  weight = batch.get("weight")
  if weight is not None:
    mask = mask * weight[:, None].astype(mask.dtype)
  ce, smooth = stage_losses(outputs["logits"], batch["labels"], mask, tau)
  err = (outputs["video_score"] - batch["score"]) ** 2
  if weight is None:
    score_mse = err.mean()
  else:
    w = weight.astype(err.dtype)
    score_mse = (err * w).sum() / jnp.maximum(w.sum(), 1.0)
  loss = ce.sum() + smooth_weight * smooth.sum() + score_weight * score_mse
  return loss, dict(ce=ce.sum(), smooth=smooth.sum(), score_mse=score_mse)
