"""ResNet-18/34/50/101 (He et al. 2016) in Flax Linen, with TSM's temporal shift.

The network is torchvision's `ResNet` layer for layer, so its ImageNet checkpoints map
onto the Flax tree one to one (`hhjax.models.backbones.torchvision_weights`):

    conv1 7x7/2 (no bias) -> bn1 -> ReLU -> max pool 3x3/2 (pad 1)
      -> layer1 .. layer4 (64, 128, 256, 512 planes; stride 1, 2, 2, 2)
      -> global average pool -> fc

* ResNet-18/34 stack `BasicBlock`s (two 3x3 convolutions); ResNet-50/101 stack
  `Bottleneck`s (1x1 -> 3x3 -> 1x1, 4x expansion) in the "v1.5" form: the stride of a
  down-sampling block sits on the 3x3 convolution, not on the first 1x1.
* The first block of a stage gets a projection shortcut (`downsample`: 1x1 conv with
  the block's stride -> BatchNorm) when its stride or channel count changes.
* BatchNorm: eps 1e-5 and torch momentum 0.1 (Flax keeps 0.9 of the old running
  value); `use_running_average=not train`.

Temporal shift (Lin et al., "TSM: Temporal Shift Module for Efficient Video
Understanding", ICCV 2019). With `temporal_shift > 0` the batch holds N = B x
`num_segments` frames in (B, T) order, and part of the channels is exchanged between
neighbouring frames of the same clip before the block's first convolution (see
`temporal_shift`). `shift_place="residual"` (TSM's "blockres", its default) shifts only
the residual branch, so the shortcut carries the unshifted frame;
`shift_place="block"` shifts the block's input for both branches. As in the authors'
code, the shift is put in every block, except that networks whose third stage has at
least 23 blocks (ResNet-101) get it in every second block of each stage; `shift_every`
overrides that.

Note on the fraction: TSM's released models use `n_div=8`, which moves C // 8 channels
one frame each way, a quarter of the channels in all: `temporal_shift=0.25` here.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.backbones import torch_layers

__all__ = [
  "BN_EPSILON",
  "BN_MOMENTUM",
  "DEPTHS",
  "SHIFT_PLACES",
  "BasicBlock",
  "Bottleneck",
  "ResNet",
  "shifted_channels",
  "temporal_shift",
]

BN_EPSILON = torch_layers.BN_EPSILON
BN_MOMENTUM = torch_layers.BN_MOMENTUM   # torch's momentum 0.1
# depth -> (block kind, blocks per stage), as in torchvision.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
}
SHIFT_PLACES = ("residual", "block")
_STAGE_PLANES = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)

_conv_init = torch_layers.conv_init   # torch's kaiming_normal_(fan_out, relu)


def shifted_channels(channels: int, fraction: float) -> int:
  """Channels moved in each direction: floor(channels x fraction / 2).

  Args:
    channels: C, the channel count of the feature map.
    fraction: the share of all channels that is shifted (half of it each way).

  Returns:
    The number of channels taken from the next frame (and as many from the previous).
  """
  # The small epsilon keeps e.g. 40 x 0.15 / 2 = 2.9999999999999996 at 3.
  return int(math.floor(channels * fraction / 2 + 1e-9))


def temporal_shift(x: jax.Array, num_segments: int, fraction: float) -> jax.Array:
  """TSM's bidirectional temporal shift of a batch of frames.

  `x` holds N = B x num_segments frames in (B, T) order. With f =
  `shifted_channels(C, fraction)`, frame t of a clip takes its channels [0, f) from
  frame t + 1 and its channels [f, 2f) from frame t - 1 of the same clip; the other
  channels stay. Channels shifted in from beyond the clip's ends are zeros. This is the
  channel layout of the authors' code (first fold from the next frame, second fold from
  the previous one). Jittable; `num_segments` and `fraction` are Python numbers.

  Args:
    x: (N, H, W, C) frames.
    num_segments: T, frames per clip; N must be a multiple of it.
    fraction: share of the channels shifted, in [0, 1] (TSM: 0.25).

  Returns:
    (N, H, W, C), the shifted frames.

  Raises:
    ValueError: if `x` is not 4-D, `num_segments` < 1 or does not divide N, or
      `fraction` is outside [0, 1].
  """
  if x.ndim != 4:
    raise ValueError(f"temporal_shift: x must be (N, H, W, C), got shape {x.shape}")
  if num_segments < 1:
    raise ValueError(f"temporal_shift: num_segments must be >= 1, got {num_segments}")
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"temporal_shift: fraction must be in [0, 1], got {fraction}")
  n, h, w, c = x.shape
  if n % num_segments:
    raise ValueError(
      f"temporal_shift: the batch of {n} frames is not a multiple of num_segments="
      f"{num_segments}; frames must come as B clips x num_segments frames"
    )
  fold = shifted_channels(c, fraction)
  if fold == 0:
    return x
  clips = x.reshape(n // num_segments, num_segments, h, w, c)  # (B, T, H, W, C)
  zeros = jnp.zeros_like(clips[:, :1, :, :, :fold])  # (B, 1, H, W, f)
  from_next = jnp.concatenate([clips[:, 1:, :, :, :fold], zeros], axis=1)
  from_prev = jnp.concatenate([zeros, clips[:, :-1, :, :, fold:2 * fold]], axis=1)
  out = jnp.concatenate([from_next, from_prev, clips[:, :, :, :, 2 * fold:]], axis=-1)
  return out.reshape(n, h, w, c)


_conv = torch_layers.conv
_batch_norm = torch_layers.batch_norm


class _Block(nn.Module):
  """Fields and the shift / shortcut logic the two block kinds share."""

  planes: int
  stride: int = 1
  downsample: bool = False
  shift: float = 0.0
  num_segments: int = 8
  shift_place: str = "residual"

  expansion: ClassVar[int] = 1

  def _branch_and_identity(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(input of the residual branch, input of the shortcut)."""
    if self.shift <= 0:
      return x, x
    shifted = temporal_shift(x, self.num_segments, self.shift)
    if self.shift_place == "block":
      return shifted, shifted
    return shifted, x

  def _shortcut(self, identity: jax.Array, train: bool) -> jax.Array:
    if not self.downsample:
      return identity
    identity = _conv(self.planes * self.expansion, 1, self.stride, "downsample_0")(
      identity
    )
    return _batch_norm(train, "downsample_1")(identity)


