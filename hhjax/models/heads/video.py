"""Whole-video score regressors (the video-level rows of Li et al.'s Table VI) and the
registry of every video-level head (`config.model.video_pool`).

They see a video's features as one sequence and regress its score directly, without
localising steps:

* `mean` / `max`: average or maximum pooling over the valid frames, then an MLP with
  two hidden layers (ReLU) to one output.
* `lstm`: a one-layer LSTM (hidden 256, as in the paper) over the valid frames; its
  last hidden state goes through one dense layer to the score.

Padding never counts: pooling ignores padded frames, and the LSTM stops at each
video's last valid frame.

`config.model.video_pool` names the head (`VIDEO_HEADS`): the three above, or the
whole-video assessment models `action_net` (ACTION-NET, Zeng et al. 2020:
`hhjax.models.heads.action_net`) and `sa_rnn` (the spatial-attention RNN of Li et al.
2019: `hhjax.models.heads.sa_rnn`), whose fields are in `config.model.<name>`.
`build_video_head` makes one; every head is called as `head(x, mask, train=train)` and
returns (B,) scores. ACTION-NET's are in (0, 1) (a sigmoid, `BOUNDED_HEADS`): the joint
model maps them onto the data set's score range; the others are unbounded.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

VIDEO_POOLS = ("mean", "max", "lstm")
VIDEO_HEADS = VIDEO_POOLS + ("action_net", "sa_rnn")
BOUNDED_HEADS = frozenset({"action_net"})     # outputs in (0, 1)


class VideoRegressor(nn.Module):
  """`(x (B, T, F), mask (B, T)) -> (B,)` video scores; see the module docstring."""

  pool: str = "mean"
  hidden: tuple[int, ...] = (128, 64)
  lstm_hidden: int = 256

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    del train   # no dropout
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


def build_video_head(kind: str, fields: Mapping[str, Any] | None = None,
                     **module_kwargs) -> nn.Module:
  """The video-level head `kind` (one of `VIDEO_HEADS`).

  Args:
    kind: `config.model.video_pool`.
    fields: the head's own fields (`config.model.action_net` or `.sa_rnn`); ignored by
      the pooling and LSTM regressors.
    **module_kwargs: passed to the module (e.g. `name=`).

  Raises:
    ValueError: an unknown head, or a field the head does not have.
  """
  fields = dict(fields or {})
  if kind in VIDEO_POOLS:
    return VideoRegressor(kind, **module_kwargs)
  if kind == "action_net":
    from hhjax.models.heads.action_net import ActionNet as cls  # noqa: PLC0415
  elif kind == "sa_rnn":
    from hhjax.models.heads.sa_rnn import SpatialAttentionRNN as cls  # noqa: PLC0415
  else:
    raise ValueError(f"config.model.video_pool={kind!r}; expected one of {VIDEO_HEADS}")
  import dataclasses  # noqa: PLC0415
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"config.model.{kind} has unknown field(s) {unknown}; "
                     f"{cls.__name__} takes {sorted(known)}")
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return cls(**fields, **module_kwargs)
