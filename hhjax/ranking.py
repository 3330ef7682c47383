"""Pairwise ranking: the hinge ranking loss, ranking accuracy and seeded pair sampling.

Skill-assessment models trained from relative judgements (Doughty et al., CVPR 2018;
Li et al., ICCV-W 2019) learn a score S such that of two videos the better one scores
higher by a margin: for a pair (i, j) with i better than j the loss is
max(0, margin - (S_i - S_j)) (Li et al.'s eq. 11, margin 0.5 there). They are
evaluated by ranking accuracy: the share of pairs the scores order correctly.

* `pairwise_ranking_loss` (jittable): the hinge over every ordered pair of a batch
  whose targets differ, with filler rows masked out and an optional term that pulls
  tied pairs together.
* `ranking_accuracy` (NumPy): for evaluation.
* `sample_pairs` (NumPy): seeded pairs with distinct targets, better video first,
  for pair-wise batches.

"Distinct" and "tied" use `tie_tolerance`: targets t_i, t_j are tied when
|t_i - t_j| <= tie_tolerance (0: only equal targets are tied).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _check_nonnegative(**values: float) -> None:
  for name, value in values.items():
    if not value >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}")


def pairwise_ranking_loss(pred, target, weight=None, *, margin: float = 1.0,
                          tie_tolerance: float = 0.0,
                          tie_weight: float = 0.0) -> jnp.ndarray:
  """Mean hinge ranking loss over the ordered pairs of a batch (jittable).

  Over every ordered pair (i, j) of rows with weight_i > 0, weight_j > 0 and
  target_i > target_j + tie_tolerance, the loss is max(0, margin - (pred_i - pred_j)),
  averaged over those pairs (0 when there is none). Pairs with
  |target_i - target_j| <= tie_tolerance (i != j) are skipped; with tie_weight > 0
  the loss adds tie_weight * mean |pred_i - pred_j| over them (0 when there is none).
  `weight` only selects rows (filler rows added to fill a batch carry 0); it does
  not weigh pairs.

  Args:
    pred: (B,) predicted scores.
    target: (B,) target scores (only their order and ties matter).
    weight: (B,) row weights, or None for all rows.
    margin: the hinge margin (>= 0).
    tie_tolerance: targets this close count as tied (>= 0).
    tie_weight: weight of the similarity term on tied pairs (>= 0; 0 skips ties).

  Returns:
    A scalar loss.

  Raises:
    ValueError: on shapes that are not matching 1-D arrays, or a negative `margin`,
      `tie_tolerance` or `tie_weight`.
  """
  _check_nonnegative(margin=margin, tie_tolerance=tie_tolerance, tie_weight=tie_weight)
  pred = jnp.asarray(pred)
  target = jnp.asarray(target)
  if pred.ndim != 1 or target.shape != pred.shape:
    raise ValueError(f"pred and target must be 1-D of the same length, got shapes "
                     f"{pred.shape} and {target.shape}")
  if weight is None:
    valid = jnp.ones(pred.shape, bool)
  else:
    weight = jnp.asarray(weight)
    if weight.shape != pred.shape:
      raise ValueError(f"weight must have the shape of pred {pred.shape}, got "
                       f"{weight.shape}")
    valid = weight > 0
  both = valid[:, None] & valid[None, :]                                 # (B, B)
  dt = target[:, None] - target[None, :]                                 # t_i - t_j
  dp = pred[:, None] - pred[None, :]                                     # p_i - p_j
  ordered = both & (dt > tie_tolerance)
  hinge = jnp.maximum(0.0, margin - dp)
  num = ordered.sum()
  loss = jnp.where(ordered, hinge, 0.0).sum() / jnp.maximum(num, 1)
  if tie_weight > 0:
    off_diagonal = ~jnp.eye(pred.shape[0], dtype=bool)
    tied = both & off_diagonal & (jnp.abs(dt) <= tie_tolerance)
    similarity = jnp.where(tied, jnp.abs(dp), 0.0).sum() / jnp.maximum(tied.sum(), 1)
    loss = loss + tie_weight * similarity
  return loss


def ranking_accuracy(pred, target, tie_tolerance: float = 0.0) -> float:
  """The share of pairs with distinct targets that `pred` orders the same way.

  Every unordered pair {i, j} with |target_i - target_j| > tie_tolerance counts once:
  1 if pred orders it as target does, 1/2 if pred_i == pred_j, 0 otherwise.

  Args:
    pred: (B,) predicted scores.
    target: (B,) target scores.
    tie_tolerance: targets this close count as tied and are left out (>= 0).

  Returns:
    The accuracy in [0, 1], or NaN when no pair has distinct targets.

  Raises:
    ValueError: on shapes that are not matching 1-D arrays, or a negative
      `tie_tolerance`.
  """
  _check_nonnegative(tie_tolerance=tie_tolerance)
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target, np.float64)
  if pred.ndim != 1 or target.shape != pred.shape:
    raise ValueError(f"pred and target must be 1-D of the same length, got shapes "
                     f"{pred.shape} and {target.shape}")
  i, j = np.triu_indices(pred.shape[0], k=1)
  dt = target[i] - target[j]
  keep = np.abs(dt) > tie_tolerance
  if not keep.any():
    return float("nan")
  agree = np.sign(pred[i] - pred[j])[keep] * np.sign(dt[keep])        # 1, 0 or -1
  return float(np.mean((agree + 1.0) / 2.0))


def sample_pairs(target, num_pairs: int, seed: int,
                 tie_tolerance: float = 0.0) -> np.ndarray:
  """Seeded random pairs (i, j) with target_i > target_j + tie_tolerance.

  Each unordered pair of rows with distinct targets appears at most once, the row
  with the higher target first. When at most `num_pairs` such pairs exist, all of
  them are returned; the rows are in a random (seeded) order either way.

  Args:
    target: (B,) target scores.
    num_pairs: how many pairs to draw (>= 0).
    seed: the seed of `np.random.default_rng`.
    tie_tolerance: targets this close count as tied and are never paired (>= 0).

  Returns:
    (P, 2) int64 row indices, P = min(num_pairs, number of distinct pairs).

  Raises:
    ValueError: if `target` is not 1-D, or on a negative `num_pairs` or
      `tie_tolerance`.
  """
  _check_nonnegative(tie_tolerance=tie_tolerance)
  if isinstance(num_pairs, bool) or int(num_pairs) != num_pairs or num_pairs < 0:
    raise ValueError(f"num_pairs must be an integer >= 0, got {num_pairs!r}")
  target = np.asarray(target, np.float64)
  if target.ndim != 1:
    raise ValueError(f"target must be 1-D, got shape {target.shape}")
  i, j = np.nonzero(target[:, None] - target[None, :] > tie_tolerance)
  pairs = np.stack([i, j], axis=1).astype(np.int64)                      # (all, 2)
  rng = np.random.default_rng(seed)
  chosen = rng.choice(len(pairs), size=min(int(num_pairs), len(pairs)), replace=False)
  return pairs[chosen].reshape(-1, 2)
