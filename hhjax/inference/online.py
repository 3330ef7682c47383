"""Frame sources and the per-frame loop of online assessment (`python -m hhjax.assess
--online`).

A source yields RGB frames one at a time at the rate the model's features were sampled
at: a video file (decoded lazily, optionally played at that rate in real time) or a
camera (OpenCV), whose frames are kept when their arrival time reaches the next sample
time. `OnlineRunner` turns each frame into features, feeds every `frame_stride`-th one
(standardised) to `StreamingModel.step`, and keeps the per-step outputs; its
`prediction()` maps them back to every frame as the offline runner does.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import time
from collections.abc import Callable, Iterator

import numpy as np

from hhjax import video as video_lib
from hhjax.data import pipeline

CAUSAL_SEGMENTER = "causal_conv_transformer"


class SourceError(RuntimeError):
  """A frame source cannot be opened; the message names the file or device."""


@dataclasses.dataclass
class FrameSource:
  """An open source of RGB frames.

  Attributes:
    name: a short name for the output files (the file's stem, or `camera<k>`).
    label: the file path, or "camera <k>".
    fps: the rate of the yielded frames (seconds of frame k = k / fps).
    frames: an iterator of (H, W, 3) uint8 RGB frames.
    info: facts about the source for the report (size, source rate, ...).
    close: releases the device or file.
  """

  name: str
  label: str
  fps: float
  frames: Iterator[np.ndarray]
  info: dict
  close: Callable[[], None] = lambda: None


def video_source(path, *, fps: float | None = None, max_frames: int | None = None,
                 realtime: bool = False, chunk: int = 8) -> FrameSource:
  """The frames of a video file at `fps` (None: its own rate).

  With `realtime`, frame k is not yielded before k / fps seconds after the first one
  (a recording played as if it were live); otherwise as fast as they decode. Decoding
  runs in a background thread, two chunks ahead (`hhjax.video.read_ahead`).

  Raises:
    SourceError: the file cannot be opened or decoded (names it).
  """
  try:
    info = video_lib.video_info(path)
    chunks = video_lib.iter_frames(path, fps=fps, short_side=None, crop=None,
                                   chunk_size=chunk, max_frames=max_frames)
  except video_lib.VideoError as e:
    raise SourceError(str(e)) from e
  rate = float(fps or info.fps)

  def frames() -> Iterator[np.ndarray]:
    start = None
    k = 0
    for part in video_lib.read_ahead(chunks, 2):
      for frame in part:
        if realtime:
          now = time.perf_counter()
          if start is None:
            start = now
          wait = start + k / rate - now
          if wait > 0:
            time.sleep(wait)
        k += 1
        yield frame

  return FrameSource(name=pathlib.Path(path).stem, label=str(path), fps=rate, frames=frames(),
                     info=dict(file=str(path), name=pathlib.Path(path).name,
                               source_frames=info.frames, source_fps=round(info.fps, 4),
                               width=info.width, height=info.height))


def camera_source(index: int, *, fps: float | None = None,
                  max_frames: int | None = None) -> FrameSource:
  """The frames of camera `index` (OpenCV `VideoCapture`).

  With `fps`, a frame is kept when its arrival time reaches the next sample time k / fps
  (a faster camera is thinned; a slower one gives its own rate and the seconds of the
  report are then those of `fps`, which the model was trained at).

  Raises:
    SourceError: OpenCV is missing, or no camera `index` can be opened.
  """
  try:
    import cv2  # noqa: PLC0415
  except ImportError as e:
    raise SourceError(f"camera {index}: reading a camera needs OpenCV "
                      "(pip install opencv-python)") from e
  from hhjax import handpose  # noqa: PLC0415  (its stderr filter)
  with handpose.quiet_native_logs(noise=(re.compile(r"VIDEOIO|v4l|V4L|obsensor"),
                                         re.compile(r"can't open camera"))):
    capture = cv2.VideoCapture(int(index))
    opened = capture.isOpened()
  if not opened:
    capture.release()
    raise SourceError(f"camera {index} cannot be opened (no such device, or it is in "
                      "use); give a video file or another camera index")
  own = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
  rate = float(fps or (own if own > 0 else 30.0))
  width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
  height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

  def frames() -> Iterator[np.ndarray]:
    start = None
    k = 0
    while max_frames is None or k < max_frames:
      ok, bgr = capture.read()
      if not ok:
        return
      now = time.perf_counter()
      if start is None:
        start = now
      if fps is not None and now - start + 1e-6 < k / rate:
        continue                                   # early: thinned to `fps`
      k += 1
      yield np.ascontiguousarray(bgr[..., ::-1])   # BGR -> RGB

  return FrameSource(name=f"camera{index}", label=f"camera {index}", fps=rate,
                     frames=frames(), close=capture.release,
                     info=dict(file=f"camera {index}", name=f"camera{index}",
                               source_fps=round(own, 4), width=width, height=height))


def open_source(spec: str, *, fps: float | None = None, max_frames: int | None = None,
                realtime: bool = False) -> FrameSource:
  """A camera for an integer `spec`, else the video file it names."""
  if spec.strip().lstrip("-").isdigit():
    index = int(spec)
    if index < 0:
      raise SourceError(f"camera index {index}: must be >= 0")
    return camera_source(index, fps=fps, max_frames=max_frames)
  return video_source(spec, fps=fps, max_frames=max_frames, realtime=realtime)


def require_causal(loaded) -> None:
  """Raises ValueError unless the loaded model's segmenter can run frame by frame."""
  segmenter = loaded.config.model.get("segmenter", "conv_transformer")
  if segmenter != CAUSAL_SEGMENTER:
    where = f"{loaded.path}: " if loaded.path is not None else ""
    raise ValueError(f"{where}online mode needs a causal model, trained with "
                     f"config.model.segmenter=\"{CAUSAL_SEGMENTER}\"; this model's "
                     f"segmenter is {segmenter!r}, which reads future frames")


class OnlineRunner:
  """Per-frame features -> the model's running outputs, frame by frame.

  Args:
    loaded: a `hhjax.export.LoadedModel` of a causal model.
    features: a callable (H, W, 3) uint8 frame -> (D,) features (e.g. a
      `hhjax.handpose.HandTracker`); it sees every frame (tracking needs them all),
      the model every `frame_stride`-th.
    min_steps: the model steps a new label must last before it is reported
      (`hhjax.inference.streaming`, stable labels); 1: the raw argmax.

  Raises:
    ValueError: the model cannot stream (not causal); says which config it needs.
  """

  def __init__(self, loaded, features: Callable[[np.ndarray], np.ndarray],
               min_steps: int = 1):
    from hhjax.inference.streaming import StreamingModel  # noqa: PLC0415
    require_causal(loaded)
    self.loaded = loaded
    self.stride = int(loaded.config.dataset.frame_stride)
    self.streams = str(loaded.config.dataset.streams)
    self.runner = StreamingModel(loaded.model, loaded.params, min_steps)
    self.state = self.runner.init_state(1)
    self.features = features
    self.frames = 0                  # frames seen
    self.columns: list[np.ndarray] = []    # (D,) features of every frame
    self.labels: list[int] = []            # label of every model step
    self.last: dict | None = None          # the latest step's outputs (NumPy)

  def push(self, frame: np.ndarray) -> bool:
    """Feeds one frame; True when the model stepped on it."""
    import jax  # noqa: PLC0415
    column = np.asarray(self.features(frame), np.float32).reshape(-1)
    if not np.isfinite(column).all():
      raise ValueError(f"the features of frame {self.frames} hold NaN or inf")
    self.columns.append(column)
    t = self.frames
    self.frames += 1
    if t % self.stride:
      return False
    x = pipeline.select_streams(column[None, :], self.streams)          # (1, D')
    if self.loaded.stats is not None:
      x = self.loaded.stats.apply(x)
    self.state, out = self.runner.step(self.state, np.asarray(x, np.float32))
    out = jax.device_get({k: out[k] for k in ("labels", "step_scores", "video_score",
                                               "seg_start", "seg_length")})
    self.last = {k: np.asarray(v)[0] for k, v in out.items()}
    self.labels.append(int(self.last["labels"]))
    return True

  def feature_matrix(self) -> np.ndarray:
    """(D, T) the features of every frame seen (the offline layout)."""
    return np.stack(self.columns, axis=1)

  def prediction(self):
    """The `hhjax.assess.Prediction` of the frames so far (labels at every frame)."""
    from hhjax.assess import Prediction  # noqa: PLC0415
    if self.last is None:
      raise ValueError("no frames were read")
    total = self.frames
    labels = pipeline.upsample(np.asarray(self.labels, np.int64), self.stride, total)
    start = self.last["seg_start"].astype(np.int64)
    run = self.last["seg_length"].astype(np.int64)
    seg_start = np.minimum(start * self.stride, total)
    seg_end = np.where(run > 0, np.minimum((start + run) * self.stride, total), seg_start)
    return Prediction(labels=labels, step_scores=self.last["step_scores"].astype(
                          np.float64),
                      video_score=float(self.last["video_score"]), seg_start=seg_start,
                      seg_end=seg_end)


def live_line(runner: OnlineRunner, fps: float, class_names, done_at: float,
              rate: float) -> str:
  """One terminal line: time, current step, running step scores (* done), frames/s."""
  out = runner.last
  label = int(out["labels"])
  current = "background" if label == 0 else f"{label} {class_names[label]}"
  scores = " ".join(
      f"{k + 1}:{float(out['step_scores'][k]):.2f}"
      f"{'*' if out['seg_length'][k] > 0 and out['step_scores'][k] >= done_at else ' '}"
      for k in range(out["step_scores"].shape[0]))
  seconds = runner.frames / fps
  rate_text = f"{rate:5.1f}" if math.isfinite(rate) else "  -  "
  return f"{seconds:7.1f} s  {current[:28]:<28}  {scores}  {rate_text} frames/s"
