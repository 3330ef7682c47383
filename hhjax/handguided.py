"""Hand-guided per-frame features: a ResNet on the frame plus a ResNet on each hand.

The extraction counterpart of `hhjax.models.vision.hand_guided` (Myers et al., "Hand
Guided High Resolution Feature Enhancement for Fine-Grained Atomic Action Segmentation
within Complex Human Assemblies", WACV workshops 2023), for the segmentation networks
of hhjax: `python -m hhjax.extract --stream hand_guided` writes it in the manual layout
(`docs/EXTRACT.md`); `HandGuidedExtractor` does the same from Python.

Per frame t, with F_b and F_h the pooled widths of the two ResNets (512 for depth
18/34, 2048 for 50/101):

| rows                         | what                                                |
|------------------------------|-----------------------------------------------------|
| 0 .. F_b - 1                 | backbone: the frame, its shorter side resized to    |
|                              | `short_side` (default `frame_size`; bilinear,       |
|                              | `hhjax.video.resize_crop`), centre-cropped to       |
|                              | `frame_size` x `frame_size`                         |
| F_b .. F_b + F_h - 1         | hand stream on slot 0's (left) cut-out              |
| F_b + F_h .. F_b + 2 F_h - 1 | hand stream on slot 1's (right) cut-out             |

so D = F_b + 2 F_h (1536 for two ResNet-18s). Each hand's cut-out is a `hand_crop` x
`hand_crop` window of the ORIGINAL (full-resolution) frame centred on the hand
(`hand_guided.cut_out_hands`: zero padding beyond the frame's borders), resized to
`hand_size` x `hand_size` when the two differ. A hand absent from the frame gives zeros
in its rows. Features are the global average pool of the last stage (no classifier).

Hand positions come from hand-pose features already extracted (`hhjax.handpose`, 212
values per frame): a slot is present where its presence entry is > 0.5, and its centre
is the mean of its 21 landmarks' image coordinates (`labels_from_landmarks`). The
hand-pose features must have one column per frame this extractor decodes (same fps and
frame limit); a different count is an error naming both files.

Pixels go into both networks as torchvision's ImageNet models expect them: RGB in
[0, 1], minus `IMAGENET_MEAN`, divided by `IMAGENET_STD`.

No temporal shift. TSM's shift mixes channels of neighbouring frames, so a frame's
feature would depend on which frames were batched with it; here each frame's feature is
its own, and modelling time is left to the segmentation network that reads them.
Weights trained with a shift still load: the shift has no parameters.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hhjax import handpose
from hhjax import video as video_lib
from hhjax.models.backbones import resnet
from hhjax.models.backbones import torchvision_weights
from hhjax.models.vision.hand_guided import cut_out_hands
from hhjax.models.vision.hand_localiser import NUM_HANDS, labels_from_landmarks

__all__ = [
  "DEPTHS",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "HandGuidedExtractor",
  "feature_dim",
  "hand_cut_outs",
  "hand_positions",
  "load_variables",
  "random_variables",
  "resolve_settings",
]

DEPTHS = tuple(resnet.DEPTHS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURES_DIR = "features"   # where `--stream handpose` puts <stem>.npy under its --out


def _check_depth(depth: int, field: str) -> int:
  if depth not in DEPTHS:
    raise ValueError(f"{field} must be one of {DEPTHS}, got {depth}")
  return int(depth)


def feature_dim(depth: int = 18, hand_depth: int | None = None) -> int:
  """D = F_b + 2 F_h of the features (module docstring); hand_depth None: depth."""
  depth = _check_depth(depth, "depth")
  hand_depth = _check_depth(depth if hand_depth is None else hand_depth, "hand_depth")
  return (resnet.ResNet(depth).feature_dim
          + NUM_HANDS * resnet.ResNet(hand_depth).feature_dim)


@functools.lru_cache(maxsize=None)
def _abstract_variables(depth: int) -> dict:
  """The variables' shapes of a features-only ResNet of `depth` (no compilation)."""
  model = resnet.ResNet(depth)
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0),
                        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def random_variables(depth: int = 18, seed: int = 0) -> dict:
  """Seeded random variables of a features-only ResNet, as torchvision initialises it.

  Kernels He-normal over fan-out (std sqrt(2 / (kh kw out))), BatchNorm scale 1, bias
  0, running mean 0 and variance 1. Drawn with NumPy from the abstract variable tree, so
  a seed gives the same weights on every machine and nothing is compiled.

  Args:
    depth: one of `DEPTHS`.
    seed: NumPy seed.

  Returns:
    {"params": ..., "batch_stats": ...} of float32 arrays for `resnet.ResNet(depth)`.

  Raises:
    ValueError: for an unknown depth.
  """
  shapes = _abstract_variables(_check_depth(depth, "depth"))
  rng = np.random.default_rng(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  values = []
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_out = int(np.prod(leaf.shape[:-2])) * leaf.shape[-1]
      values.append(rng.normal(0.0, np.sqrt(2.0 / fan_out), leaf.shape))
    elif name.endswith("['scale']") or name.endswith("['var']"):
      values.append(np.ones(leaf.shape))
    else:  # biases, running means
      values.append(np.zeros(leaf.shape))
  return jax.tree_util.tree_unflatten(
    treedef, [jnp.asarray(v, jnp.float32) for v in values])


def load_variables(path: str | os.PathLike, depth: int = 18) -> dict:
  """A torchvision ResNet state dict (.pth / .pt with torch, or .npz) as variables.

  The checkpoint's classifier (`fc.*`) is dropped; anything else that does not match
  ResNet-`depth` is an error naming every key (`torchvision_weights.load_file`).
  """
  depth = _check_depth(depth, "depth")
  return torchvision_weights.load_file(f"resnet{depth}", path,
                                       model=resnet.ResNet(depth))


def _check_variables(variables: Mapping, depth: int, field: str) -> None:
  """Raises ValueError naming `field` when `variables` are not ResNet-`depth`'s."""
  def shapes(tree) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): tuple(np.shape(v)) for p, v in flat}

  expected = shapes(_abstract_variables(depth))
  try:
    given = shapes({k: variables[k] for k in ("params", "batch_stats")})
  except (KeyError, TypeError):
    raise ValueError(f"{field} must be {{'params': ..., 'batch_stats': ...}} of a "
                     f"ResNet-{depth}") from None
  problems = [f"missing {k}" for k in expected if k not in given]
  problems += [f"unexpected {k}" for k in given if k not in expected]
  problems += [f"{k}: shape {given[k]}, expected {s}" for k, s in expected.items()
               if k in given and given[k] != s]
  if problems:
    shown = "; ".join(problems[:4])
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    raise ValueError(f"{field} do not match a ResNet-{depth} without classifier: "
                     f"{shown}{more}")


