r"""Single-clip tasks on the real hand-washing clips (python -m hhjax.clips): the
12-action clip classifier of the SUTD report, and the hand localiser and the
hand-guided per-frame classifier of Myers et al., all cross-validated across people.

  python -m hhjax.clips --config configs/clips_cnn_lstm.py --workdir runs/clips \
      [--config.num_train_steps=600 --config.model.cnn=resnet18 ...] [--folds 0,2]

The clips are listed in `clips.csv` (`clip, subject, action, who_step[, split]`, read
by `hhjax.data.compose.read_clips`). Their people are dealt into
`config.data.num_folds` groups by `hhjax.data.compose.leave_people_out_folds`, the
groups the segmentation experiments hold out; fold k trains on every other group and
tests on group k, so nobody is tested by a model that saw them. `--folds` picks some
folds (0-based) instead of all.

Task "classify" (`config.task`): one clip -> one of the 12 actions.

* Frames (the report's preprocessing): every `data.frame_stride`-th frame (4) of the
  clip, the whole frame resized to `data.frame_size` squared (128; bilinear, aspect
  ratio not kept, as the report's `cv2.resize`), in [0, 1]. A window is
  `data.clip_length` (32) consecutive sampled frames; its frame k is frame
  `start + stride k` of the clip, as `cnn_lstm.clip_frame_indices` gives it, and
  frames past the clip's end repeat its last sampled frame and are masked.
* Training: batches of `batch_size` training clips (every clip once per epoch, in a
  seeded order), one window each at a random start, so a clip yields windows at many
  offsets over the run. Augmentation (the report's two), on training windows only,
  one draw per window: with probability `augment.prob` a horizontal shift by a
  fraction of the width drawn from `augment.translate` (either direction, zero fill),
  and independently with probability `augment.prob` a contrast change
  `128 + f (v - 128)` (clipped to 0..255) with f drawn from 1 +- `augment.contrast`.
* Evaluation: `data.eval_windows` fixed windows per held-out clip, their starts evenly
  spread from the clip's first frame to the last window that fits (3: first, middle,
  last); the logits are averaged over a clip's windows. Accuracy is reported on the
  12 actions and on the 7 WHO classes (`who_step` 0..6, 0 the wrist-rubbing
  background): a predicted action counts as the WHO step clips.csv gives it.
* Model (`model.name`): "cnn_lstm" (`CNNLSTM`, per-frame CNN `model.cnn`: "small",
  "alexnet", "resnet18", "mobilenet_v2", ...) or "convlstm" (`ConvLSTMClassifier`).
  Optionally the CNN starts from a torchvision checkpoint (`model.cnn_weights`, .pth
  or .npz; then `data.normalize="imagenet"` fits its input statistics) and is frozen
  (`model.freeze_cnn`), as the report's pretrained AlexNet was.
* Baseline row, same folds: the clip's hand-pose features (`data.features_dir/<clip
  stem>.npy`, (212, T), `python -m hhjax.extract --stream handpose`) as the mean and
  standard deviation over time of each value -> standardised -> multinomial logistic
  regression (`baseline.C`). `baseline.handpose=False` leaves it out.

Task "localise": one frame -> [P1, x1, y1, P2, x2, y2] (`HandLocaliser`, backbone
`localiser.backbone`: "small" or "mobilenet_v2"), trained with the paper's loss on
every `data.frame_stride`-th frame of the training people's clips, at
`data.frame_size` squared (the whole frame, so normalised positions stay valid), and
scored by F1@T_L at `localiser.thresholds` on every sampled frame of the held-out
people. The targets are machine-made: `labels_from_landmarks` of the clip's MediaPipe
hand-pose features, not hand labels. A feature file must have one column per decoded
frame of its clip (the run stops naming every clip that does not). Beside it, the
constant row predicts for every frame the training frames' presence rate (present if
above one half) and mean position of each hand. No augmentation.

Task "frames": every sampled frame -> one of the 12 actions, with the hand-guided
two-stream model of Myers et al. (`HandGuidedTSM`, `config.frames`): a ResNet with
TSM's temporal shift (`frames.temporal_shift`, 0 for none) on the whole frame resized
to `data.frame_size` squared, and, with `frames.use_hand_stream`, a second ResNet on
each hand's high-resolution cut-out (a `frames.hand_crop`-pixel window of the ORIGINAL
frame around the hand, resized to `frames.hand_size`), its feature map pasted where the
window lies on the frame stream's grid (eq. 2-3 with the whole frame as the crop,
`frame_boxes`) and fused per frame. Hand centres and presence come from the clip's
hand-pose features (as for "localise"), so the run checks that they have one column
per decoded frame. Training windows of `data.clip_length` sampled frames at random
starts, every frame labelled with the clip's action (frames past the clip's end
masked), with the contrast change of the augmentation only (a shift would move the
hands off their boxes); evaluation on every sampled frame of the held-out clips
(windows at 0, L, 2L, ...), accuracy per frame on the 12 actions and the 7 WHO
classes. Beside it, the per-frame hand-pose row: a standardised logistic regression on
each sampled frame's 212 values. Ablations are config changes of one command
(`configs/clips_tsm.py`).

All tasks: Adam (`learning_rate`), `num_train_steps` steps of `batch_size`, one jitted
train step (BatchNorm statistics updated as a mutable collection), dropout keys
`fold_in(key, step)`; a line every `log_every_steps` steps with the loss and speed. A
run is a pure function of the config (seed included) and the data. Frames are decoded
once per clip and setting: kept in memory for the run and as .npy files in
`data.cache_dir` (default `<workdir>/cache`), in a folder named after the sampling
settings, beside a note of the source file's size and time, so a changed setting or
video is decoded afresh. Outputs in the workdir: `results.json` (per fold and mean +-
sd over the folds for every row, with the config), `results.md` (the table),
`fold<k>/predictions.json` (classify: per clip and row, the prediction and, for the
model, the averaged logits) or `fold<k>/predictions.npz` (localise and frames: per
frame),
`fold<k>/train_log.jsonl` and `fold<k>/result.json` (the fold's figures with the
config that made them). Folds may be run apart into one workdir (`--folds 0,3` after
`--folds 1,2`): the table gathers every finished fold there whose config matches in
all but `RESULT_SAFE_FIELDS` and whose held-out people are the same; a fold made with
other settings is left out, with a line naming the fields that differ. Each fold
records the code that ran it (`hhjax.provenance`); `results.md` names it, and warns,
naming the folds, when folds read back ran other code.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hhjax import cli
from hhjax import config as config_lib
from hhjax import handpose
from hhjax import provenance
from hhjax import video as video_lib
from hhjax.data import compose
from hhjax.models.vision import cnn_lstm, convlstm, hand_guided, hand_localiser

TASKS = ("classify", "localise", "frames")
MODELS = ("cnn_lstm", "convlstm")
NORMALIZATIONS = ("unit", "imagenet")
NUM_ACTIONS = 12
NUM_WHO_CLASSES = compose.NUM_STEPS + 1          # 0 background, 1..6 the WHO steps
CLASSIFY_METRICS = (("acc_action", "12 actions"), ("acc_who", "7 WHO classes"))
# torchvision's ImageNet input statistics, for `data.normalize="imagenet"`.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Bumped when the cached frames would change for the same settings.
CACHE_VERSION = 1


def get_config() -> ml_collections.ConfigDict:
  """Every field of `python -m hhjax.clips` with its default (CPU-sized: 64x64 frames,
  16 per window; the report used 128x128 and 32)."""
  config = ml_collections.ConfigDict()
  config.task = "classify"                 # "classify" | "localise" | "frames"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.clips_csv = "../shared/realdata/kaggle_handwash_train/clips.csv"
  config.data.videos_dir = ""              # "" -> the folder of clips_csv
  config.data.features_dir = "data/handwash_clips/features"
  config.data.cache_dir = ""               # "" -> <workdir>/cache
  config.data.num_folds = 4                # leave-people-out folds
  config.data.frame_stride = 4             # keep every k-th frame (report: 4)
  config.data.frame_size = 64              # resized to this squared (report: 128)
  config.data.clip_length = 16             # sampled frames per window (report: 32)
  config.data.eval_windows = 3             # fixed windows per held-out clip
  config.data.normalize = "unit"           # "unit" (v / 255) | "imagenet"

  config.augment = ml_collections.ConfigDict()
  config.augment.prob = 0.5                # chance of each augmentation per window
  config.augment.translate = (0.05, 0.2)   # shift range, fraction of width; (0, 0) off
  config.augment.contrast = 0.1            # factor in 1 +- this; 0 off

  config.model = ml_collections.ConfigDict()
  config.model.name = "cnn_lstm"           # "cnn_lstm" | "convlstm"
  config.model.cnn = "small"               # cnn_lstm: cnn_lstm.FRAME_CNNS
  config.model.cnn_weights = ""            # torchvision checkpoint (.pth / .npz)
  config.model.freeze_cnn = False
  config.model.lstm_hidden = 256
  config.model.embed = 128
  config.model.head_hidden = 512
  config.model.convlstm_features = 8
  config.model.kernel_size = (3, 3)
  config.model.dropout = 0.5               # report: 0.5 (CNN-LSTM), 0.8 (ConvLSTM)

  config.localiser = ml_collections.ConfigDict()
  config.localiser.backbone = "small"      # "small" | "mobilenet_v2" (the paper's)
  config.localiser.width_mult = 1.0        # MobileNetV2's width multiplier
  config.localiser.backbone_weights = ""   # torchvision checkpoint (.pth/.npz)
  config.localiser.lam = 0.1               # weight of the presence term (eq. 1)
  config.localiser.thresholds = (0.05, 0.1, 0.2, 0.3)

  # Task "frames": the hand-guided two-stream model (HandGuidedTSM).
  config.frames = ml_collections.ConfigDict()
  config.frames.backbone_depth = 18        # ResNet depth of the frame stream
  config.frames.hand_depth = 18            # ResNet depth of the hand stream
  config.frames.temporal_shift = 0.25      # TSM: 1/8 of the channels each way; 0 off
  config.frames.use_hand_stream = True     # False: the frame stream alone
  config.frames.fusion = "aligned"         # "aligned" | "pooled"
  config.frames.hand_crop = 64             # cut-out side, original pixels
  config.frames.hand_size = 32             # cut-outs resized to this squared
  config.frames.dropout = 0.5
  config.frames.backbone_weights = ""      # torchvision ResNet checkpoint (.pth/.npz)
  config.frames.hand_weights = ""          # the same, for the hand stream

  config.baseline = ml_collections.ConfigDict()
  config.baseline.handpose = True          # classify, frames: the hand-pose row
  config.baseline.C = 1.0                  # inverse L2 strength of its regression

  config.learning_rate = 1e-3
  config.batch_size = 8
  config.num_train_steps = 500
  config.log_every_steps = 50
  config.eval_batch_size = 16
  # JAX's persistent compilation cache (the command only), as hhjax.train's.
  config.compilation_cache_dir = ""
  return config


def check_config(config) -> None:
  """Raises a ValueError naming the first field whose value cannot work."""
  def choice(field, value, choices):
    if value not in choices:
      raise ValueError(f"config.{field}={value!r}; expected one of {tuple(choices)}")

  def at_least(field, value, low):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"config.{field}={value!r}; expected an integer >= {low}")

  choice("task", config.task, TASKS)
  choice("model.name", config.model.name, MODELS)
  choice("model.cnn", config.model.cnn, cnn_lstm.FRAME_CNNS)
  choice("localiser.backbone", config.localiser.backbone, cnn_lstm.FRAME_CNNS)
  choice("data.normalize", config.data.normalize, NORMALIZATIONS)
  at_least("data.num_folds", config.data.num_folds, 2)
  for field in ("data.frame_stride", "data.frame_size", "data.clip_length",
                "data.eval_windows", "batch_size", "log_every_steps",
                "eval_batch_size"):
    section, _, name = field.rpartition(".")
    at_least(field, (config[section] if section else config)[name], 1)
  at_least("num_train_steps", config.num_train_steps, 0)
  if not 0.0 <= config.augment.prob <= 1.0:
    raise ValueError(f"config.augment.prob={config.augment.prob}; expected 0..1")
  lo, hi = config.augment.translate
  if not 0.0 <= lo <= hi < 1.0:
    raise ValueError(f"config.augment.translate={tuple(config.augment.translate)}; "
                     "expected (low, high) with 0 <= low <= high < 1")
  if not 0.0 <= config.augment.contrast < 1.0:
    raise ValueError(f"config.augment.contrast={config.augment.contrast}; expected "
                     "0 <= contrast < 1")
  if not config.localiser.thresholds or min(config.localiser.thresholds) < 0:
    raise ValueError(f"config.localiser.thresholds={config.localiser.thresholds}; "
                     "expected one or more thresholds >= 0")
  if config.task == "frames":
    f = config.frames
    choice("frames.backbone_depth", f.backbone_depth, hand_guided.RESNET_DEPTHS)
    choice("frames.hand_depth", f.hand_depth, (0,) + tuple(hand_guided.RESNET_DEPTHS))
    choice("frames.fusion", f.fusion, hand_guided.FUSIONS)
    at_least("frames.hand_crop", f.hand_crop, 1)
    at_least("frames.hand_size", f.hand_size, 1)
    if not 0.0 <= f.temporal_shift <= 1.0:
      raise ValueError(f"config.frames.temporal_shift={f.temporal_shift}; expected "
                       "0..1 (the fraction of channels shifted, both ways together)")
  uses_alexnet = ((config.task == "classify" and config.model.name == "cnn_lstm"
                   and config.model.cnn == "alexnet")
                  or (config.task == "localise"
                      and config.localiser.backbone == "alexnet"))
  if uses_alexnet and config.data.frame_size < 63:
    raise ValueError(f"config.data.frame_size={config.data.frame_size}: AlexNet needs "
                     "frames of at least 63x63")


# ---------------------------------------------------------------------------- clips


def read_clip_list(csv_path: str | os.PathLike) -> list[compose.Clip]:
  """The clips of `clips.csv` (`compose.read_clips`), or FileNotFoundError naming it."""
  path = pathlib.Path(csv_path)
  if not path.is_file():
    raise FileNotFoundError(f"clip list {path} not found (config.data.clips_csv)")
  clips = compose.read_clips(path)
  if not clips:
    raise compose.ClipsError(f"{path}: lists no clips")
  return clips


def who_mapping(clips: Sequence[compose.Clip]) -> dict[int, int]:
  """action -> WHO class (`who_step`, 0..6), as the clip list pairs them.

  Raises:
    ClipsError: an action is paired with two WHO steps, naming the clips.
  """
  seen: dict[int, tuple[int, str]] = {}
  for clip in clips:
    if clip.action in seen and seen[clip.action][0] != clip.who_step:
      step, other = seen[clip.action]
      raise compose.ClipsError(
          f"action {clip.action} is WHO step {step} for clip {other!r} but "
          f"{clip.who_step} for clip {clip.name!r}")
    seen.setdefault(clip.action, (clip.who_step, clip.name))
  return {action: step for action, (step, _) in sorted(seen.items())}


def check_actions(clips: Sequence[compose.Clip], num_classes: int = NUM_ACTIONS
                  ) -> None:
  """Raises ClipsError naming the clips whose action is outside 1..num_classes."""
  bad = [f"{c.name} (action {c.action})" for c in clips
         if not 1 <= c.action <= num_classes]
  if bad:
    raise compose.ClipsError(f"actions must lie in 1..{num_classes}: "
                             + ", ".join(bad))


def people_folds(clips: Sequence[compose.Clip], num_folds: int
                 ) -> list[tuple[str, ...]]:
  """The held-out people of each fold: `compose.leave_people_out_folds` over the
  clips' subjects (the same groups as the composed-wash folds)."""
  try:
    return compose.leave_people_out_folds([c.subject for c in clips], num_folds)
  except ValueError as e:
    raise ValueError(f"config.data.num_folds: {e}") from None


