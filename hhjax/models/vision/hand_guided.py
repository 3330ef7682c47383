"""Hand-guided two-stream model after Myers et al. ("Hand Guided High Resolution Feature
Enhancement for Fine-Grained Atomic Action Segmentation within Complex Human
Assemblies", WACV workshops 2023): a temporal-shift ResNet on the downscaled frame plus
a ResNet on high-resolution hand cut-outs, their features placed on one grid.

Preprocessing, as in the paper's supplement (section 2, Fig. 1): a frame of size
(W, H), H its shorter side, is resized so that its shorter side becomes S, and a square
crop of side C_s is taken at offset (x_c, y_c) of the resized frame (random in
training). The backbone reads that crop. The hand stream reads cut-outs of size
(w_c, h_c) taken around each hand from the full-resolution frame (`cut_out_hands`).

Alignment (`crop_alignment`, eq. 2 and 3): a cut-out's place in the backbone's input,
normalised by the crop side, is

    w_hand = (w_c / H) (S / C_s)        h_hand = (h_c / H) (S / C_s)          (2)
    x_hand' = (x_hand - x_c) / C_s      y_hand' = (y_hand - y_c) / C_s        (3)

w_c / H (S) is the cut-out's width in resized pixels; dividing by C_s normalises it.
In eq. 3 x_c is an offset in the resized frame, so (x_hand, y_hand) must be the
cut-out's position in resized pixels too (its full-resolution position times S / H);
`position_in_original_pixels=True` does that scaling. Whatever reference point goes in
(top-left corner, or centre) comes out: `HandGuidedTSM` takes top-left corners.

Model (`HandGuidedTSM`), per frame:

    backbone map (h, w, C)  = ResNet-with-TSM(crop)            (ResNet-50 in the paper)
    hand map_k (h', w', C') = ResNet(cut-out k), k = left, right  (ResNet-18)
    fusion="aligned": each present hand's map is resampled (bilinear) into its box on
        the backbone's h x w grid (`paste_hand_features`), the two hands are summed,
        the result is concatenated to the backbone map along channels, then an
        optional 1x1 conv + ReLU (`fusion_channels`) and global average pooling;
    fusion="pooled": the pooled backbone vector concatenated with both pooled hand
        vectors (zero for an absent hand);
    -> dropout (0.8 in the paper) -> dense -> logits.

Output: per-frame logits (B, T, K); the TSN/TSM clip prediction is their mean over T.
The supplement gives the alignment, not the fusion layer itself: the two fusions above
are this module's reading (concatenation of aligned maps, or of pooled vectors).

`backbone_depth=0` / `hand_depth=0` put a `SmallCNN` (no temporal shift) in place of
the ResNet, for tests and small experiments without `hhjax.models.backbones`. The
paper froze BatchNorm statistics at their pretrained values (`freeze_bn=True`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hhjax.models.layers import Dropout
from hhjax.models.vision.cnn_lstm import SmallCNN, frame_cnn

RESNET_DEPTHS = (18, 34, 50)
FUSIONS = ("aligned", "pooled")


def _xp(*values):
  """jax.numpy when any value is a JAX array (or tracer), else NumPy."""
  return jnp if any(isinstance(v, jax.Array) for v in values) else np


def crop_alignment(hand_box, crop_box, frame_height, crop_size, out_size, *,
                   position_in_original_pixels: bool = False):
  """The paper's eq. 2-3: a hand cut-out's box in the backbone's input crop.

  Args:
    hand_box: (..., 4) `(x_hand, y_hand, w_c, h_c)`: the cut-out's position in pixels
      of the resized frame (see `position_in_original_pixels`) and its size (w_c, h_c)
      in pixels of the full-resolution frame.
    crop_box: (..., 2) `(x_c, y_c)`: the backbone crop's offset in the resized frame.
    frame_height: H, the full-resolution frame's shorter side (the side resized to S).
    crop_size: C_s, the side of the backbone's square crop.
    out_size: S, the shorter side after resizing.
    position_in_original_pixels: `(x_hand, y_hand)` are in full-resolution pixels;
      they are scaled by S / H before eq. 3.

  Returns:
    (..., 4) `(x_hand', y_hand', w_hand, h_hand)`, normalised by the crop side: 0..1
    covers the backbone's input. NumPy for NumPy inputs, JAX arrays for JAX inputs
    (jittable).

  Raises:
    ValueError: for boxes of the wrong last dimension or non-positive sizes.
  """
  xp = _xp(hand_box, crop_box, frame_height, crop_size, out_size)
  hand_box = xp.asarray(hand_box, xp.float32)
  crop_box = xp.asarray(crop_box, xp.float32)
  if hand_box.shape[-1:] != (4,):
    raise ValueError(f"hand_box must be (..., 4) (x, y, w, h), got {hand_box.shape}")
  if crop_box.shape[-1:] != (2,):
    raise ValueError(f"crop_box must be (..., 2) (x_c, y_c), got {crop_box.shape}")
  for name, value in (("frame_height", frame_height), ("crop_size", crop_size),
                      ("out_size", out_size)):
    if not isinstance(value, jax.Array) and np.any(np.asarray(value) <= 0):
      raise ValueError(f"{name} must be > 0, got {value}")
  scale = xp.asarray(out_size, xp.float32) / xp.asarray(frame_height, xp.float32)
  xy = hand_box[..., :2] * scale if position_in_original_pixels else hand_box[..., :2]
  offset = (xy - crop_box) / crop_size                                  # eq. 3
  size = hand_box[..., 2:] / frame_height * (out_size / crop_size)       # eq. 2
  offset, size = xp.broadcast_arrays(offset, size)
  return xp.concatenate([offset, size], axis=-1).astype(xp.float32)


def _pair(size) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    size = (size, size)
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"size must be an int or (height, width) >= 1, got {size}")
  return size


def cut_out_hands(frame, centres, size, pad_value: float = 0.0):
  """Fixed-size patches around hands of a full-resolution frame, padded at its borders.

  Args:
    frame: (H, W, C) image.
    centres: (K, 2) hand centres `(x, y)` normalised to 0..1 across the width and
      height (the localiser's output, or `labels_from_landmarks`).
    size: the patch size in pixels, an int or `(h_c, w_c)`.
    pad_value: the value of pixels outside the frame.

  Returns:
    `(patches (K, h_c, w_c, C), boxes (K, 4))`, boxes `(x0, y0, w_c, h_c)` in frame
    pixels, (x0, y0) the top-left corner: round(centre x W - w_c / 2), and likewise
    for y. Jittable (`size` static); `vmap` it over frames.

  Raises:
    ValueError: for a frame that is not (H, W, C) or centres not (K, 2).
  """
  h_c, w_c = _pair(size)
  frame = jnp.asarray(frame)
  centres = jnp.asarray(centres, jnp.float32)
  if frame.ndim != 3:
    raise ValueError(f"frame must be (H, W, C), got shape {tuple(frame.shape)}")
  if centres.ndim != 2 or centres.shape[-1] != 2:
    raise ValueError(f"centres must be (K, 2) (x, y), got shape {tuple(centres.shape)}")
  height, width = frame.shape[:2]
  pad = max(h_c, w_c)
  padded = jnp.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
  x0 = jnp.floor(centres[:, 0] * width - w_c / 2 + 0.5).astype(jnp.int32)
  y0 = jnp.floor(centres[:, 1] * height - h_c / 2 + 0.5).astype(jnp.int32)
  # Keep every window inside the padded frame (a hand far outside gives pure padding).
  x0 = jnp.clip(x0, -pad, width)
  y0 = jnp.clip(y0, -pad, height)

  def one(y, x):
    return jax.lax.dynamic_slice(padded, (y + pad, x + pad, 0),
                                 (h_c, w_c, frame.shape[2]))

  patches = jax.vmap(one)(y0, x0)
  sizes = jnp.broadcast_to(jnp.array([w_c, h_c], jnp.float32), centres.shape)
  boxes = jnp.concatenate([jnp.stack([x0, y0], -1).astype(jnp.float32), sizes], -1)
  return patches, boxes


def _interp_weights(start, extent, out_len: int, src_len: int):
  """(N, out_len, src_len) bilinear weights placing a src_len axis into [start,
  start + extent) of a unit-length axis sampled at out_len cell centres; rows of cells
  outside the box are zero."""
  centres = (jnp.arange(out_len, dtype=jnp.float32) + 0.5) / out_len     # (out,)
  valid = extent > 0
  safe = jnp.where(valid, extent, 1.0)
  rel = (centres[None] - start[:, None]) / safe[:, None]                  # (N, out)
  inside = valid[:, None] & (rel >= 0.0) & (rel < 1.0)
  pos = jnp.clip(rel * src_len - 0.5, 0.0, src_len - 1.0)        # in pixel-centre units
  taps = jnp.arange(src_len, dtype=jnp.float32)
  w = jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - taps))     # (N, out, src)
  return w * inside[..., None]


def paste_hand_features(hand_maps, boxes, out_hw: Sequence[int]):
  """Resamples feature maps into boxes of a coarser grid, zero outside the boxes.

  Args:
    hand_maps: (N, h', w', C) hand feature maps.
    boxes: (N, 4) `(x, y, w, h)` in the target grid's normalised coordinates (0..1
      across it), (x, y) the top-left corner: `crop_alignment`'s output.
    out_hw: the target grid `(h, w)`.

  Returns:
    (N, h, w, C): cell (i, j) whose centre ((j + 0.5) / w, (i + 0.5) / h) lies in the
    box takes the hand map bilinearly sampled at the matching point (half-pixel
    centres, clamped at the map's edges); other cells, and every cell of a box with
    zero width or height, are zero.
  """
  h, w = (int(s) for s in out_hw)
  boxes = boxes.astype(jnp.float32)
  wy = _interp_weights(boxes[:, 1], boxes[:, 3], h, hand_maps.shape[1])
  wx = _interp_weights(boxes[:, 0], boxes[:, 2], w, hand_maps.shape[2])
  return jnp.einsum("nia,njb,nabc->nijc", wy, wx, hand_maps)


def _stream(depth: int, field: str, name: str, temporal_shift: float,
            num_segments: int) -> nn.Module:
  if depth == 0:
    return SmallCNN(name=name)
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"HandGuidedTSM.{field}={depth}; expected 0 (SmallCNN) or one of "
                     f"{RESNET_DEPTHS}")
  return frame_cnn(f"resnet{depth}", field=f"HandGuidedTSM.{field}",
                   name_in_parent=name, temporal_shift=temporal_shift,
                   num_segments=num_segments)


class HandGuidedTSM(nn.Module):
  """Backbone + hand stream -> per-frame logits (B, T, num_classes); module docstring.

  Attributes:
    num_classes: classes (24 actions + background in the paper).
    backbone_depth: ResNet depth of the frame stream (18, 34, 50; the paper used 50),
      or 0 for a `SmallCNN`.
    hand_depth: ResNet depth of the hand stream (18 in the paper), or 0.
    temporal_shift: fraction of the backbone's channels shifted in time, both
      directions together: 0.25 is TSM's 1/8 each way (`hhjax.models.backbones.resnet`).
    use_hand_stream: False gives the plain TSM baseline (hand inputs ignored).
    num_segments: frames per clip, T (8 in the paper); clips must have exactly T.
    fusion: "aligned" or "pooled" (module docstring).
    fusion_channels: 0, or the width of a 1x1 conv + ReLU over the aligned maps.
    dropout: before the classifier (0.8 in the paper).
    freeze_bn: BatchNorm in inference mode even when training (the paper's choice
      with pretrained weights).

  `__call__(frames (B, T, H, W, 3), hand_patches (B, T, 2, h_c, w_c, 3),
  hand_boxes (B, T, 2, 4), hand_present (B, T, 2), *, train=False)`; the hand inputs
  may be None when `use_hand_stream` is False. Hand 0 is the left hand.
  """

  num_classes: int = 25
  backbone_depth: int = 18
  hand_depth: int = 18
  temporal_shift: float = 0.25
  use_hand_stream: bool = True
  num_segments: int = 8
  fusion: str = "aligned"
  fusion_channels: int = 0
  dropout: float = 0.8
  freeze_bn: bool = False

  @nn.compact
  def __call__(self, frames, hand_patches=None, hand_boxes=None, hand_present=None, *,
               train: bool = False):
    if frames.ndim != 5:
      raise ValueError(f"HandGuidedTSM: frames must be (B, T, H, W, C), got shape "
                       f"{tuple(frames.shape)}")
    b, t = frames.shape[:2]
    if self.backbone_depth and t != self.num_segments:
      raise ValueError(f"HandGuidedTSM: clips have {t} frames but num_segments="
                       f"{self.num_segments} (the temporal shift needs them equal)")
    if self.fusion not in FUSIONS:
      raise ValueError(f"HandGuidedTSM.fusion={self.fusion!r}; expected one of "
                       f"{FUSIONS}")
    bn_train = train and not self.freeze_bn
    backbone = _stream(self.backbone_depth, "backbone_depth", "backbone",
                       self.temporal_shift, self.num_segments)
    fmap = backbone(frames.reshape((b * t,) + frames.shape[2:]), train=bn_train,
                    return_map=True)                                     # (BT, h, w, C)
    if self.use_hand_stream:
      self._check_hands(frames, hand_patches, hand_boxes, hand_present)
      hand_net = _stream(self.hand_depth, "hand_depth", "hand", 0.0, self.num_segments)
      hmap = hand_net(hand_patches.reshape((b * t * 2,) + hand_patches.shape[3:]),
                      train=bn_train, return_map=True)          # (B T 2, h', w', C')
      present = hand_present.reshape(b * t, 2).astype(fmap.dtype)
      if self.fusion == "aligned":
        pasted = paste_hand_features(hmap, hand_boxes.reshape(b * t * 2, 4),
                                     fmap.shape[1:3])
        pasted = pasted.reshape((b * t, 2) + pasted.shape[1:])   # (B T, 2, h, w, C')
        hands = jnp.einsum("nk,nkijc->nijc", present, pasted)
        fmap = jnp.concatenate([fmap, hands], axis=-1)
        if self.fusion_channels:
          fmap = nn.relu(nn.Conv(self.fusion_channels, (1, 1), name="fusion")(fmap))
        feats = fmap.mean(axis=(1, 2))
      else:
        hvec = hmap.mean(axis=(1, 2)).reshape(b * t, 2, -1) * present[..., None]
        feats = jnp.concatenate([fmap.mean(axis=(1, 2)), hvec.reshape(b * t, -1)], -1)
    else:
      feats = fmap.mean(axis=(1, 2))                                     # (BT, C)
    feats = Dropout(self.dropout, deterministic=not train)(feats)
    logits = nn.Dense(self.num_classes, name="classifier")(feats)
    return logits.reshape(b, t, self.num_classes)

  @staticmethod
  def _check_hands(frames, hand_patches, hand_boxes, hand_present) -> None:
    b, t = frames.shape[:2]
    if hand_patches is None or hand_boxes is None or hand_present is None:
      raise ValueError("HandGuidedTSM: use_hand_stream=True needs hand_patches, "
                       "hand_boxes and hand_present")
    if hand_patches.ndim != 6 or tuple(hand_patches.shape[:3]) != (b, t, 2):
      raise ValueError(f"HandGuidedTSM: hand_patches must be ({b}, {t}, 2, h, w, C), "
                       f"got shape {tuple(hand_patches.shape)}")
    if tuple(hand_boxes.shape) != (b, t, 2, 4):
      raise ValueError(f"HandGuidedTSM: hand_boxes must be ({b}, {t}, 2, 4), got "
                       f"shape {tuple(hand_boxes.shape)}")
    if tuple(hand_present.shape) != (b, t, 2):
      raise ValueError(f"HandGuidedTSM: hand_present must be ({b}, {t}, 2), got "
                       f"shape {tuple(hand_present.shape)}")