class BasicBlock(_Block):
  """Two 3x3 convolutions (the stride on the first), for ResNet-18/34."""

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # x: (N, H, W, C_in)
    out, identity = self._branch_and_identity(x)
    out = _conv(self.planes, 3, self.stride, "conv1")(out)  # (N, H/s, W/s, planes)
    out = nn.relu(_batch_norm(train, "bn1")(out))
    out = _conv(self.planes, 3, 1, "conv2")(out)
    out = _batch_norm(train, "bn2")(out)
    return nn.relu(out + self._shortcut(identity, train))  # (N, H/s, W/s, planes)


class Bottleneck(_Block):
  """1x1 -> 3x3 (stride here, "v1.5") -> 1x1 with 4x expansion, for ResNet-50/101."""

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # x: (N, H, W, C_in)
    out, identity = self._branch_and_identity(x)
    out = _conv(self.planes, 1, 1, "conv1")(out)  # (N, H, W, planes)
    out = nn.relu(_batch_norm(train, "bn1")(out))
    out = _conv(self.planes, 3, self.stride, "conv2")(out)  # (N, H/s, W/s, planes)
    out = nn.relu(_batch_norm(train, "bn2")(out))
    out = _conv(self.planes * 4, 1, 1, "conv3")(out)  # (N, H/s, W/s, 4 planes)
    out = _batch_norm(train, "bn3")(out)
    return nn.relu(out + self._shortcut(identity, train))