def split_clips(clips: Sequence[compose.Clip], held_out: Sequence[str]
                ) -> tuple[list[compose.Clip], list[compose.Clip]]:
  """(training clips, test clips): the clips of the people in `held_out` are tested."""
  held = set(held_out)
  return ([c for c in clips if c.subject not in held],
          [c for c in clips if c.subject in held])


def fold_clips(clips: Sequence[compose.Clip], fold: int, held_out: Sequence[str]
               ) -> tuple[list[compose.Clip], list[compose.Clip]]:
  """`split_clips` for fold `fold`, or a ClipsError when either side is empty."""
  train_clips, test_clips = split_clips(clips, held_out)
  if not train_clips or not test_clips:
    raise compose.ClipsError(f"fold {fold} has {len(train_clips)} training and "
                             f"{len(test_clips)} test clips; both need some")
  return train_clips, test_clips


def clip_paths(clips: Sequence[compose.Clip], videos_dir: str | os.PathLike
               ) -> dict[str, pathlib.Path]:
  """Clip name -> its video file; FileNotFoundError naming every missing one."""
  root = pathlib.Path(videos_dir)
  paths = {c.name: root / c.name for c in clips}
  missing = [str(p) for p in paths.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"{len(missing)} clip video(s) not found (config.data."
                            "videos_dir): " + ", ".join(missing))
  return paths


