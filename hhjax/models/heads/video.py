"""Whole-video score regressors (the video-level rows of Li et al.'s Table VI).

They see a video's features as one sequence and regress its score directly, without
localising steps:

* `mean` / `max`: average or maximum pooling over the valid frames, then an MLP with
  two hidden layers (ReLU) to one output.
* `lstm`: a one-layer LSTM (hidden 256, as in the paper) over the valid frames; its
  last hidden state goes through one dense layer to the score.

Padding never counts: pooling ignores padded frames, and the LSTM stops at each
video's last valid frame.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

VIDEO_POOLS = ("mean", "max", "lstm")


class VideoRegressor(nn.Module):
  """`(x (B, T, F), mask (B, T)) -> (B,)` video scores; see the module docstring."""

  pool: str = "mean"
  hidden: tuple[int, ...] = (128, 64)
  lstm_hidden: int = 256

  @nn.compact
  def __call__(self, x, mask):
    if self.pool not in VIDEO_POOLS:
      raise ValueError(f"config.model.video_pool={self.pool!r}; expected one of "
                       f"{VIDEO_POOLS}")
    m = mask.astype(x.dtype)[..., None]                                   # (B, T, 1)
    if self.pool == "lstm":
      lengths = mask.astype(jnp.int32).sum(-1)
      (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(self.lstm_hidden), return_carry=True,
                         name="lstm")(x, seq_lengths=lengths)
      return nn.Dense(1, name="out")(h)[:, 0]
    if self.pool == "mean":
      h = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)                      # (B, F)
    else:
      h = jnp.where(m > 0, x, -jnp.inf).max(1)
      h = jnp.where(jnp.isfinite(h), h, 0.0)                              # empty video
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"hidden_{i}")(h))
    return nn.Dense(1, name="out")(h)[:, 0]
