"""Video decoding for feature extraction: sampling, resizing and centre cropping in chunks.

Frames are decoded with decord (an optional dependency: ``pip install decord`` or
``pip install hhjax[video]``), sampled at a chosen rate, resized so that the short side
has a given length (bilinear) and centre cropped to a square. They come out as a
generator of uint8 RGB arrays of at most ``chunk_size`` frames, so memory stays bounded
for long videos:

    for chunk in iter_frames("clip.mp4", fps=None, short_side=256, crop=224):
      ...  # chunk: (n, 224, 224, 3) uint8, n <= chunk_size

Resizing follows the convention of ``cv2.resize(..., interpolation=INTER_LINEAR)``:
pixel centres are aligned (source coordinate = (dst + 0.5) * src_size / dst_size - 0.5,
clamped to the image) and there is no anti-aliasing, so a downscale reads two source
pixels per output pixel on each axis. Only the pixels that survive the centre crop are
computed. Values are rounded to the nearest integer (OpenCV's fixed-point arithmetic can
differ by one grey level).

Any file that cannot be opened or decoded (missing, empty, corrupt, no frames) raises
`VideoError`, whose message names the file.

`read_ahead(chunks, depth)` decodes in a background thread up to `depth` chunks ahead of
the consumer, so decoding overlaps with the computation on the previous chunk:

    for chunk in read_ahead(iter_frames("clip.mp4"), depth=2):
      ...  # the next chunks are being decoded meanwhile
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

__all__ = [
  "VideoError",
  "VideoInfo",
  "count_frames",
  "iter_frames",
  "output_size",
  "read_ahead",
  "read_frames",
  "resize_crop",
  "sample_indices",
  "video_info",
]

DEFAULT_SHORT_SIDE = 256
DEFAULT_CROP = 224
DEFAULT_CHUNK = 32


class VideoError(RuntimeError):
  """A video file cannot be opened or decoded. `path` holds the file's name."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")


class VideoInfo(NamedTuple):
  """Container-level facts about a video.

  Attributes:
    frames: number of frames decord reports.
    fps: average frame rate (frames per second).
    width: frame width in pixels.
    height: frame height in pixels.
  """

  frames: int
  fps: float
  width: int
  height: int

  @property
  def duration(self) -> float:
    """Length in seconds (frames / fps)."""
    return self.frames / self.fps if self.fps > 0 else 0.0


def _decord():
  try:
    import decord  # noqa: PLC0415 (optional dependency, imported on first use)
  except ImportError as e:
    raise ImportError(
      "hhjax.video needs decord to decode videos: `pip install decord` "
      "(or `pip install hhjax[video]`)"
    ) from e
  return decord


def _open(path: str | os.PathLike, num_threads: int = 0):
  """Opens a decord VideoReader, turning every failure into a VideoError naming the file."""
  decord = _decord()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoError(path, "no such file")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "empty file (0 bytes)")
  try:
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
  except Exception as e:  # decord raises a bare RuntimeError (DECORDError) for bad input
    raise VideoError(path, f"cannot be opened as a video ({str(e).splitlines()[0]})") from e
  if len(reader) == 0:
    raise VideoError(path, "the video has no frames")
  return reader


def video_info(path: str | os.PathLike) -> VideoInfo:
  """Returns the frame count, frame rate and frame size of a video.

  Args:
    path: video file.

  Returns:
    `VideoInfo(frames, fps, width, height)`.

  Raises:
    VideoError: the file is missing, empty or cannot be decoded.
  """
  reader = _open(path)
  try:
    height, width = reader[0].shape[:2]
    fps = float(reader.get_avg_fps())
  except Exception as e:
    raise VideoError(path, f"cannot decode the first frame ({e})") from e
  return VideoInfo(frames=len(reader), fps=fps, width=int(width), height=int(height))