def load_features(clips: Sequence[compose.Clip], features_dir: str | os.PathLike
                  ) -> dict[str, np.ndarray]:
  """Clip name -> its (212, T) hand-pose features.

  Raises:
    ClipsError: naming every missing file, or a file that is not (212, T).
  """
  by_stem = compose.load_clip_features(features_dir, clips)
  out, bad = {}, []
  for clip in clips:
    array = by_stem[clip.stem]
    if array.ndim != 2 or array.shape[0] != handpose.FEATURE_DIM or not array.shape[1]:
      bad.append(f"{clip.name}: {array.shape}")
    out[clip.name] = array
  if bad:
    raise compose.ClipsError(
        f"hand-pose features in {features_dir} must be ({handpose.FEATURE_DIM}, T) "
        "(one column per frame): " + "; ".join(bad))
  return out


# ----------------------------------------------------------------- frames and cache


class SampledClip(NamedTuple):
  """A clip's sampled frames.

  Attributes:
    frames: (ceil(num_frames / stride), size, size, 3) uint8 RGB: frames 0, stride,
      2 stride, ... of the clip, resized.
    num_frames: the clip's decoded frame count.
  """

  frames: np.ndarray
  num_frames: int


def _taps(src: int, dst: int):
  """Bilinear taps of a src -> dst resize, pixel centres aligned (as `hhjax.video`)."""
  pos = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0, src - 1)
  i0 = np.floor(pos).astype(np.int64)
  return i0, np.minimum(i0 + 1, src - 1), (pos - i0).astype(np.float32)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of (n, H, W, C) uint8 frames to (n, height, width, C), the whole
  frame (no crop, aspect ratio not kept), with `cv2.resize(INTER_LINEAR)`'s pixel
  convention and no anti-aliasing; rounded to uint8."""
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"expected (n, H, W, C) frames, got shape {frames.shape}")
  _, h, w, _ = frames.shape
  if (h, w) == (height, width):
    return frames.copy()
  y0, y1, wy = _taps(h, height)
  x0, x1, wx = _taps(w, width)
  f = frames.astype(np.float32)
  rows = (f[:, y0] * (1.0 - wy)[None, :, None, None]
          + f[:, y1] * wy[None, :, None, None])                  # (n, height, W, C)
  out = (rows[:, :, x0] * (1.0 - wx)[None, None, :, None]
         + rows[:, :, x1] * wx[None, None, :, None])             # (n, height, width, C)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode_sampled(path: str | os.PathLike, stride: int, size: int) -> SampledClip:
  """Decodes a clip (`hhjax.video`, every frame at its own size) and keeps every
  `stride`-th frame, resized to `size` x `size`.

  Raises:
    VideoError: the file cannot be decoded.
  """
  kept, seen = [], 0
  for chunk in video_lib.iter_frames(path, short_side=None, crop=None, chunk_size=64):
    first = (-seen) % stride                   # first index in this chunk to keep
    if first < len(chunk):
      kept.append(resize_frames(chunk[first::stride], size, size))
    seen += len(chunk)
  return SampledClip(np.concatenate(kept, axis=0), seen)


class FrameCache:
  """Sampled frames of clips, decoded once: in memory, and on disk when `directory`
  is given (module docstring).

  Files: `<directory>/stride<s>_size<n>_v<version>/<clip stem>.npy` with a `.json`
  note of the source (path, size in bytes, modification time) and the frame count.
  A note that does not match the settings or the source file means a fresh decode.
  """

  def __init__(self, directory: str | os.PathLike | None, stride: int, size: int):
    self.stride = int(stride)
    self.size = int(size)
    self.folder = (None if directory is None else pathlib.Path(directory)
                   / f"stride{self.stride}_size{self.size}_v{CACHE_VERSION}")
    self._memory: dict[str, SampledClip] = {}
    self.decoded = 0                           # clips decoded (not read from the cache)

  def _note(self, path: pathlib.Path) -> dict[str, Any]:
    stat = path.stat()
    return dict(source=str(path.resolve()), bytes=stat.st_size,
                mtime_ns=stat.st_mtime_ns, stride=self.stride, size=self.size,
                version=CACHE_VERSION)

  def get(self, path: str | os.PathLike) -> SampledClip:
    """The sampled frames of the video at `path`."""
    path = pathlib.Path(path)
    key = str(path.resolve())
    if key in self._memory:
      return self._memory[key]
    note = self._note(path)
    sampled = None
    if self.folder is not None:
      npy = self.folder / f"{path.stem}.npy"
      meta = self.folder / f"{path.stem}.json"
      if npy.is_file() and meta.is_file():
        try:
          saved = json.loads(meta.read_text())
        except (OSError, ValueError):
          saved = {}
        if {k: saved.get(k) for k in note} == note:
          frames = np.load(npy, allow_pickle=False)
          expected = (-(-saved["num_frames"] // self.stride), self.size, self.size, 3)
          if frames.shape == expected and frames.dtype == np.uint8:
            sampled = SampledClip(frames, int(saved["num_frames"]))
    if sampled is None:
      sampled = decode_sampled(path, self.stride, self.size)
      self.decoded += 1
      if self.folder is not None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{path.stem}.tmp.npy"
        np.save(tmp, sampled.frames)
        os.replace(tmp, self.folder / f"{path.stem}.npy")
        (self.folder / f"{path.stem}.json").write_text(
            json.dumps(dict(note, num_frames=sampled.num_frames)))
    self._memory[key] = sampled
    return sampled


def window_positions(num_frames: int, stride: int, length: int, start: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Where a window's frames sit in a clip's sampled frames.

  The window starting at sampled frame `start` holds the clip's frames
  `cnn_lstm.clip_frame_indices(num_frames, stride, length, start=start * stride)`;
  frame i of the clip is sampled frame i // stride (a multiple of the stride, or, past
  the end, the last sampled frame).

  Returns:
    `(positions (length,) int, mask (length,) bool)`.
  """
  indices, mask = cnn_lstm.clip_frame_indices(num_frames, stride, length,
                                              start=start * stride)
  return np.asarray(indices) // stride, np.asarray(mask)


def eval_starts(num_sampled: int, length: int, count: int) -> list[int]:
  """Starts (in sampled frames) of the evaluation windows: `count` evenly spread from
  0 to the last start that fits the whole window (one window for a short clip)."""
  last = max(0, num_sampled - length)
  if last == 0:
    return [0]
  return sorted({int(s) for s in np.round(np.linspace(0, last, count))})


# ---------------------------------------------------------------------- augmentation


def augment_clip(frames: np.ndarray, shift: int = 0, contrast: float = 1.0
                 ) -> np.ndarray:
  """The report's augmentations of one window, the same for all its frames.

  Args:
    frames: (T, H, W, C) values in 0..255.
    shift: horizontal shift in pixels (positive: to the right); vacated columns are 0.
    contrast: factor f of `128 + f (v - 128)`, clipped to 0..255 (1: unchanged).

  Returns:
    (T, H, W, C) float32 in 0..255.
  """
  x = np.asarray(frames, np.float32)
  if contrast != 1.0:
    x = np.clip(128.0 + contrast * (x - 128.0), 0.0, 255.0)
  if shift:
    out = np.zeros_like(x)
    w = x.shape[2]
    if abs(shift) < w:
      if shift > 0:
        out[:, :, shift:] = x[:, :, :w - shift]
      else:
        out[:, :, :w + shift] = x[:, :, -shift:]
    x = out
  return x


def draw_augmentation(rng: np.random.Generator, augment, width: int
                      ) -> tuple[int, float]:
  """(shift in pixels, contrast factor) for one training window (module docstring)."""
  shift, factor = 0, 1.0
  lo, hi = augment.translate
  if hi > 0 and rng.random() < augment.prob:
    shift = int(round(rng.uniform(lo, hi) * width)) * (1 if rng.random() < 0.5 else -1)
  if augment.contrast > 0 and rng.random() < augment.prob:
    factor = float(rng.uniform(1.0 - augment.contrast, 1.0 + augment.contrast))
  return shift, factor


def normalize(frames: np.ndarray, mode: str) -> np.ndarray:
  """0..255 values -> model input: v / 255 ("unit"), or ImageNet-standardised."""
  x = np.asarray(frames, np.float32) / 255.0
  if mode == "imagenet":
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
  return x


# --------------------------------------------------------------------------- models


