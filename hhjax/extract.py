"""Per-frame features for the HHA300 manual layout: two-stream I3D, hand pose, or
hand-guided ResNet features.

    python -m hhjax.extract --videos DIR --out DIR \\
        --rgb-weights weights/i3d_rgb_imagenet.npz --flow-weights weights/i3d_flow_imagenet.npz
    python -m hhjax.extract --stream handpose --videos DIR --out DIR
    python -m hhjax.extract --stream hand_guided --videos DIR --out DIR2 \\
        --hands-from DIR --resnet-weights weights/resnet18.pth

The second form writes the MediaPipe hand-pose stream instead, (212, T) per video; its
layout is in `hhjax.handpose` (needs `pip install "hhjax[handpose]"`). The third writes
hand-guided ResNet features, a frame stream and two hand cut-out streams placed by the
hand-pose features of DIR, (F_b + 2 F_h, T) per video; its layout is in
`hhjax.handguided`. Everything below is about the default `--stream i3d`; resuming,
atomic writes and failure reports are the same for all three.

writes `<out>/features/<video>.npy`, a (2048, T) float32 array with one column per decoded
frame (MS-TCN convention): rows 0-1023 are the RGB stream's Mixed_5c features, rows
1024-2047 the flow stream's.
With `--grid G` each stream keeps a G x G grid of Mixed_5c cells instead of one pooled
vector (`i3d.grid_features`): (2 G^2 1024, T), the RGB stream's G^2 cells (row-major,
1024 values each) then the flow stream's; the locations the spatial-attention RNN's
`tokens="grid"` attends over (`grid_size=G*G` with `dataset.streams="rgb"`).

Per frame t the inputs are the resized, centre-cropped RGB frame (`hhjax.video`, values
mapped to [-1, 1]) and the TV-L1 flow from frame t to frame t+1 (grey levels, `hhjax.ops.flow`,
clipped to +-20 px and mapped to [-1, 1]); the last frame repeats the previous frame's
flow (a one-frame video gets zero flow).

Modes (how per-frame features come out of a network whose features have temporal stride 8):

* `dense`: frame t's feature is I3D on a window of `window` frames centred on t, averaged
  over the window's T' = ceil(window/8) - 1 output positions. "Centred" means the mean
  receptive-field centre of those positions is t (`dense_offset`): frames t-10 .. t+10
  for the default 21; t-6 .. t+2 for 9, whose single output is centred on its 7th frame.
  Indices outside the video are clamped, i.e. edge frames are repeated.
  Costs about `window` frames of network per frame.
* `fast`: the video runs through I3D fully convolutionally in overlapping chunks of
  `chunk` frames. The temporal receptive-field centre of output position j of a chunk
  starting at frame a (chunk length a multiple of 8) is frame a + 8j + 9 (see
  `feature_centres`). Chunks start at a_k = a_0 + k (chunk - 2 margin) and keep only the
  positions whose centre lies in [a_k + margin, a_k + chunk - margin), so every kept
  feature has at least `margin` frames of real context on each side (except at the video's
  ends, where frames are repeated) and the kept centres form the grid 0, 8, 16, ... .
  Frame t then takes the linear interpolation between the features centred at 8 floor(t/8)
  and 8 floor(t/8) + 8. Costs about chunk / (chunk - 2 margin) frames of network per frame.

Provenance and reruns: `<out>/extract_manifest.json` (beside `features/`) records the
settings that determine the values (`provenance`: stream, weights by SHA-256 or
"random:<seed>", mode and its window or chunk/margin, fps, frame limit, resize/crop and
flow settings; for handpose the MediaPipe model, thresholds and version; the hhjax
version) and, per video written, its source file's name, size and mtime and the output's
frame count. A rerun whose settings differ from the recorded ones (the hhjax version
counts up to its minor number), or that finds .npy files the manifest does not list,
refuses with exit status 2 and names each differing field or unlisted file; `--overwrite`
deletes the old features and extracts every video afresh. With equal settings, videos
listed with an existing .npy are skipped, unless their source file's size or mtime
changed, and those are extracted again. Two videos with the same stem (a.mp4 and a.avi)
would write the same `<stem>.npy`: that is an error (status 2) before anything is
extracted.

Outputs are written to a temporary file; the main process (also with handpose
`--workers`) then lists the video in the manifest, itself written atomically, and renames
the file into place, so an interrupted run leaves no partial .npy and no .npy without its
entry, and the next run resumes where it stopped. A video that cannot be decoded is
reported by name, the others are still processed, and the command exits with status 1
and a summary of the failures.

Without weight files the command refuses to run unless `--random-weights` is given:
random-weight features are reproducible (seeded) but carry no information, which is only
useful for testing the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hhjax import video as video_lib
from hhjax.models.backbones import i3d
from hhjax.ops import flow as flow_ops

__all__ = [
  "ExtractConfig",
  "FeatureExtractor",
  "MANIFEST_FILE",
  "VIDEO_EXTENSIONS",
  "feature_centres",
  "find_videos",
  "main",
  "plan_run",
  "provenance",
  "random_variables",
  "run_windows",
  "settings_differences",
]

STREAMS = ("i3d", "handpose", "hand_guided")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FEATURE_DIM = i3d.FEATURE_DIM  # per stream
FEATURES_DIR = "features"
# Temporal layers of InceptionI3d with stride > 1, in order: (kernel, stride). All other
# temporal kernels have stride 1 and symmetric SAME padding, so they keep centres fixed.
_STRIDED_TEMPORAL = ((7, 2), (3, 2), (2, 2))  # Conv3d_1a_7x7, MaxPool3d_4a, MaxPool3d_5a
_FINAL_POOL = 2  # the 2x7x7 VALID average pool (temporal width 2, stride 1)


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
  """Settings of one extraction run.

  Attributes:
    mode: "dense" or "fast" (see the module docstring).
    window: dense-mode window length in frames (>= 9).
    chunk: fast-mode chunk length (a multiple of 8, >= 16).
    margin: fast-mode context kept on each side of a chunk (chunk - 2 margin a positive
      multiple of 8).
    batch_size: windows (dense) or chunks (fast) per network call.
    size: side of the square centre crop fed to I3D (>= 193).
    short_side: shorter side after resizing, before the crop (None: round(size * 8 / 7),
      i.e. 256 for 224).
    fps: sampling rate (None: the video's own).
    max_frames: only the first `max_frames` sampled frames (None: all).
    flow_size: side at which TV-L1 runs (None: `size`); the flow is resized back to `size`
      and its vectors multiplied by size / flow_size.
    flow_iterations: TV-L1 inner iterations (OpenCV default 30).
    flow_outer: TV-L1 outer iterations, i.e. median filterings per warp (default 10).
    flow_warps: TV-L1 warps per pyramid level (default 5).
    flow_scales: TV-L1 pyramid levels (default 5).
    decode_chunk: frames decoded at a time; the TV-L1 flow of a chunk's frame pairs is
      computed in one call.
    decode_ahead: chunks decoded ahead in a background thread while the previous one is
      computed (`hhjax.video.read_ahead`; 0: decode in the calling thread).
    flow_batch: frame pairs of a chunk whose TV-L1 runs side by side (`jax.vmap`) within
      that call; the others run one after another (`jax.lax.map`). None: 1 on the CPU,
      where pairs one at a time are fastest (`docs/FLOW.md`), and every pair of the chunk
      on an accelerator. One after another gives pair-by-pair calls' flow bit for bit.
      Side by side is the same arithmetic fused differently, and TV-L1 amplifies
      rounding at a few pixels (`docs/FLOW.md`, "Sensitivity to rounding"): at OpenCV's
      defaults, on 8 pairs of a real clip, mean 0.017 px, 1.3 % of the flow values by
      more than 0.2 px (`scripts/flow_batch_diff.py`). Like the device, it is not
      recorded as a setting.
    grid: 0 (default): one pooled 1024-vector per stream and frame; G >= 1: a G x G
      grid of Mixed_5c cells per stream (`i3d.grid_features`), G * G * 1024 values,
      location-major, for models that attend over locations (the spatial-attention
      RNN's `tokens="grid"`, `grid_size=G*G` on one stream). G <= size / 32.
  """

  mode: str = "dense"
  window: int = 21
  chunk: int = 64
  margin: int = 16
  batch_size: int = 4
  size: int = 224
  short_side: int | None = None
  fps: float | None = None
  max_frames: int | None = None
  flow_size: int | None = None
  flow_iterations: int = 30
  flow_outer: int = 10
  flow_warps: int = 5
  flow_scales: int = 5
  decode_chunk: int = 32
  grid: int = 0
  decode_ahead: int = 2
  flow_batch: int | None = None

  def __post_init__(self):
    if self.mode not in ("dense", "fast"):
      raise ValueError(f"mode must be 'dense' or 'fast', got {self.mode!r}")
    if self.size < i3d.MIN_INPUT_PIXELS:
      raise ValueError(f"size must be >= {i3d.MIN_INPUT_PIXELS} for I3D, got {self.size}")
    if self.mode == "dense" and self.window < i3d.MIN_INPUT_FRAMES:
      raise ValueError(f"window must be >= {i3d.MIN_INPUT_FRAMES}, got {self.window}")
    if self.mode == "fast":
      fast_layout(self.chunk, self.margin)  # validates
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.decode_chunk < 1:
      raise ValueError(f"decode_chunk must be >= 1, got {self.decode_chunk}")
    if self.decode_ahead < 0:
      raise ValueError(f"decode_ahead must be >= 0, got {self.decode_ahead}")
    if self.flow_batch is not None and not 1 <= self.flow_batch <= self.decode_chunk:
      raise ValueError(f"flow_batch must be 1..decode_chunk ({self.decode_chunk}), got "
                       f"{self.flow_batch}")
    if self.flow_size is not None and self.flow_size < 16:
      raise ValueError(f"flow_size must be >= 16, got {self.flow_size}")
    cells = -(-self.size // 32)   # the Mixed_5c map's side
    if not 0 <= self.grid <= cells:
      raise ValueError(f"grid must be 0 (pooled features) or 1..{cells} for a "
                       f"{self.size} px crop (its Mixed_5c map is {cells} x {cells}), "
                       f"got {self.grid}")

  @property
  def stream_dim(self) -> int:
    """Values per stream and frame: 1024, or grid * grid * 1024."""
    return FEATURE_DIM * max(self.grid, 1) ** 2

  @property
  def resize_to(self) -> int:
    """Shorter side after resizing."""
    return self.short_side if self.short_side is not None else round(self.size * 8 / 7)


# ---------------------------------------------------------------------------------------
# Temporal bookkeeping.


def feature_centres(length: int) -> np.ndarray:
  """Receptive-field centres (in input frames) of I3D's pooled features for `length` frames.

  Each strided temporal layer (kernel k, stride s, TF-SAME low padding p for its input
  size n) maps output i to input centre s*i - p + (k - 1)/2; the final width-2 average
  pool averages two neighbours. For lengths that are multiples of 8 this gives 8j + 9.

  Args:
    length: input frames (>= 9).

  Returns:
    (ceil(length/8) - 1,) float64 centres, one per output position.
  """
  sizes = [length]
  for k, s in _STRIDED_TEMPORAL:
    sizes.append(math.ceil(sizes[-1] / s))
  n_out = sizes[-1] - _FINAL_POOL + 1
  centres = np.arange(sizes[-1], dtype=np.float64)
  for (k, s), n in reversed(list(zip(_STRIDED_TEMPORAL, sizes[:-1]))):
    low = i3d.same_padding(n, k, s)[0]
    centres = s * centres - low + (k - 1) / 2
  return np.stack([centres[j:j + n_out] for j in range(_FINAL_POOL)]).mean(axis=0)


def dense_offset(window: int) -> int:
  """Frames before t in frame t's dense window: round(mean receptive-field centre).

  The window t - offset .. t - offset + window - 1 puts the mean centre of its output
  positions on t: offset = (window - 1) / 2 for 21 (two outputs centred at 6 and 14),
  6 for 9 (one output centred at 6).
  """
  return int(round(float(feature_centres(window).mean())))


def fast_layout(chunk: int, margin: int) -> tuple[int, np.ndarray]:
  """Fast-mode chunk layout: (first chunk start a_0, indices of the kept output positions).

  Raises:
    ValueError: the kept positions do not tile the stride-8 grid.
  """
  if chunk % 8 or chunk < 16:
    raise ValueError(f"chunk must be a multiple of 8 and >= 16, got {chunk}")
  step = chunk - 2 * margin
  if margin < 0 or step < 8 or step % 8:
    raise ValueError(f"chunk - 2 * margin must be a positive multiple of 8, got chunk {chunk}, "
                     f"margin {margin}")
  centres = feature_centres(chunk)
  kept = np.flatnonzero((centres >= margin) & (centres < chunk - margin))
  if kept.size != step // 8:
    raise ValueError(f"chunk {chunk} with margin {margin} keeps {kept.size} positions per "
                     f"chunk, needs {step // 8}; try margin 16 with chunk 64, or 4 with 16")
  start = -int(centres[kept[0]])  # the first kept centre is frame 0
  return start, kept


def run_windows(
  frames: Iterable[tuple[np.ndarray, ...]],
  window_indices: Callable[[int], np.ndarray],
  num_windows: Callable[[int], int],
  compute: Callable[[list[np.ndarray]], list[np.ndarray]],
  batch_size: int,
  on_frame: Callable[[], None] | None = None,
) -> tuple[list[np.ndarray], int]:
  """Streams per-frame inputs through batched windows with bounded memory.

  Window k reads the frames `window_indices(k)` (non-decreasing in k; indices outside the
  video are clamped to its first/last frame). A window runs as soon as its frames have
  arrived (or the stream has ended); frames no later window needs are dropped. The last
  batch is padded with copies of its last window so every call has `batch_size` windows.

  Args:
    frames: iterable of per-frame tuples of arrays (one entry per stream).
    window_indices: k -> (L,) int frame indices of window k.
    num_windows: total frames T -> number of windows to run.
    compute: list (per stream) of (B, L, ...) stacked windows -> list (per stream) of
      (B, ...) outputs.
    batch_size: windows per `compute` call.
    on_frame: called once per frame taken from `frames` (progress).

  Returns:
    (per-stream list of (num_windows(T), ...) outputs, T).
  """
  buffer: list[tuple[np.ndarray, ...]] = []
  offset = 0  # absolute index of buffer[0]
  count = 0  # frames received
  next_window = 0
  batch: list[list[np.ndarray]] = []  # per window: per-stream (L, ...) arrays
  outputs: list[list[np.ndarray]] = []

  def gather(k: int, last: int) -> list[np.ndarray]:
    idx = np.clip(window_indices(k), 0, last) - offset
    streams = len(buffer[0])
    return [np.stack([buffer[i][s] for i in idx]) for s in range(streams)]

  def flush(final: bool) -> None:
    nonlocal batch
    if not batch or (len(batch) < batch_size and not final):
      return
    real = len(batch)
    padded = batch + [batch[-1]] * (batch_size - real)
    stacked = [np.stack([w[s] for w in padded]) for s in range(len(padded[0]))]
    result = compute(stacked)
    outputs.append([np.asarray(r)[:real] for r in result])
    batch = []

  def schedule(final: bool) -> None:
    nonlocal next_window, offset
    while True:
      if final and next_window >= num_windows(count):
        break
      idx = window_indices(next_window)
      if not final and int(idx.max()) > count - 1:
        break
      batch.append(gather(next_window, count - 1))
      next_window += 1
      if len(batch) == batch_size:
        flush(final=False)
    # Drop frames that no later window reads.
    keep_from = max(0, min(int(window_indices(next_window).min()), count - 1))
    if keep_from > offset:
      del buffer[:keep_from - offset]
      offset = keep_from

  for item in frames:
    buffer.append(tuple(item))
    count += 1
    if on_frame is not None:
      on_frame()
    schedule(final=False)
  if count == 0:
    return [], 0
  schedule(final=True)
  flush(final=True)
  if not outputs:
    return [], count
  streams = len(outputs[0])
  return [np.concatenate([o[s] for o in outputs]) for s in range(streams)], count


# ---------------------------------------------------------------------------------------
# Weights.


def random_variables(in_channels: int, seed: int = 0, num_classes: int = 400) -> dict:
  """Seeded random InceptionI3d variables (He-normal kernels, identity batch norm).

  Built with NumPy from the abstract parameter tree (no compilation), so the same seed
  gives the same weights on every machine.
  """
  model = i3d.InceptionI3d(num_classes=num_classes, in_channels=in_channels)
  shapes = jax.eval_shape(
    model.init, jax.random.PRNGKey(0),
    jnp.zeros((1, i3d.MIN_INPUT_FRAMES, i3d.MIN_INPUT_PIXELS, i3d.MIN_INPUT_PIXELS, in_channels)))
  rng = np.random.default_rng(seed)
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  values = []
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(leaf.shape[:-1]))
      values.append(rng.normal(0.0, math.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32))
    elif name.endswith("['scale']") or name.endswith("['var']"):
      values.append(np.ones(leaf.shape, np.float32))
    else:  # biases, running means
      values.append(np.zeros(leaf.shape, np.float32))
  treedef = jax.tree_util.tree_structure(shapes)
  return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in values])


def _num_classes(variables: dict) -> int:
  return int(variables["params"]["logits"]["conv3d"]["kernel"].shape[-1])


# ---------------------------------------------------------------------------------------
# The extractor.


@functools.lru_cache(maxsize=None)
def _features_fn(num_classes: int, in_channels: int, reduce_time: bool, grid: int = 0):
  """Jitted I3D features: (B, L, S, S, C) -> (B, D) (reduce_time) or (B, T', D), with
  D = 1024, or D = grid * grid * 1024 for a spatial grid (`i3d.grid_features`).

  RGB input (C = 3) is uint8 and mapped to [-1, 1] here; flow input is already in [-1, 1].
  Cached so that extractors with the same settings share one compilation.
  """
  model = i3d.InceptionI3d(num_classes=num_classes, in_channels=in_channels,
                           final_endpoint="Mixed_5c" if grid else "Logits")

  @jax.jit
  def fn(variables, x):
    if in_channels == 3:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    if grid:
      f = i3d.grid_features(model.apply(variables, x, train=False), grid)
    else:
      _, f = model.apply(variables, x, train=False)  # (B, T', [H', W',] 1024)
      if f.ndim == 5:
        f = f.mean(axis=(2, 3))  # inputs above 224 px keep a spatial grid: average it
    return f.mean(axis=1) if reduce_time else f

  return fn


@functools.lru_cache(maxsize=None)
def _pair_flow_fn(size: int, flow_size: int, scales: int, warps: int, inner: int, outer: int):
  """Jitted flow input of one frame pair: (S, S) uint8 grey x2 -> (S, S, 2) in [-1, 1].

  With flow_size < size the grey frames are resized (bilinear, anti-aliased) to
  flow_size, TV-L1 runs there, and the flow field is resized back (bilinear) and its
  vectors multiplied by size / flow_size.
  """
  kwargs = dict(nscales=scales, warps=warps, inner_iterations=inner, outer_iterations=outer)

  @jax.jit
  def fn(g0, g1):
    a = g0.astype(jnp.float32)
    b = g1.astype(jnp.float32)
    if flow_size != size:
      a = jax.image.resize(a, (flow_size, flow_size), "linear", antialias=True)
      b = jax.image.resize(b, (flow_size, flow_size), "linear", antialias=True)
    f = flow_ops.tvl1(a, b, **kwargs)  # (s, s, 2) pixels at flow_size
    if flow_size != size:
      f = jax.image.resize(f, (size, size, 2), "linear") * (size / flow_size)
    return flow_ops.flow_to_i3d(f)

  return fn


@functools.lru_cache(maxsize=None)
def _chunk_flow_fn(size: int, flow_size: int, scales: int, warps: int, inner: int,
                   outer: int, flow_batch: int):
  """Jitted flow inputs of consecutive frames: (n + 1, S, S) uint8 grey -> (n, S, S, 2).

  Pair i is frames (i, i + 1), each as `_pair_flow_fn`; `flow_batch` pairs at a time run
  side by side (`jax.vmap`), the batches one after another (`jax.lax.map`).
  """
  pair = _pair_flow_fn(size, flow_size, scales, warps, inner, outer)

  @jax.jit
  def fn(grays):
    return jax.lax.map(lambda ab: pair(*ab), (grays[:-1], grays[1:]),
                       batch_size=None if flow_batch == 1 else flow_batch)

  return fn


def default_flow_batch(decode_chunk: int) -> int:
  """`ExtractConfig.flow_batch=None`: 1 on the CPU, every pair of a chunk elsewhere."""
  return 1 if jax.default_backend() == "cpu" else decode_chunk


@functools.lru_cache(maxsize=None)
def _gray_fn():
  return jax.jit(flow_ops.to_gray)


class FeatureExtractor:
  """Per-frame two-stream I3D features of videos (see the module docstring).

  Args:
    rgb_variables: InceptionI3d variables with in_channels = 3.
    flow_variables: InceptionI3d variables with in_channels = 2.
    config: `ExtractConfig`.
  """

  def __init__(self, rgb_variables: dict, flow_variables: dict, config: ExtractConfig):
    self.config = config
    self.rgb_variables = rgb_variables
    self.flow_variables = flow_variables
    dense = config.mode == "dense"
    self._rgb_fn = _features_fn(_num_classes(rgb_variables), 3, dense, config.grid)
    self._flow_fn = _features_fn(_num_classes(flow_variables), 2, dense, config.grid)
    self.flow_batch = config.flow_batch or default_flow_batch(config.decode_chunk)
    self._chunk_flow = _chunk_flow_fn(config.size, config.flow_size or config.size,
                                      config.flow_scales, config.flow_warps,
                                      config.flow_iterations, config.flow_outer,
                                      self.flow_batch)
    self._gray = _gray_fn()

  # -- per-frame inputs ------------------------------------------------------------------

  def chunk_flows(self, grays: np.ndarray) -> np.ndarray:
    """(n, S, S, 2) flow inputs of the n pairs of (n + 1, S, S) grey frames, one call.

    Calls always hold `decode_chunk` pairs (one compiled shape): a shorter run is padded
    with copies of its last frame, whose pairs TV-L1 finishes at once, and cut off again.
    """
    pairs = grays.shape[0] - 1
    full = self.config.decode_chunk
    if not 1 <= pairs <= full:
      raise ValueError(f"expected 2..{full + 1} grey frames, got {grays.shape[0]}")
    padded = np.concatenate([grays, np.repeat(grays[-1:], full - pairs, axis=0)])
    return np.asarray(self._chunk_flow(padded))[:pairs]

  def frame_inputs(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rgb (S, S, 3) uint8, flow (S, S, 2) float32 in [-1, 1]) per frame, in order.

    Frame t's flow is TV-L1 from frame t to t + 1; the pairs that end in one chunk are
    computed in one call (`chunk_flows`), the first of them starting at the previous
    chunk's last frame. The last frame repeats the flow before it; a one-frame video
    gets zero flow.
    """
    prev_rgb = prev_gray = last_flow = None
    for chunk in chunks:  # (n, S, S, 3) uint8, n <= decode_chunk
      grays = np.asarray(self._gray(chunk))  # (n, S, S) uint8
      if prev_rgb is not None:
        rgbs, grays = [prev_rgb, *chunk], np.concatenate([prev_gray[None], grays])
      else:
        rgbs = list(chunk)
      if len(rgbs) > 1:
        flows = self.chunk_flows(grays)
        yield from zip(rgbs[:-1], flows)
        last_flow = flows[-1]
      prev_rgb, prev_gray = rgbs[-1], grays[-1]
    if prev_rgb is not None:
      if last_flow is None:
        last_flow = np.zeros(prev_rgb.shape[:2] + (2,), np.float32)
      yield prev_rgb, last_flow

  # -- windows ---------------------------------------------------------------------------

  def _compute(self, stacked: list[np.ndarray]) -> list[np.ndarray]:
    rgb = self._rgb_fn(self.rgb_variables, jnp.asarray(stacked[0]))
    flow = self._flow_fn(self.flow_variables, jnp.asarray(stacked[1]))
    return [np.asarray(rgb), np.asarray(flow)]

  def features_from_inputs(
    self, inputs: Iterable[tuple[np.ndarray, ...]],
    compute: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
    on_frame: Callable[[], None] | None = None,
  ) -> np.ndarray:
    """Per-frame features from per-frame inputs.

    Args:
      inputs: per-frame tuples (one array per stream).
      compute: batched network call (default: the two I3D streams); replaceable for tests.
      on_frame: progress callback, once per frame.

    Returns:
      (D_total, T) float32, the streams' features stacked along the first axis.
    """
    cfg = self.config
    compute = compute or self._compute
    if cfg.mode == "dense":
      lead = dense_offset(cfg.window)
      outs, total = run_windows(
        inputs, lambda k: np.arange(k - lead, k - lead + cfg.window), lambda n: n, compute,
        cfg.batch_size, on_frame)
      per_frame = outs  # per stream (T, D)
    else:
      start, kept = fast_layout(cfg.chunk, cfg.margin)
      step = cfg.chunk - 2 * cfg.margin
      per_chunk = step // 8

      def needed(n: int) -> int:  # grid features 0, 8, ..., covering frame n - 1
        return -(-(n - 1) // 8) + 1

      outs, total = run_windows(
        inputs, lambda k: np.arange(start + k * step, start + k * step + cfg.chunk),
        lambda n: -(-needed(n) // per_chunk), compute, cfg.batch_size, on_frame)
      per_frame = []
      for o in outs:  # (chunks, T', D)
        grid = o[:, kept].reshape(-1, o.shape[-1])[:needed(total)]  # (G, D), centres 8g
        t = np.arange(total)
        lo = np.minimum(t // 8, grid.shape[0] - 1)
        hi = np.minimum(lo + 1, grid.shape[0] - 1)
        w = ((t - 8 * lo) / 8.0)[:, None]
        per_frame.append((1.0 - w) * grid[lo] + w * grid[hi])  # (T, D)
    if total == 0:
      raise ValueError("no frames")
    return np.concatenate(per_frame, axis=1).T.astype(np.float32)  # (D_total, T)

  def expected_frames(self, path: str | os.PathLike) -> int:
    """T that `extract(path)` will return."""
    return video_lib.count_frames(path, self.config.fps, self.config.max_frames)

  def extract(self, path: str | os.PathLike, on_frame: Callable[[], None] | None = None
              ) -> np.ndarray:
    """(2048, T) float32 features of one video (T = decoded frames).

    Args:
      path: the video.
      on_frame: progress callback, once per frame.

    Raises:
      VideoError: the video cannot be decoded.
    """
    cfg = self.config
    chunks = video_lib.iter_frames(path, fps=cfg.fps, short_side=cfg.resize_to, crop=cfg.size,
                                   chunk_size=cfg.decode_chunk, max_frames=cfg.max_frames)
    inputs = self.frame_inputs(video_lib.read_ahead(chunks, cfg.decode_ahead))
    return self.features_from_inputs(inputs, on_frame=on_frame)


def extract_with_progress(extractor, path: pathlib.Path, progress: bool) -> np.ndarray:
  """`extractor.extract(path)` with a per-frame tqdm bar when `progress` is true."""
  if not progress:
    return extractor.extract(path)
  from tqdm import tqdm  # noqa: PLC0415
  with tqdm(total=extractor.expected_frames(path), unit="frame", desc=path.stem,
            leave=True) as bar:
    return extractor.extract(path, on_frame=bar.update)


# ---------------------------------------------------------------------------------------
# Command line.


def find_videos(path: str | os.PathLike) -> list[pathlib.Path]:
  """Video files in a directory (sorted, by extension) or the file itself."""
  path = pathlib.Path(path)
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no such file or directory")
  return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def output_collisions(videos: Iterable[pathlib.Path]) -> list[list[pathlib.Path]]:
  """Groups of videos that would write the same `<stem>.npy` (e.g. a.mp4 and a.avi)."""
  by_stem: dict[str, list[pathlib.Path]] = {}
  for path in videos:
    by_stem.setdefault(path.stem, []).append(path)
  return [paths for paths in by_stem.values() if len(paths) > 1]


def _temp_path(target: pathlib.Path) -> pathlib.Path:
  """A hidden file beside `target`, private to this process (for write-then-rename)."""
  return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _save_temp(array: np.ndarray, target: pathlib.Path) -> pathlib.Path:
  """Saves `array` to a temporary file beside `target`; `_commit` moves it into place."""
  tmp = _temp_path(target)
  try:
    with open(tmp, "wb") as f:
      np.save(f, array)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return tmp


_RANDOM_REFUSAL = (
  "no I3D weights given (--rgb-weights and --flow-weights). Features from randomly "
  "initialised networks carry no information about the video and are useless for "
  "training or evaluation; pass --random-weights explicitly to run anyway (pipeline tests "
  "only). Pretrained weights: convert rgb_imagenet.pt / flow_imagenet.pt with "
  "hhjax.models.backbones.i3d as in docs/I3D.md."
)


_RESNET_REFUSAL = (
  "no ResNet weights given (--resnet-weights). Features from randomly initialised "
  "networks carry no information about the video; pass --random-weights explicitly "
  "to run anyway (pipeline tests only). torchvision's ImageNet state dicts "
  "(resnet18-f37072fd.pth, ...) load as they are with torch installed, or as an .npz "
  "of the same keys.")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m hhjax.extract",
    description="Per-frame features for the HHA300 manual layout: two-stream I3D "
                "(2048, T), MediaPipe hand pose (212, T) or hand-guided ResNet "
                "features (F_b + 2 F_h, T).")
  p.add_argument("--videos", required=True, help="directory of videos (or one video file)")
  p.add_argument("--out", required=True, help="output root; features go to <out>/features/")
  p.add_argument("--overwrite", action="store_true",
                 help="delete the features already in <out>/features/ and extract every "
                      "video with this run's settings (needed when they were made with "
                      "other or unknown settings)")
  p.add_argument("--stream", choices=STREAMS, default="i3d",
                 help="i3d: RGB + TV-L1 flow I3D features (needs weights); handpose: "
                      "MediaPipe hand landmarks (needs hhjax[handpose]; see "
                      "hhjax.handpose for the layout); hand_guided: ResNet features "
                      "of the frame and of each hand's cut-out (needs --hands-from and "
                      "weights; see hhjax.handguided)")
  p.add_argument("--hand-model", type=int, choices=(0, 1), default=1,
                 help="handpose: MediaPipe landmark model, 0 lite or 1 full")
  p.add_argument("--workers", type=int, default=1,
                 help="handpose: videos processed at once, one process each (MediaPipe "
                      "uses about one CPU core per video)")
  p.add_argument("--rgb-weights", help="RGB I3D checkpoint (.npz, or .pt with torch)")
  p.add_argument("--flow-weights", help="flow I3D checkpoint (.npz, or .pt with torch)")
  p.add_argument("--random-weights", action="store_true",
                 help="use seeded random weights for missing streams (testing only)")
  p.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
  p.add_argument("--hands-from",
                 help="hand_guided: the --out folder of a --stream handpose run over "
                      "the same videos (hand positions: features/<video>.npy)")
  p.add_argument("--resnet-weights",
                 help="hand_guided: torchvision ResNet state dict (.pth with torch, or "
                      ".npz) for the frame stream, and the hand stream unless "
                      "--hand-weights is given")
  p.add_argument("--hand-weights", help="hand_guided: the hand stream's own state dict")
  p.add_argument("--depth", type=int, default=18,
                 help="hand_guided: ResNet depth of the frame stream (18, 34, 50, 101)")
  p.add_argument("--hand-depth", type=int,
                 help="hand_guided: ResNet depth of the hand stream (default --depth)")
  p.add_argument("--frame-size", type=int, default=224,
                 help="hand_guided: side of the frame stream's centre crop")
  p.add_argument("--hand-size", type=int, default=112,
                 help="hand_guided: side of the hand stream's input")
  p.add_argument("--hand-crop", type=int,
                 help="hand_guided: side of a hand's cut-out in pixels of the original "
                      "frame, resized to --hand-size (default --hand-size)")
  p.add_argument("--mode", choices=("dense", "fast"), default="dense")
  p.add_argument("--window", type=int, default=21, help="dense: window length (>= 9)")
  p.add_argument("--chunk", type=int, default=64, help="fast: chunk length (multiple of 8)")
  p.add_argument("--margin", type=int, default=16, help="fast: context frames per chunk side")
  p.add_argument("--batch-size", type=int, default=4,
                 help="windows or chunks (hand_guided: frames) per network call")
  p.add_argument("--max-frames", type=int, help="only the first N sampled frames of each video")
  p.add_argument("--fps", type=float, help="sampling rate (default: the video's own)")
  p.add_argument("--size", type=int, default=224, help="centre crop side (>= 193)")
  p.add_argument("--short-side", type=int,
                 help="short side after resizing (default round(size * 8 / 7): 256 for "
                      "224; hand_guided: --frame-size)")
  p.add_argument("--flow-size", type=int,
                 help="compute TV-L1 at this side, then resize the flow to --size and scale "
                      "its vectors (default: --size)")
  p.add_argument("--flow-iterations", type=int, default=30, help="TV-L1 inner iterations")
  p.add_argument("--flow-outer", type=int, default=10, help="TV-L1 outer iterations")
  p.add_argument("--flow-warps", type=int, default=5, help="TV-L1 warps per level")
  p.add_argument("--flow-scales", type=int, default=5, help="TV-L1 pyramid levels")
  p.add_argument("--decode-chunk", type=int, default=32,
                 help="frames decoded at a time; i3d: the TV-L1 flow of a chunk's frame "
                      "pairs is one call")
  p.add_argument("--decode-ahead", type=int, default=2,
                 help="chunks decoded ahead in a background thread while the previous "
                      "one is computed (0: no thread)")
  p.add_argument("--flow-batch", type=int,
                 help="i3d: frame pairs whose TV-L1 runs side by side within a chunk's "
                      "call (default: 1 on the CPU, the whole chunk on a GPU or TPU)")
  p.add_argument("--grid", type=int, default=0,
                 help="i3d: write a G x G grid of Mixed_5c cells per stream "
                      "(G*G*1024 values, location-major) instead of one pooled vector; "
                      "for the spatial-attention RNN's tokens='grid' (default 0: pooled)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  return p


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
  """The `ExtractConfig` of parsed arguments (raises ValueError for invalid settings)."""
  return ExtractConfig(
    mode=args.mode, window=args.window, chunk=args.chunk, margin=args.margin,
    batch_size=args.batch_size, size=args.size, short_side=args.short_side, fps=args.fps,
    max_frames=args.max_frames, flow_size=args.flow_size,
    flow_iterations=args.flow_iterations, flow_outer=args.flow_outer,
    flow_warps=args.flow_warps, flow_scales=args.flow_scales,
    decode_chunk=args.decode_chunk, grid=args.grid, decode_ahead=args.decode_ahead,
    flow_batch=args.flow_batch)


def _hand_kwargs(args: argparse.Namespace) -> dict:
  """`HandPoseExtractor` arguments of a handpose run (main process and workers alike)."""
  from hhjax import handpose  # noqa: PLC0415
  return dict(model_complexity=args.hand_model,
              min_detection_confidence=handpose.MIN_DETECTION_CONFIDENCE,
              min_tracking_confidence=handpose.MIN_TRACKING_CONFIDENCE,
              fps=args.fps, max_frames=args.max_frames, decode_chunk=args.decode_chunk,
              decode_ahead=args.decode_ahead)


def _load_stream(path: str | None, in_channels: int, seed: int) -> tuple[dict, str]:
  if path is None:
    return random_variables(in_channels, seed), f"random (seed {seed})"
  return i3d.load_pretrained(path, in_channels=in_channels), os.fspath(path)


def _guided_kwargs(args: argparse.Namespace) -> dict:
  """`HandGuidedExtractor` arguments of a hand_guided run, other than the weights.

  Raises:
    ValueError: invalid sizes or depths, naming the argument.
  """
  from hhjax import handguided  # noqa: PLC0415
  settings = handguided.resolve_settings(
    depth=args.depth, hand_depth=args.hand_depth, frame_size=args.frame_size,
    short_side=args.short_side, hand_size=args.hand_size, hand_crop=args.hand_crop,
    batch_size=args.batch_size, fps=args.fps, max_frames=args.max_frames,
    decode_chunk=args.decode_chunk, decode_ahead=args.decode_ahead)
  return {**settings, "hands_dir": args.hands_from}


def _load_resnet(path: str | None, depth: int, seed: int) -> tuple[dict, str]:
  from hhjax import handguided  # noqa: PLC0415
  if path is None:
    return handguided.random_variables(depth, seed), f"random (seed {seed})"
  return handguided.load_variables(path, depth), os.fspath(path)


def _hand_pose_run(folder: str) -> dict:
  """The settings of the `--stream handpose` run whose --out is `folder`.

  Raises:
    ValueError: no such run there (no manifest, an unreadable one, or another stream).
  """
  path = pathlib.Path(folder) / MANIFEST_FILE
  try:
    manifest = read_manifest(path)
  except RefusedError as e:
    raise ValueError(f"--hands-from: {e}") from e
  if manifest is None:
    raise ValueError(f"--hands-from {folder}: no {MANIFEST_FILE} there; it must be the "
                     f"--out folder of a --stream handpose run")
  if manifest["settings"].get("stream") != "handpose":
    raise ValueError(f"--hands-from {folder}: {path} records stream "
                     f"{manifest['settings'].get('stream')!r}, not 'handpose'")
  return manifest["settings"]


# ---------------------------------------------------------------------------------------
# Provenance: the settings behind the features in an output folder.

# In <out>/, beside features/: the features folder keeps only <video>.npy files.
MANIFEST_FILE = "extract_manifest.json"
MANIFEST_FORMAT = 1
_LISTED_NAMES = 10  # file names shown in one message before "and N more"
_OVERWRITE_ADVICE = (
  "Features of different settings must not be mixed in one folder: pass --overwrite to "
  "delete them and extract every video with this run's settings, or choose another --out.")


class RefusedError(Exception):
  """The output folder holds features this run must not be mixed with."""


def manifest_path(features_dir: pathlib.Path) -> pathlib.Path:
  """`<out>/extract_manifest.json` of the features folder `<out>/features`."""
  return features_dir.parent / MANIFEST_FILE


def hhjax_version() -> str:
  """`hhjax.__version__`, or else the installed distribution's version."""
  import hhjax  # noqa: PLC0415
  return getattr(hhjax, "__version__", None) or importlib.metadata.version("hhjax")


def _package_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def file_sha256(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes (read 1 MiB at a time)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _weights_id(path: str | None, seed: int) -> str:
  """"sha256:<hex>" of a weights file, or "random:<seed>" for seeded random weights."""
  if path is None:
    return f"random:{seed}"
  try:
    return f"sha256:{file_sha256(path)}"
  except OSError as e:
    raise ValueError(f"{path}: cannot read the weights file ({e.strerror or e})") from e


def provenance(args: argparse.Namespace) -> dict:
  """The settings of a run that determine its feature values (a JSON-able dict).

  The one list of value-changing options; two runs whose dicts agree (the hhjax version
  up to its patch level, see `settings_differences`) write interchangeable features.
  Options that only change speed or memory (--batch-size, --decode-chunk,
  --decode-ahead, --flow-batch, --workers, --no-progress) are left out, as are those of
  the other stream or mode (--window in fast mode, --chunk/--margin in dense mode). Sizes are recorded after their defaults are
  resolved, so spelling a default out is not a change.

  I3D weights are identified by the SHA-256 of their file (a .pt and the .npz converted
  from it count as different), seeded random weights by "random:<seed>" (RGB uses --seed,
  flow --seed + 1). The handpose stream records MediaPipe's installed version, because
  its hand models ship inside the wheel. The hand_guided stream identifies its ResNet
  weights like I3D's (frame stream --seed, hand stream --seed + 1 when random; the
  hand stream takes --resnet-weights without --hand-weights) and records the settings
  of the hand-pose run its hand positions come from (`hands_from`).

  Args:
    args: parsed `build_parser()` arguments.

  Raises:
    ValueError: invalid I3D or hand_guided settings, a weights file that cannot be
      read, or a --hands-from folder without a hand-pose run.
  """
  settings = {"stream": args.stream, "hhjax": hhjax_version()}
  if args.stream == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    kwargs = _hand_kwargs(args)
    settings.update(
      feature_dim=handpose.FEATURE_DIM, mediapipe=_package_version("mediapipe"),
      hand_model=kwargs["model_complexity"],
      min_detection_confidence=kwargs["min_detection_confidence"],
      min_tracking_confidence=kwargs["min_tracking_confidence"],
      fps=kwargs["fps"], max_frames=kwargs["max_frames"],
      frame_size="native (no resize or crop)")
    return settings
  if args.stream == "hand_guided":
    from hhjax import handguided  # noqa: PLC0415
    kwargs = _guided_kwargs(args)
    settings.update(
      feature_dim=handguided.feature_dim(kwargs["depth"], kwargs["hand_depth"]),
      backbone_weights=_weights_id(args.resnet_weights, args.seed),
      hand_weights=_weights_id(args.hand_weights or args.resnet_weights, args.seed + 1),
      **{k: kwargs[k] for k in ("depth", "hand_depth", "frame_size", "short_side",
                                "hand_size", "hand_crop", "fps", "max_frames")},
      normalisation="imagenet", hands_from=_hand_pose_run(args.hands_from))
    return settings
  config = config_from_args(args)
  settings.update(
    feature_dim=2 * config.stream_dim,
    rgb_weights=_weights_id(args.rgb_weights, args.seed),
    flow_weights=_weights_id(args.flow_weights, args.seed + 1),
    mode=config.mode)
  if config.mode == "dense":
    settings["window"] = config.window
  else:
    settings.update(chunk=config.chunk, margin=config.margin)
  settings.update(
    fps=config.fps, max_frames=config.max_frames, short_side=config.resize_to,
    crop=config.size, flow_size=config.flow_size or config.size,
    flow_iterations=config.flow_iterations, flow_outer=config.flow_outer,
    flow_warps=config.flow_warps, flow_scales=config.flow_scales)
  if config.grid:   # recorded only when set, so older manifests still match
    settings["grid"] = config.grid
  return settings


_NOT_RECORDED = object()


def _shown(value) -> str:
  if value is _NOT_RECORDED:
    return "(not recorded)"
  if isinstance(value, str) and value.startswith("sha256:"):
    return f"sha256 {value[7:19]}.."
  return "none" if value is None else str(value)


def _minor(version) -> str:
  return ".".join(str(version).split(".")[:2])


def settings_differences(old: dict, new: dict) -> list[str]:
  """"field: old -> new" for each setting that differs between two `provenance` dicts.

  The hhjax version is compared up to its minor number only ("0.1.0" = "0.1.3"): a
  release that changes feature values must raise at least the minor version.
  """
  lines = []
  for key in [*new, *(k for k in old if k not in new)]:
    a, b = old.get(key, _NOT_RECORDED), new.get(key, _NOT_RECORDED)
    if key == "hhjax" and _NOT_RECORDED not in (a, b):
      same = _minor(a) == _minor(b)
    else:
      same = a == b
    if not same:
      lines.append(f"{key}: {_shown(a)} -> {_shown(b)}")
  return lines


def _names(names: Sequence[str]) -> str:
  shown = ", ".join(names[:_LISTED_NAMES])
  more = len(names) - _LISTED_NAMES
  return shown + (f" and {more} more" if more > 0 else "")


def read_manifest(path: pathlib.Path) -> dict | None:
  """The manifest at `path`, or None if there is none.

  Raises:
    RefusedError: the file exists but is not a manifest this version can read.
  """
  if not path.exists():
    return None
  try:
    manifest = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise RefusedError(f"{path}: cannot be read ({e}), so the settings of the features "
                       f"beside it are unknown") from e
  if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
      or not isinstance(manifest.get("settings"), dict)
      or not isinstance(manifest.get("videos"), dict)):
    raise RefusedError(f"{path}: not an extraction manifest of format {MANIFEST_FORMAT}, "
                       f"so the settings of the features beside it are unknown")
  return manifest


def write_manifest(manifest: dict, path: pathlib.Path) -> None:
  """Writes `manifest` as JSON atomically (temporary file, fsync, rename)."""
  tmp = _temp_path(path)
  try:
    with open(tmp, "w") as f:
      json.dump(manifest, f, indent=1)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def source_record(path: pathlib.Path) -> dict:
  """What the manifest keeps of a source video: file name, size and mtime (ns)."""
  st = path.stat()
  return {"source": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def plan_run(out_dir: pathlib.Path, videos: Sequence[pathlib.Path], settings: dict,
             overwrite: bool) -> tuple[dict, list[pathlib.Path], int, list[str]]:
  """Checks an output folder against this run; returns what is left to extract.

  Without `overwrite`, refuses when the folder's manifest records other settings or
  when it holds .npy files the manifest does not list. With `overwrite`, deletes every
  .npy there and starts a new manifest. Then a video is skipped when the manifest lists
  it, its .npy exists and its source file has the recorded name, size and mtime; a video
  whose source changed loses its old .npy and entry and is extracted again. The manifest
  (this run's settings, or the equal ones recorded, and the entries still valid) is
  written before anything is extracted.

  Args:
    out_dir: the features folder `<out>/features` (exists).
    videos: this run's videos.
    settings: `provenance(args)`.
    overwrite: --overwrite.

  Returns:
    (manifest, videos to extract, number skipped, names of changed sources).

  Raises:
    RefusedError: the folder holds features of other or unknown settings.
  """
  path = manifest_path(out_dir)
  outputs = sorted(p.name for p in out_dir.glob("*.npy"))
  manifest = None
  if overwrite:
    for name in outputs:
      (out_dir / name).unlink()
    if outputs:
      print(f"--overwrite: deleted {len(outputs)} earlier feature file(s) in {out_dir}",
            file=sys.stderr)
  else:
    manifest = read_manifest(path)
    problems = []
    if manifest is not None:
      differences = settings_differences(manifest["settings"], settings)
      if differences:
        problems.append(f"{path} records other settings than this run's:\n"
                        + "".join(f"  {line}\n" for line in differences))
    listed = manifest["videos"] if manifest is not None else {}
    unknown = [name for name in outputs if name[:-len(".npy")] not in listed]
    if unknown:
      problems.append(f"{len(unknown)} feature file(s) in {out_dir} are not listed in "
                      f"{path}, so their settings are unknown: {_names(unknown)}\n")
    if problems:
      raise RefusedError("".join(problems).rstrip("\n"))
  if manifest is None:
    manifest = {"format": MANIFEST_FORMAT, "settings": settings, "videos": {}}
  entries = manifest["videos"]
  for stem in [s for s in entries if not (out_dir / f"{s}.npy").exists()]:
    del entries[stem]  # its output is gone: extracted again when its video comes up
  todo, changed = [], []
  for video in videos:
    entry = entries.get(video.stem)
    if entry is not None:
      record = source_record(video)
      if all(entry.get(k) == v for k, v in record.items()):
        continue
      changed.append(video.name)
      (out_dir / f"{video.stem}.npy").unlink()
      del entries[video.stem]
    todo.append(video)
  write_manifest(manifest, path)
  return manifest, todo, len(videos) - len(todo), changed


# ---------------------------------------------------------------------------------------
# The run.


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status.

  0: all videos done; 1: some videos failed; 2: refused (the output folder holds features
  of other or unknown settings, or two videos would write the same file), as for bad
  arguments.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  guided = [f"--{f.replace('_', '-')}" for f in ("hands_from", "resnet_weights",
                                                 "hand_weights") if getattr(args, f)]
  if guided and args.stream != "hand_guided":
    parser.error(f"{', '.join(guided)}: for --stream hand_guided only")
  if args.stream == "handpose":
    given = [f for f in ("rgb_weights", "flow_weights") if getattr(args, f)]
    if given or args.random_weights:
      parser.error("--rgb-weights, --flow-weights and --random-weights are for --stream "
                   "i3d; the handpose stream uses MediaPipe's own models")
  else:
    if args.workers != 1:
      parser.error("--workers is for --stream handpose (the networks use every core in "
                   "one process)")
    if args.stream == "hand_guided":
      if args.rgb_weights or args.flow_weights:
        parser.error("--rgb-weights and --flow-weights are for --stream i3d; "
                     "hand_guided takes --resnet-weights (and --hand-weights)")
      if args.hands_from is None:
        parser.error("--stream hand_guided needs --hands-from DIR: the --out folder of "
                     "a --stream handpose run over the same videos")
      if args.resnet_weights is None and not args.random_weights:
        parser.error(_RESNET_REFUSAL)
    elif ((args.rgb_weights is None or args.flow_weights is None)
          and not args.random_weights):
      parser.error(_RANDOM_REFUSAL)
  if args.workers < 1:
    parser.error(f"--workers must be >= 1, got {args.workers}")
  if args.grid and args.stream != "i3d":
    parser.error(f"--grid is for --stream i3d (a grid of I3D cells), not {args.stream}")
  try:
    config = config_from_args(args)
    videos = find_videos(args.videos)
    settings = provenance(args)
  except (ValueError, FileNotFoundError) as e:
    parser.error(str(e))
  if not videos:
    print(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {args.videos}", file=sys.stderr)
    return 1
  collisions = output_collisions(videos)
  if collisions:
    print("error: videos whose names differ only in the extension would write the same "
          "feature file (the name without extension is the video id); rename one of each:",
          file=sys.stderr)
    for paths in collisions:
      print(f"  {' and '.join(map(str, paths))} -> {paths[0].stem}.npy", file=sys.stderr)
    return 2
  out_dir = pathlib.Path(args.out) / FEATURES_DIR
  out_dir.mkdir(parents=True, exist_ok=True)
  try:
    manifest, todo, skipped, changed = plan_run(out_dir, videos, settings, args.overwrite)
  except RefusedError as e:
    print(f"error: {e}\n{_OVERWRITE_ADVICE}", file=sys.stderr)
    return 2
  if changed:
    print(f"extracting {len(changed)} video(s) again whose source file changed (size or "
          f"mtime) since its features were made: {_names(changed)}", file=sys.stderr)
  if skipped:
    print(f"skipping {skipped} video(s) whose features exist in {out_dir}", file=sys.stderr)
  if not todo:
    print(f"done: 0 extracted, {skipped} skipped, 0 failed", file=sys.stderr)
    return 0
  if args.stream == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    hand_kwargs = _hand_kwargs(args)
    try:
      extractor = handpose.HandPoseExtractor(**hand_kwargs)  # also checks the install
    except ImportError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    print(f"stream handpose: MediaPipe Hands (model {args.hand_model}), "
          f"{handpose.FEATURE_DIM} values per frame", file=sys.stderr)
  elif args.stream == "hand_guided":
    from hhjax import handguided  # noqa: PLC0415
    kwargs = _guided_kwargs(args)
    hand_path = args.hand_weights or args.resnet_weights
    try:
      frame_vars, frame_src = _load_resnet(args.resnet_weights, kwargs["depth"],
                                           args.seed)
      if hand_path == args.resnet_weights and hand_path is not None and (
          kwargs["hand_depth"] == kwargs["depth"]):
        hand_vars, hand_src = frame_vars, frame_src  # one file for both streams
      else:
        hand_vars, hand_src = _load_resnet(hand_path, kwargs["hand_depth"],
                                           args.seed + 1)
    except (ImportError, OSError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    if args.resnet_weights is None or hand_path is None:
      print("WARNING: random weights in use; the features are for pipeline tests only",
            file=sys.stderr)
    extractor = handguided.HandGuidedExtractor(frame_vars, hand_vars, **kwargs)
    print(f"stream hand_guided: frame ResNet-{kwargs['depth']} weights {frame_src}; "
          f"hand ResNet-{kwargs['hand_depth']} weights {hand_src}; "
          f"{extractor.feature_dim} values per frame; hands from {args.hands_from}; "
          f"device {jax.devices()[0].device_kind}", file=sys.stderr)
  else:
    rgb_vars, rgb_src = _load_stream(args.rgb_weights, 3, args.seed)
    flow_vars, flow_src = _load_stream(args.flow_weights, 2, args.seed + 1)
    if args.random_weights and (args.rgb_weights is None or args.flow_weights is None):
      print("WARNING: random weights in use; the features are for pipeline tests only",
            file=sys.stderr)
    layout = (f"{config.grid} x {config.grid} grid, " if config.grid else "")
    print(f"rgb weights: {rgb_src}; flow weights: {flow_src}; mode {config.mode}; "
          f"{layout}{2 * config.stream_dim} values per frame; "
          f"device {jax.devices()[0].device_kind}", file=sys.stderr)
    extractor = FeatureExtractor(rgb_vars, flow_vars, config)

  # Source files are described as they are before extraction: one that changes while it
  # is read no longer matches its entry and is extracted again by the next run.
  sources = {path: source_record(path) for path in todo}
  version = hhjax_version()
  failures: list[tuple[pathlib.Path, str]] = []
  done, frames, wall = 0, 0, time.perf_counter()

  def finish(outcome: _Outcome) -> None:
    nonlocal done, frames
    outcome = _commit(outcome, manifest, out_dir, {**sources[outcome.path], "hhjax": version})
    done, frames = _report(outcome, failures, done, frames)

  if args.workers > 1:
    import multiprocessing  # noqa: PLC0415
    pool = multiprocessing.get_context("spawn").Pool(
      min(args.workers, len(todo)), initializer=_init_worker, initargs=(hand_kwargs,))
    with pool:
      for outcome in pool.imap_unordered(_worker_extract, [(p, out_dir) for p in todo]):
        finish(outcome)
  else:
    for path in todo:
      finish(_extract_one(extractor, path, out_dir, not args.no_progress))
  wall = time.perf_counter() - wall
  speed = f", {frames} frames in {wall:.0f} s: {frames / wall:.2f} frames/s" if done else ""
  print(f"done: {done} extracted, {skipped} skipped, {len(failures)} failed{speed}",
        file=sys.stderr)
  if failures:
    print(f"{len(failures)} video(s) failed:", file=sys.stderr)
    for path, message in failures:
      print(f"  {message}", file=sys.stderr)
    return 1
  return 0


class _Outcome(NamedTuple):
  """One video's result: its features in a temporary file, or an error message."""

  path: pathlib.Path
  frames: int
  seconds: float
  error: str | None
  temp: pathlib.Path | None


def _extract_one(extractor, path: pathlib.Path, out_dir: pathlib.Path, progress: bool
                 ) -> _Outcome:
  """Extracts one video into a temporary file beside its output (runs in workers too)."""
  start = time.perf_counter()
  try:
    features = extract_with_progress(extractor, path, progress)
    temp = _save_temp(features, out_dir / f"{path.stem}.npy")
  except video_lib.VideoError as e:
    return _Outcome(path, 0, 0.0, str(e), None)
  except Exception as e:  # keep going with the other videos
    return _Outcome(path, 0, 0.0, f"{path}: {type(e).__name__}: {e}", None)
  return _Outcome(path, features.shape[1], time.perf_counter() - start, None, temp)


def _commit(outcome: _Outcome, manifest: dict, out_dir: pathlib.Path, record: dict
            ) -> _Outcome:
  """Lists a finished video in the manifest, then moves its features into place.

  Only the main process calls this. The order keeps the folder consistent whenever a run
  stops: an entry whose .npy is missing is extracted again by the next run, and an .npy
  is never there without its entry.
  """
  if outcome.error is not None:
    return outcome
  target = out_dir / f"{outcome.path.stem}.npy"
  manifest["videos"][outcome.path.stem] = {**record, "frames": outcome.frames}
  try:
    write_manifest(manifest, manifest_path(out_dir))
    os.replace(outcome.temp, target)
  except OSError as e:
    del manifest["videos"][outcome.path.stem]
    outcome.temp.unlink(missing_ok=True)
    return _Outcome(outcome.path, 0, 0.0, f"{target}: cannot be written ({e})", None)
  return outcome


def _report(outcome: _Outcome, failures: list, done: int, frames: int) -> tuple[int, int]:
  """Prints one video's outcome; returns the updated (done, frames) counts."""
  if outcome.error is not None:
    failures.append((outcome.path, outcome.error))
    print(f"ERROR {outcome.error}", file=sys.stderr)
    return done, frames
  count = outcome.frames
  print(f"{outcome.path.name}: {count} frames ({count / max(outcome.seconds, 1e-9):.2f} "
        f"frames/s)", file=sys.stderr)
  return done + 1, frames + count


_WORKER_EXTRACTOR = None


def _init_worker(kwargs: dict) -> None:
  global _WORKER_EXTRACTOR
  from hhjax import handpose  # noqa: PLC0415
  _WORKER_EXTRACTOR = handpose.HandPoseExtractor(**kwargs)


def _worker_extract(job) -> _Outcome:
  """Extracts one video in a worker; the main process records it (`_commit`)."""
  path, out_dir = job
  return _extract_one(_WORKER_EXTRACTOR, path, out_dir, False)


if __name__ == "__main__":
  sys.exit(main())
