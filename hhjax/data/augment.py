"""Viewpoint augmentation of hand-pose features (`hhjax.handpose`, 212 values a frame).

The hand-washing clips are filmed from the front; deployed cameras look down on a sink
or stand at an angle. These transforms change a (T, 212) feature array as if the same
wash had been seen from elsewhere, so that a model can be trained on many viewpoints
(`config.dataset.augment = "handpose"`, or "handpose_half": the same on half the
washes) and its robustness measured on fixed ones
(`config.dataset.eval_view`, `view_transform`).

Every augmentation is a pure NumPy function `fn(features, rng, **params)` of a (T, 212)
array and a `np.random.Generator`; `functools.partial` fixes its parameters and
`compose` chains several into one `(features, rng) -> features`. Each draws its random
values once per video (the same rotation, mirroring and jitter for every frame), except
`drop_hands`, whose stretches are per frame. A slot whose presence flag is 0 is copied
through untouched, so an absent hand stays exactly zero after every transform; the
input is never modified.

Geometry (camera coordinates: x right, y down, z away from the camera, as MediaPipe's;
image coordinates 0..1 across the width and height):

* **Rotation** (`rotate_view`, `random_rotation`): the camera orbits a point on its
  optical axis, i.e. the whole scene turns rigidly by a rotation R (below) about that
  point. The wrist-relative xyz of each landmark turns by R exactly; since the
  extractor divides them by the wrist-to-middle-finger-base distance *in the image
  plane*, they are then divided by that distance after the turn (as extraction of the
  turned hand would), which keeps every bone-length ratio. The image coordinates come
  from an orthographic (weak-perspective) model: the wrist lies on the plane through
  the pivot facing the original camera, at its image position about the image centre;
  each landmark sits at wrist + s * (wrist-relative xyz), s the hand's image size
  (fitted from its own image and wrist-relative coordinates); every point is turned by
  R and projected by dropping z. For an in-plane rotation (roll) this is exactly a
  rotation of the image about its centre; for yaw or pitch it foreshortens the
  positions across the image by cos(angle), and the hand's own outline is the
  projection of its turned shape, so both blocks stay consistent. Not modelled:
  perspective (nearer hands do not grow), landmarks turned out of the frame (image
  coordinates may leave 0..1) or hidden behind the other hand, and MediaPipe's own
  errors at oblique views.
* R = Rz(roll) @ Rx(pitch) @ Ry(yaw) with the right-handed elementary rotations, angles
  in degrees: roll turns the image clockwise on screen (x towards y, i.e. down), a
  positive pitch is a camera above the hands looking down (upward-pointing fingers tilt
  towards it, far things rise in the image), yaw turns about the image's vertical.
* **Mirroring** (`mirror`, `random_mirror`): x -> -x in the wrist-relative block,
  x -> 1 - x in the image block, and the two slots swapped, since a mirrored left hand
  looks like a right one and MediaPipe labels it so.
* **Jitter** (`jitter_image`): the image coordinates scaled about the image centre and
  shifted: another framing of the same scene. The wrist-relative block is unchanged
  (it is normalised for size and place).
* **Dropped hands** (`drop_hands`): a slot zeroed, presence included, over random
  stretches of frames, as when the detector loses a hand.

`AUGMENTATIONS` names the presets `config.dataset.augment` accepts; `training_transform`
and `evaluation_transform` turn a config into the `(features, index, epoch) -> features`
hook of `hhjax.data.pipeline.load_batch`, seeded by (config.seed, epoch, example index)
only, so training stays deterministic and resumes exactly.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from hhjax import handpose

FEATURE_DIM = handpose.FEATURE_DIM            # 212
HAND_DIM = handpose.HAND_DIM                  # 106 per slot
NUM_SLOTS = len(handpose.SLOTS)               # 2: "Left", then "Right"
NUM_LANDMARKS = handpose.NUM_LANDMARKS        # 21
REL = slice(0, 3 * NUM_LANDMARKS)             # wrist-relative xyz, 63 values
IMG = slice(3 * NUM_LANDMARKS, 5 * NUM_LANDMARKS)   # image xy, 42 values
PRESENCE = HAND_DIM - 1                       # 105
# Width / height of the frames the features came from (the Kaggle clips: 360x240).
# Image coordinates are fractions of each side, so turning them needs the aspect.
DEFAULT_ASPECT = 1.5
# After a turn, the wrist-relative block is divided by the new image-plane length of
# the wrist-to-middle-finger-base bone, in units of the old one; below this, by the
# hand's largest image-plane extent instead (the extractor's own fallback), and never
# by less than this, so a bone turned towards the camera cannot blow the shape up.
MIN_RELATIVE_SCALE = 0.25
RNG_TAG = 0x41554721                          # keeps these draws apart from others

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def check_features(features: np.ndarray, what: str = "features") -> np.ndarray:
  """(T, 212) float array, or a ValueError naming the shape."""
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[-1] != FEATURE_DIM:
    raise ValueError(f"{what}: expected (T, {FEATURE_DIM}) hand-pose features "
                     f"(hhjax.handpose), got shape {features.shape}")
  return features


def _split(features: np.ndarray):
  """(T, 212) -> float64 copy (T, 2, 106) and the (T, 2) presence mask."""
  x = check_features(features).astype(np.float64).reshape(-1, NUM_SLOTS, HAND_DIM)
  return x, x[..., PRESENCE] != 0


def _join(x: np.ndarray, original: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """(T, 2, 106) new values where `keep`, `original` (T, 2, 106) elsewhere -> (T, 212)
  float32."""
  out = np.where(keep[..., None], x, original)
  return out.reshape(-1, FEATURE_DIM).astype(np.float32)


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0
                    ) -> np.ndarray:
  """(3, 3) R = Rz(roll) @ Rx(pitch) @ Ry(yaw), angles in degrees (module docstring)."""
  a, b, c = np.deg2rad([yaw, pitch, roll])
  ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
  rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
  rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
  return rz @ rx @ ry


def rotate_view(features: np.ndarray, matrix: np.ndarray, *,
                aspect: float = DEFAULT_ASPECT, renormalise: bool = True) -> np.ndarray:
  """The features of the scene turned by the rotation `matrix` (3, 3) about a point on
  the optical axis (the module docstring's model).

  Args:
    features: (T, 212).
    matrix: (3, 3) rotation, acting on camera-coordinate column vectors.
    aspect: the frames' width / height.
    renormalise: divide the turned wrist-relative block by its new image-plane
      wrist-to-middle-finger-base length, as extraction does (False: plain rotation,
      3-D lengths kept).

  Returns:
    (T, 212) float32.
  """
  matrix = np.asarray(matrix, np.float64)
  if (matrix.shape != (3, 3) or not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-6)
      or np.linalg.det(matrix) < 0):   # a reflection would swap the hand's handedness
    raise ValueError(f"rotate_view needs a (3, 3) rotation matrix, got {matrix!r}")
  x, present = _split(features)
  original = x.copy()
  t = x.shape[0]
  rel = x[..., REL].reshape(t, NUM_SLOTS, NUM_LANDMARKS, 3)
  img = x[..., IMG].reshape(t, NUM_SLOTS, NUM_LANDMARKS, 2)
  to_h = np.array([aspect, 1.0])             # image fractions -> frame-height units
  # The hand's image size s (frame heights per wrist-relative unit): least squares of
  # (image - wrist image) = s * (wrist-relative xy) over the landmarks.
  offset = (img - img[:, :, :1]) * to_h      # (T, 2, 21, 2)
  num = (offset * rel[..., :2]).sum((-1, -2))
  den = (rel[..., :2] ** 2).sum((-1, -2))
  size = np.divide(num, den, out=np.zeros_like(num), where=den > 0)   # (T, 2)
  wrist = np.concatenate([(img[:, :, 0] - 0.5) * to_h, np.zeros((t, NUM_SLOTS, 1))],
                         -1)                 # (T, 2, 3), on the plane z = 0
  points = wrist[:, :, None] + size[..., None, None] * rel   # (T, 2, 21, 3)
  new_img = (points @ matrix.T)[..., :2] / to_h + 0.5
  new_rel = rel @ matrix.T
  if renormalise:
    planar = np.hypot(new_rel[..., 0], new_rel[..., 1])       # (T, 2, 21)
    scale = planar[..., handpose.MIDDLE_BASE]
    scale = np.where(scale < MIN_RELATIVE_SCALE, planar.max(-1), scale)
    new_rel = new_rel / np.maximum(scale, MIN_RELATIVE_SCALE)[..., None, None]
  x[..., REL] = new_rel.reshape(t, NUM_SLOTS, -1)
  x[..., IMG] = new_img.reshape(t, NUM_SLOTS, -1)
  return _join(x, original, present)


def features_as_slots(features: np.ndarray) -> np.ndarray:
  """(T, 212) -> (T, 2, 106) float64 view of the two hand slots."""
  return check_features(features).astype(np.float64).reshape(-1, NUM_SLOTS, HAND_DIM)


def mirror(features: np.ndarray) -> np.ndarray:
  """The features of the mirrored video: wrist-relative x -> -x, image x -> 1 - x, and
  the Left and Right slots swapped. Its own inverse. (T, 212) -> (T, 212) float32."""
  x, present = _split(features)
  original = x.copy()
  x[..., REL.start:REL.stop:3] *= -1.0
  x[..., IMG.start:IMG.stop:2] = 1.0 - x[..., IMG.start:IMG.stop:2]
  out = _join(x, original, present).reshape(-1, NUM_SLOTS, HAND_DIM)
  return out[:, ::-1].reshape(-1, FEATURE_DIM).copy()


def jitter(features: np.ndarray, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
  """Image coordinates scaled by `scale` about the image centre and moved by `shift`
  (fractions of width, height); the wrist-relative block is kept."""
  x, present = _split(features)
  original = x.copy()
  img = x[..., IMG].reshape(x.shape[0], NUM_SLOTS, NUM_LANDMARKS, 2)
  img = 0.5 + scale * (img - 0.5) + np.asarray(shift, np.float64)
  x[..., IMG] = img.reshape(x.shape[0], NUM_SLOTS, -1)
  return _join(x, original, present)


def drop_stretches(features: np.ndarray, slot: int, stretches) -> np.ndarray:
  """Slot `slot` (0 left, 1 right) zeroed, presence included, on the frames of every
  `(start, stop)` in `stretches`."""
  x = features_as_slots(features).copy()
  for start, stop in stretches:
    x[start:stop, slot] = 0.0
  return x.reshape(-1, FEATURE_DIM).astype(np.float32)


# Random augmentations: fn(features, rng, **params) -> features.


def random_rotation(features: np.ndarray, rng: np.random.Generator, *,
                    max_yaw: float = 45.0, max_pitch: float = 45.0,
                    max_roll: float = 30.0, aspect: float = DEFAULT_ASPECT
                    ) -> np.ndarray:
  """`rotate_view` by yaw, pitch and roll drawn uniformly within +-max (degrees), once
  per video."""
  yaw, pitch, roll = rng.uniform(-1.0, 1.0, 3) * np.array([max_yaw, max_pitch, max_roll])
  return rotate_view(features, rotation_matrix(yaw, pitch, roll), aspect=aspect)


def random_mirror(features: np.ndarray, rng: np.random.Generator, *,
                  prob: float = 0.5) -> np.ndarray:
  """`mirror` with probability `prob` (once per video)."""
  flip = rng.uniform() < prob
  return mirror(features) if flip else check_features(features).astype(np.float32)


def jitter_image(features: np.ndarray, rng: np.random.Generator, *,
                 scale: float = 0.15, shift: float = 0.1) -> np.ndarray:
  """`jitter` by a factor drawn in [1 - scale, 1 + scale] and a shift in +-shift of
  each side, once per video."""
  factor = rng.uniform(1.0 - scale, 1.0 + scale)
  return jitter(features, factor, rng.uniform(-shift, shift, 2))


def drop_hands(features: np.ndarray, rng: np.random.Generator, *,
               rate: float = 1 / 150, min_len: int = 3, max_len: int = 30
               ) -> np.ndarray:
  """Each slot zeroed over random stretches of frames: a Poisson number of stretches
  (mean `rate` per frame; at 30 fps the default is one per 5 s), each starting at a
  uniform frame and lasting `min_len`..`max_len` frames (cut at the end)."""
  if not 1 <= min_len <= max_len:
    raise ValueError(f"drop_hands needs 1 <= min_len <= max_len, got {min_len}, "
                     f"{max_len}")
  out = check_features(features).astype(np.float32)
  t = out.shape[0]
  for slot in range(NUM_SLOTS):
    n = rng.poisson(rate * t)
    starts = rng.integers(0, t, n) if t else np.zeros(0, int)
    lengths = rng.integers(min_len, max_len + 1, n)
    out = drop_stretches(out, slot, zip(starts.tolist(), (starts + lengths).tolist()))
  return out


def compose(*augmentations: Augmentation) -> Augmentation:
  """One augmentation applying `augmentations` in order with the same generator."""
  def composed(features, rng):
    for fn in augmentations:
      features = fn(features, rng)
    return features
  return composed


def handpose_default(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The "handpose" preset: mirroring (half the videos), a turn within +-45 degrees of
  yaw and pitch and +-30 of roll, image jitter (scale +-15 %, shift +-10 %), and
  dropped-hand stretches, with the defaults above."""
  return compose(random_mirror, random_rotation, jitter_image, drop_hands)(features, rng)


def sometimes(augmentation: Augmentation, prob: float) -> Augmentation:
  """`augmentation` applied to a video with probability `prob` (one draw per video,
  before the augmentation's own), the video left as it is otherwise."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"sometimes: prob must lie in [0, 1], got {prob}")

  def maybe(features, rng):
    if rng.uniform() < prob:
      return augmentation(features, rng)
    return check_features(features).astype(np.float32)
  return maybe


# The "handpose_half" preset: half the washes of each epoch seen through
# `handpose_default`, the other half as filmed, so that the front view keeps as much
# of the training signal as the other views get.
handpose_half = sometimes(handpose_default, 0.5)

AUGMENTATIONS: dict[str, Augmentation] = {"handpose": handpose_default,
                                          "handpose_half": handpose_half}

# View transforms for evaluation.

VIEW_PART = re.compile(r"rot(-?\d+(?:\.\d+)?)_(yaw|pitch|roll)|mirror")
VIEW_EXAMPLES = ("rot30_yaw", "rot45_yaw", "rot30_pitch", "rot45_pitch", "rot30_roll",
                 "mirror", "rot45_pitch+mirror")


def parse_view(kind: str, field: str = "view") -> list[tuple[str, float]]:
  """'rot45_pitch+mirror' -> [("pitch", 45.0), ("mirror", 0.0)].

  Raises:
    ValueError: naming `field` and the accepted forms.
  """
  parts = []
  for part in str(kind).split("+"):
    m = VIEW_PART.fullmatch(part)
    if m is None:
      raise ValueError(f"{field}={kind!r}: expected view transforms joined by '+', each "
                       "'mirror' or 'rot<degrees>_<yaw|pitch|roll>', e.g. "
                       f"{', '.join(VIEW_EXAMPLES)}")
    parts.append(("mirror", 0.0) if part == "mirror" else (m.group(2),
                                                           float(m.group(1))))
  return parts


def view_transform(features: np.ndarray, kind: str, *,
                   aspect: float = DEFAULT_ASPECT) -> np.ndarray:
  """A fixed change of viewpoint, for measuring robustness: "rot30_yaw" (camera turned
  30 degrees about the vertical), "rot45_pitch" (looking down at 45 degrees),
  "rot30_roll" (camera rolled), "mirror", or several joined by "+" (applied left to
  right). (T, 212) -> (T, 212) float32."""
  out = check_features(features).astype(np.float32)
  for what, angle in parse_view(kind):
    if what == "mirror":
      out = mirror(out)
    else:
      out = rotate_view(out, rotation_matrix(**{what: angle}), aspect=aspect)
  return out


# The pipeline hooks: (features, index, epoch) -> features.


@dataclasses.dataclass(frozen=True)
class SeededAugmentation:
  """An augmentation drawn from a generator seeded by (seed, epoch, example index)
  alone, so the same example in the same epoch always gets the same draw, whatever the
  batch, process, thread or resume point."""

  fn: Augmentation
  seed: int = 0

  def rng(self, index: int, epoch: int = 0) -> np.random.Generator:
    return np.random.default_rng(
        [RNG_TAG, int(self.seed) % 2**63, int(epoch), int(index)])

  def __call__(self, features: np.ndarray, index: int, epoch: int = 0) -> np.ndarray:
    return self.fn(features, self.rng(index, epoch))


@dataclasses.dataclass(frozen=True)
class ViewTransform:
  """`view_transform(features, kind)` as a pipeline hook (the same for every example
  and epoch)."""

  kind: str

  def __call__(self, features: np.ndarray, index: int = 0, epoch: int = 0) -> np.ndarray:
    del index, epoch
    return view_transform(features, self.kind)


def check_config(config) -> None:
  """`config.dataset.augment` and `.eval_view` name known transforms, else ValueError
  naming the field."""
  name = config.dataset.get("augment", "")
  if name and name not in AUGMENTATIONS:
    raise ValueError(f"config.dataset.augment={name!r}; expected '' (off) or one of "
                     f"{tuple(AUGMENTATIONS)}")
  view = config.dataset.get("eval_view", "")
  if view:
    parse_view(view, "config.dataset.eval_view")


def _check_dim(field: str, value: str, feature_dim: int) -> None:
  if feature_dim != FEATURE_DIM:
    raise ValueError(
        f"{field}={value!r} transforms the {FEATURE_DIM} hand-pose features per frame "
        f"(hhjax.handpose), but this data has feature size {feature_dim} (after "
        f"config.dataset.streams); set {field}=''")


def training_transform(config, feature_dim: int) -> SeededAugmentation | None:
  """The training split's hook for `config.dataset.augment` (None when off), seeded
  with `config.seed`.

  Raises:
    ValueError: an unknown name, or features that are not the 212 hand-pose values.
  """
  check_config(config)
  name = config.dataset.get("augment", "")
  if not name:
    return None
  _check_dim("config.dataset.augment", name, feature_dim)
  return SeededAugmentation(AUGMENTATIONS[name], seed=int(config.seed))


def evaluation_transform(config, feature_dim: int) -> ViewTransform | None:
  """The evaluation split's hook for `config.dataset.eval_view` (None when off).

  Raises:
    ValueError: an unknown view, or features that are not the 212 hand-pose values.
  """
  check_config(config)
  view = config.dataset.get("eval_view", "")
  if not view:
    return None
  _check_dim("config.dataset.eval_view", view, feature_dim)
  return ViewTransform(view)