def build_classifier(model_config) -> tuple[Any, Any]:
  """(module, the CNN sub-module for `model.cnn_weights` or None) of `config.model`."""
  m = model_config
  if m.name == "cnn_lstm":
    module = cnn_lstm.CNNLSTM(num_classes=NUM_ACTIONS, cnn=m.cnn,
                              lstm_hidden=m.lstm_hidden, embed=m.embed,
                              head_hidden=m.head_hidden, dropout=m.dropout,
                              freeze_cnn=m.freeze_cnn)
    return module, cnn_lstm.frame_cnn(m.cnn, field="config.model.cnn")
  if m.name == "convlstm":
    return convlstm.ConvLSTMClassifier(
        num_classes=NUM_ACTIONS, features=m.convlstm_features,
        kernel_size=tuple(m.kernel_size), dropout=m.dropout), None
  raise ValueError(f"config.model.name={m.name!r}; expected one of {MODELS}")


def build_localiser(localiser_config) -> tuple[Any, Any]:
  """(HandLocaliser, its backbone module for `localiser.backbone_weights`)."""
  c = localiser_config
  module = hand_localiser.HandLocaliser(backbone=c.backbone, width_mult=c.width_mult)
  if c.backbone == "mobilenet_v2":
    from hhjax.models.backbones import mobilenet_v2  # noqa: PLC0415
    return module, mobilenet_v2.MobileNetV2(num_classes=None, width_mult=c.width_mult)
  return module, cnn_lstm.frame_cnn(c.backbone, field="config.localiser.backbone")


def row_name(config) -> str:
  """The model's row in the results table."""
  if config.task == "localise":
    return f"hand localiser ({config.localiser.backbone})"
  if config.task == "frames":
    f = config.frames
    name = f"ResNet-{f.backbone_depth}"
    name += f", TSM shift {f.temporal_shift:g}" if f.temporal_shift else ", no shift"
    if f.use_hand_stream:
      hand = f"ResNet-{f.hand_depth}" if f.hand_depth else "small CNN"
      name += f", + hand stream ({hand}, {f.fusion})"
    return name
  if config.model.name == "convlstm":
    return "ConvLSTM"
  return f"CNN-LSTM ({config.model.cnn} CNN)"


def load_backbone_weights(variables: Mapping[str, Any], submodule: str, cnn_name: str,
                          path: str, module, field: str) -> dict[str, Any]:
  """Puts a torchvision checkpoint into `variables[...][submodule]`.

  Args:
    variables: the model's {"params", ["batch_stats"]}.
    submodule: the Flax name of the CNN inside the model ("cnn", "backbone").
    cnn_name: its architecture ("alexnet", "resnet18", "mobilenet_v2", ...).
    path: the checkpoint (.pth / .pt with torch installed, or .npz).
    module: the CNN module as the model builds it (`num_classes=None`).
    field: the config field that named the file, for errors.

  Returns:
    New variables with the CNN's parameters (and BatchNorm statistics) replaced.

  Raises:
    FileNotFoundError: no such file. ValueError: no torchvision checkpoint fits this
      CNN, or its arrays differ from the model's.
  """
  from hhjax.models.backbones import torchvision_weights  # noqa: PLC0415
  if cnn_name not in torchvision_weights.MODEL_NAMES:
    raise ValueError(f"config.{field}: no torchvision checkpoint fits the "
                     f"{cnn_name!r} CNN (only {torchvision_weights.MODEL_NAMES})")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"{path} not found (config.{field})")
  loaded = torchvision_weights.load_file(cnn_name, path, model=module)
  out = {k: dict(v) for k, v in variables.items()}
  for collection in ("params", "batch_stats"):
    new = loaded.get(collection) or {}
    old = out.get(collection, {}).get(submodule)
    if not new and old is None:
      continue
    shapes = (jax.tree.map(np.shape, old) if old is not None else None,
              jax.tree.map(np.shape, new))
    if shapes[0] != shapes[1]:
      raise ValueError(f"config.{field}: the checkpoint's {collection} do not match "
                       f"the model's {submodule!r}")
    out[collection][submodule] = jax.tree.map(jnp.asarray, new)
  return out


# ------------------------------------------------------------------------- training


@functools.lru_cache(maxsize=None)
def _steps(model, task: str, learning_rate: float, lam: float):
  """(optimiser, jitted train step, jitted predict) for a model and task; cached, so
  that folds (and runs in one process) with the same shapes compile once."""
  tx = optax.adam(learning_rate)

  def loss_of(outputs, target):
    if task == "classify":
      return optax.softmax_cross_entropy_with_integer_labels(outputs, target).mean()
    if task == "frames":        # per-frame labels (B, T), frames past the clip masked
      labels, mask = target
      ce = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
      return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return hand_localiser.localiser_loss(outputs, target, lam)

  def variables_of(params, batch_stats):
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}

  @jax.jit
  def train_step(state, inputs, target, base_key, step):
    key = jax.random.fold_in(base_key, step)

    def loss_fn(params):
      outputs, updates = model.apply(variables_of(params, state["batch_stats"]),
                                     *inputs, train=True, rngs={"dropout": key},
                                     mutable=["batch_stats"])
      return loss_of(outputs, target), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    changes, opt = tx.update(grads, state["opt"], state["params"])
    return dict(params=optax.apply_updates(state["params"], changes),
                batch_stats=updates.get("batch_stats", state["batch_stats"]),
                opt=opt), loss

  @jax.jit
  def predict(variables, inputs):
    return model.apply(variables, *inputs, train=False)

  return tx, train_step, predict


def _epochs(rng: np.random.Generator, n: int, batch_size: int) -> Iterator[np.ndarray]:
  """Batches of indices 0..n-1: each epoch a fresh permutation, batches running on
  across epoch ends."""
  order = np.empty(0, np.int64)
  while True:
    while order.size < batch_size:
      order = np.concatenate([order, rng.permutation(n)])
    yield order[:batch_size]
    order = order[batch_size:]


@functools.lru_cache(maxsize=None)
def _jitted_init(model):
  return jax.jit(functools.partial(model.init, train=False))


def init_variables(model, key, inputs) -> dict[str, Any]:
  """`model.init` (inference mode) on example inputs, under jit (compiled once per
  model and input shape)."""
  return dict(_jitted_init(model)(key, *inputs))


def train(model, variables, task: str, config, batches: Iterator, key, *, label: str,
          log_path: pathlib.Path | None = None) -> dict[str, Any]:
  """Trains `variables` for `config.num_train_steps` steps of `batches`.

  Args:
    model: the Flax module.
    variables: its initial {"params", ["batch_stats"]}.
    task: "classify" (softmax cross-entropy) or "localise" (`localiser_loss`).
    config: the run's config.
    batches: yields `(inputs tuple, target)` NumPy batches.
    key: the dropout key; step s uses `fold_in(key, s)`.
    label: the start of every progress line (e.g. "fold 0").
    log_path: where to append one JSON line per log step.

  Returns:
    The trained variables.

  Raises:
    FloatingPointError: the loss is not finite at a log step, naming it.
  """
  tx, train_step, _ = _steps(model, task, float(config.learning_rate),
                             float(config.localiser.lam))
  state = dict(params=variables["params"], batch_stats=variables.get("batch_stats", {}),
               opt=tx.init(variables["params"]))
  n, every = config.num_train_steps, config.log_every_steps
  window, since, since_step = [], time.perf_counter(), 0
  log = open(log_path, "w") if log_path is not None else None
  try:
    for step in range(1, n + 1):
      inputs, target = next(batches)
      state, loss = train_step(state, inputs, target, key, step)
      window.append(loss)
      if step == 1:
        loss.block_until_ready()
        print(f"{label}: first step (compilation included) took "
              f"{time.perf_counter() - since:.1f}s", flush=True)
        window, since, since_step = [], time.perf_counter(), 1
        continue
      if step % every == 0 or step == n:
        mean = float(np.mean(jax.device_get(window)))
        if not math.isfinite(mean):
          raise FloatingPointError(
              f"{label}: the training loss is {mean} at step {step}")
        seconds = time.perf_counter() - since
        rate = (step - since_step) / max(seconds, 1e-9)
        print(f"{label} step {step}/{n}: loss {mean:.4f}  ({rate:.2f} steps/s, "
              f"{rate * config.batch_size:.1f} examples/s)", flush=True)
        if log is not None:
          log.write(json.dumps(dict(step=step, loss=mean, steps_per_s=rate)) + "\n")
        window, since, since_step = [], time.perf_counter(), step
  finally:
    if log is not None:
      log.close()
  out = {"params": state["params"]}
  if state["batch_stats"]:
    out["batch_stats"] = state["batch_stats"]
  return out


