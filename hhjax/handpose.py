"""Hand-pose features per frame from MediaPipe Hands: a cheap, pretrained second stream.

MediaPipe's palm detector and 21-point hand-landmark model ship inside the `mediapipe`
0.10.x wheels (`pip install "hhjax[handpose]"`), so this stream needs no download and no
GPU: about 20 frames/s on one CPU core at 360x240. `python -m hhjax.extract --stream
handpose` writes it in the manual layout; `HandPoseExtractor` does the same from Python.

Layout of one frame's vector (`FEATURE_DIM` = 212 = 2 slots x `HAND_DIM` = 106):

| rows (slot s = 0 left, 1 right; o = 106 s) | what                                     |
|--------------------------------------------|------------------------------------------|
| o + 0 .. o + 62                            | 21 landmarks x (x, y, z), wrist-relative |
|                                            | and scale-normalised (below)             |
| o + 63 .. o + 104                          | 21 landmarks x (x, y) image coordinates, |
|                                            | 0..1 across the frame's width / height   |
| o + 105                                    | presence: 1 if the hand was found        |

Landmark k's values sit at o + 3k .. o + 3k + 2 and o + 63 + 2k .. o + 63 + 2k + 1, in
MediaPipe's landmark order (0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
17-20 little finger). The wrist-relative block is in pixels, minus the wrist, divided by
the hand's size: the distance in the image plane from the wrist to the middle finger's
base (landmark 9), or, should that be under `MIN_SCALE_PX` pixels, the largest
wrist-to-landmark distance. It describes the hand's shape and orientation whatever its
size and place; MediaPipe's z (depth relative to the wrist, on the scale of x) gets the
same treatment. A hand that was not found is all zeros, presence included.

Slots follow MediaPipe's handedness label ("Left" -> slot 0, "Right" -> slot 1), which
assumes a mirrored (selfie) image: for an unmirrored camera, slot 0 holds the person's
right hand. Only the label matters for the layout, not which hand it really is. When
both detections carry the same label, the more confident one keeps its slot and the
other takes the free one.

Frames are decoded at their own size (no crop, which could cut hands off) by
`hhjax.video`, in time order, with MediaPipe's tracking mode (landmarks of one frame
seed the next).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from hhjax import video as video_lib

__all__ = [
  "FEATURE_DIM",
  "HAND_DIM",
  "Hand",
  "HandPoseExtractor",
  "NUM_LANDMARKS",
  "describe",
  "frame_vector",
  "hand_vector",
  "presence",
  "quiet_native_logs",
  "require_mediapipe",
]

NUM_LANDMARKS = 21
SLOTS = ("Left", "Right")
HAND_DIM = 3 * NUM_LANDMARKS + 2 * NUM_LANDMARKS + 1   # 106
FEATURE_DIM = len(SLOTS) * HAND_DIM                    # 212
WRIST, MIDDLE_BASE = 0, 9
MIN_SCALE_PX = 1.0
# MediaPipe's detection and tracking thresholds (its own defaults); `hhjax.extract`
# records them with the features they produce.
MIN_DETECTION_CONFIDENCE = 0.5
MIN_TRACKING_CONFIDENCE = 0.5
INSTALL_HINT = ('the handpose stream needs MediaPipe 0.10.14 (it ships the hand '
                'models): pip install "hhjax[handpose]"')


class Hand(NamedTuple):
  """One detected hand.

  Attributes:
    label: MediaPipe's handedness label, "Left" or "Right".
    score: the label's confidence.
    landmarks: (21, 3) normalised landmarks: x / width, y / height, and z (depth
      relative to the wrist, on the scale of x).
  """

  label: str
  score: float
  landmarks: np.ndarray


def require_mediapipe():
  """Imports and returns `mediapipe`, or raises ImportError with the install command."""
  try:
    import mediapipe  # noqa: PLC0415
    hands = mediapipe.solutions.hands  # noqa: F841  (0.10.x: the legacy solution API)
  except (ImportError, AttributeError) as e:
    raise ImportError(f"{INSTALL_HINT} ({type(e).__name__}: {e})") from e
  return mediapipe


# Lines MediaPipe 0.10.14's C++ side writes to stderr whenever a hand graph starts: the
# TFLite delegate's notice, absl's note that logging was not initialised, and one
# "Feedback manager" warning per model. All harmless; GLOG_minloglevel and
# TF_CPP_MIN_LOG_LEVEL do not reach them in this version.
NATIVE_NOISE = (
  re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate"),
  re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
  re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ inference_feedback_manager\.cc:\d+\] "
             r"Feedback manager requires"),
)


@contextlib.contextmanager
def quiet_native_logs(noise=NATIVE_NOISE):
  """Drops MediaPipe's known start-up lines from stderr while the block runs.

  Native code writes to file descriptor 2 directly, past Python's `sys.stderr`, so the
  descriptor itself is pointed at a temporary file for the block; afterwards every
  line that matches none of `noise` (regular expressions) is written to the real
  stderr, in order, so real errors and anything else printed meanwhile still show.
  Where descriptor 2 cannot be redirected, the block runs unfiltered.
  """
  try:
    sys.stderr.flush()
  except (AttributeError, ValueError, OSError):
    pass
  try:
    saved = os.dup(2)
  except OSError:
    yield
    return
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      except (AttributeError, ValueError, OSError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode("utf-8", errors="replace")
      kept = [line for line in text.splitlines(keepends=True)
              if not any(p.search(line) for p in noise)]
      if kept:
        os.write(2, "".join(kept).encode("utf-8"))


def hand_vector(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
  """The `HAND_DIM` values of one present hand (see the module docstring).

  Args:
    landmarks: (21, 3) normalised landmarks (`Hand.landmarks`).
    width: frame width in pixels.
    height: frame height in pixels.

  Returns:
    (106,) float32: wrist-relative scale-normalised xyz, image xy, presence 1.
  """
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (NUM_LANDMARKS, 3):
    raise ValueError(f"expected ({NUM_LANDMARKS}, 3) landmarks, got {lm.shape}")
  pixels = lm * np.array([width, height, width], np.float64)
  relative = pixels - pixels[WRIST]
  scale = np.hypot(*relative[MIDDLE_BASE, :2])
  if scale < MIN_SCALE_PX:
    scale = np.hypot(relative[:, 0], relative[:, 1]).max()
  relative = relative / max(scale, MIN_SCALE_PX)
  return np.concatenate([relative.reshape(-1), lm[:, :2].reshape(-1), [1.0]]
                        ).astype(np.float32)


def frame_vector(hands: Iterable[Hand], width: int, height: int) -> np.ndarray:
  """The `FEATURE_DIM` values of one frame from its detected hands (at most two used).

  Returns:
    (212,) float32; a slot without a hand is zeros (presence 0).
  """
  out = np.zeros(FEATURE_DIM, np.float32)
  free = list(range(len(SLOTS)))
  for hand in sorted(hands, key=lambda h: -h.score):
    if not free:
      break
    slot = SLOTS.index(hand.label) if hand.label in SLOTS else free[0]
    if slot not in free:
      slot = free[0]
    free.remove(slot)
    out[slot * HAND_DIM:(slot + 1) * HAND_DIM] = hand_vector(hand.landmarks, width, height)
  return out


def _hands_of(result) -> list[Hand]:
  """MediaPipe's `Hands.process` result -> `Hand`s."""
  if not result.multi_hand_landmarks:
    return []
  hands = []
  for lms, handed in zip(result.multi_hand_landmarks, result.multi_handedness):
    top = handed.classification[0]
    hands.append(Hand(label=top.label, score=float(top.score),
                      landmarks=np.array([[p.x, p.y, p.z] for p in lms.landmark])))
  return hands


