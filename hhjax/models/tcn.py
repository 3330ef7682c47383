"""Dilated temporal convolutions (MS-TCN style): residual layer and single stage.

Tensors are frame-major, `(B, T, C)`, with a frame mask `(B, T)` (1 = real frame,
0 = padding). Every convolution reads its input multiplied by the mask, so the zeros a
padded video carries past its end are exactly the zeros an unpadded video's `SAME`
padding supplies: a padded video gives the same outputs on its valid frames.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from hhjax.models.layers import Dropout

# PyTorch's default Conv1d initialisation (uniform, variance 1/(3 fan_in)): what the
# original MS-TCN-family code trained with. Networks that stack stages on raw stage
# features (BCN) need it to start with sane logits.
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def masked(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Zeroes padded frames: `x` (B, T, C) times `mask` (B, T)."""
  return x * mask[..., None].astype(x.dtype)


def residual(x: jnp.ndarray, h: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """`x + h` on real frames and `x` on padded ones: for an `x` that is zero on padded
  frames, as every stage's input and every residual layer's output is, this equals
  `masked(x + h, mask)`, bit for bit, values and gradients.

  Why not `masked(x + h, mask)`: with a frame mask that is an input of the jitted step
  (not a constant), XLA's CPU fusion recomputes a residual stream ending in a mask
  multiply from the start of the stage inside every layer's backward pass (quadratic
  in the number of layers): a 10-layer stage's forward + backward took 3x as long at
  T = 1,024 and 4,096 (docs/BENCHMARKS.md, "The mask multiply"). Masking only the added
  branch leaves the stream a plain sum, which XLA keeps materialised.
  """
  return x + masked(h, mask)


class DilatedResidualLayer(nn.Module):
  """ReLU(dilated conv k=3) -> 1x1 conv -> dropout, added to the input.

  The input must be zero on padded frames (the output then is too): see `residual`.
  The convolution reads the input masked all the same, so real frames never see what
  padded ones hold."""

  channels: int
  dilation: int
  dropout_rate: float = 0.5
  kernel_init: Callable[..., Any] = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    h = nn.Conv(self.channels, kernel_size=(3,), kernel_dilation=(self.dilation,),
                padding="SAME", kernel_init=self.kernel_init,
                name="conv_dilated")(masked(x, mask))                    # (B, T, C)
    h = nn.relu(h)
    h = nn.Conv(self.channels, kernel_size=(1,), kernel_init=self.kernel_init,
                name="conv_1x1")(h)
    h = Dropout(self.dropout_rate, deterministic=not train)(h)   # few-bit masks
    return residual(x, h, mask)


class SingleStage(nn.Module):
  """1x1 input projection, `num_layers` dilated residual layers (dilation 2^i).

  The input need not be zero on padded frames: the projection is per-frame and its
  output is masked before the first dilated layer reads it.

  Returns the stage features `(B, T, channels)`; the classifier lives with the caller
  so that a transformer block can sit between the two (see `segmentation.py`).
  """

  num_layers: int = 10
  channels: int = 64
  dropout_rate: float = 0.5
  kernel_init: Callable[..., Any] = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    h = nn.Conv(self.channels, kernel_size=(1,), kernel_init=self.kernel_init,
                name="conv_in")(x)                                       # (B, T, C)
    h = masked(h, mask)
    for i in range(self.num_layers):
      h = DilatedResidualLayer(self.channels, 2**i, self.dropout_rate,
                               kernel_init=self.kernel_init,
                               name=f"layer_{i}")(h, mask, train=train)
    return h
