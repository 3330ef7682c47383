"""The multi-stage convolution-transformer for step segmentation (Li et al.'s network;
registered as `conv_transformer`, the default `config.model.segmenter`).

Stage 1 is convolutional: input features -> `SingleStage` -> 1x1 classifier. Every later
stage refines the previous prediction: it reads the softmax of the previous stage's
logits, runs its own dilated convolutions, and then **enhances its stage features with
a transformer block** before its classifier:

    probs_{s-1} -> conv_in -> L dilated residual layers -> [transformer block] -> classifier

Why there: the dilated convolutions see a window of 2^L frames; the block placed after
them gives every frame a view of the whole video (steps far apart, the order of the
procedure), at O(T) cost with linear attention. Refinement stages see only class
probabilities, so attention there relates *step evidence*, not raw appearance, which
is what reduces over-segmentation. The block has no positional encoding: the
convolutions before it already carry local order.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.attention import MultiHeadAttention
from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.tcn import SingleStage, masked, residual


class TransformerBlock(nn.Module):
  """Pre-norm block: x + Attn(LN(x)), then x + FFN(LN(x)); per-frame LayerNorm."""

  attention: str = "linear"
  num_heads: int = 4
  ffn_factor: int = 2
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    channels = x.shape[-1]
    drop = lambda h: Dropout(self.dropout_rate, deterministic=not train)(h)
    if self.attention != "none":
      h = MultiHeadAttention(self.attention, self.num_heads, name="attention")(
          nn.LayerNorm(name="norm_attn")(x), mask)
      x = residual(x, drop(h), mask)
    h = nn.LayerNorm(name="norm_ffn")(x)
    h = nn.Dense(channels * self.ffn_factor, name="ffn_in")(h)
    h = nn.Dense(channels, name="ffn_out")(nn.gelu(h))
    return residual(x, drop(h), mask)


class ConvTransformerFields(nn.Module):
  """The fields (and defaults) of the convolution-transformer, offline and causal:
  4 stages x 10 layers x 64 channels, linear attention with 4 heads."""

  num_classes: int = 7
  num_stages: int = 4
  num_layers: int = 10
  channels: int = 64
  attention: str = "linear"
  num_heads: int = 4
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.1


@register("conv_transformer")
class MultiStageModel(ConvTransformerFields):
  """Multi-stage convolution-transformer (defaults: 4 stages x 10 layers x 64 channels).

  `__call__(x, mask)` with `x` (B, T, D) returns `{"logits", "features"}`: per-stage
  logits `(S, B, T, num_classes)` and the last stage's features `(B, T, channels)`
  (the segmenter contract of `hhjax.models.segmenters`).
  """

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    if self.num_stages < 1:
      raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
    # Channel dropout on the input features (MS-TCN's Dropout2d): whole feature
    # dimensions are dropped for a video, never single frames.
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    all_logits = []
    # Unmasked: the first stage's first layer is per-frame and masks its output
    # (docs/BENCHMARKS.md, "The mask multiply").
    inputs = x
    for s in range(self.num_stages):
      h = SingleStage(self.num_layers, self.channels, self.dropout_rate,
                      name=f"stage_{s}")(inputs, mask, train=train)
      if s > 0:
        h = TransformerBlock(self.attention, self.num_heads,
                             dropout_rate=self.attention_dropout_rate,
                             name=f"block_{s}")(h, mask, train=train)
      logits = masked(nn.Conv(self.num_classes, kernel_size=(1,),
                              name=f"classifier_{s}")(h), mask)
      all_logits.append(logits)
      inputs = masked(jax.nn.softmax(logits, axis=-1), mask)
    return {"logits": jnp.stack(all_logits), "features": h}