def predict_batches(model, variables, task: str, config, items: Sequence,
                    make_inputs) -> np.ndarray:
  """Model outputs for every item, in fixed-size batches (the last one padded by
  repeating its last item, so one shape compiles).

  Args:
    items: anything `make_inputs` turns into a batch's inputs tuple.
    make_inputs: a list of items -> inputs tuple of NumPy arrays.

  Returns:
    (len(items), ...) outputs.
  """
  _, _, predict = _steps(model, task, float(config.learning_rate),
                         float(config.localiser.lam))
  size = config.eval_batch_size
  outs = []
  for i in range(0, len(items), size):
    chunk = list(items[i:i + size])
    count = len(chunk)
    chunk += [chunk[-1]] * (size - count)
    outs.append(np.asarray(predict(variables, make_inputs(chunk)))[:count])
  return np.concatenate(outs, axis=0)


# ------------------------------------------------------------------------- classify


def handpose_vector(features: np.ndarray) -> np.ndarray:
  """(D, T) features -> (2 D,) mean then standard deviation over time."""
  features = np.asarray(features, np.float64)
  return np.concatenate([features.mean(axis=1), features.std(axis=1)])


def handpose_baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      C: float, seed: int) -> np.ndarray:
  """Predicted actions of a standardised multinomial logistic regression."""
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  scaler = StandardScaler().fit(train_x)
  clf = LogisticRegression(C=C, max_iter=5000, random_state=seed)
  clf.fit(scaler.transform(train_x), train_y)
  return clf.predict(scaler.transform(test_x)).astype(int)


def classification_scores(actions: Sequence[int], predicted: Sequence[int],
                          who_of: Mapping[int, int]) -> dict[str, float]:
  """Accuracy (%) on the actions and on their WHO classes (an action missing from
  `who_of` counts as a wrong WHO class)."""
  actions = np.asarray(actions)
  predicted = np.asarray(predicted)
  who = np.array([who_of[a] for a in actions])
  pred_who = np.array([who_of.get(int(p), -1) for p in predicted])
  return dict(acc_action=float(np.mean(actions == predicted) * 100),
              acc_who=float(np.mean(who == pred_who) * 100))


def _window_inputs(cache: FrameCache, paths, config):
  """items (clip name, start) -> (frames (B, L, S, S, 3), mask (B, L)) unaugmented."""
  def make(items):
    xs, masks = [], []
    for name, start in items:
      sampled = cache.get(paths[name])
      pos, mask = window_positions(sampled.num_frames, cache.stride,
                                   config.data.clip_length, start)
      xs.append(normalize(sampled.frames[pos], config.data.normalize))
      masks.append(mask)
    return np.stack(xs), np.stack(masks).astype(np.float32)
  return make


def _training_windows(cache: FrameCache, paths, train_clips, config, rng
                      ) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray]]:
  length = config.data.clip_length
  for rows in _epochs(rng, len(train_clips), config.batch_size):
    xs, masks, ys = [], [], []
    for r in rows:
      clip = train_clips[int(r)]
      sampled = cache.get(paths[clip.name])
      start = int(rng.integers(0, max(0, len(sampled.frames) - length) + 1))
      pos, mask = window_positions(sampled.num_frames, cache.stride, length, start)
      shift, factor = draw_augmentation(rng, config.augment, sampled.frames.shape[2])
      xs.append(normalize(augment_clip(sampled.frames[pos], shift, factor),
                          config.data.normalize))
      masks.append(mask)
      ys.append(clip.action - 1)
    yield ((np.stack(xs), np.stack(masks).astype(np.float32)),
           np.asarray(ys, np.int32))


def classify_fold(config, fold: int, held_out: Sequence[str], clips, paths,
                  cache: FrameCache, who_of: Mapping[int, int],
                  features: Mapping[str, np.ndarray] | None,
                  fold_dir: pathlib.Path) -> dict[str, Any]:
  """Trains and tests the classifier (and the hand-pose row) on one fold; writes
  `fold_dir/predictions.json`; returns the fold's result."""
  train_clips, test_clips = fold_clips(clips, fold, held_out)
  label = f"fold {fold}"
  print(f"{label}: held out {', '.join(held_out)} ({len(test_clips)} clips), "
        f"training on {len(train_clips)} clips", flush=True)
  t0 = time.perf_counter()
  model, cnn_module = build_classifier(config.model)
  length, size = config.data.clip_length, config.data.frame_size
  fold_key = jax.random.fold_in(jax.random.key(config.seed), fold)
  init_key, dropout_key = jax.random.split(fold_key)
  dummy = (np.zeros((1, length, size, size, 3), np.float32),
           np.ones((1, length), np.float32))
  variables = init_variables(model, init_key, dummy)
  if config.model.cnn_weights:
    if config.model.name != "cnn_lstm":
      raise ValueError("config.model.cnn_weights: only model.name='cnn_lstm' has a CNN")
    variables = load_backbone_weights(variables, "cnn", config.model.cnn,
                                      config.model.cnn_weights, cnn_module,
                                      "model.cnn_weights")
  rng = np.random.default_rng([config.seed, fold])
  batches = _training_windows(cache, paths, train_clips, config, rng)
  variables = train(model, variables, "classify", config, batches, dropout_key,
                    label=label, log_path=fold_dir / "train_log.jsonl")
  train_seconds = time.perf_counter() - t0

  items, owner = [], []
  for i, clip in enumerate(test_clips):
    sampled = cache.get(paths[clip.name])
    for start in eval_starts(len(sampled.frames), length, config.data.eval_windows):
      items.append((clip.name, start))
      owner.append(i)
  logits = predict_batches(model, variables, "classify", config, items,
                           _window_inputs(cache, paths, config))
  owner = np.asarray(owner)
  clip_logits = np.stack([logits[owner == i].mean(axis=0)
                          for i in range(len(test_clips))])      # (clips, 12)
  predicted = clip_logits.argmax(axis=1) + 1

  def rows_of(pred, with_logits=None):
    out = []
    for i, clip in enumerate(test_clips):
      row = dict(clip=clip.name, subject=clip.subject, action=clip.action,
                 who_step=clip.who_step, pred_action=int(pred[i]),
                 pred_who=who_of.get(int(pred[i]), -1))
      if with_logits is not None:
        row["logits"] = [float(v) for v in with_logits[i]]
        row["windows"] = int(np.sum(owner == i))
      out.append(row)
    return out

  actions = [c.action for c in test_clips]
  results = {"model": classification_scores(actions, predicted, who_of)}
  predictions = {"model": rows_of(predicted, clip_logits)}
  if features is not None:
    pred = handpose_baseline(
        np.stack([handpose_vector(features[c.name]) for c in train_clips]),
        np.asarray([c.action for c in train_clips]),
        np.stack([handpose_vector(features[c.name]) for c in test_clips]),
        config.baseline.C, config.seed)
    results["handpose"] = classification_scores(actions, pred, who_of)
    predictions["handpose"] = rows_of(pred)
  (fold_dir / "predictions.json").write_text(json.dumps(predictions, indent=1))
  return dict(fold=fold, test_people=list(held_out),
              train_people=sorted({c.subject for c in train_clips}),
              train_clips=len(train_clips), test_clips=len(test_clips),
              eval_windows=len(items), train_seconds=train_seconds, results=results)


# ------------------------------------------------------------------------- localise


def localiser_frames(clips, paths, cache: FrameCache,
                     features: Mapping[str, np.ndarray]):
  """Per clip: (sampled frames, targets (n, 6), original frame indices (n,)).

  Raises:
    ClipsError: naming every clip whose feature count differs from its decoded frame
      count (the frame and the feature row would not be the same frame).
  """
  check_frame_counts(clips, paths, cache, features)
  out = {}
  for clip in clips:
    sampled = cache.get(paths[clip.name])
    index = np.arange(0, sampled.num_frames, cache.stride)
    targets = hand_localiser.labels_from_landmarks(features[clip.name][:, index].T)
    out[clip.name] = (sampled.frames, targets, index)
  return out


def check_frame_counts(clips, paths, cache: FrameCache,
                       features: Mapping[str, np.ndarray]) -> None:
  """Raises ClipsError naming every clip whose decoded frame count differs from its
  hand-pose feature count (a frame and its feature row would not be the same frame)."""
  _raise_count_mismatches([(clip.name, cache.get(paths[clip.name]).num_frames,
                            features[clip.name].shape[1]) for clip in clips])


def _raise_count_mismatches(counts: Sequence[tuple[str, int, int]]) -> None:
  """ClipsError naming every (clip, decoded frames, feature columns) that differ."""
  bad = [f"{name} ({decoded} decoded frames, {columns} feature columns)"
         for name, decoded, columns in counts if decoded != columns]
  if bad:
    raise compose.ClipsError("frame count and hand-pose feature count differ for "
                             "clip(s): " + "; ".join(bad))