def hand_positions(hand_features, name: str = "hand_features"
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Hand centres and presence per frame from (212, T) hand-pose features.

  Args:
    hand_features: (212, T) in the `hhjax.handpose` layout (one column per frame).
    name: how error messages call the features (e.g. their file).

  Returns:
    `(centres (T, 2, 2), present (T, 2))`: per slot (0 left, 1 right) the mean of the
    21 landmarks' image (x, y), 0..1 across width and height (zeros for an absent
    hand), and whether the slot's presence entry is > 0.5.

  Raises:
    ValueError: if the array is not (212, T).
  """
  hand_features = np.asarray(hand_features)
  if hand_features.ndim != 2 or hand_features.shape[0] != handpose.FEATURE_DIM:
    raise ValueError(f"{name}: expected ({handpose.FEATURE_DIM}, T) hand-pose "
                     f"features, got shape {hand_features.shape}")
  labels = labels_from_landmarks(hand_features.T).reshape(-1, NUM_HANDS, 3)
  return labels[..., 1:], labels[..., 0] > 0.5


def _normalise(images: jax.Array) -> jax.Array:
  """uint8 RGB -> torchvision's ImageNet input."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


@functools.lru_cache(maxsize=None)
def _features_fn(depth: int, hand_depth: int):
  """Jitted (frames (B, S, S, 3), patches (B, 2, h, h, 3) uint8, present (B, 2)) ->
  (B, D). Cached so extractors of the same depths share their compilations."""
  backbone = resnet.ResNet(depth)
  hand_net = resnet.ResNet(hand_depth)

  @jax.jit
  def fn(backbone_variables, hand_variables, frames, patches, present):
    b = frames.shape[0]
    frame_feats = backbone.apply(backbone_variables, _normalise(frames))   # (B, F_b)
    flat = patches.reshape((b * NUM_HANDS,) + patches.shape[2:])
    hand_feats = hand_net.apply(hand_variables, _normalise(flat))          # (2B, F_h)
    hand_feats = hand_feats.reshape(b, NUM_HANDS, -1)
    hand_feats = jnp.where(present[..., None], hand_feats, 0.0)            # (B, 2, F_h)
    return jnp.concatenate([frame_feats, hand_feats.reshape(b, -1)], axis=-1)

  return fn


