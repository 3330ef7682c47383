"""MS-TCN++ (Li, Farha, Liu, Cheng and Gall, "MS-TCN++: Multi-Stage Temporal
Convolutional Network for Action Segmentation", TPAMI 2020), registered as `mstcn_pp`.

MS-TCN++ decouples the first stage from the refinement stages:

* **Prediction generation (PG)**: a 1x1 conv projects the features (B, T, D) to
  `channels` (64), then `num_layers_pg` (11) *dual dilated layers*, then a 1x1
  classifier. Layer l (0-based, L = num_layers_pg) reads its input with two dilated
  convolutions (kernel 3) at once, a large and a small dilation:

      a = conv_k3(x, dilation 2^(L-1-l))      b = conv_k3(x, dilation 2^l)
      x <- x + dropout(ReLU(conv_1x1([a, b])))        ([a, b]: 2 x channels)

  so even the lowest layer sees far (dilation 2^(L-1)) as well as near frames, which a
  plain dilated stack only reaches at the top.
* **Refinement**: `num_refinements` (3) MS-TCN stages (`mstcn.Stage`: 1x1 conv,
  `num_layers_r` (10) single-dilation residual layers with dilation 1, 2, ..., 1x1
  classifier), each reading the softmax of the previous stage's logits.

Output: `logits` (1 + num_refinements, B, T, C) (the PG stage first) and `features`
(B, T, channels) of the last stage. The loss is the shared per-stage cross-entropy +
smoothing loss (MS-TCN++'s own), so there are no extra terms. Its own fields
(`config.model.mstcn_pp`): `num_layers_pg`, `num_layers_r`, `num_refinements`; the
shared `num_stages` / `num_layers` do not apply.

Taken from the authors' released code (sj-li/MS-TCN2, `model.py`):
* the order inside a dual dilated layer: both dilated convs read the same input, their
  outputs are concatenated (large dilation first), fused by the 1x1 conv, then ReLU,
  then dropout (p = 0.5), then the residual sum; every conv has a bias;
* the PG stage projects its input with a plain 1x1 conv (no activation) and its
  classifier is a 1x1 conv on the last layer's output;
* softmax probabilities (not detached) feed each refinement stage;
* no channel dropout on the input (`input_dropout_rate` defaults to 0; it exists only
  as the option hhjax configs share, see `mstcn.py`).
Choice of this module: the released code runs one video at a time and uses no mask; here
every convolution reads its input multiplied by the frame mask and every residual output
and softmax is zeroed on padded frames, so a padded video gives the same outputs on its
valid frames as the video alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.segmenters.mstcn import Stage, check_at_least, check_inputs, stage_input
from hhjax.models.tcn import masked, residual


class DualDilatedLayer(nn.Module):
  """x + dropout(ReLU(conv_1x1([conv_k3 dil `large`(x), conv_k3 dil `small`(x)])))."""

  channels: int
  dilation_small: int
  dilation_large: int
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    xin = masked(x, mask)                                                # (B, T, C)
    conv = lambda d, name: nn.Conv(self.channels, kernel_size=(3,), kernel_dilation=(d,),
                                   padding="SAME", name=name)(xin)
    a = conv(self.dilation_large, "conv_large")                          # (B, T, C)
    b = conv(self.dilation_small, "conv_small")                          # (B, T, C)
    h = nn.Conv(self.channels, kernel_size=(1,), name="conv_fusion")(
        jnp.concatenate([a, b], axis=-1))                                # (B, T, C)
    h = Dropout(self.dropout_rate, deterministic=not train)(nn.relu(h))
    return residual(x, h, mask)


class PredictionGeneration(nn.Module):
  """The PG stage: 1x1 projection, `num_layers` dual dilated layers, 1x1 classifier.

  Returns `(features (B, T, channels), logits (B, T, num_classes))`.
  """

  num_classes: int = 7
  num_layers: int = 11
  channels: int = 64
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    h = masked(nn.Conv(self.channels, kernel_size=(1,), name="conv_in")(x), mask)
    n = self.num_layers
    for l in range(n):
      h = DualDilatedLayer(self.channels, dilation_small=2**l,
                           dilation_large=2**(n - 1 - l), dropout_rate=self.dropout_rate,
                           name=f"layer_{l}")(h, mask, train=train)
    logits = nn.Conv(self.num_classes, kernel_size=(1,), name="classifier")(h)
    return h, masked(logits, mask)


@register("mstcn_pp")
class MSTCNPlusPlus(nn.Module):
  """MS-TCN++ (defaults: PG of 11 dual dilated layers + 3 refinements of 10 layers,
  64 channels, dropout 0.5).

  `__call__(x, mask)` with `x` (B, T, D) returns `{"logits" (1 + num_refinements, B, T,
  num_classes), "features" (B, T, channels)}`.
  """

  num_classes: int = 7
  channels: int = 64
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0
  num_layers_pg: int = 11
  num_layers_r: int = 10
  num_refinements: int = 3

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    check_inputs("mstcn_pp", x, mask)
    check_at_least("mstcn_pp", 1, num_classes=self.num_classes, channels=self.channels)
    check_at_least("mstcn_pp", 1, **{"mstcn_pp.num_layers_pg": self.num_layers_pg,
                                     "mstcn_pp.num_layers_r": self.num_layers_r})
    check_at_least("mstcn_pp", 0, **{"mstcn_pp.num_refinements": self.num_refinements})
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    h, logits = PredictionGeneration(self.num_classes, self.num_layers_pg, self.channels,
                                     self.dropout_rate, name="pg")(x, mask, train=train)
    all_logits = [logits]
    for r in range(self.num_refinements):
      h, logits = Stage(self.num_classes, self.num_layers_r, self.channels,
                        self.dropout_rate, name=f"refinement_{r}")(
                            stage_input(logits, mask), mask, train=train)
      all_logits.append(logits)
    return {"logits": jnp.stack(all_logits), "features": h}