class HandPoseExtractor:
  """Per-frame hand-pose features of videos (see the module docstring).

  Args:
    model_complexity: MediaPipe's landmark model, 0 (lite) or 1 (full).
    min_detection_confidence: palm detection threshold.
    min_tracking_confidence: below this, the next frame detects afresh instead of
      tracking.
    fps: sampling rate (None: the video's own).
    max_frames: only the first `max_frames` sampled frames (None: all).
    decode_chunk: frames decoded at a time.
    decode_ahead: chunks decoded ahead in a background thread while MediaPipe works
      (`hhjax.video.read_ahead`; 0: no thread).

  Raises:
    ImportError: MediaPipe (with its hand models) is not installed; says how to install.
  """

  def __init__(self, model_complexity: int = 1,
               min_detection_confidence: float = MIN_DETECTION_CONFIDENCE,
               min_tracking_confidence: float = MIN_TRACKING_CONFIDENCE,
               fps: float | None = None,
               max_frames: int | None = None, decode_chunk: int = 32,
               decode_ahead: int = 2):
    if decode_ahead < 0:
      raise ValueError(f"decode_ahead must be >= 0, got {decode_ahead}")
    if model_complexity not in (0, 1):
      raise ValueError(f"model_complexity must be 0 or 1, got {model_complexity}")
    for name, value in (("min_detection_confidence", min_detection_confidence),
                        ("min_tracking_confidence", min_tracking_confidence)):
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    self._mp = require_mediapipe()
    # protobuf 4 warns about an API MediaPipe 0.10.14 still calls, once per process.
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype")
    self.model_complexity = model_complexity
    self.min_detection_confidence = min_detection_confidence
    self.min_tracking_confidence = min_tracking_confidence
    self.fps = fps
    self.max_frames = max_frames
    self.decode_chunk = decode_chunk
    self.decode_ahead = decode_ahead

  def _new_graph(self):
    return self._mp.solutions.hands.Hands(
        static_image_mode=False, max_num_hands=len(SLOTS),
        model_complexity=self.model_complexity,
        min_detection_confidence=self.min_detection_confidence,
        min_tracking_confidence=self.min_tracking_confidence)

  def features_from_frames(self, chunks: Iterable[np.ndarray],
                           on_frame=None) -> np.ndarray:
    """(212, T) float32 from (n, H, W, 3) uint8 RGB chunks of one video, in order.

    A fresh tracker runs per call, so nothing carries over between videos.
    """
    columns = []
    # The graph's threads log their start-up at any moment from its creation to the
    # end of the first frame: stderr is filtered over that whole stretch.
    with contextlib.ExitStack() as start_up:
      start_up.enter_context(quiet_native_logs())
      with self._new_graph() as graph:
        for chunk in chunks:
          chunk = np.asarray(chunk)
          if chunk.ndim != 4 or chunk.shape[-1] != 3 or chunk.dtype != np.uint8:
            raise ValueError(f"expected (n, H, W, 3) uint8 frames, got {chunk.shape} "
                             f"{chunk.dtype}")
          height, width = chunk.shape[1:3]
          for frame in chunk:
            result = graph.process(np.ascontiguousarray(frame))
            start_up.close()   # started: stderr as it was (idempotent)
            columns.append(frame_vector(_hands_of(result), width, height))
            if on_frame is not None:
              on_frame()
    if not columns:
      raise ValueError("no frames")
    return np.stack(columns, axis=1)

  def tracker(self) -> "HandTracker":
    """A frame-by-frame form of `features_from_frames` for a live stream: one tracker
    per stream, MediaPipe's tracking state kept from frame to frame."""
    return HandTracker(self)

  def expected_frames(self, path: str | os.PathLike) -> int:
    """T that `extract(path)` will return."""
    return video_lib.count_frames(path, self.fps, self.max_frames)

  def extract(self, path: str | os.PathLike, on_frame=None) -> np.ndarray:
    """(212, T) float32 features of one video (T = decoded frames).

    Raises:
      VideoError: the video cannot be decoded.
    """
    chunks = video_lib.iter_frames(path, fps=self.fps, short_side=None, crop=None,
                                   chunk_size=self.decode_chunk,
                                   max_frames=self.max_frames)
    return self.features_from_frames(video_lib.read_ahead(chunks, self.decode_ahead),
                                     on_frame=on_frame)