class ResNet(nn.Module):
  """torchvision's ResNet, optionally with TSM's temporal shift (see the module doc).

  `model.apply(variables, images, train=False)` with images (N, H, W, 3) returns
  logits (N, num_classes) when `num_classes` is set, else the globally average-pooled
  features (N, `feature_dim`) (512 for depth 18/34, 2048 for 50/101). With
  `return_map=True` it returns the last feature map before pooling, (N, h, w,
  feature_dim), h = H / 32 when 32 divides H. Initialise with `return_map=False` so
  the classifier exists. Training: `mutable=["batch_stats"]`.

  Attributes:
    depth: 18, 34, 50 or 101.
    num_classes: classifier outputs (`fc`); None for a features-only network.
    temporal_shift: share of the channels shifted between frames (0: off; TSM 0.25).
    num_segments: frames per clip when shifting; N must be a multiple of it.
    shift_place: "residual" (shift the residual branch only) or "block".
    shift_every: shift in blocks 0, k, 2k, ... of each stage; None: TSM's rule (every
      block, every second one for ResNet-101).
  """

  depth: int = 50
  num_classes: int | None = None
  temporal_shift: float = 0.0
  num_segments: int = 8
  shift_place: str = "residual"
  shift_every: int | None = None

  def __post_init__(self) -> None:
    if self.depth not in DEPTHS:
      raise ValueError(
        f"ResNet: depth must be one of {tuple(DEPTHS)}, got {self.depth}"
      )
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(
        f"ResNet: num_classes must be >= 1 or None, got {self.num_classes}"
      )
    if not 0.0 <= self.temporal_shift <= 1.0:
      raise ValueError(
        f"ResNet: temporal_shift must be in [0, 1], got {self.temporal_shift}"
      )
    if self.num_segments < 1:
      raise ValueError(f"ResNet: num_segments must be >= 1, got {self.num_segments}")
    if self.shift_place not in SHIFT_PLACES:
      raise ValueError(
        f"ResNet: shift_place must be one of {SHIFT_PLACES}, got {self.shift_place!r}"
      )
    if self.shift_every is not None and self.shift_every < 1:
      raise ValueError(
        f"ResNet: shift_every must be >= 1 or None, got {self.shift_every}"
      )
    super().__post_init__()

  @property
  def feature_dim(self) -> int:
    """Channels of the last feature map and of the pooled features."""
    return 512 if DEPTHS[self.depth][0] == "basic" else 2048

  @nn.compact
  def __call__(
    self, images: jax.Array, *, train: bool = False, return_map: bool = False
  ) -> jax.Array:
    """Runs the network; see the class docstring for the outputs.

    Args:
      images: (N, H, W, C) float images, normalised as the weights expect.
      train: batch statistics (and their update) instead of the running averages.
      return_map: return the last feature map (N, h, w, feature_dim) instead.

    Returns:
      Logits (N, num_classes), pooled features (N, feature_dim) or the feature map.

    Raises:
      ValueError: if `images` is not 4-D, or with a temporal shift its batch is not
        a multiple of `num_segments`.
    """
    if images.ndim != 4:
      raise ValueError(f"ResNet: images must be (N, H, W, C), got shape {images.shape}")
    if self.temporal_shift > 0 and images.shape[0] % self.num_segments:
      raise ValueError(
        f"ResNet: a batch of {images.shape[0]} frames is not a multiple of "
        f"num_segments={self.num_segments} (temporal_shift={self.temporal_shift} needs "
        "B clips x num_segments frames, in (B, T) order)"
      )
    kind, counts = DEPTHS[self.depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    every = self.shift_every
    if every is None:
      every = 2 if counts[2] >= 23 else 1

    x = images.astype(jnp.float32)
    x = _conv(64, 7, 2, "conv1")(x)  # (N, H/2, W/2, 64)
    x = nn.relu(_batch_norm(train, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # (N, H/4, ..)
    in_channels = 64
    for stage, (planes, count, stride) in enumerate(
      zip(_STAGE_PLANES, counts, _STAGE_STRIDES), start=1
    ):
      for i in range(count):
        block_stride = stride if i == 0 else 1
        block = functools.partial(
          block_cls,
          planes,
          stride=block_stride,
          downsample=block_stride != 1 or in_channels != planes * block_cls.expansion,
          shift=self.temporal_shift if i % every == 0 else 0.0,
          num_segments=self.num_segments,
          shift_place=self.shift_place,
          name=f"layer{stage}_{i}",
        )
        x = block()(x, train)  # (N, H / 2^(stage+1), ..., planes x expansion)
        in_channels = planes * block_cls.expansion
    if return_map:
      return x  # (N, h, w, feature_dim)
    x = jnp.mean(x, axis=(1, 2))  # (N, feature_dim)
    if self.num_classes is None:
      return x
    return nn.Dense(self.num_classes, name="fc")(x)  # (N, num_classes)
