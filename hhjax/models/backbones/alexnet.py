"""AlexNet (Krizhevsky et al. 2012) in Flax Linen, laid out as torchvision's `AlexNet`.

    features:   conv 11x11/4 pad 2 (64) -> ReLU -> max pool 3x3/2
                conv 5x5 pad 2 (192)    -> ReLU -> max pool 3x3/2
                conv 3x3 pad 1 (384) -> ReLU -> conv 3x3 (256) -> ReLU
                conv 3x3 pad 1 (256) -> ReLU -> max pool 3x3/2
    avgpool:    adaptive average pool to 6x6 (torch's bins, `adaptive_avg_pool`)
    classifier: dropout -> linear 9216 -> 4096 -> ReLU -> dropout
                -> linear 4096 -> 4096 -> ReLU -> linear 4096 -> num_classes

The pooled map is flattened in torch's (C, H, W) order, so the 9216-d features and the
first linear layer's weights are the checkpoint's own. The input must be at least 63
pixels on each side (the last max pool needs a 3x3 map). No BatchNorm.

Flax names follow the torchvision keys with "." written "_" (`features_3` is
`features.3`, `classifier_6` is `classifier.6`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "FEATURE_LAYERS",
  "MIN_INPUT_PIXELS",
  "POOLED_SIZE",
  "AlexNet",
  "adaptive_avg_pool",
  "adaptive_pool_bins",
]

MIN_INPUT_PIXELS = 63
POOLED_SIZE = 6
FEATURE_LAYERS = ("pool", "fc7")
_HIDDEN = 4096

# (name, output channels, kernel, stride, padding, max pool after it)
_FEATURES = (
  ("features_0", 64, 11, 4, 2, True),
  ("features_3", 192, 5, 1, 2, True),
  ("features_6", 384, 3, 1, 1, False),
  ("features_8", 256, 3, 1, 1, False),
  ("features_10", 256, 3, 1, 1, True),
)


def adaptive_pool_bins(size: int, out: int) -> list[tuple[int, int]]:
  """torch's adaptive pooling bins: bin i covers [floor(i size / out),
  ceil((i + 1) size / out)). Bins overlap when `out` does not divide `size`.

  Args:
    size: input length along the axis.
    out: number of bins (output length).

  Returns:
    [(start, end)] for each of the `out` bins.
  """
  return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _bin_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) matrix whose row i averages bin i."""
  matrix = np.zeros((out, size), np.float32)
  for i, (start, end) in enumerate(adaptive_pool_bins(size, out)):
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
  """torch's `adaptive_avg_pool2d` on channels-last maps (`adaptive_pool_bins`).

  Args:
    x: (N, H, W, C) with static H, W.
    output_size: (out_h, out_w), or one int for both.

  Returns:
    (N, out_h, out_w, C); bins larger than one pixel hold the mean of their pixels,
    and an output larger than the input repeats pixels.

  Raises:
    ValueError: if `x` is not 4-D or an output size is < 1.
  """
  if x.ndim != 4:
    raise ValueError(f"adaptive_avg_pool: x must be (N, H, W, C), got shape {x.shape}")
  if isinstance(output_size, int):
    output_size = (output_size, output_size)
  out_h, out_w = output_size
  if out_h < 1 or out_w < 1:
    raise ValueError(f"adaptive_avg_pool: output_size must be >= 1, got {output_size}")
  rows = jnp.asarray(_bin_matrix(x.shape[1], out_h))  # (out_h, H)
  cols = jnp.asarray(_bin_matrix(x.shape[2], out_w))  # (out_w, W)
  return jnp.einsum(
    "ih,nhwc,jw->nijc", rows, x, cols, precision=jax.lax.Precision.HIGHEST
  )  # (N, out_h, out_w, C)


class AlexNet(nn.Module):
  """torchvision's AlexNet (see the module docstring).

  `model.apply(variables, images, train=False)` with images (N, H, W, 3), H, W >= 63:

  * `num_classes` set: logits (N, num_classes).
  * `num_classes=None`, `feature_layer="pool"`: the 9216-d flattened 6x6 pooled
    features (N, 9216), in torch's (C, H, W) order; no classifier layer is built.
  * `num_classes=None`, `feature_layer="fc7"`: the output of the second 4096-unit
    hidden layer after its ReLU (N, 4096); only the last linear layer is left out.
  * `return_map=True`: the output of `features` (after the third max pool) before
    the adaptive pool, (N, h, w, 256).

  Initialise with `return_map=False` so the classifier exists. Training:
  `rngs={"dropout": key}`.

  Attributes:
    num_classes: classifier outputs (`classifier.6`); None for a features-only network.
    dropout: dropout rate before each of the two hidden linear layers.
    feature_layer: with `num_classes=None`, "pool" (9216-d) or "fc7" (4096-d).
  """

  num_classes: int | None = None
  dropout: float = 0.5
  feature_layer: str = "pool"

  def __post_init__(self) -> None:
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(
        f"AlexNet: num_classes must be >= 1 or None, got {self.num_classes}"
      )
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"AlexNet: dropout must be in [0, 1), got {self.dropout}")
    if self.feature_layer not in FEATURE_LAYERS:
      raise ValueError(
        f"AlexNet: feature_layer must be one of {FEATURE_LAYERS}, got "
        f"{self.feature_layer!r}"
      )
    super().__post_init__()

  @property
  def feature_dim(self) -> int:
    """Width of the features returned with `num_classes=None`."""
    return 256 * POOLED_SIZE * POOLED_SIZE if self.feature_layer == "pool" else _HIDDEN

  @nn.compact
  def __call__(
    self, images: jax.Array, *, train: bool = False, return_map: bool = False
  ) -> jax.Array:
    """Runs the network; see the class docstring for the outputs.

    Args:
      images: (N, H, W, C) float images, normalised as the weights expect.
      train: apply dropout.
      return_map: return the last convolutional map (N, h, w, 256) instead.

    Returns:
      Logits, features or the feature map (see the class docstring).

    Raises:
      ValueError: if `images` is not 4-D or smaller than 63x63.
    """
    if images.ndim != 4:
      raise ValueError(
        f"AlexNet: images must be (N, H, W, C), got shape {images.shape}"
      )
    if min(images.shape[1:3]) < MIN_INPUT_PIXELS:
      raise ValueError(
        f"AlexNet: images of {images.shape[1]}x{images.shape[2]} pixels are too small; "
        f"H and W must be >= {MIN_INPUT_PIXELS} for the last 3x3 max pool"
      )
    x = images.astype(jnp.float32)
    for name, channels, kernel, stride, pad, pool in _FEATURES:
      x = nn.Conv(
        channels,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        name=name,
      )(x)
      x = nn.relu(x)
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    if return_map:
      return x  # (N, h, w, 256)
    x = adaptive_avg_pool(x, POOLED_SIZE)  # (N, 6, 6, 256)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # (N, 9216), (C, H, W)
    if self.num_classes is None and self.feature_layer == "pool":
      return x
    for name in ("classifier_1", "classifier_4"):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(_HIDDEN, name=name)(x))  # (N, 4096)
    if self.num_classes is None:
      return x
    return nn.Dense(self.num_classes, name="classifier_6")(x)  # (N, num_classes)