@functools.lru_cache(maxsize=None)
def _cut_out_fn(size: int):
  """Jitted (frames (n, H, W, 3), centres (n, 2, 2)) -> (cut-outs (n, 2, s, s, 3),
  their boxes (n, 2, 4) `(x0, y0, w, h)` in frame pixels)."""
  def one(frame, centres):
    return cut_out_hands(frame, centres, size)

  return jax.jit(jax.vmap(one))


def hand_cut_outs(frames: np.ndarray, centres: np.ndarray, crop: int, size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Each hand's high-resolution cut-out of original frames.

  Args:
    frames: (n, H, W, 3) uint8 frames at their original size.
    centres: (n, 2, 2) hand centres (x, y), 0..1 across width and height.
    crop: the side of the window cut around each centre, in original pixels
      (`cut_out_hands`: zeros beyond the frame's borders).
    size: the side the windows are resized to (bilinear) when it differs from `crop`.

  Returns:
    `(cut-outs (n, 2, size, size, 3) uint8, boxes (n, 2, 4))`, each box the window
    `(x0, y0, crop, crop)` in original pixels, (x0, y0) its top-left corner.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be (n, H, W, 3), got shape {frames.shape}")
  n = frames.shape[0]
  patches, boxes = _cut_out_fn(int(crop))(frames, np.asarray(centres, np.float32))
  patches = np.asarray(patches)
  if crop != size:
    flat = patches.reshape((n * NUM_HANDS,) + patches.shape[2:])
    patches = video_lib.resize_crop(flat, int(size), None).reshape(
        (n, NUM_HANDS, int(size), int(size), 3))
  return patches, np.asarray(boxes)


def _positive(value: int, field: str) -> int:
  if int(value) != value or value < 1:
    raise ValueError(f"{field} must be an integer >= 1, got {value}")
  return int(value)


def resolve_settings(*, depth: int = 18, hand_depth: int | None = None,
                     frame_size: int = 224, short_side: int | None = None,
                     hand_size: int = 112, hand_crop: int | None = None,
                     batch_size: int = 16, fps: float | None = None,
                     max_frames: int | None = None, decode_chunk: int = 32,
                     decode_ahead: int = 2) -> dict:
  """`HandGuidedExtractor`'s settings, checked, with their defaults resolved.

  Returns:
    A dict of the arguments (same names), None defaults replaced: hand_depth by
    depth, short_side by frame_size, hand_crop by hand_size.

  Raises:
    ValueError: naming the argument, for an unknown depth, a size or count < 1, a
      short side below frame_size, or fps <= 0.
  """
  out = dict(depth=_check_depth(depth, "depth"),
             hand_depth=_check_depth(depth if hand_depth is None else hand_depth,
                                     "hand_depth"),
             frame_size=_positive(frame_size, "frame_size"),
             short_side=_positive(frame_size if short_side is None else short_side,
                                  "short_side"),
             hand_size=_positive(hand_size, "hand_size"),
             hand_crop=_positive(hand_size if hand_crop is None else hand_crop,
                                 "hand_crop"),
             batch_size=_positive(batch_size, "batch_size"),
             fps=None if fps is None else float(fps),
             max_frames=None if max_frames is None else _positive(max_frames,
                                                                 "max_frames"),
             decode_chunk=_positive(decode_chunk, "decode_chunk"),
             decode_ahead=int(decode_ahead))
  if out["decode_ahead"] < 0:
    raise ValueError(f"decode_ahead must be >= 0, got {decode_ahead}")
  if out["short_side"] < out["frame_size"]:
    raise ValueError(f"short_side ({out['short_side']}) must be >= frame_size "
                     f"({out['frame_size']}): the crop is taken from the resized frame")
  if fps is not None and fps <= 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  return out


class HandGuidedExtractor:
  """Per-frame hand-guided features of videos (layout in the module docstring).

  Args:
    backbone_variables: variables of `resnet.ResNet(depth)` (`load_variables` or
      `random_variables`); a checkpoint's classifier must be dropped.
    hand_variables: variables of `resnet.ResNet(hand_depth)`.
    depth: ResNet depth of the frame stream (18, 34, 50 or 101).
    hand_depth: ResNet depth of the hand stream (None: `depth`; the paper paired a
      ResNet-50 backbone with a ResNet-18 hand stream).
    frame_size: side of the backbone's square centre crop.
    short_side: the frame's shorter side after resizing, before the crop (None:
      `frame_size`, so the crop keeps the whole shorter side).
    hand_size: side of the hand stream's input.
    hand_crop: side of the cut-out, in pixels of the original frame (None:
      `hand_size`, no resize).
    batch_size: frames per network call (the last call is padded to it).
    fps: sampling rate (None: the video's own); must match the hand-pose run's.
    max_frames: only the first `max_frames` sampled frames (None: all); must match too.
    decode_chunk: frames decoded at a time.
    decode_ahead: chunks decoded ahead in a background thread while the networks run
      (`hhjax.video.read_ahead`; 0: no thread).
    hands_dir: the `--out` folder of a `--stream handpose` run: `extract(path)` then
      reads `hands_dir/features/<stem>.npy`.

  Raises:
    ValueError: as `resolve_settings`, or for variables that do not match their depth
      (naming the argument).
  """

  def __init__(self, backbone_variables: Mapping, hand_variables: Mapping, *,
               depth: int = 18, hand_depth: int | None = None, frame_size: int = 224,
               short_side: int | None = None, hand_size: int = 112,
               hand_crop: int | None = None, batch_size: int = 16,
               fps: float | None = None, max_frames: int | None = None,
               decode_chunk: int = 32, decode_ahead: int = 2,
               hands_dir: str | os.PathLike | None = None):
    settings = resolve_settings(
      depth=depth, hand_depth=hand_depth, frame_size=frame_size, short_side=short_side,
      hand_size=hand_size, hand_crop=hand_crop, batch_size=batch_size, fps=fps,
      max_frames=max_frames, decode_chunk=decode_chunk, decode_ahead=decode_ahead)
    self.depth = settings["depth"]
    self.hand_depth = settings["hand_depth"]
    self.frame_size = settings["frame_size"]
    self.short_side = settings["short_side"]
    self.hand_size = settings["hand_size"]
    self.hand_crop = settings["hand_crop"]
    self.batch_size = settings["batch_size"]
    self.fps = settings["fps"]
    self.max_frames = settings["max_frames"]
    self.decode_chunk = settings["decode_chunk"]
    self.decode_ahead = settings["decode_ahead"]
    self.hands_dir = None if hands_dir is None else pathlib.Path(hands_dir)
    _check_variables(backbone_variables, self.depth, "backbone_variables")
    _check_variables(hand_variables, self.hand_depth, "hand_variables")
    self.backbone_variables = backbone_variables
    self.hand_variables = hand_variables
    self._features = _features_fn(self.depth, self.hand_depth)

  @property
  def feature_dim(self) -> int:
    """D, the rows of `extract`'s output."""
    return feature_dim(self.depth, self.hand_depth)

  # -- per-frame inputs -----------------------------------------------------------

  def frame_inputs(self, frames: np.ndarray, centres: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The two networks' inputs for original frames.

    Args:
      frames: (n, H, W, 3) uint8 RGB frames at their original size.
      centres: (n, 2, 2) hand centres (x, y), 0..1 across width and height.

    Returns:
      `(backbone input (n, frame_size, frame_size, 3), cut-outs (n, 2, hand_size,
      hand_size, 3))`, both uint8.
    """
    patches, _ = hand_cut_outs(frames, centres, self.hand_crop, self.hand_size)
    return video_lib.resize_crop(frames, self.short_side, self.frame_size), patches

  # -- features -------------------------------------------------------------------

  def _run(self, small: np.ndarray, patches: np.ndarray, present: np.ndarray
           ) -> np.ndarray:
    """Features of up to `batch_size` frames, the batch padded with zeros."""
    real = small.shape[0]
    pad = self.batch_size - real
    if pad:
      small = np.concatenate([small, np.zeros((pad,) + small.shape[1:], small.dtype)])
      patches = np.concatenate(
        [patches, np.zeros((pad,) + patches.shape[1:], patches.dtype)])
      present = np.concatenate([present, np.zeros((pad, NUM_HANDS), bool)])
    out = self._features(self.backbone_variables, self.hand_variables,
                         jnp.asarray(small), jnp.asarray(patches), jnp.asarray(present))
    return np.asarray(out)[:real]

  def features_from_frames(self, chunks: Iterable[np.ndarray], hand_features,
                           on_frame: Callable[[], None] | None = None,
                           hands_name: str = "hand_features") -> np.ndarray:
    """Per-frame features from decoded frames and hand-pose features.

    Args:
      chunks: (n, H, W, 3) uint8 RGB frames at their original size, in time order.
      hand_features: (212, T) hand-pose features, one column per frame of `chunks`.
      on_frame: progress callback, once per frame.
      hands_name: how error messages call `hand_features`.

    Returns:
      (D, T) float32.

    Raises:
      ValueError: bad hand features, or their T differs from the frames' count.
    """
    centres, present = hand_positions(hand_features, hands_name)
    total = centres.shape[0]
    outputs: list[np.ndarray] = []
    waiting = None  # (small, patches, present) of frames not yet run
    count = 0
    for chunk in chunks:
      n = chunk.shape[0]
      if count + n > total:
        raise ValueError(f"{hands_name} holds hand positions for {total} frames, but "
                         f"the video has more")
      small, patches = self.frame_inputs(chunk, centres[count:count + n])
      new = (small, patches, present[count:count + n])
      waiting = new if waiting is None else tuple(
        np.concatenate([a, b]) for a, b in zip(waiting, new))
      count += n
      if on_frame is not None:
        for _ in range(n):
          on_frame()
      while waiting[0].shape[0] >= self.batch_size:
        outputs.append(self._run(*(a[:self.batch_size] for a in waiting)))
        waiting = tuple(a[self.batch_size:] for a in waiting)
    if count != total:
      raise ValueError(f"{hands_name} holds hand positions for {total} frames, but the "
                       f"video has {count}")
    if count == 0:
      raise ValueError("no frames")
    if waiting[0].shape[0]:
      outputs.append(self._run(*waiting))  # the last batch, padded
    return np.concatenate(outputs).T.astype(np.float32)                  # (D, T)

  def expected_frames(self, path: str | os.PathLike) -> int:
    """T that `extract(path)` will return."""
    return video_lib.count_frames(path, self.fps, self.max_frames)

  def hands_file(self, path: str | os.PathLike) -> pathlib.Path:
    """`hands_dir/features/<stem>.npy`, the hand-pose features of video `path`."""
    if self.hands_dir is None:
      raise ValueError("no hand positions for the video: pass `hands`, or build the "
                       "extractor with hands_dir")
    return self.hands_dir / FEATURES_DIR / f"{pathlib.Path(path).stem}.npy"

  def extract(self, path: str | os.PathLike, hands=None,
              on_frame: Callable[[], None] | None = None) -> np.ndarray:
    """(D, T) float32 features of one video (T = decoded frames).

    Args:
      path: the video.
      hands: its (212, T) hand-pose features, or the .npy file holding them (None:
        `hands_file(path)`).
      on_frame: progress callback, once per frame.

    Returns:
      (D, T) float32, layout in the module docstring.

    Raises:
      VideoError: the video cannot be decoded.
      FileNotFoundError: the hand-pose features file does not exist.
      ValueError: the hand-pose features are not (212, T), or their T is not the
        video's frame count (the message names both).
    """
    if hands is None:
      hands = self.hands_file(path)
    if isinstance(hands, (str, os.PathLike)):
      hands_name = os.fspath(hands)
      if not os.path.isfile(hands_name):
        raise FileNotFoundError(f"{hands_name}: no hand-pose features for {path}; "
                                f"extract them first with --stream handpose")
      hand_features = np.load(hands_name, allow_pickle=False)
    else:
      hands_name, hand_features = "the hand-pose features", np.asarray(hands)
    hand_positions(hand_features, hands_name)  # checks the shape first
    expected = self.expected_frames(path)
    if hand_features.shape[1] != expected:
      raise ValueError(
        f"{hands_name} holds hand positions for {hand_features.shape[1]} frames, but "
        f"{os.fspath(path)} decodes to {expected} frames (fps "
        f"{self.fps or 'of the video'}, max_frames {self.max_frames or 'all'}): make "
        f"both with the same --fps and --max-frames")
    chunks = video_lib.iter_frames(path, fps=self.fps, short_side=None, crop=None,
                                   chunk_size=self.decode_chunk,
                                   max_frames=self.max_frames)
    return self.features_from_frames(video_lib.read_ahead(chunks, self.decode_ahead),
                                     hand_features, on_frame, hands_name)
