"""Hand localiser of Myers et al. ("Hand Guided High Resolution Feature Enhancement for
Fine-Grained Atomic Action Segmentation within Complex Human Assemblies", WACV
workshops 2023, supplementary section 1): its network, loss, metric and targets.

Network (`HandLocaliser`): a MobileNetV2 whose pooled features go through one dense
layer and a sigmoid to a 6-vector per image,

    [P^_1, x^_1, y^_1, P^_2, x^_2, y^_2]

P^_i the probability that hand i (1 left, 2 right) is in the image, (x^_i, y^_i) its
position normalised to 0..1 across the image's width and height.

Loss (`localiser_loss`, the paper's eq. 1), per image, with P_i the 0/1 label of hand i
and (x_i, y_i) its true position:

    L = lam sum_i (P_i - P^_i)^2 + sum_i P_i [(x_i - x^_i)^2 + (y_i - y^_i)^2]

so an absent hand costs nothing for its position; lam = 0.1 balances the two terms.
The batch loss is the mean over images.

Metric (`f1_at_threshold`, the paper's F1@T_L), per hand slot of every image:
* true positive: P^ > 0.5, the hand is present, and the predicted position is within
  T_L of the truth: sqrt((x^ - x)^2 + (y^ - y)^2) < T_L in normalised coordinates;
* false positive: P^ > 0.5 otherwise (hand absent, or present but too far);
* false negative: P^ <= 0.5 while the hand is present.
A present hand predicted at the wrong place is one false positive and, by the paper's
wording, not also a false negative; `mislocated_is_fn=True` counts it as both (the
usual detection convention). F1 = 2 TP / (2 TP + FP + FN), in percent as the paper's
Table 1 (74.5 / 83.0 / 92.5 / 96.8 at T_L = 0.05 / 0.1 / 0.2 / 0.3).

Targets (`labels_from_landmarks`): the paper labelled 6,450 frames by hand. hhjax makes
targets from its MediaPipe hand-pose features instead (layout in `hhjax.handpose`):
slot 0 ("Left") is hand 1, slot 1 ("Right") hand 2; a hand's position is the mean of
its 21 landmarks' image coordinates (x across the width, y down the height, 0..1),
clipped to 0..1 because the sigmoid cannot reach beyond; an absent hand is (0, 0, 0).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hhjax import handpose
from hhjax import metrics
from hhjax.models.vision.cnn_lstm import FRAME_CNNS, SmallCNN, frame_cnn

NUM_HANDS = 2
TARGET_DIM = 3 * NUM_HANDS   # [P1, x1, y1, P2, x2, y2]


class HandLocaliser(nn.Module):
  """`images (N, H, W, 3) -> (N, 6)` sigmoid outputs [P1, x1, y1, P2, x2, y2].

  Attributes:
    backbone: "mobilenet_v2" (the paper's), "small" (`SmallCNN`, for tests and quick
      experiments) or another name of `cnn_lstm.FRAME_CNNS`.
    width_mult: MobileNetV2's width multiplier (1.0 in the paper).
  """

  backbone: str = "mobilenet_v2"
  width_mult: float = 1.0

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    if images.ndim != 4:
      raise ValueError(f"HandLocaliser: images must be (N, H, W, C), got shape "
                       f"{tuple(images.shape)}")
    if self.backbone == "mobilenet_v2":
      try:
        from hhjax.models.backbones import mobilenet_v2
      except ImportError as e:
        raise ImportError("HandLocaliser.backbone='mobilenet_v2' needs "
                          f"hhjax.models.backbones.mobilenet_v2: {e}") from e
      net = mobilenet_v2.MobileNetV2(num_classes=None, width_mult=self.width_mult,
                                     name="backbone")
    elif self.backbone == "small":
      net = SmallCNN(name="backbone")
    elif self.backbone in FRAME_CNNS:
      net = frame_cnn(self.backbone, field="HandLocaliser.backbone",
                      name_in_parent="backbone")
    else:
      raise ValueError(f"HandLocaliser.backbone={self.backbone!r}; expected one of "
                       f"{FRAME_CNNS}")
    feats = net(images, train=train)                                      # (N, F)
    return nn.sigmoid(nn.Dense(TARGET_DIM, name="head")(feats))


def _check_pair(pred, target) -> None:
  if pred.shape != target.shape or pred.ndim != 2 or pred.shape[-1] != TARGET_DIM:
    raise ValueError(f"pred and target must both be (N, {TARGET_DIM}), got "
                     f"{tuple(pred.shape)} and {tuple(target.shape)}")


def localiser_loss(pred, target, lam: float = 0.1):
  """The paper's eq. 1, averaged over the batch.

  Args:
    pred: (N, 6) network outputs [P^1, x^1, y^1, P^2, x^2, y^2].
    target: (N, 6) labels [P1, x1, y1, P2, x2, y2], P in {0, 1}.
    lam: weight of the presence term (0.1 in the paper).

  Returns:
    The scalar loss. The position term of hand i is weighted by the target's P_i, so
    an absent hand's predicted position gets no gradient.

  Raises:
    ValueError: if the shapes are not both (N, 6).
  """
  _check_pair(pred, target)
  p = pred.reshape(-1, NUM_HANDS, 3)
  t = target.reshape(-1, NUM_HANDS, 3)
  presence = lam * jnp.sum((t[..., 0] - p[..., 0]) ** 2, axis=-1)
  position = jnp.sum(t[..., 0] * jnp.sum((t[..., 1:] - p[..., 1:]) ** 2, -1), -1)
  return jnp.mean(presence + position)


def localisation_counts(pred, target, t_l: float, *,
                        mislocated_is_fn: bool = False) -> tuple[int, int, int]:
  """True positives, false positives and false negatives of F1@T_L (module docstring).

  Args:
    pred: (N, 6) outputs; a hand is predicted present when its P^ > 0.5.
    target: (N, 6) labels; a hand is present when its P > 0.5.
    t_l: the distance threshold T_L, in normalised image coordinates.
    mislocated_is_fn: also count a present hand predicted too far away as a false
      negative (the paper does not).

  Returns:
    `(tp, fp, fn)` over all images and both hands.

  Raises:
    ValueError: for mismatched shapes or a negative threshold.
  """
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target, np.float64)
  _check_pair(pred, target)
  if t_l < 0:
    raise ValueError(f"t_l must be >= 0, got {t_l}")
  p = pred.reshape(-1, NUM_HANDS, 3)
  t = target.reshape(-1, NUM_HANDS, 3)
  predicted = p[..., 0] > 0.5
  present = t[..., 0] > 0.5
  close = np.sqrt(np.sum((p[..., 1:] - t[..., 1:]) ** 2, -1)) < t_l
  tp = predicted & present & close
  fp = predicted & ~tp
  fn = present & ~predicted
  if mislocated_is_fn:
    fn = present & ~tp
  return int(tp.sum()), int(fp.sum()), int(fn.sum())


def f1_at_threshold(pred, target, t_l: float, *,
                    mislocated_is_fn: bool = False) -> float:
  """F1@T_L in percent (0.0 when there is no true positive); see
  `localisation_counts` for the arguments."""
  return metrics.f1_score(*localisation_counts(pred, target, t_l,
                                               mislocated_is_fn=mislocated_is_fn))


def labels_from_landmarks(features) -> np.ndarray:
  """Localiser targets from hand-pose features (module docstring).

  Args:
    features: (..., 212) per-frame vectors in the `hhjax.handpose` layout.

  Returns:
    (..., 6) float32 [P1, x1, y1, P2, x2, y2]: P = 1 where the slot's presence entry
    is > 0.5, the position the mean of its 21 landmarks' image (x, y), clipped to
    0..1; zeros for an absent hand.

  Raises:
    ValueError: if the last dimension is not 212.
  """
  features = np.asarray(features, np.float32)
  if features.ndim < 1 or features.shape[-1] != handpose.FEATURE_DIM:
    raise ValueError(f"features must be (..., {handpose.FEATURE_DIM}) hand-pose "
                     f"vectors, got shape {features.shape}")
  n = handpose.NUM_LANDMARKS
  out = np.zeros(features.shape[:-1] + (TARGET_DIM,), np.float32)
  for s in range(NUM_HANDS):
    o = s * handpose.HAND_DIM
    xy = features[..., o + 3 * n:o + 5 * n].reshape(features.shape[:-1] + (n, 2))
    present = features[..., o + 5 * n] > 0.5
    centre = np.clip(xy.mean(-2), 0.0, 1.0)                               # (..., 2)
    out[..., 3 * s] = present
    out[..., 3 * s + 1:3 * s + 3] = np.where(present[..., None], centre, 0.0)
  return out