def constant_localiser(targets: np.ndarray) -> np.ndarray:
  """(6,) prediction from training targets: per hand, its presence rate and its mean
  position over the frames that show it (the centre if none does)."""
  t = np.asarray(targets, np.float64).reshape(-1, hand_localiser.NUM_HANDS, 3)
  out = np.zeros((hand_localiser.NUM_HANDS, 3))
  for h in range(hand_localiser.NUM_HANDS):
    present = t[:, h, 0] > 0.5
    out[h, 0] = present.mean() if len(t) else 0.0
    out[h, 1:] = t[present, h, 1:].mean(axis=0) if present.any() else 0.5
  return out.reshape(-1).astype(np.float32)


def f1_scores(pred: np.ndarray, target: np.ndarray, thresholds) -> dict[str, float]:
  """{"f1@<T_L>": F1 in percent} for every threshold."""
  return {f"f1@{t:g}": hand_localiser.f1_at_threshold(pred, target, float(t))
          for t in thresholds}


def localise_fold(config, fold: int, held_out: Sequence[str], clips, data,
                  fold_dir: pathlib.Path) -> dict[str, Any]:
  """Trains and tests the hand localiser on one fold; writes
  `fold_dir/predictions.npz`; returns the fold's result."""
  train_clips, test_clips = fold_clips(clips, fold, held_out)
  label = f"fold {fold}"
  train_frames = np.concatenate([data[c.name][0] for c in train_clips])
  train_targets = np.concatenate([data[c.name][1] for c in train_clips])
  print(f"{label}: held out {', '.join(held_out)} ({len(test_clips)} clips), "
        f"training on {len(train_frames)} frames of {len(train_clips)} clips",
        flush=True)
  t0 = time.perf_counter()
  model, backbone = build_localiser(config.localiser)
  size = config.data.frame_size
  fold_key = jax.random.fold_in(jax.random.key(config.seed), fold)
  init_key, dropout_key = jax.random.split(fold_key)
  variables = init_variables(model, init_key,
                             (np.zeros((1, size, size, 3), np.float32),))
  if config.localiser.backbone_weights:
    variables = load_backbone_weights(variables, "backbone", config.localiser.backbone,
                                      config.localiser.backbone_weights, backbone,
                                      "localiser.backbone_weights")
  rng = np.random.default_rng([config.seed, fold])
  mode = config.data.normalize

  def batches():
    for rows in _epochs(rng, len(train_frames), config.batch_size):
      yield (normalize(train_frames[rows], mode),), train_targets[rows]

  variables = train(model, variables, "localise", config, batches(), dropout_key,
                    label=label, log_path=fold_dir / "train_log.jsonl")
  train_seconds = time.perf_counter() - t0

  test_frames = np.concatenate([data[c.name][0] for c in test_clips])
  test_targets = np.concatenate([data[c.name][1] for c in test_clips])
  pred = predict_batches(model, variables, "localise", config,
                         np.arange(len(test_frames)),
                         lambda rows: (normalize(test_frames[np.asarray(rows)], mode),))
  constant = np.broadcast_to(constant_localiser(train_targets), test_targets.shape)
  thresholds = config.localiser.thresholds
  results = {"model": f1_scores(pred, test_targets, thresholds),
             "constant": f1_scores(constant, test_targets, thresholds)}
  np.savez(fold_dir / "predictions.npz",
           clip=np.concatenate([[c.name] * len(data[c.name][0]) for c in test_clips]),
           frame=np.concatenate([data[c.name][2] for c in test_clips]),
           pred=pred.astype(np.float32), target=test_targets.astype(np.float32),
           constant=np.asarray(constant, np.float32))
  return dict(fold=fold, test_people=list(held_out),
              train_people=sorted({c.subject for c in train_clips}),
              train_clips=len(train_clips), test_clips=len(test_clips),
              train_frames=int(len(train_frames)), test_frames=int(len(test_frames)),
              train_seconds=train_seconds, results=results)


# --------------------------------------------------------------------------- frames


class HandInputs(NamedTuple):
  """A clip's hand-stream inputs at its sampled frames (frames 0, stride, ...).

  Attributes:
    patches: (n, 2, hand_size, hand_size, 3) uint8 cut-outs of the original frames,
      slot 0 the left hand; zeros where a hand is absent or outside the frame.
    boxes: (n, 2, 4) float32 `(x, y, w, h)` of each cut-out's window in the whole
      frame, normalised to 0..1 across its width and height.
    present: (n, 2) bool, the hand-pose presence of each slot.
  """

  patches: np.ndarray
  boxes: np.ndarray
  present: np.ndarray