def sample_indices(num_frames: int, source_fps: float, fps: float | None = None,
                   max_frames: int | None = None) -> np.ndarray:
  """Indices of the source frames to keep when resampling to `fps`.

  Output frame k is source frame floor(k * source_fps / fps + 1e-6) (the frame shown at
  time k / fps), for every k whose frame exists. Resampling above the source rate repeats
  frames.

  Args:
    num_frames: frames in the source.
    source_fps: the source's frame rate.
    fps: target rate; None (or equal to the source rate) keeps every frame.
    max_frames: keep at most this many output frames (a prefix).

  Returns:
    (T,) int64 indices, non-decreasing.
  """
  if fps is None or source_fps <= 0 or math.isclose(fps, source_fps):
    idx = np.arange(num_frames, dtype=np.int64)
  else:
    if fps <= 0:
      raise ValueError(f"fps must be positive, got {fps}")
    count = int(math.floor((num_frames - 1) * fps / source_fps + 1e-6)) + 1
    idx = np.floor(np.arange(count) * (source_fps / fps) + 1e-6).astype(np.int64)
    idx = idx[idx < num_frames]
  if max_frames is not None:
    idx = idx[:max(int(max_frames), 0)]
  return idx


def count_frames(path: str | os.PathLike, fps: float | None = None,
                 max_frames: int | None = None) -> int:
  """Number of frames `iter_frames(path, fps=fps, max_frames=max_frames)` yields.

  Raises:
    VideoError: the file is missing, empty or cannot be decoded.
  """
  info = video_info(path)
  return int(sample_indices(info.frames, info.fps, fps, max_frames).size)


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) after scaling so the shorter side equals `short_side` (None: unchanged)."""
  if short_side is None:
    return height, width
  if height <= width:
    return short_side, max(1, round(width * short_side / height))
  return max(1, round(height * short_side / width)), short_side


def _axis_taps(src: int, dst: int, start: int, count: int):
  """Bilinear taps (i0, i1, w1) for output positions start..start+count-1 of a src->dst resize."""
  pos = (np.arange(start, start + count, dtype=np.float64) + 0.5) * (src / dst) - 0.5
  pos = np.clip(pos, 0.0, src - 1)
  i0 = np.floor(pos).astype(np.int64)
  i1 = np.minimum(i0 + 1, src - 1)
  w1 = (pos - i0).astype(np.float32)
  return i0, i1, w1


def resize_crop(frames: np.ndarray, short_side: int | None = DEFAULT_SHORT_SIDE,
                crop: int | None = DEFAULT_CROP) -> np.ndarray:
  """Bilinear resize (short side -> `short_side`) then centre crop to `crop` x `crop`.

  Args:
    frames: (n, H, W, C) uint8 frames.
    short_side: length of the shorter side after resizing; None keeps the size.
    crop: side of the square centre crop; None keeps the whole resized frame.

  Returns:
    (n, crop, crop, C) uint8 (or (n, H', W', C) without a crop).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"expected (n, H, W, C) frames, got shape {frames.shape}")
  _, h, w, _ = frames.shape
  rh, rw = output_size(h, w, short_side)
  ch, cw = (rh, rw) if crop is None else (crop, crop)
  if ch > rh or cw > rw:
    raise ValueError(f"crop {crop} is larger than the resized frame {rh}x{rw} "
                     f"(short side {short_side})")
  top, left = (rh - ch) // 2, (rw - cw) // 2
  if (rh, rw) == (h, w):
    return np.ascontiguousarray(frames[:, top:top + ch, left:left + cw])
  y0, y1, wy = _axis_taps(h, rh, top, ch)
  x0, x1, wx = _axis_taps(w, rw, left, cw)
  f = frames.astype(np.float32)  # (n, H, W, C)
  rows = f[:, y0] * (1.0 - wy)[None, :, None, None] + f[:, y1] * wy[None, :, None, None]
  out = rows[:, :, x0] * (1.0 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)  # (n, ch, cw, C)


