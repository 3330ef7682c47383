"""ASFormer: an encoder-decoder transformer for action segmentation (registered as
`asformer`).

Yi, Wen & Jiang, "ASFormer: Transformer for Action Segmentation", BMVC 2021; the
authors' code is github.com/ChinaYi/ASFormer (`model.py`, `main.py`). The pieces:

    x (B, T, D) -> [channel dropout] -> ENCODER -> logits_0, f_0
    softmax(logits_{d}) , f_{d} -> DECODER_{d+1} -> logits_{d+1}, f_{d+1}   (d = 0..N-1)

* **Encoder.** A 1x1 input projection to `channels`, `num_layers` blocks, a 1x1
  classifier.
* **Decoder** (`num_decoders` of them). The same layout, but it reads the softmax of
  the previous prediction (C channels) and its blocks use cross-attention.
* **Block i** (`i = 0..num_layers-1`):

      h   = ReLU(conv_k3_dilation(2^i)(x))                       feed-forward
      h   = alpha * Attn(InstanceNorm(h), source) + h            local attention
      out = x + Dropout(conv_1x1(h))                             residual

  `Attn` projects Q and K to `channels // r1` and V to `channels // r2` features
  (1x1), runs single-head scaled dot-product attention (scale 1/sqrt(channels // r1))
  inside a local window of the layer's block length `2^i`, then `conv_out(ReLU(.))`
  back to `channels`. The window doubles every layer, so the last layers see a wide
  context (the paper's "hierarchical representation pattern").
* **Encoder vs decoder attention.** In the encoder Q, K and V all come from the
  normalised block features (alpha = 1). In decoder d (0-based) Q and K come from the
  decoder's own normalised block features while V comes from `source`, the previous
  module's final features (unnormalised), and the attention is weighted by
  `alpha = exp(-3 d)` (1, e^-3, e^-6): later decoders lean more on their own
  convolutions. This follows the authors' code: the paper describes Q and K as built
  from the encoder output, and the authors confirmed in a discussion on their repository
  that the code's version is the one they ran. Also as in the code, decoder d+1's
  `source` is the final features of decoder d (the encoder's for the first decoder),
  not always the encoder's.

Local attention window (authors' `_sliding_window_self_att` and
`construct_window_mask`). Frames are cut into blocks of `bl = 2^i` frames starting at
frame 0; every query of the block starting at frame `s` attends to the same keys:

    [s - bl//2, s - bl//2 + width),   width = min(bl + 2 (bl//2), 2 bl - 1)

i.e. the block, `bl//2` frames before it and `bl//2 - 1` after it (bl = 1: the frame
itself). The one-frame asymmetry is what the released mask builds (each of its `bl`
row writes fills every row and none reaches the last column, as a user pointed out on
the authors' repository); the published results come from that code, so it is kept.
Keys outside the video and padded frames are masked out. Cost: the queries of a block
score `width < 2 bl` keys, O(T x 2^i) per layer, never O(T^2); the implementation
reshapes the key sequence into blocks and pairs each block with its successor, so no
gather and no T x T array.

Mask handling (the original trains with batch size 1 and needs none of this): every
convolution reads masked input, the instance normalisation uses the mean and variance
of the valid frames only, attention never reads padded keys, and outputs are zeroed on
padded frames, so a padded video gives the same outputs on its valid frames.

Followed from the authors' code where the paper is silent: no positional encoding; the
instance norm has no affine parameters (PyTorch's default) and eps 1e-5; dropout
(`dropout_rate`, 0.5) only after each block's 1x1 conv (the code's attention itself has
no dropout; its multi-head wrapper with dropout is unused); channel dropout on the input
(`input_dropout_rate`, whole feature channels of a video: the code's Dropout2d at 0.3,
0.5 for GTEA); 10 blocks per encoder/decoder (`main.py`; the largest window is 512 =
2^9, which the paper quotes), r1 = r2 = 2, 64 channels, 3 decoders. The original's
masking adds log(1e-6) to masked logits and multiplies the weights by the mask without
renormalising; here masked keys get exactly zero weight (a difference of order 1e-6 of
the masked weight).

Shapes: `x` (B, T, D), `mask` (B, T). Outputs: `logits` (1 + num_decoders, B, T,
num_classes) -- encoder first, last decoder last (the prediction); `features` (B, T,
channels) -- the last decoder's features. The shared loss (cross-entropy + 0.15 x
truncated MSE on every output) is the original's loss, so the network adds no terms.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.tcn import masked, residual

# Decoder d weights its attention by exp(-ALPHA_DECAY * d) (authors' code, p = 3).
ALPHA_DECAY = 3.0
INSTANCE_NORM_EPS = 1e-5


def window_of_block(block: int) -> tuple[int, int]:
  """`(before, width)` of the key window shared by the queries of one block.

  The block starting at frame `s` attends to key frames `[s - before, s - before +
  width)` (see the module docstring): `before = block // 2`,
  `width = min(block + 2 (block // 2), 2 block - 1)`.
  """
  if block < 1:
    raise ValueError(f"attention block length must be >= 1, got {block}")
  before = block // 2
  return before, min(block + 2 * before, 2 * block - 1)


def local_attention(q, k, v, mask, block: int):
  """Blocked local softmax attention (ASFormer's sliding-window attention).

  Args:
    q, k: `(B, T, dk)` queries and keys.
    v: `(B, T, dv)` values.
    mask: `(B, T)`, 1 for real frames.
    block: block length `bl`; the queries of block `[s, s + bl)` attend to the keys in
      `window_of_block(bl)` around it.

  Returns:
    `(B, T, dv)`; padded query frames are zero. Memory is O(B T bl (dk + dv)).
  """
  b, t, dk = q.shape
  dv = v.shape[-1]
  before, width = window_of_block(block)
  nb = -(-t // block)                                   # blocks covering T
  m = mask.astype(q.dtype)
  qb = jnp.pad(q, ((0, 0), (0, nb * block - t), (0, 0))).reshape(b, nb, block, dk)

  # Keys: shift right by `before` (frame s - before lands on the block boundary), pad
  # to nb + 1 whole blocks, and pair block n with block n + 1: its 2 bl frames start at
  # s - before and hold the whole window (width <= 2 bl - 1).
  right = (nb + 1) * block - before - t

  def windows(a):                                       # (B, T, d) -> (B, nb, width, d)
    a = jnp.pad(a, ((0, 0), (before, right), (0, 0))).reshape(b, nb + 1, block, -1)
    return jnp.concatenate([a[:, :-1], a[:, 1:]], axis=2)[:, :, :width]

  kw, vw = windows(k), windows(v)
  key_ok = windows(m[..., None])[..., 0] > 0             # (B, nb, width)
  logits = jnp.einsum("bnqd,bnkd->bnqk", qb, kw) / math.sqrt(dk)
  logits = jnp.where(key_ok[:, :, None, :], logits, jnp.finfo(logits.dtype).min)
  # Multiplying by key_ok again zeroes a query whose window holds no valid key (only
  # possible for a padded query), instead of averaging masked keys uniformly.
  weights = jax.nn.softmax(logits, axis=-1) * key_ok[:, :, None, :]
  out = jnp.einsum("bnqk,bnkd->bnqd", weights, vw).reshape(b, nb * block, dv)[:, :t]
  return out * m[..., None]


def masked_instance_norm(x, mask, eps: float = INSTANCE_NORM_EPS):
  """Per-video, per-channel normalisation over time using only the valid frames.

  `x` (B, T, C), `mask` (B, T): `(x - mean) / sqrt(var + eps)` with the (biased) mean
  and variance of each channel over the frames where mask is 1; padded frames are 0.
  """
  m = mask.astype(x.dtype)[..., None]                    # (B, T, 1)
  n = jnp.maximum(m.sum(axis=1, keepdims=True), 1.0)     # (B, 1, 1)
  mean = (x * m).sum(axis=1, keepdims=True) / n
  var = (((x - mean) * m) ** 2).sum(axis=1, keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * m


class LocalAttention(nn.Module):
  """Q/K (`qk_features`) and V (`v_features`) 1x1 projections, blocked local attention,
  then `conv_out(ReLU(.))` back to the input width. `source` gives V (decoders);
  None means self-attention."""

  qk_features: int
  v_features: int
  block: int

  @nn.compact
  def __call__(self, x, source, mask):
    channels = x.shape[-1]
    q = nn.Dense(self.qk_features, name="query")(x)      # (B, T, dk)
    k = nn.Dense(self.qk_features, name="key")(x)
    v = nn.Dense(self.v_features, name="value")(x if source is None else source)
    out = local_attention(q, k, v, mask, self.block)     # (B, T, dv)
    return masked(nn.Dense(channels, name="conv_out")(nn.relu(out)), mask)


class ASFormerBlock(nn.Module):
  """Dilated conv feed-forward, masked instance norm, alpha-weighted local attention,
  1x1 conv, dropout, residual (the authors' `AttModule`)."""

  channels: int
  dilation: int
  r1: int
  r2: int
  alpha: float = 1.0
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, source, mask, *, train: bool = False):
    h = nn.Conv(self.channels, kernel_size=(3,), kernel_dilation=(self.dilation,),
                padding="SAME", name="feed_forward")(masked(x, mask))    # (B, T, C)
    h = nn.relu(h)
    att = LocalAttention(self.channels // self.r1, self.channels // self.r2,
                         block=self.dilation, name="attention")(
                             masked_instance_norm(h, mask), source, mask)
    h = self.alpha * att + h
    h = nn.Dense(self.channels, name="conv_1x1")(h)
    h = Dropout(self.dropout_rate, deterministic=not train)(h)
    return residual(x, h, mask)


class ASFormerStack(nn.Module):
  """Encoder (`source` None) or decoder: 1x1 input projection, `num_layers` blocks
  with dilation and block length 2^i, 1x1 classifier. Returns `(logits, features)`."""

  num_classes: int
  num_layers: int
  channels: int
  r1: int
  r2: int
  alpha: float = 1.0
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, source, mask, *, train: bool = False):
    h = masked(nn.Dense(self.channels, name="conv_in")(x), mask)        # (B, T, C)
    for i in range(self.num_layers):
      h = ASFormerBlock(self.channels, 2**i, self.r1, self.r2, self.alpha,
                        self.dropout_rate, name=f"block_{i}")(h, source, mask,
                                                               train=train)
    logits = masked(nn.Dense(self.num_classes, name="classifier")(h), mask)
    return logits, h


