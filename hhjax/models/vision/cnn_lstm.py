"""CNN-LSTM clip classifier of the SUTD hand-washing report (Phang et al., "HandWash
Recognition", 2021), the per-frame CNNs it can use, and its frame sampling.

The model (the report's Fig. 4 and its reference code, huiwen99/HandWash `model.py`):

    clip (B, T, H, W, 3) -> per-frame CNN on (B T, H, W, 3) -> features (B, T, F)
      -> dense to `embed` (128) -> dropout
      -> one LSTM layer (`lstm_hidden`, 256) -> its output at the last valid frame
      -> dense to `head_hidden` (512) -> ReLU -> dropout -> dense to the classes (12)

Dropout is 0.5 (PyTorch's default, which the reference code uses). The logits feed a
softmax cross-entropy (the reference applies log-softmax and NLL). The reference code
has no activation after the first dense layer; the report's text mentions a ReLU for
the custom CNN's dense layer. Its pretrained CNNs (AlexNet, ResNet-50) were frozen:
`freeze_cnn=True` stops gradients at the CNN's features and runs its BatchNorm in
inference mode.

Per-frame CNNs (`frame_cnn(name)`): "small" is `SmallCNN` below; "alexnet",
"resnet18" / "resnet34" / "resnet50" and "mobilenet_v2" come from
`hhjax.models.backbones`, imported only when asked for, so this module works without
them. Each returns pooled features (N, F) from `cnn(images, train=...)` and its last
feature map with `return_map=True`; `CNNLSTM` flattens AlexNet's map, as the report
did (AlexNet needs frames of at least 63x63).

Frame mask: the LSTM stops at each clip's last valid frame (a prefix mask: valid frames
first), so padded frames never change the logits in inference. In training, a CNN with
BatchNorm still sees padded frames in its batch statistics; pad with real frames (or
use a frozen CNN) where that matters.

Sampling (`clip_frame_indices`): the report decodes every 4th frame, resized to
128x128, until 32 frames are reached. The reference preprocessing lowers the stride (to
3, 2, 1) for videos too short for 32 frames at stride 4; `adapt_stride=True` does that
(the largest stride <= `stride` that still fits `length` frames).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hhjax.models.layers import Dropout
from hhjax.models.vision.convlstm import check_clip

FRAME_CNNS = ("small", "alexnet", "resnet18", "resnet34", "resnet50", "mobilenet_v2")


class SmallCNN(nn.Module):
  """A small per-frame CNN: blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max pool.

  The report's "custom CNN" was smaller still: one 3x3 convolution (3 -> 8 channels,
  stride 1, padding 1) whose map was flattened into a dense layer (8 x 64 x 64 -> 128);
  it scored near chance (10.4 % validation accuracy). This stand-in keeps the
  interface of the `hhjax.models.backbones` networks, so it replaces any of them in
  tests and small experiments.

  Attributes:
    channels: output channels of each block (one block per entry).
    num_classes: None returns features; an int adds a dense classifier.

  `__call__(images (N, H, W, C), *, train=False, return_map=False)` returns the
  globally average-pooled features (N, channels[-1]), the last feature map
  (N, H / 2^k, W / 2^k, channels[-1]) with `return_map=True`, or logits (N,
  num_classes). BatchNorm statistics are in the mutable "batch_stats" collection
  (updated when `train=True`).
  """

  channels: Sequence[int] = (16, 32, 64)
  num_classes: int | None = None

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_map: bool = False):
    if images.ndim != 4:
      raise ValueError(f"SmallCNN: images must be (N, H, W, C), got shape "
                       f"{tuple(images.shape)}")
    if not self.channels:
      raise ValueError("SmallCNN.channels must name at least one block")
    h = images
    for i, width in enumerate(self.channels):
      h = nn.Conv(width, (3, 3), padding="SAME", use_bias=False, name=f"conv_{i}")(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       name=f"bn_{i}")(h)
      h = nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2), padding="SAME")
    if return_map:
      return h
    h = h.mean(axis=(1, 2))                                              # (N, C)
    if self.num_classes is not None:
      h = nn.Dense(self.num_classes, name="classifier")(h)
    return h


def frame_cnn(name: str, *, field: str = "cnn", name_in_parent: str | None = None,
              temporal_shift: float = 0.0, num_segments: int = 8) -> nn.Module:
  """Builds a per-frame CNN by name (see `FRAME_CNNS`), without a classifier.

  Args:
    name: "small", "alexnet", "resnet18", "resnet34", "resnet50" or "mobilenet_v2".
    field: the field that named it, for error messages.
    name_in_parent: the Flax name of the submodule.
    temporal_shift: ResNets only: fraction of channels shifted in time (TSM).
    num_segments: ResNets only: frames per clip for the temporal shift.

  Returns:
    A module called as `cnn(images (N, H, W, 3), train=..., return_map=...)`.

  Raises:
    ValueError: for an unknown name, or a temporal shift asked of a non-ResNet.
    ImportError: when the backbone's module is not installed.
  """
  if name not in FRAME_CNNS:
    raise ValueError(f"{field}={name!r}; expected one of {FRAME_CNNS}")
  if temporal_shift and not name.startswith("resnet"):
    raise ValueError(f"{field}={name!r}: only the ResNets take a temporal shift")
  if name == "small":
    return SmallCNN(name=name_in_parent)
  try:
    if name == "alexnet":
      from hhjax.models.backbones import alexnet
      return alexnet.AlexNet(num_classes=None, name=name_in_parent)
    if name == "mobilenet_v2":
      from hhjax.models.backbones import mobilenet_v2
      return mobilenet_v2.MobileNetV2(num_classes=None, name=name_in_parent)
    from hhjax.models.backbones import resnet
    return resnet.ResNet(depth=int(name[len("resnet"):]), num_classes=None,
                         temporal_shift=temporal_shift, num_segments=num_segments,
                         name=name_in_parent)
  except ImportError as e:
    raise ImportError(f"{field}={name!r} needs hhjax.models.backbones, which failed "
                      f"to import: {e}") from e


def _xp(*values):
  """jax.numpy when any value is a JAX array (or tracer), else NumPy."""
  return jnp if any(isinstance(v, jax.Array) for v in values) else np


def clip_frame_indices(num_frames, stride: int = 4, length: int = 32, start=0,
                       adapt_stride: bool = False):
  """Which frames of a video make a clip, the report's way (every 4th, 32 of them).

  Frame k of the clip is `start + s k`, with s = `stride`, or with
  `adapt_stride=True` the largest s in 1..stride such that all `length` frames fit
  (`start + s (length - 1) < num_frames`; s = 1 if none does). Frames past the video's
  end repeat its last frame and are marked invalid.

  Args:
    num_frames: frames in the video (an int, or a traced scalar under jit).
    stride: the step between sampled frames (4 in the report).
    length: frames per clip (32 in the report).
    start: the first sampled frame.
    adapt_stride: lower the stride for short videos, as the reference code does.

  Returns:
    `(indices (length,) int32, mask (length,) bool)`: NumPy arrays for Python or NumPy
    inputs, JAX arrays when `num_frames` or `start` is a JAX array.

  Raises:
    ValueError: if `stride` or `length` is below 1.
  """
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  if length < 1:
    raise ValueError(f"length must be >= 1, got {length}")
  xp = _xp(num_frames, start)
  n = xp.asarray(num_frames, xp.int32)
  s = xp.asarray(stride, xp.int32)
  if adapt_stride and length > 1:
    s = xp.clip((n - 1 - start) // (length - 1), 1, stride).astype(xp.int32)
  raw = xp.asarray(start, xp.int32) + s * xp.arange(length, dtype=xp.int32)
  mask = raw < n
  indices = xp.clip(raw, 0, xp.maximum(n - 1, 0)).astype(xp.int32)
  return indices, mask


class CNNLSTM(nn.Module):
  """The report's CNN-LSTM: `(x (B, T, H, W, C), mask (B, T)) -> logits (B, K)`.

  See the module docstring for the layers.

  Attributes:
    num_classes: 12 in the report.
    cnn: the per-frame CNN (`FRAME_CNNS`); the report's best model used "alexnet".
    lstm_hidden: LSTM width (256 in the reference code).
    embed: width of the dense layer between CNN and LSTM (128).
    head_hidden: width of the dense layer after the LSTM (512).
    dropout: dropout rate after both dense layers (0.5).
    freeze_cnn: no gradient into the CNN and BatchNorm in inference mode, as the
      report's pretrained backbones were used.
  """

  num_classes: int = 12
  cnn: str = "small"
  lstm_hidden: int = 256
  embed: int = 128
  head_hidden: int = 512
  dropout: float = 0.5
  freeze_cnn: bool = False

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    check_clip("CNNLSTM", x, mask)
    b, t = x.shape[:2]
    if mask is None:
      mask = jnp.ones((b, t), jnp.float32)
    cnn = frame_cnn(self.cnn, field="CNNLSTM.cnn", name_in_parent="cnn")
    frames = x.reshape((b * t,) + x.shape[2:])
    cnn_train = train and not self.freeze_cnn
    if self.cnn == "alexnet":
      # As the report: AlexNet's convolutional features flattened (256 x 3 x 3 = 2304
      # at 128x128), not its 6x6-pooled 9216-d vector. Flattened in (h, w, C) order,
      # torch's is (C, h, w): permute `embed`'s rows when porting its weights.
      feats = cnn(frames, train=cnn_train, return_map=True).reshape(b * t, -1)
    else:
      feats = cnn(frames, train=cnn_train)                               # (B T, F)
    if self.freeze_cnn:
      feats = jax.lax.stop_gradient(feats)
    feats = feats.reshape(b, t, -1)                                      # (B, T, F)
    h = nn.Dense(self.embed, name="embed")(feats)
    h = Dropout(self.dropout, deterministic=not train)(h)
    lengths = (mask > 0).astype(jnp.int32).sum(-1)
    cell = nn.OptimizedLSTMCell(self.lstm_hidden, name="lstm")
    (_, h), _ = nn.RNN(cell, return_carry=True)(h, seq_lengths=lengths)  # (B, hidden)
    h = nn.relu(nn.Dense(self.head_hidden, name="head")(h))
    h = Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.num_classes, name="classifier")(h)