def frame_boxes(pixel_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
  """Cut-out windows `(x0, y0, w_c, h_c)` in original pixels -> their place on the
  frame stream's grid, `(x0 / W, y0 / H, w_c / W, h_c / H)`.

  This is the supplement's eq. 2-3 (`x = (x_hand - x_c) / C_s`,
  `w = (w_c / H)(S / C_s)`) when the backbone's input is the whole frame: no crop
  (x_c = y_c = 0), and the frame resized to a square, so each axis has its own scale
  (C_s / S = W across, H down)."""
  b = np.asarray(pixel_boxes, np.float32)
  scale = np.array([width, height, width, height], np.float32)
  return b / scale


def decode_hand_inputs(path: str | os.PathLike, stride: int, hand_features: np.ndarray,
                       crop: int, size: int, name: str) -> HandInputs | int:
  """The hand-stream inputs of one clip, from its original frames and its hand-pose
  features (`hhjax.handguided.hand_positions`: a hand's centre is the mean of its
  landmarks). Returns the decoded frame count instead when it differs from the
  features' column count (the caller names the clip)."""
  from hhjax import handguided  # noqa: PLC0415
  centres, present = handguided.hand_positions(hand_features, name)
  patches, boxes, seen, shape = [], [], 0, None
  for chunk in video_lib.iter_frames(path, short_side=None, crop=None, chunk_size=64):
    shape = chunk.shape[1:3]
    index = np.arange(seen + (-seen) % stride, seen + len(chunk), stride)
    index = index[index < len(centres)]                 # a longer video: counted below
    if index.size:
      p_, b_ = handguided.hand_cut_outs(chunk[index - seen], centres[index], crop, size)
      patches.append(p_)
      boxes.append(b_)
    seen += len(chunk)
  if seen != len(centres):
    return seen
  height, width = shape
  return HandInputs(np.concatenate(patches), frame_boxes(np.concatenate(boxes),
                                                         width, height),
                    present[::stride])


def load_hand_inputs(clips, paths, features: Mapping[str, np.ndarray], config
                     ) -> dict[str, HandInputs]:
  """Clip name -> `HandInputs` (decoded afresh on every run: no cache to go stale).

  Raises:
    ClipsError: naming every clip whose decoded frame count differs from its
      hand-pose feature count.
  """
  out, counts = {}, []
  for clip in clips:
    got = decode_hand_inputs(paths[clip.name], config.data.frame_stride,
                             features[clip.name], config.frames.hand_crop,
                             config.frames.hand_size, clip.name)
    if isinstance(got, HandInputs):
      out[clip.name] = got
    else:
      counts.append((clip.name, got, features[clip.name].shape[1]))
  _raise_count_mismatches(counts)
  return out


def build_frame_model(config) -> hand_guided.HandGuidedTSM:
  """`config.frames` as a HandGuidedTSM over windows of `data.clip_length` frames."""
  f = config.frames
  return hand_guided.HandGuidedTSM(
      num_classes=NUM_ACTIONS, backbone_depth=f.backbone_depth, hand_depth=f.hand_depth,
      temporal_shift=f.temporal_shift, use_hand_stream=f.use_hand_stream,
      num_segments=config.data.clip_length, fusion=f.fusion, dropout=f.dropout)


def load_frame_weights(variables: Mapping[str, Any], frames_config) -> dict[str, Any]:
  """`frames.backbone_weights` and `frames.hand_weights` (torchvision ResNet
  checkpoints) put into the two streams of a HandGuidedTSM's variables.

  Raises:
    ValueError: hand weights without a ResNet hand stream, or a checkpoint that does
      not fit (`load_backbone_weights`).
  """
  from hhjax.models.backbones import resnet  # noqa: PLC0415
  f = frames_config
  out = dict(variables)
  for field, submodule, depth in (("backbone_weights", "backbone", f.backbone_depth),
                                  ("hand_weights", "hand", f.hand_depth)):
    path = f.get(field, "")
    if not path:
      continue
    if submodule == "hand" and not (f.use_hand_stream and f.hand_depth):
      raise ValueError("config.frames.hand_weights needs a ResNet hand stream "
                       "(frames.use_hand_stream=True, frames.hand_depth > 0)")
    out = load_backbone_weights(out, submodule, f"resnet{depth}", path,
                                resnet.ResNet(depth), f"frames.{field}")
  return out


def _frame_window_inputs(cache: FrameCache, hands: Mapping[str, HandInputs] | None,
                         paths, config):
  """items (clip name, start, contrast factor) -> (inputs tuple, mask (B, L)):
  frames (B, L, S, S, 3) and, with the hand stream, cut-outs (B, L, 2, s, s, 3),
  boxes (B, L, 2, 4) and presence (B, L, 2); the contrast change applies to both."""
  mode = config.data.normalize

  def make(items):
    frames, patches, boxes, present, masks = [], [], [], [], []
    for name, start, factor in items:
      sampled = cache.get(paths[name])
      pos, mask = window_positions(sampled.num_frames, cache.stride,
                                   config.data.clip_length, start)
      frames.append(normalize(augment_clip(sampled.frames[pos], 0, factor), mode))
      if hands is not None:
        h = hands[name]
        cut = h.patches[pos]                                       # (L, 2, s, s, 3)
        flat = augment_clip(cut.reshape((-1,) + cut.shape[2:]), 0, factor)
        patches.append(normalize(flat, mode).reshape(cut.shape))
        boxes.append(h.boxes[pos])
        present.append(h.present[pos])
      masks.append(mask)
    inputs = (np.stack(frames),)
    if hands is not None:
      inputs += (np.stack(patches), np.stack(boxes),
                 np.stack(present).astype(np.float32))
    return inputs, np.stack(masks).astype(np.float32)
  return make


def _frame_training_windows(make, cache: FrameCache, paths, train_clips, config, rng):
  """Batches of training windows at random starts, each with the contrast change of
  `augment` (no shift: it would move the hands off their boxes), labelled per frame
  with the clip's action."""
  length = config.data.clip_length
  contrast_only = ml_collections.ConfigDict(dict(
      prob=config.augment.prob, translate=(0.0, 0.0), contrast=config.augment.contrast))
  for rows in _epochs(rng, len(train_clips), config.batch_size):
    items, labels = [], []
    for r in rows:
      clip = train_clips[int(r)]
      n = len(cache.get(paths[clip.name]).frames)
      start = int(rng.integers(0, max(0, n - length) + 1))
      _, factor = draw_augmentation(rng, contrast_only, 0)
      items.append((clip.name, start, factor))
      labels.append(np.full(length, clip.action - 1, np.int32))
    inputs, mask = make(items)
    yield inputs, (np.stack(labels), mask)


def frames_fold(config, fold: int, held_out: Sequence[str], clips, paths,
                cache: FrameCache, hands: Mapping[str, HandInputs] | None,
                who_of: Mapping[int, int], features: Mapping[str, np.ndarray] | None,
                fold_dir: pathlib.Path) -> dict[str, Any]:
  """Trains and tests the per-frame step classifier (and the per-frame hand-pose row)
  on one fold; writes `fold_dir/predictions.npz`; returns the fold's result."""
  train_clips, test_clips = fold_clips(clips, fold, held_out)
  label = f"fold {fold}"
  print(f"{label}: held out {', '.join(held_out)} ({len(test_clips)} clips), "
        f"training on {len(train_clips)} clips", flush=True)
  t0 = time.perf_counter()
  model = build_frame_model(config)
  make = _frame_window_inputs(cache, hands, paths, config)
  first = train_clips[0].name
  fold_key = jax.random.fold_in(jax.random.key(config.seed), fold)
  init_key, dropout_key = jax.random.split(fold_key)
  variables = init_variables(model, init_key, make([(first, 0, 1.0)])[0])
  variables = load_frame_weights(variables, config.frames)
  rng = np.random.default_rng([config.seed, fold])
  batches = _frame_training_windows(make, cache, paths, train_clips, config, rng)
  variables = train(model, variables, "frames", config, batches, dropout_key,
                    label=label, log_path=fold_dir / "train_log.jsonl")
  train_seconds = time.perf_counter() - t0

  # Every sampled frame of a held-out clip once: windows at 0, L, 2L, ...
  length = config.data.clip_length
  items = [(c.name, start, 1.0) for c in test_clips
           for start in range(0, len(cache.get(paths[c.name]).frames), length)]
  logits = predict_batches(model, variables, "frames", config, items,
                           lambda chunk: make(chunk)[0])          # (windows, L, 12)
  masks = np.stack([window_positions(cache.get(paths[name]).num_frames, cache.stride,
                                     length, start)[1] for name, start, _ in items])
  pred = logits.argmax(-1)[masks] + 1                             # (frames,)
  clip_of = np.concatenate([[name] * int(m.sum()) for (name, _, _), m
                            in zip(items, masks)])
  action_of = {c.name: c.action for c in test_clips}
  actions = np.array([action_of[n] for n in clip_of])
  frame_index = np.concatenate([
      (start + np.arange(int(m.sum()))) * cache.stride for (_, start, _), m
      in zip(items, masks)])
  results = {"model": classification_scores(actions, pred, who_of)}
  saved = dict(clip=clip_of, frame=frame_index, action=actions, model=pred)
  if features is not None:
    def per_frame(cs):
      x = [features[c.name][:, ::cache.stride].T for c in cs]
      y = [np.full(len(v), c.action) for c, v in zip(cs, x)]
      return np.concatenate(x), np.concatenate(y)
    # Frames 0, stride, ... of each clip, in the model's order (`check_frame_counts`).
    train_x, train_y = per_frame(train_clips)
    test_x, _ = per_frame(test_clips)
    base_pred = handpose_baseline(train_x, train_y, test_x, config.baseline.C,
                                  config.seed)
    results["handpose_frame"] = classification_scores(actions, base_pred, who_of)
    saved["handpose_frame"] = base_pred
  np.savez(fold_dir / "predictions.npz", **saved)
  return dict(fold=fold, test_people=list(held_out),
              train_people=sorted({c.subject for c in train_clips}),
              train_clips=len(train_clips), test_clips=len(test_clips),
              test_frames=int(len(pred)), train_seconds=train_seconds,
              results=results)


# -------------------------------------------------------------------------- reports


def mean_sd(folds: Sequence[dict], row: str) -> dict[str, dict[str, float | None]]:
  """{metric: {"mean", "sd" (sample; None for one fold), "folds"}} of one row."""
  out = {}
  for metric in folds[0]["results"][row]:
    values = np.array([f["results"][row][metric] for f in folds], float)
    out[metric] = dict(mean=float(values.mean()),
                       sd=float(values.std(ddof=1)) if len(values) > 1 else None,
                       folds=int(len(values)))
  return out


def row_names(config, rows: Sequence[str]) -> dict[str, str]:
  """Row id -> the name the tables print."""
  names = dict(model=row_name(config),
               handpose="hand pose (mean + sd over time) + logistic regression",
               handpose_frame="hand pose per frame + logistic regression",
               constant="constant (training presence rate, mean position)")
  return {r: names[r] for r in rows}


def format_markdown(summary: Mapping[str, Any]) -> str:
  """results.md: the settings, then one table row per method and metric."""
  config = summary["config"]
  folds = summary["folds"]
  d = config["data"]
  if summary["task"] == "classify":
    title = "Clip classification (12 actions, 7 WHO classes)"
    unit = "accuracy (%) on the held-out people's clips"
    labels = dict(CLASSIFY_METRICS)
    setting = (f"frame stride {d['frame_stride']}, {d['clip_length']} frames per "
               f"window, {d['frame_size']}x{d['frame_size']}; evaluation: "
               f"{d['eval_windows']} fixed windows per clip, logits averaged")
  elif summary["task"] == "frames":
    f = config["frames"]
    title = "Per-frame step classification (12 actions, 7 WHO classes)"
    unit = "accuracy (%) on every sampled frame of the held-out people's clips"
    labels = dict(CLASSIFY_METRICS)
    setting = (f"frame stride {d['frame_stride']}, windows of {d['clip_length']} "
               f"frames, {d['frame_size']}x{d['frame_size']} whole frames, hand "
               f"cut-outs {f['hand_crop']} px -> {f['hand_size']}x{f['hand_size']}")
  else:
    title = "Hand localisation (F1@T_L, machine-made targets from hand pose)"
    unit = "F1@T_L (%) on every sampled frame of the held-out people"
    labels = {f"f1@{t:g}": f"F1@{t:g}" for t in config["localiser"]["thresholds"]}
    setting = (f"frame stride {d['frame_stride']}, "
               f"{d['frame_size']}x{d['frame_size']}")
  lines = [f"# {title}", "",
           f"Leave-people-out over {d['num_folds']} folds"
           f"{'' if len(folds) == d['num_folds'] else f' ({len(folds)} in this table)'}; "
           f"{unit}; {setting}; {config['num_train_steps']} steps of batch "
           f"{config['batch_size']}, Adam lr {config['learning_rate']:g}, seed "
           f"{config['seed']}.", ""]
  note = provenance.mixed_note({f"fold {f['fold']}": f.get("code", provenance.UNRECORDED)
                                for f in folds})
  lines += [f"**Warning: {note}.**" if note else
            f"Code: {folds[0].get('code', provenance.UNRECORDED)}.", ""]
  head = ["Method", "Metric"] + [
      f"fold {f['fold']} ({', '.join(f['test_people'])})" for f in folds] + [
      "mean ± sd"]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row, name in summary["rows"].items():
    for metric, label in labels.items():
      stats = summary["mean_sd"][row][metric]
      sd = "-" if stats["sd"] is None else f"{stats['sd']:.1f}"
      cells = [name, label] + [f"{f['results'][row][metric]:.1f}" for f in folds] + [
          f"{stats['mean']:.1f} ± {sd}"]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_results(workdir: pathlib.Path, config, folds: Sequence[dict]
                  ) -> dict[str, Any]:
  """Writes results.json and results.md; returns the summary."""
  rows = list(folds[0]["results"])
  summary = dict(task=config.task, rows=row_names(config, rows), folds=list(folds),
                 mean_sd={r: mean_sd(folds, r) for r in rows},
                 config=config.to_dict())
  (workdir / "results.json").write_text(json.dumps(summary, indent=2))
  (workdir / "results.md").write_text(format_markdown(summary))
  return summary


# Fields that change neither what a fold trains nor what it is scored on: a fold run
# with other values of these is still read back into the table.
RESULT_SAFE_FIELDS = ("data.cache_dir", "log_every_steps", "eval_batch_size",
                      "compilation_cache_dir")
FOLD_RESULT_FILE = "result.json"


def settings_conflicts(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
  """`field: saved -> now` for every config field whose change alters a fold's result
  (all but `RESULT_SAFE_FIELDS`)."""
  a, b = config_lib.flatten(saved), config_lib.flatten(now)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b))
          if k not in RESULT_SAFE_FIELDS and a.get(k, "<absent>") != b.get(k, "<absent>")]


