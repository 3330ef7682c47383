"""Post-processing of predicted frame labels: short runs merged into their neighbours.

Multi-stage segmentation networks over-segment: a long step comes out cut by short
runs of another class (on the real washes, trained for 200 steps, the joint model
predicts about twice as many segments as there are steps, most of the extra ones under
half a second long). BCN and ASRF cure this inside the network (barriers, boundary
regression); `merge_short_runs` is the
network-agnostic rule, chosen by `config.model.min_segment_frames` (0: off, the
paper's rule) and applied to every network's labels before the scorer picks each
step's segment, so the scores and the reported segments agree.

The rule, in passes until nothing changes (at most `max_passes`): every run shorter
than `min_frames` that has a neighbouring run takes the label of its longer neighbour
(the earlier one on a tie); all short runs of a pass change together. A run with no
neighbour (the whole video one run) is kept. Padded frames are never a neighbour and
stay 0. It looks at the whole video, so it is offline only: a causal (streaming) model
cannot use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_PASSES = 16


def _one_pass(x: jnp.ndarray, min_frames: int) -> jnp.ndarray:
  """One simultaneous pass over `(B, T)` labels, -1 on padded frames."""
  b, t = x.shape
  start = jnp.concatenate([jnp.ones((b, 1), bool), x[:, 1:] != x[:, :-1]], axis=1)
  run = jnp.cumsum(start, axis=1) - 1                                   # run id (B, T)
  ones = jnp.ones((t,), jnp.int32)
  length = jax.vmap(lambda r: jax.ops.segment_sum(ones, r, t))(run)    # per run id
  label = jax.vmap(lambda r, v: jax.ops.segment_max(v, r, t))(run, x)   # per run id
  exists = length > 0
  real = exists & (label >= 0)                                         # not padding
  none = jnp.full((b, 1), -1, jnp.int32)
  prev_len = jnp.concatenate([none, jnp.where(real, length, -1)[:, :-1]], axis=1)
  next_len = jnp.concatenate([jnp.where(real, length, -1)[:, 1:], none], axis=1)
  prev_lab = jnp.concatenate([none, label[:, :-1]], axis=1)
  next_lab = jnp.concatenate([label[:, 1:], none], axis=1)
  short = real & (length < min_frames) & ((prev_len >= 0) | (next_len >= 0))
  new = jnp.where(short, jnp.where(prev_len >= next_len, prev_lab, next_lab), label)
  return jnp.take_along_axis(new, run, axis=1)


def merge_short_runs(labels: jnp.ndarray, mask: jnp.ndarray, min_frames: int,
                     max_passes: int = MAX_PASSES) -> jnp.ndarray:
  """`(B, T)` int32 labels with every run shorter than `min_frames` merged (see the
  module docstring); padded frames (mask 0) are 0. `min_frames` <= 1 changes nothing."""
  labels = labels.astype(jnp.int32)
  valid = mask.astype(bool)
  if min_frames <= 1:
    return jnp.where(valid, labels, 0)
  x0 = jnp.where(valid, labels, -1)

  def cond(carry):
    _, changed, passes = carry
    return changed & (passes < max_passes)

  def body(carry):
    x, _, passes = carry
    y = _one_pass(x, min_frames)
    return y, jnp.any(y != x), passes + 1

  x, _, _ = jax.lax.while_loop(cond, body, (x0, jnp.array(True), jnp.array(0)))
  return jnp.where(valid, x, 0)