class HandTracker:
  """Hand-pose features of one stream, one frame at a time.

  `with extractor.tracker() as tracker: column = tracker(frame)` gives, frame for
  frame, the columns `features_from_frames` gives for the same frames in one call
  (same graph settings, tracking carried from each frame to the next).
  """

  def __init__(self, extractor: HandPoseExtractor):
    self._extractor = extractor
    self._graph = None
    self._start_up = None

  def __enter__(self) -> "HandTracker":
    # MediaPipe logs its start-up until the first frame is processed: filtered so far.
    self._start_up = contextlib.ExitStack()
    self._start_up.enter_context(quiet_native_logs())
    self._graph = self._extractor._new_graph()
    return self

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    """(212,) float32 features of one (H, W, 3) uint8 RGB frame."""
    if self._graph is None:
      raise RuntimeError("HandTracker is used inside `with extractor.tracker() as t:`")
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
      raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} "
                       f"{frame.dtype}")
    result = self._graph.process(np.ascontiguousarray(frame))
    self._start_up.close()   # started: stderr as it was (idempotent)
    return frame_vector(_hands_of(result), frame.shape[1], frame.shape[0])

  def __exit__(self, *exc) -> None:
    if self._graph is not None:
      self._graph.close()
      self._graph = None
    if self._start_up is not None:
      self._start_up.close()


def presence(features: np.ndarray) -> np.ndarray:
  """(2, T) presence flags of a (212, T) array (row 0 left slot, row 1 right)."""
  features = np.asarray(features)
  return features[[s * HAND_DIM + HAND_DIM - 1 for s in range(len(SLOTS))]]


def describe(features: np.ndarray) -> str:
  """A one-line summary: frames, and the share of frames with each slot present."""
  p = presence(features)
  return (f"{features.shape[1]} frames; left slot present in {p[0].mean():.0%}, right "
          f"slot in {p[1].mean():.0%}")