def write_fold_result(fold_dir: pathlib.Path, config, result: Mapping[str, Any]) -> None:
  """`fold_dir/result.json`: the fold's result with the config and the code that made
  it (`hhjax.provenance.code_version`)."""
  path = fold_dir / FOLD_RESULT_FILE
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(dict(result=result, config=json.loads(
      config.to_json_best_effort()), code=provenance.code_version()), indent=2))
  os.replace(tmp, path)


def earlier_folds(workdir: pathlib.Path, config, groups: Sequence[Sequence[str]],
                  skip: Sequence[int]) -> dict[int, dict[str, Any]]:
  """Finished folds in `workdir` (not in `skip`) that earlier runs made with the same
  settings and held-out people: {fold: result}. Each fold found prints one line:
  read back, or left out of the table with the fields that differ."""
  found = {}
  now = json.loads(config.to_json_best_effort())
  for k, people in enumerate(groups):
    path = workdir / f"fold{k}" / FOLD_RESULT_FILE
    if k in skip or not path.is_file():
      continue
    try:
      saved = json.loads(path.read_text())
      result, saved_config = saved["result"], saved["config"]
    except (ValueError, KeyError, TypeError) as e:
      print(f"fold {k}: {path} is not a fold result ({e}); left out of the table",
            flush=True)
      continue
    conflicts = settings_conflicts(saved_config, now)
    if list(result.get("test_people", ())) != list(people):
      conflicts.append(f"held-out people: {result.get('test_people')} -> {list(people)}")
    if conflicts:
      print(f"fold {k}: {path} was run with other settings, left out of the table: "
            + "; ".join(conflicts[:6]) + (" ..." if len(conflicts) > 6 else ""),
            flush=True)
      continue
    found[k] = dict(result, code=provenance.code_label(saved.get("code")))
    print(f"fold {k}: read back from {path} (same settings; code "
          f"{found[k]['code']})", flush=True)
  return found


def _fold_line(result: Mapping[str, Any], names: Mapping[str, str]) -> str:
  parts = []
  for row, metrics in result["results"].items():
    parts.append(f"{names[row]}: " + ", ".join(
        f"{k} {v:.1f}" for k, v in metrics.items()))
  return f"fold {result['fold']} result: " + " | ".join(parts)


# ----------------------------------------------------------------------------- run


def run(config, workdir: str | os.PathLike, folds: Sequence[int] | None = None
        ) -> dict[str, Any]:
  """Runs `config.task` on the folds (all by default); writes the results in
  `workdir` and returns the summary that results.json holds.

  Raises:
    ValueError: a config field cannot work (named). FileNotFoundError: the clip list,
      a clip or a checkpoint is missing. ClipsError: the clip list or the features
      cannot be used (naming the clips). VideoError: a clip cannot be decoded.
  """
  check_config(config)
  # The code is read now, before anything trains: a commit made while the run goes on
  # is not the code this process runs.
  code = provenance.code_label(provenance.code_version())
  workdir = pathlib.Path(workdir)
  clips = read_clip_list(config.data.clips_csv)
  check_actions(clips)
  who_of = who_mapping(clips)
  groups = people_folds(clips, config.data.num_folds)
  chosen = list(range(len(groups))) if folds is None else [int(k) for k in folds]
  bad = [k for k in chosen if not 0 <= k < len(groups)]
  if bad or not chosen:
    raise ValueError(f"config: folds {bad or chosen} are not among 0..{len(groups) - 1}"
                     " (--folds)")
  videos_dir = config.data.videos_dir or pathlib.Path(config.data.clips_csv).parent
  paths = clip_paths(clips, videos_dir)
  features = None
  if config.task == "localise" or config.baseline.handpose or (
      config.task == "frames" and config.frames.use_hand_stream):
    features = load_features(clips, config.data.features_dir)
  workdir.mkdir(parents=True, exist_ok=True)
  cache = FrameCache(config.data.cache_dir or workdir / "cache",
                     config.data.frame_stride, config.data.frame_size)
  t0 = time.perf_counter()
  for clip in clips:
    cache.get(paths[clip.name])
  print(f"frames: {len(clips)} clips, frame stride {cache.stride}, "
        f"{cache.size}x{cache.size} ({cache.decoded} decoded, the rest from "
        f"{cache.folder}; {time.perf_counter() - t0:.1f}s)", flush=True)
  data = (localiser_frames(clips, paths, cache, features)
          if config.task == "localise" else None)
  hands = None
  if config.task == "frames":
    if features is not None:
      check_frame_counts(clips, paths, cache, features)
    if config.frames.use_hand_stream:
      t0 = time.perf_counter()
      hands = load_hand_inputs(clips, paths, features, config)
      print(f"hand cut-outs: {len(hands)} clips, {config.frames.hand_crop} px -> "
            f"{config.frames.hand_size}x{config.frames.hand_size} "
            f"({time.perf_counter() - t0:.1f}s)", flush=True)
  names = None
  results = []
  for k in chosen:
    fold_dir = workdir / f"fold{k}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    if config.task == "classify":
      result = classify_fold(config, k, groups[k], clips, paths, cache, who_of,
                             features if config.baseline.handpose else None, fold_dir)
    elif config.task == "frames":
      result = frames_fold(config, k, groups[k], clips, paths, cache, hands, who_of,
                           features if config.baseline.handpose else None, fold_dir)
    else:
      result = localise_fold(config, k, groups[k], clips, data, fold_dir)
    result["code"] = code
    write_fold_result(fold_dir, config, result)
    names = names or row_names(config, list(result["results"]))
    print(_fold_line(result, names), flush=True)
    results.append(result)
  earlier = earlier_folds(workdir, config, groups, chosen)
  if earlier:
    results = sorted([*results, *earlier.values()], key=lambda r: r["fold"])
  summary = write_results(workdir, config, results)
  print(format_markdown(summary), flush=True)
  return summary


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags; defined only when run as a program."""
  cli.define_config_flags("Where the results, predictions and frame cache go.")
  flags.DEFINE_list("folds", None, "Only these folds, 0-based (default: all).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  folds = None
  if FLAGS.folds is not None:
    try:
      folds = [int(k) for k in FLAGS.folds]
    except ValueError:
      sys.exit(f"error: --folds {','.join(FLAGS.folds)}: expected fold numbers")
  from hhjax.training import loop  # noqa: PLC0415
  with cli.user_errors():
    try:
      loop.setup_compilation_cache(FLAGS.config)
      run(FLAGS.config, FLAGS.workdir, folds)
    except (compose.ClipsError, video_lib.VideoError) as e:
      sys.exit(f"error: {e}")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
