"""Segment selection and the Key Action Scorer (KAS).

For each WHO step, the longest contiguous run of frames labelled with that step is its
segment; the run's features are average-pooled and scored. Everything here is jittable
and runs on device: no host round trip per step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

SCORER_KINDS = ("kas", "mlp")


def to_score_range(scores: jnp.ndarray, length: jnp.ndarray,
                   score_range: tuple[float, float], num_steps: int) -> jnp.ndarray:
  """Step scores in the data set's units, with a step that has no segment at the bottom.

  A video score in `[lo, hi]` is the sum of `num_steps` step scores, each in
  `[lo / num_steps, hi / num_steps]`. The scorers' outputs are fractions of that step
  range (the KAS's lie in (0, 1)), so a step scores `lo / S + (hi - lo) / S * s`; a step
  with no segment (`length == 0`) scores `lo / S`. For the default range (0, 6) with six
  steps this is the identity, and a missing step scores 0.

  Args:
    scores: `(B, S)` scorer outputs.
    length: `(B, S)` segment lengths (0: the step was not found).
    score_range: the video score's `(lo, hi)` (`config.dataset.score_range`).
    num_steps: S.
  """
  lo, hi = (float(v) for v in score_range)
  step_lo, step_width = lo / num_steps, (hi - lo) / num_steps
  return jnp.where(length > 0, step_lo + step_width * scores, step_lo)


def longest_runs(labels: jnp.ndarray, mask: jnp.ndarray, num_steps: int = 6):
  """Longest contiguous run of each step class 1..num_steps.

  Args:
    labels: `(B, T)` integer frame labels.
    mask: `(B, T)`, 1 for real frames; padded frames never belong to a run.
    num_steps: step classes are `1..num_steps` (0 is background).

  Returns:
    `(start, length)`, each `(B, num_steps)` int32. Ties go to the earliest run; a step
    with no frame has length 0 (and start 0).
  """
  t = labels.shape[-1]
  steps = jnp.arange(1, num_steps + 1)
  hit = (labels[:, None, :] == steps[None, :, None]) & mask[:, None, :].astype(bool)
  idx = jnp.arange(t)
  # Index of the latest non-hit frame at or before t; run length ending at t follows.
  last_break = lax.cummax(jnp.where(hit, -1, idx), axis=2)          # (B, S, T)
  run = jnp.where(hit, idx - last_break, 0)
  end = jnp.argmax(run, axis=-1)                                     # first max
  length = jnp.max(run, axis=-1)
  start = jnp.where(length > 0, end - length + 1, 0)
  return start.astype(jnp.int32), length.astype(jnp.int32)


def segment_masks(start, length, num_frames: int):
  """`(B, S, T)` float masks of the selected runs."""
  idx = jnp.arange(num_frames)
  inside = (idx >= start[..., None]) & (idx < (start + length)[..., None])
  return inside.astype(jnp.float32)


def pool_segments(features, start, length):
  """Average-pools `features` (B, T, F) over each run -> `(B, S, F)` (zeros if empty)."""
  seg = segment_masks(start, length, features.shape[1]).astype(features.dtype)
  total = jnp.einsum("bst,btf->bsf", seg, features)
  return total / jnp.maximum(length, 1)[..., None].astype(features.dtype)


class LearnableSigmoid(nn.Module):
  """`1 / (1 + exp(-lambda * x))`, with `lambda` a parameter of shape `shape` (init 1).

  With `learnable=False`, lambda is the constant 1 (the plain sigmoid ablation).
  """

  shape: tuple[int, ...] = ()
  learnable: bool = True

  @nn.compact
  def __call__(self, x):
    if self.learnable:
      lam = self.param("lam", nn.initializers.ones, self.shape)
    else:
      lam = jnp.ones(self.shape, x.dtype)
    return jax.nn.sigmoid(lam * x)


class KeyActionScorer(nn.Module):
  """Per step, `num_branches` key-action branches: Dense -> learnable sigmoid.

  Input `(B, S, F)` pooled segment features; output `(B, S)` step scores in (0, 1), the
  mean of the branches. Each step has its own weights (a grouped dense layer).
  """

  num_steps: int = 6
  num_branches: int = 2
  learnable_sigmoid: bool = True

  @nn.compact
  def __call__(self, pooled):
    f = pooled.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                        (self.num_steps, f, self.num_branches))
    bias = self.param("bias", nn.initializers.zeros, (self.num_steps, self.num_branches))
    x = jnp.einsum("bsf,sfk->bsk", pooled, kernel) + bias           # (B, S, K)
    branches = LearnableSigmoid((self.num_steps, self.num_branches),
                                self.learnable_sigmoid, name="sigmoid")(x)
    return branches.mean(axis=-1)


class MLPScorer(nn.Module):
  """Ablation: a plain per-step MLP (Dense -> ReLU -> Dense), no key-action branches."""

  num_steps: int = 6
  hidden: int = 64

  @nn.compact
  def __call__(self, pooled):
    f = pooled.shape[-1]
    init = nn.initializers.lecun_normal(batch_axis=(0,))
    w1 = self.param("w1", init, (self.num_steps, f, self.hidden))
    b1 = self.param("b1", nn.initializers.zeros, (self.num_steps, self.hidden))
    w2 = self.param("w2", init, (self.num_steps, self.hidden, 1))
    b2 = self.param("b2", nn.initializers.zeros, (self.num_steps, 1))
    h = nn.relu(jnp.einsum("bsf,sfh->bsh", pooled, w1) + b1)
    return (jnp.einsum("bsh,sho->bso", h, w2) + b2)[..., 0]