@register("asformer")
class ASFormer(nn.Module):
  """ASFormer (defaults: 10 blocks x 64 channels, 3 decoders, r1 = r2 = 2).

  `__call__(x, mask)` with `x` (B, T, D) returns `logits` (1 + num_decoders, B, T,
  num_classes) and `features` (B, T, channels) (the segmenter contract of
  `hhjax.models.segmenters`). Fields of its own come from `config.model.asformer`.
  """

  num_classes: int = 7
  num_layers: int = 10
  channels: int = 64
  num_decoders: int = 3
  r1: int = 2
  r2: int = 2
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.3

  def _check(self):
    for field in ("num_classes", "num_layers", "channels", "r1", "r2"):
      if getattr(self, field) < 1:
        raise ValueError(f"config.model.asformer.{field} must be >= 1, got "
                         f"{getattr(self, field)}")
    if self.num_decoders < 0:
      raise ValueError(f"config.model.asformer.num_decoders must be >= 0, got "
                       f"{self.num_decoders}")
    for field in ("r1", "r2"):
      r = getattr(self, field)
      if self.channels % r:
        raise ValueError(f"config.model.asformer.{field}={r} must divide channels="
                         f"{self.channels} (the attention works on channels // {field} "
                         f"features)")

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    self._check()
    # Channel dropout (the original's Dropout2d): whole feature dimensions of a video.
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    stack = lambda alpha, name: ASFormerStack(
        self.num_classes, self.num_layers, self.channels, self.r1, self.r2, alpha,
        self.dropout_rate, name=name)
    logits, features = stack(1.0, "encoder")(x, None, mask, train=train)  # masks after conv_in
    all_logits = [logits]
    for d in range(self.num_decoders):
      probs = masked(jax.nn.softmax(logits, axis=-1), mask)
      logits, features = stack(math.exp(-ALPHA_DECAY * d), f"decoder_{d}")(
          probs, features, mask, train=train)
      all_logits.append(logits)
    return {"logits": jnp.stack(all_logits), "features": features}
