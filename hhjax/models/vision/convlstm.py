"""Convolutional LSTM (Shi et al., "Convolutional LSTM Network: A Machine Learning
Approach for Precipitation Nowcasting", NeurIPS 2015) and the ConvLSTM clip classifier
of the SUTD hand-washing report (Phang et al., "HandWash Recognition", 2021).

One step of `ConvLSTMCell`, with `*` a 2-D convolution ("SAME" padding, stride 1) and
`o` the element-wise product:

    z = W * [x_t, h_{t-1}] + b           one conv over the channel concatenation,
                                         4 F output channels, split in this order:
    i = sigmoid(z_i)                     input gate
    f = sigmoid(z_f)                     forget gate
    o = sigmoid(z_o)                     output gate
    g = tanh(z_g)                        candidate cell state (c~ in Shi et al.)
    c_t = f o c_{t-1} + i o g
    h_t = o o tanh(c_t)

Gate order in the kernel's output channels: **i, f, o, g** (channels 0..F-1 are i,
F..2F-1 are f, and so on). That is the order of the PyTorch ConvLSTM the report builds
on (ndrplz/ConvLSTM_pytorch), so its `conv.weight` (4F, C + F, kh, kw) maps onto this
kernel (kh, kw, C + F, 4F) by a transpose alone. Shi et al.'s peephole terms
(W_ci o c_{t-1}, ...) are left out, as that implementation and Keras' ConvLSTM2D leave
them out. Kernel sizes must be odd, so that "SAME" equals PyTorch's symmetric
`padding = k // 2`.

`ConvLSTM` runs the cell over (B, T, H, W, C) from a zero state. With a frame mask
(B, T), the state is frozen after a clip's last valid frame: the final state (and the
output of `return_sequences=False`) is the one after the last valid frame, whatever
the padding holds. The mask must be a prefix mask (valid frames first).

`ConvLSTMClassifier` is the report's model: one ConvLSTM layer (8 hidden channels,
3x3 kernel), ReLU on its last hidden state, dropout 0.8, flatten, one dense layer to
the 12 classes. Its logits feed a softmax cross-entropy (the reference code applies
log-softmax and NLL). The reference code ran it on 64x64 frames (8 x 64 x 64 = 32768
inputs to the dense layer); the report's preprocessing writes 128x128 frames. The dense
layer takes its size from the input, so either works.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.layers import Dropout

GATE_ORDER = ("i", "f", "o", "g")


def check_kernel_size(kernel_size: Sequence[int]) -> tuple[int, int]:
  """Returns `kernel_size` as a pair of odd positive ints, or raises ValueError."""
  ks = tuple(int(k) for k in kernel_size)
  if len(ks) != 2 or any(k < 1 or k % 2 == 0 for k in ks):
    raise ValueError(f"kernel_size must be two odd positive ints, got {kernel_size}")
  return ks


def check_clip(name: str, x, mask) -> None:
  """Raises a ValueError naming `name` unless `x` is (B, T, H, W, C), mask (B, T)."""
  if x.ndim != 5:
    raise ValueError(f"{name}: frames must be (batch, time, height, width, channels), "
                     f"got shape {tuple(x.shape)}")
  if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
    raise ValueError(f"{name}: mask shape {tuple(mask.shape)} does not match the "
                     f"frames' (batch, time) {tuple(x.shape[:2])}")


class ConvLSTMCell(nn.Module):
  """One ConvLSTM step (module docstring): `(carry, x_t) -> (carry, h_t)`.

  Attributes:
    features: F, channels of the hidden and cell states.
    kernel_size: the convolution's (kh, kw), odd.
    use_bias: whether the convolution has a bias.

  `carry` is `(c, h)`, each (B, H, W, F); `x_t` is (B, H, W, C). The convolution is
  the submodule "conv" (kernel (kh, kw, C + F, 4F), gate order i, f, o, g).
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  use_bias: bool = True

  @nn.compact
  def __call__(self, carry, x):
    ks = check_kernel_size(self.kernel_size)
    if self.features < 1:
      raise ValueError(f"ConvLSTMCell.features must be >= 1, got {self.features}")
    c, h = carry
    z = nn.Conv(4 * self.features, ks, padding="SAME", use_bias=self.use_bias,
                name="conv")(jnp.concatenate([x, h], axis=-1))      # (B, H, W, 4F)
    zi, zf, zo, zg = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
    h = jax.nn.sigmoid(zo) * jnp.tanh(c)
    return (c, h), h

  def initialize_carry(self, x_t):
    """Zero `(c, h)` for a frame batch `x_t` (B, H, W, C)."""
    zeros = jnp.zeros(x_t.shape[:-1] + (self.features,), x_t.dtype)
    return zeros, zeros


def _masked_step(cell: ConvLSTMCell, carry, inputs):
  """One step that keeps the old state where the frame is padding."""
  x_t, m_t = inputs
  new_carry, h = cell(carry, x_t)
  keep = (m_t > 0)[:, None, None, None]                               # (B, 1, 1, 1)
  new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
  return new_carry, jnp.where(keep, h, 0.0)


class ConvLSTM(nn.Module):
  """A ConvLSTM layer over clips (module docstring).

  Attributes:
    features: F, hidden channels.
    kernel_size: (kh, kw), odd.
    return_sequences: True returns every step's hidden state (B, T, H, W, F), zero on
      padded frames; False returns the hidden state after each clip's last valid
      frame (B, H, W, F).

  `__call__(x (B, T, H, W, C), mask (B, T) or None)`; no mask means all frames valid.
  Parameters live under "cell" (one `ConvLSTMCell`, shared over time).
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  return_sequences: bool = False

  @nn.compact
  def __call__(self, x, mask=None):
    check_clip("ConvLSTM", x, mask)
    if mask is None:
      mask = jnp.ones(x.shape[:2], x.dtype)
    cell = ConvLSTMCell(self.features, tuple(self.kernel_size), name="cell")
    scan = nn.scan(_masked_step, variable_broadcast="params",
                   split_rngs={"params": False}, in_axes=1, out_axes=1)
    carry = cell.initialize_carry(x[:, 0])
    (_, h_last), hs = scan(cell, carry, (x, mask.astype(x.dtype)))
    return hs if self.return_sequences else h_last


class ConvLSTMClassifier(nn.Module):
  """The report's ConvLSTM clip classifier: `(x, mask) -> logits (B, num_classes)`.

  ConvLSTM (last valid hidden state) -> ReLU -> dropout -> flatten -> dense.

  Attributes:
    num_classes: 12 in the report (7 WHO steps, left/right variants apart).
    features: hidden channels of the ConvLSTM (8 in the reference code).
    kernel_size: (3, 3) in the reference code.
    dropout: 0.8 in the reference code.
  """

  num_classes: int = 12
  features: int = 8
  kernel_size: tuple[int, int] = (3, 3)
  dropout: float = 0.8

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    h = ConvLSTM(self.features, tuple(self.kernel_size), name="convlstm")(x, mask)
    h = Dropout(self.dropout, deterministic=not train)(nn.relu(h))     # (B, H, W, F)
    return nn.Dense(self.num_classes, name="classifier")(h.reshape(h.shape[0], -1))
