"""MS-TCN: the multi-stage temporal convolutional network (Farha and Gall, "MS-TCN:
Multi-Stage Temporal Convolutional Network for Action Segmentation", CVPR 2019),
registered as `mstcn`.

S stages (`num_stages`, 4) are stacked; each one is a single-stage TCN:

    stage input (B, T, D_s) -> 1x1 conv to `channels` (64)
      -> `num_layers` (10) dilated residual layers, dilation 1, 2, 4, ..., 2^(L-1):
           x + dropout(1x1 conv(ReLU(dilated conv k=3 (x))))
      -> 1x1 classifier -> logits (B, T, C)

Stage 1 reads the input features (D_1 = D); every later stage reads the **softmax of the
previous stage's logits** (D_s = C), so it refines a prediction rather than appearance.
No attention anywhere. Output: `logits` (S, B, T, C) and `features` (B, T, channels),
the last stage's features before its classifier. The loss is the shared one (per-stage
cross-entropy + 0.15 x truncated-MSE smoothing, in `hhjax.losses`), which is MS-TCN's own
loss, so the network adds no terms of its own.

Details taken from the authors' released code (yabufarha/ms-tcn, `model.py`):
* dropout p = 0.5 after the 1x1 conv of every residual layer (`dropout_rate`);
* the softmax fed to the next stage is not detached: later stages' losses train the
  earlier stages too;
* the features go straight into the first 1x1 conv: the released code has **no channel
  dropout on the input**, so `input_dropout_rate` defaults to 0 here. It is kept as an
  option (whole feature dimensions dropped for a video, like PyTorch's Dropout2d on
  (B, D, T)) because hhjax configs use it on small data sets; the value comes from
  `config.model.input_dropout_rate`.
Choice of this module: every convolution reads its input multiplied by the frame mask
(see `hhjax.models.tcn`), and the softmax fed onwards is zeroed on padded frames (as the
released code does), so padding never leaks into valid frames.

`Stage` and `check_inputs` are shared with MS-TCN++ (`mstcn_pp.py`), whose refinement
stages are exactly these stages.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.tcn import SingleStage, masked


def check_inputs(network: str, x, mask) -> None:
  """Raises a ValueError naming `network` unless `x` is (B, T, D) and `mask` (B, T)."""
  if x.ndim != 3:
    raise ValueError(f"{network}: features must be (batch, frames, dims), got shape "
                     f"{tuple(x.shape)}")
  if tuple(mask.shape) != tuple(x.shape[:2]):
    raise ValueError(f"{network}: mask shape {tuple(mask.shape)} does not match the "
                     f"features' (batch, frames) {tuple(x.shape[:2])}")


def check_at_least(network: str, minimum: int, **fields: int) -> None:
  """Raises a ValueError naming the config field of `network` that is below `minimum`."""
  for field, value in fields.items():
    if value < minimum:
      raise ValueError(f"config.model.{field} must be >= {minimum} for {network}, "
                       f"got {value}")


def stage_input(logits, mask):
  """What a refinement stage reads: the previous stage's class probabilities
  (B, T, C), zero on padded frames."""
  return masked(jax.nn.softmax(logits, axis=-1), mask)


class Stage(nn.Module):
  """One single-stage TCN with its classifier.

  Returns `(features (B, T, channels), logits (B, T, num_classes))`, logits zero on
  padded frames.
  """

  num_classes: int = 7
  num_layers: int = 10
  channels: int = 64
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    # x unmasked: SingleStage's first layer is per-frame and masks its output.
    h = SingleStage(self.num_layers, self.channels, self.dropout_rate,
                    name="tcn")(x, mask, train=train)                   # (B, T, channels)
    logits = nn.Conv(self.num_classes, kernel_size=(1,), name="classifier")(h)
    return h, masked(logits, mask)


@register("mstcn")
class MSTCN(nn.Module):
  """MS-TCN (defaults: 4 stages x 10 layers x 64 channels, dropout 0.5).

  `__call__(x, mask)` with `x` (B, T, D) returns `{"logits" (S, B, T, num_classes),
  "features" (B, T, channels)}` (the segmenter contract of `hhjax.models.segmenters`).
  """

  num_classes: int = 7
  num_stages: int = 4
  num_layers: int = 10
  channels: int = 64
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    check_inputs("mstcn", x, mask)
    check_at_least("mstcn", 1, num_stages=self.num_stages, num_layers=self.num_layers,
                   channels=self.channels, num_classes=self.num_classes)
    # Optional channel dropout: a dropped feature dimension is dropped on every frame.
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    all_logits = []
    inputs = x
    for s in range(self.num_stages):
      h, logits = Stage(self.num_classes, self.num_layers, self.channels,
                        self.dropout_rate, name=f"stage_{s}")(inputs, mask, train=train)
      all_logits.append(logits)
      inputs = stage_input(logits, mask)                                # (B, T, C)
    return {"logits": jnp.stack(all_logits), "features": h}
