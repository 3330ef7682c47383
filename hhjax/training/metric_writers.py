"""Where training metrics go: `metrics.jsonl` and TensorBoard event files.

* `JsonlWriter` appends one JSON object per logged step to `<workdir>/metrics.jsonl`.
  On resume, `truncate_after(step)` drops the lines a crashed run wrote after its last
  checkpoint, so the file never holds a step twice.
* `TensorBoardWriter` writes event files to `<workdir>/tensorboard/` with tensorboardX
  (no TensorFlow): every scalar, and images (e.g. a test video's timeline) at each
  evaluation. Watch a run with `tensorboard --logdir <workdir>/tensorboard`.
* `read_events(path)` reads scalars back from event files (for tests and scripts),
  again without TensorFlow.

Only process 0 writes.
"""

from __future__ import annotations

import glob
import json
import math
import pathlib
import struct

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class JsonlWriter:
  """Appends one JSON object per call to `metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: pathlib.Path):
    self.path = pathlib.Path(workdir) / METRICS_FILE
    self.enabled = jax.process_index() == 0

  def truncate_after(self, step: int) -> int:
    """Drops every line logged after `step` (a crashed run's lines past its last
    checkpoint), and a last line torn by a kill mid-write; returns how many were
    dropped.

    Raises:
      ValueError: a line before the last is not a metrics line (naming the file and
        line).
    """
    if not self.enabled or not self.path.exists():
      return 0
    lines = [line for line in self.path.read_text().splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
      try:
        logged = json.loads(line)["step"]
      except (ValueError, KeyError, TypeError) as e:
        if number == len(lines):   # torn by a kill mid-write: past any checkpoint
          continue
        raise ValueError(f"{self.path}, line {number}: not a metrics line ({e}): "
                         f"{line[:80]!r}") from e
      if logged <= step:
        kept.append(line)
    if len(kept) != len(lines):
      tmp = self.path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(line + "\n" for line in kept))
      tmp.replace(self.path)
    return len(lines) - len(kept)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self.enabled:
      with self.path.open("a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in
                                                  scalars.items()}}) + "\n")

  def write_image(self, step: int, tag: str, png_path: pathlib.Path) -> None:
    del step, tag, png_path   # images go to TensorBoard only

  def close(self) -> None:
    pass


class TensorBoardWriter:
  """Scalars and images as TensorBoard event files (tensorboardX, no TensorFlow)."""

  def __init__(self, workdir: pathlib.Path):
    self.enabled = jax.process_index() == 0
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # noqa: PLC0415
      self._writer = SummaryWriter(str(pathlib.Path(workdir) / TENSORBOARD_DIR),
                                   flush_secs=10)

  def truncate_after(self, step: int) -> int:
    # Event files are append-only; TensorBoard shows the latest value of a step.
    del step
    return 0

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is not None:
      for k, v in scalars.items():
        if math.isfinite(float(v)):
          self._writer.add_scalar(k, float(v), int(step))
      self._writer.flush()

  def write_image(self, step: int, tag: str, png_path: pathlib.Path) -> None:
    if self._writer is None:
      return
    import matplotlib.image  # noqa: PLC0415
    image = matplotlib.image.imread(str(png_path))[..., :3]        # (H, W, 3) in [0, 1]
    self._writer.add_image(tag, np.asarray(image), int(step), dataformats="HWC")
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class MultiWriter:
  """Sends every call to several writers."""

  def __init__(self, writers):
    self.writers = list(writers)

  def truncate_after(self, step: int) -> int:
    return max([w.truncate_after(step) for w in self.writers] or [0])

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_image(self, step: int, tag: str, png_path: pathlib.Path) -> None:
    for w in self.writers:
      w.write_image(step, tag, png_path)

  def close(self) -> None:
    for w in self.writers:
      w.close()


def create(workdir: pathlib.Path, tensorboard: bool = True) -> MultiWriter:
  """The writers of a run: metrics.jsonl, plus TensorBoard unless switched off."""
  writers = [JsonlWriter(workdir)]
  if tensorboard:
    writers.append(TensorBoardWriter(workdir))
  return MultiWriter(writers)


def _records(path: str):
  """The payloads of a TFRecord-framed file (length, crc, data, crc)."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      f.read(4)
      yield data


def read_events(logdir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """Scalars of every event file under `logdir`: {tag: [(step, value), ...]}, and the
  image tags with their steps under `"images/<tag>"` (value = the PNG's byte count)."""
  from tensorboardX.proto import event_pb2  # noqa: PLC0415
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(str(pathlib.Path(logdir) / "events.out.tfevents.*"))):
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        if value.HasField("image"):
          out.setdefault(f"images/{value.tag}", []).append(
              (event.step, float(len(value.image.encoded_image_string))))
        elif value.HasField("simple_value"):
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