def iter_frames(path: str | os.PathLike, *, fps: float | None = None,
                short_side: int | None = DEFAULT_SHORT_SIDE, crop: int | None = DEFAULT_CROP,
                chunk_size: int = DEFAULT_CHUNK, max_frames: int | None = None,
                num_threads: int = 0) -> Iterator[np.ndarray]:
  """Decodes a video in chunks of resized, centre-cropped RGB frames.

  The file is opened (and checked) when this function is called, so a bad file raises
  here rather than at the first `next()`; decoding then proceeds lazily, one chunk at a
  time.

  Args:
    path: video file.
    fps: sampling rate; None keeps the video's own rate (every frame).
    short_side: shorter side after the bilinear resize (None: no resize).
    crop: side of the square centre crop (None: no crop).
    chunk_size: frames per yielded array.
    max_frames: decode only this many (sampled) frames from the start.
    num_threads: decord decoding threads (0: decord's choice).

  Returns:
    A generator of (n, crop, crop, 3) uint8 arrays, n <= chunk_size, in time order.

  Raises:
    VideoError: the file is missing, empty or cannot be decoded (also raised from the
      generator if decoding fails part way).
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  path = os.fspath(path)
  reader = _open(path, num_threads=num_threads)
  try:
    source_fps = float(reader.get_avg_fps())
  except Exception as e:
    raise VideoError(path, f"cannot read the frame rate ({e})") from e
  indices = sample_indices(len(reader), source_fps, fps, max_frames)
  if indices.size == 0:
    raise VideoError(path, "no frames to decode")

  def generate() -> Iterator[np.ndarray]:
    for start in range(0, indices.size, chunk_size):
      part = indices[start:start + chunk_size]
      try:
        raw = reader.get_batch(part.tolist()).asnumpy()  # (n, H, W, 3) uint8 RGB
      except Exception as e:
        raise VideoError(path, f"decoding failed at frame {int(part[0])} ({e})") from e
      if raw.ndim != 4 or raw.shape[0] != part.size or raw.shape[-1] != 3:
        raise VideoError(path, f"decoder returned shape {raw.shape} for {part.size} frames")
      yield resize_crop(raw, short_side, crop)

  return generate()


_END = object()


def read_ahead(chunks: Iterable, depth: int = 2) -> Iterator:
  """Yields the items of `chunks` in order while a thread produces up to `depth` ahead.

  The producer thread runs `chunks` (for example `iter_frames(...)`: decoding and
  resizing) while the consumer works on the item it was last given. JAX's computations
  (and MediaPipe's graph) run outside Python's global lock, so decoding proceeds while
  they run. An exception raised by `chunks` (a `VideoError` part way through a file) is
  raised to the consumer at the same position, after the items before it. Closing the
  returned generator early (a `break`, an exception in the consumer) stops the thread
  after the item it is producing and closes `chunks`.

  Args:
    chunks: any iterable; it is iterated in the background thread only.
    depth: items produced ahead of the consumer (0: no thread, `chunks` itself is
      iterated in the caller's thread).

  Returns:
    An iterator over the items of `chunks`.

  Raises:
    ValueError: depth < 0 (here, not at the first item).
  """
  if depth < 0:
    raise ValueError(f"depth must be >= 0, got {depth}")
  if depth == 0:
    return iter(chunks)
  return _read_ahead(iter(chunks), depth)


def _read_ahead(source: Iterator, depth: int) -> Iterator:
  items: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(item) -> bool:  # False once the consumer has gone
    while not stop.is_set():
      try:
        items.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def produce() -> None:
    try:
      for item in source:
        if not put((item, None)):
          return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
      put((_END, e))
      return
    put((_END, None))

  thread = threading.Thread(target=produce, name="hhjax-read-ahead", daemon=True)
  thread.start()
  try:
    while True:
      item, error = items.get()
      if item is _END:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()
    thread.join()
    close = getattr(source, "close", None)
    if close is not None:
      close()


def read_frames(path: str | os.PathLike, **kwargs) -> np.ndarray:
  """All frames of `iter_frames(path, **kwargs)` in one (T, H, W, 3) uint8 array (short clips)."""
  return np.concatenate(list(iter_frames(path, **kwargs)), axis=0)
