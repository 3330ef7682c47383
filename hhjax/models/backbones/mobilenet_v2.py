"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018) in Flax Linen, laid out as torchvision's `MobileNetV2`.

    features.0   3x3/2 conv -> BN -> ReLU6                       (32 x width channels)
    features.1-17  inverted residual blocks, (t, c, n, s) per group:
                 (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
    features.18  1x1 conv -> BN -> ReLU6                         (1280 x max(1, width))
    global average pool -> classifier: dropout -> linear

An inverted residual block expands its input t-fold with a 1x1 conv (skipped when t =
1), filters it with a 3x3 depthwise conv carrying the stride, and projects it back with
a linear 1x1 conv (BN, no activation); it adds its input when the stride is 1 and the
channel count is unchanged. Every channel count is rounded with `make_divisible` (to a
multiple of 8, never more than 10% down). BatchNorm: eps 1e-5, torch momentum 0.1.

Flax names follow the torchvision keys with "." written "_" (`features_3` /
`conv_1_0` is `features.3.conv.1.0`), so `torchvision_weights` maps checkpoints one to
one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.backbones import torch_layers

__all__ = [
  "BN_EPSILON",
  "BN_MOMENTUM",
  "INVERTED_RESIDUAL_SETTING",
  "InvertedResidual",
  "MobileNetV2",
  "make_divisible",
]

BN_EPSILON = torch_layers.BN_EPSILON
BN_MOMENTUM = torch_layers.BN_MOMENTUM   # torch's momentum 0.1
# (expansion t, output channels c, repeats n, first stride s) of each block group.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
  (1, 16, 1, 1),
  (6, 24, 2, 2),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)
_ROUND_NEAREST = 8

# torchvision initialises convolutions with kaiming_normal_(mode="fan_out") and the
# classifier with normal(0, 0.01), zero bias.
_conv_init = torch_layers.conv_init   # torch's kaiming_normal_(fan_out, relu)
_dense_init = nn.initializers.normal(0.01)


def make_divisible(value: float, divisor: int = _ROUND_NEAREST) -> int:
  """Rounds a channel count to the nearest multiple of `divisor`, at least `divisor`,
  going up one step when rounding would lose more than 10%.

  Args:
    value: the unrounded channel count (e.g. 32 x width_mult).
    divisor: the multiple to round to.

  Returns:
    The rounded channel count.
  """
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


_conv = torch_layers.conv
_batch_norm = torch_layers.batch_norm


class InvertedResidual(nn.Module):
  """Expand (1x1) -> depthwise 3x3 (stride) -> linear project (1x1), plus the input
  when shapes allow; names as torchvision's `InvertedResidual.conv` entries."""

  out_channels: int
  stride: int
  expand_ratio: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # x: (N, H, W, C_in)
    in_channels = x.shape[-1]
    hidden = int(round(in_channels * self.expand_ratio))
    out = x
    index = 0
    if self.expand_ratio != 1:
      out = _conv(hidden, 1, 1, "conv_0_0")(out)  # (N, H, W, hidden)
      out = jax.nn.relu6(_batch_norm(train, "conv_0_1")(out))
      index = 1
    out = _conv(hidden, 3, self.stride, f"conv_{index}_0", groups=hidden)(out)
    out = jax.nn.relu6(_batch_norm(train, f"conv_{index}_1")(out))  # (N, H/s, W/s, hid)
    out = _conv(self.out_channels, 1, 1, f"conv_{index + 1}")(out)  # (N, H/s, W/s, C)
    out = _batch_norm(train, f"conv_{index + 2}")(out)
    if self.stride == 1 and in_channels == self.out_channels:
      out = out + x
    return out


class MobileNetV2(nn.Module):
  """torchvision's MobileNetV2 (see the module docstring).

  `model.apply(variables, images, train=False)` with images (N, H, W, 3) returns
  logits (N, num_classes) when `num_classes` is set, else the globally average-pooled
  features (N, `feature_dim`), taken before the classifier's dropout. With
  `return_map=True` it returns the output of `features` (N, h, w, feature_dim), h =
  H / 32 when 32 divides H. Initialise with `return_map=False` so the classifier
  exists. Training: `mutable=["batch_stats"]` and `rngs={"dropout": key}`.

  Attributes:
    num_classes: classifier outputs (`classifier.1`); None for a features-only network.
    width_mult: channel multiplier of every layer (the last layer is never narrower
      than 1280).
    dropout: dropout rate before the classifier.
  """

  num_classes: int | None = None
  width_mult: float = 1.0
  dropout: float = 0.2

  def __post_init__(self) -> None:
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(
        f"MobileNetV2: num_classes must be >= 1 or None, got {self.num_classes}"
      )
    if not self.width_mult > 0:
      raise ValueError(f"MobileNetV2: width_mult must be > 0, got {self.width_mult}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"MobileNetV2: dropout must be in [0, 1), got {self.dropout}")
    super().__post_init__()

  @property
  def feature_dim(self) -> int:
    """Channels of the last feature map and of the pooled features."""
    return make_divisible(1280 * max(1.0, self.width_mult))

  @nn.compact
  def __call__(
    self, images: jax.Array, *, train: bool = False, return_map: bool = False
  ) -> jax.Array:
    """Runs the network; see the class docstring for the outputs.

    Args:
      images: (N, H, W, C) float images, normalised as the weights expect.
      train: batch statistics and dropout instead of the running averages.
      return_map: return the last feature map (N, h, w, feature_dim) instead.

    Returns:
      Logits (N, num_classes), pooled features (N, feature_dim) or the feature map.

    Raises:
      ValueError: if `images` is not 4-D.
    """
    if images.ndim != 4:
      raise ValueError(
        f"MobileNetV2: images must be (N, H, W, C), got shape {images.shape}"
      )
    x = images.astype(jnp.float32)
    stem = make_divisible(32 * self.width_mult)
    x = _conv(stem, 3, 2, "features_0_0")(x)  # (N, H/2, W/2, stem)
    x = jax.nn.relu6(_batch_norm(train, "features_0_1")(x))
    index = 1
    for expand, channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
      out_channels = make_divisible(channels * self.width_mult)
      for i in range(repeats):
        x = InvertedResidual(
          out_channels,
          stride if i == 0 else 1,
          expand,
          name=f"features_{index}",
        )(x, train)  # (N, H / total stride, ..., out_channels)
        index += 1
    x = _conv(self.feature_dim, 1, 1, f"features_{index}_0")(x)
    x = jax.nn.relu6(_batch_norm(train, f"features_{index}_1")(x))  # (N, h, w, F)
    if return_map:
      return x
    x = jnp.mean(x, axis=(1, 2))  # (N, F)
    if self.num_classes is None:
      return x
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(
      self.num_classes,
      kernel_init=_dense_init,
      bias_init=nn.initializers.zeros,
      name="classifier_1",
    )(x)  # (N, num_classes)
