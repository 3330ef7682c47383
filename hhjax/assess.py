r"""Assessing hand-washing videos: which WHO steps were done, where, how well, and what
was missed.

    python -m hhjax.assess VIDEO_OR_FOLDER... [--model DIR] [--out DIR] \
        [--ground-truth FILE_OR_FOLDER] [--html/--no-html] [--max-frames N]
    python -m hhjax.assess --online VIDEO_OR_CAMERA_INDEX [--model DIR] [--realtime]

`--online` assesses one stream while it plays (`assess_online`): a video file (at its
frame rate with `--realtime`) or a camera, frame by frame through a causal model
(`config.model.segmenter="causal_conv_transformer"`, `hhjax.inference.online`), with a
live line of the running step scores; at the end (or Ctrl-C) it writes the same report.

For every video: decode it, compute the model's feature stream with hhjax's own
extractors (`hhjax.handpose` for hand pose; `hhjax.extract`'s two-stream I3D, with the
weights the model's manifest names, for "i3d"), with the settings recorded in the
model folder (`hhjax.export`), standardise the features with the model's statistics,
run the model, and write

* `<out>/<video>.json`: the report (below);
* `<out>/<video>.png`: the timeline, the prediction (and the ground truth above it with
  `--ground-truth`);
* `<out>/<video>.html` (unless `--no-html`): one self-contained page, the timeline
  embedded, the step table and the scores;

and print a short summary with a table of the steps. A folder, or several videos, also
give `<out>/summary.csv` with one row per video (failed ones included, with their
error). docs/ASSESS.md shows an example of each.

The report, per WHO step 1-6: `done` (False is NE), `attribute` (NE / EN / ES), the
step's `score`, `start_s` / `end_s` (seconds, the segment the score was computed from:
the step's longest predicted run), and every run the model predicted for the step;
then the total score (the model's video score, the sum of the six step scores), the
steps missing, the steps out of WHO order (a step whose segment starts before the
segment of a lower-numbered step), the model and feature settings used, and the frame
rate and duration. Seconds are frame / frame rate, the rate the features were sampled
at (the model's recorded rate, else the video's own).

Attributes come from thresholds on the step score (recorded in the model folder, see
`hhjax.export`; `--done-threshold`, `--es-threshold` override them): a step is NE when
the model found no segment for it or its score is below `done`; otherwise ES from `es`
up and EN below.

Bad input is reported per video and the others are still assessed: a file that cannot
be decoded, a video in which no hand is found in any frame (hand-pose models). The
exit status is 0 when every video was assessed, 1 when any failed or the model folder
cannot be used (a missing or altered file is named), 2 for bad arguments (and for two
videos whose names differ only in the extension, which would write the same files).

`--model` defaults to the model shipped in the package, `hhjax/assets/handwash_model/`.
"""

from __future__ import annotations

import argparse
import base64
import copy
import csv
import dataclasses
import html
import json
import os
import pathlib
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hhjax import export, video as video_lib
from hhjax.data import pipeline

__all__ = [
  "AssessError",
  "DEFAULT_MODEL",
  "Prediction",
  "Predictor",
  "build_report",
  "format_summary",
  "main",
  "make_extractor",
  "read_ground_truth",
  "render_html",
]

DEFAULT_MODEL = pathlib.Path(__file__).resolve().parent / "assets" / "handwash_model"
DEFAULT_OUT = "assessment"
NUM_STEPS = 6
SUMMARY_FILE = "summary.csv"
REPORT_FORMAT = 1


class AssessError(Exception):
  """A video (or the model) cannot be assessed; the message names the file."""


# ---------------------------------------------------------------------------------------
# Running the model.


@dataclasses.dataclass
class Prediction:
  """The model's output for one video, at the features' frame rate.

  Attributes:
    labels: (T,) int class per frame (0 background, k step k).
    step_scores: (6,) float, step k's score at index k - 1.
    video_score: the model's video score (the sum of the step scores).
    seg_start: (6,) int, first frame of each step's scored segment.
    seg_end: (6,) int, one past its last frame (equal to `seg_start`: no segment).
  """

  labels: np.ndarray
  step_scores: np.ndarray
  video_score: float
  seg_start: np.ndarray
  seg_end: np.ndarray


class Predictor:
  """Runs a loaded model (`hhjax.export.LoadedModel`) on one video's features.

  The features go through what training did to them: stream selection
  (`dataset.streams`), every `frame_stride`-th frame, standardising with the model's
  statistics; they are padded to a multiple of `dataset.bucket_size` (masked), and
  the labels come back at every frame (`pipeline.upsample`).

  `min_segment_seconds` (None: the model's own `model.min_segment_frames`) merges
  predicted runs shorter than that many seconds of the video into their neighbours
  (`hhjax.models.segmenters.postprocess`) before the steps are scored.
  """

  def __init__(self, loaded: export.LoadedModel,
               min_segment_seconds: float | None = None):
    self.loaded = loaded
    cfg = loaded.config.dataset
    self.stride = int(cfg.frame_stride)
    self.streams = str(cfg.streams)
    self.bucket = int(cfg.bucket_size)
    self.min_segment_seconds = min_segment_seconds
    self._applies: dict[int | None, Any] = {}

  def min_segment_frames(self, fps: float | None) -> int | None:
    """The merge length in the model's (strided) frames for a video at `fps`; None
    when the model's own setting applies."""
    if self.min_segment_seconds is None:
      return None
    if not fps:
      raise ValueError("min_segment_seconds needs the video's frame rate")
    return int(round(self.min_segment_seconds * fps / self.stride))

  def _apply_for(self, min_frames: int | None):
    import jax  # noqa: PLC0415
    if min_frames not in self._applies:
      model = self.loaded.model
      if min_frames is not None:
        from hhjax.models.joint import create_model  # noqa: PLC0415
        config = copy.deepcopy(self.loaded.config)
        config.model.min_segment_frames = min_frames
        model = create_model(config)

      def apply(params, x, mask):
        out = model.apply({"params": params}, x, mask, train=False)
        return {k: out[k] for k in ("labels", "step_scores", "video_score", "seg_start",
                                    "seg_length")}

      self._applies[min_frames] = jax.jit(apply)
    return self._applies[min_frames]

  def __call__(self, features: np.ndarray, fps: float | None = None) -> Prediction:
    """Predicts from (D, T) features (MS-TCN layout, one column per frame) of a video
    at `fps` frames per second (needed with `min_segment_seconds`)."""
    import jax  # noqa: PLC0415
    features = np.asarray(features, np.float32)
    want = int(self.loaded.features.get("raw_feature_dim") or features.shape[0])
    if features.ndim != 2 or features.shape[0] != want:
      raise ValueError(f"features of shape {features.shape}; the model takes ({want}, T)")
    if not np.isfinite(features).all():
      bad = int(np.flatnonzero(~np.isfinite(features).all(axis=0))[0])
      raise ValueError(f"the features hold NaN or inf (first at frame {bad})")
    total = features.shape[1]
    x = pipeline.select_streams(features.T, self.streams)[::self.stride]   # (t, D')
    if self.loaded.stats is not None:
      x = self.loaded.stats.apply(x)
    t = x.shape[0]
    length = pipeline.bucket_length(t, self.bucket)
    padded = np.zeros((1, length, x.shape[1]), np.float32)
    padded[0, :t] = x
    mask = np.zeros((1, length), np.float32)
    mask[0, :t] = 1.0
    apply = self._apply_for(self.min_segment_frames(fps))
    out = jax.device_get(apply(self.loaded.params, padded, mask))
    labels = pipeline.upsample(np.asarray(out["labels"][0, :t]), self.stride, total)
    start = np.asarray(out["seg_start"][0], np.int64)
    run = np.asarray(out["seg_length"][0], np.int64)
    seg_start = np.minimum(start * self.stride, total)
    seg_end = np.where(run > 0, np.minimum((start + run) * self.stride, total), seg_start)
    return Prediction(labels=labels.astype(np.int64),
                      step_scores=np.asarray(out["step_scores"][0], np.float64),
                      video_score=float(out["video_score"][0]),
                      seg_start=seg_start, seg_end=seg_end)


# ---------------------------------------------------------------------------------------
# Feature extractors as the model's manifest describes them.


def _i3d_weights(name: str, recorded, given: str | None, random_weights: bool,
                 in_channels: int):
  """The variables of one I3D stream, checked against what the model was trained on."""
  from hhjax import extract  # noqa: PLC0415
  from hhjax.models.backbones import i3d  # noqa: PLC0415
  flag = f"--{name}-weights"
  if isinstance(recorded, str) and recorded.startswith("random:"):
    if not random_weights:
      raise AssessError(
          f"the model was trained on features of randomly initialised I3D ({name} "
          f"{recorded}), which carry no information about a video (pipeline tests "
          "only); pass --random-weights to reproduce them")
    return extract.random_variables(in_channels, int(recorded.split(":", 1)[1]))
  if random_weights:
    raise AssessError(f"--random-weights: the model was trained on I3D features of "
                      f"pretrained {name} weights ({recorded or 'not recorded'}); pass "
                      f"{flag} instead")
  if given is None:
    shown = (f" (SHA-256 {recorded[7:]})" if isinstance(recorded, str)
             and recorded.startswith("sha256:") else "")
    raise AssessError(f"the model's inputs are two-stream I3D features: pass "
                      f"--rgb-weights and --flow-weights, the weights it was trained "
                      f"with{shown} (docs/I3D.md)")
  if isinstance(recorded, str) and recorded.startswith("sha256:"):
    digest = extract.file_sha256(given)
    if digest != recorded[7:]:
      raise AssessError(f"{given}: not the {name} weights the model was trained with "
                        f"(SHA-256 {digest[:12]}.., recorded {recorded[7:19]}..)")
  try:
    return i3d.load_pretrained(given, in_channels=in_channels)
  except (OSError, ValueError) as e:
    raise AssessError(f"{given}: cannot load the {name} weights ({e})") from e


def make_extractor(loaded: export.LoadedModel, options: argparse.Namespace):
  """The feature extractor the model's manifest calls for.

  Returns an object with `extract(path, on_frame=None) -> (D, T)` and
  `expected_frames(path)`, sampling at the model's frame rate (None: the video's own)
  and stopping after `options.max_frames` frames.

  Raises:
    AssessError: the stream cannot be computed from video (synthetic or unknown
      features), I3D weights are missing or differ from the recorded ones, or
      MediaPipe is not installed.
  """
  feats = loaded.features
  stream = feats.get("stream")
  settings = feats.get("extraction") or {}
  fps = feats.get("fps")
  if stream == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    try:
      return handpose.HandPoseExtractor(
          model_complexity=int(settings.get("hand_model", 1)),
          min_detection_confidence=float(settings.get(
              "min_detection_confidence", handpose.MIN_DETECTION_CONFIDENCE)),
          min_tracking_confidence=float(settings.get(
              "min_tracking_confidence", handpose.MIN_TRACKING_CONFIDENCE)),
          fps=fps, max_frames=options.max_frames)
    except ImportError as e:
      raise AssessError(f"this model reads hand pose: {e}") from e
  if stream == "i3d":
    from hhjax import extract  # noqa: PLC0415
    try:
      config = extract.ExtractConfig(
          mode=settings.get("mode", "dense"), window=int(settings.get("window", 21)),
          chunk=int(settings.get("chunk", 64)), margin=int(settings.get("margin", 16)),
          size=int(settings.get("crop", 224)), short_side=settings.get("short_side"),
          fps=fps, max_frames=options.max_frames, flow_size=settings.get("flow_size"),
          flow_iterations=int(settings.get("flow_iterations", 30)),
          flow_outer=int(settings.get("flow_outer", 10)),
          flow_warps=int(settings.get("flow_warps", 5)),
          flow_scales=int(settings.get("flow_scales", 5)))
    except ValueError as e:
      raise AssessError(f"the model's manifest records unusable I3D settings ({e})"
                        ) from e
    rgb = _i3d_weights("rgb", settings.get("rgb_weights"), options.rgb_weights,
                       options.random_weights, 3)
    flow = _i3d_weights("flow", settings.get("flow_weights"), options.flow_weights,
                        options.random_weights, 2)
    return extract.FeatureExtractor(rgb, flow, config)
  raise AssessError(f"the model was trained on {stream or 'unrecorded'} features, which "
                    "cannot be computed from a video; assess with a model trained on "
                    "hand-pose or I3D features")


def _setting_warnings(loaded: export.LoadedModel) -> list[str]:
  """Differences between the recorded extraction and this installation."""
  out = []
  feats = loaded.features
  if feats.get("extraction_source", "") and str(feats["extraction_source"]).startswith(
      "assumed"):
    out.append("the training features' extraction settings were not recorded; the "
               "extractor's defaults are assumed")
  recorded = (feats.get("extraction") or {}).get("mediapipe")
  if feats.get("stream") == "handpose" and recorded:
    import importlib.metadata  # noqa: PLC0415
    try:
      installed = importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
      installed = None
    if installed and installed != recorded:
      out.append(f"MediaPipe {installed} is installed; the model was trained on "
                 f"features of MediaPipe {recorded}")
  return out


# ---------------------------------------------------------------------------------------
# Ground truth.


def read_ground_truth(path: str | os.PathLike, class_names: Sequence[str]) -> np.ndarray:
  """(N,) class indices from a groundTruth-style file: one class name per line.

  Raises:
    AssessError: the file cannot be read, holds no frames, or names a class the model
      does not know (the first such lines named).
  """
  path = pathlib.Path(path)
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise AssessError(f"{path}: cannot be read ({e})") from e
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise AssessError(f"{path}: no frames")
  index = {name: i for i, name in enumerate(class_names)}
  labels = np.zeros(len(lines), np.int64)
  bad = []
  for t, line in enumerate(lines):
    k = index.get(line.strip())
    if k is None:
      bad.append(f"line {t + 1} {line.strip()!r}")
    else:
      labels[t] = k
  if bad:
    raise AssessError(f"{path}: unknown class at {', '.join(bad[:3])}"
                      f"{' and more' if len(bad) > 3 else ''}; the model's classes are "
                      f"{', '.join(class_names)}")
  return labels


def _align_ground_truth(labels: np.ndarray, path, num_frames: int, info, fps,
                        max_frames) -> np.ndarray:
  """Ground truth at the features' frames: as is when it has one label per feature
  frame, resampled like the video when it has one per source frame."""
  if labels.size == num_frames:
    return labels
  if labels.size == info.frames:
    idx = video_lib.sample_indices(info.frames, info.fps, fps, max_frames)
    if idx.size == num_frames:
      return labels[idx]
  raise AssessError(f"{path}: {labels.size} frames of ground truth, but the video has "
                    f"{info.frames} frames ({num_frames} assessed)")


# ---------------------------------------------------------------------------------------
# The report.


def step_title(class_name: str) -> str:
  """"step3_fingers_interlaced" -> "fingers interlaced"."""
  name = class_name
  head, _, rest = name.partition("_")
  if head.startswith("step") and head[4:].isdigit() and rest:
    name = rest
  return name.replace("_", " ")


def _seconds(frame: int, fps: float) -> float:
  return round(frame / fps, 3)


def build_report(pred: Prediction, *, fps: float, class_names: Sequence[str],
                 thresholds: dict, score_range: Sequence[float] = (0.0, 6.0),
                 video: dict | None = None, model: dict | None = None,
                 ground_truth: np.ndarray | None = None,
                 warnings: Sequence[str] = ()) -> dict:
  """The JSON report of one video (see the module docstring).

  Args:
    pred: the model's prediction.
    fps: frame rate of the prediction's frames (seconds = frame / fps).
    class_names: the model's classes (0 background, k step k).
    thresholds: `{"done": d, "es": e}` on the step score (plus any notes, copied).
    score_range: the video score's (lo, hi); a step's range is a sixth of it.
    video: facts about the source (file, size, ...), copied into `video`.
    model: the model and feature settings, copied into `model`.
    ground_truth: (T,) class indices, for the frame accuracy and the true steps.
    warnings: notes to keep with the report.
  """
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  from hhjax.metrics import segments  # noqa: PLC0415
  total = int(pred.labels.shape[0])
  lo, hi = (float(v) for v in score_range)
  step_lo, step_hi = lo / NUM_STEPS, hi / NUM_STEPS
  done_at, es_at = float(thresholds["done"]), float(thresholds["es"])
  notes = list(warnings)
  runs: dict[int, list[list[float]]] = {k: [] for k in range(1, NUM_STEPS + 1)}
  for label, start, end in segments(pred.labels):
    if 1 <= label <= NUM_STEPS:
      runs[label].append([_seconds(start, fps), _seconds(end, fps)])
  steps = []
  for k in range(1, NUM_STEPS + 1):
    raw = float(pred.step_scores[k - 1])
    score = min(max(raw, step_lo), step_hi)
    if score != raw:
      notes.append(f"step {k}: score {raw:.4f} clipped to the step range "
                   f"[{step_lo:g}, {step_hi:g}]")
    start, end = int(pred.seg_start[k - 1]), int(pred.seg_end[k - 1])
    found = end > start
    if not found:
      attribute, why = "NE", "no segment of this step was found"
    elif score < done_at:
      attribute, why = "NE", (f"score {score:.2f} is below the done threshold "
                              f"{done_at:g}")
    elif score < es_at:
      attribute, why = "EN", f"score {score:.2f} is below the ES threshold {es_at:g}"
    else:
      attribute, why = "ES", f"score {score:.2f} reaches the ES threshold {es_at:g}"
    steps.append(dict(
        step=k, name=step_title(class_names[k]), class_name=class_names[k],
        done=attribute != "NE", attribute=attribute, score=round(score, 4), reason=why,
        start_s=_seconds(start, fps) if found else None,
        end_s=_seconds(end, fps) if found else None,
        duration_s=_seconds(end - start, fps) if found else 0.0,
        start_frame=start if found else None, end_frame=end if found else None,
        segments_s=runs[k]))
  done = [s for s in steps if s["done"]]
  out_of_order = []
  for s in done:
    before = [r["step"] for r in done if r["step"] < s["step"]
              and r["start_frame"] > s["start_frame"]]
    if before:
      out_of_order.append(dict(step=s["step"], starts_before=before))
  report = dict(
      format=REPORT_FORMAT,
      video=dict(video or {}, frames=total, fps=round(float(fps), 4),
                 duration_s=_seconds(total, fps)),
      total_score=round(float(pred.video_score), 4), score_range=[lo, hi],
      steps_done=len(done),
      missing_steps=[s["step"] for s in steps if not s["done"]],
      out_of_order=out_of_order,
      order=[s["step"] for s in sorted(done, key=lambda s: s["start_frame"])],
      steps=steps,
      thresholds=dict(thresholds),
      model=dict(model or {}),
      warnings=notes)
  if ground_truth is not None:
    gt = np.asarray(ground_truth)
    if gt.shape != pred.labels.shape:
      raise ValueError(f"ground truth of {gt.shape[0]} frames for {total} predicted")
    present = [k for k in range(1, NUM_STEPS + 1) if np.any(gt == k)]
    report["ground_truth"] = dict(
        frame_accuracy=round(float(np.mean(gt == pred.labels)) * 100, 2),
        steps_done=present,
        missing_steps=[k for k in range(1, NUM_STEPS + 1) if k not in present])
  return report


_NUMBER_LIST = re.compile(r"\[\s+((?:-?[\d.eE+-]+|null)(?:,\s+(?:-?[\d.eE+-]+|null))*)\s+\]")


def dumps(report: dict) -> str:
  """JSON with two-space indentation and lists of numbers kept on one line."""
  text = json.dumps(report, indent=2)
  return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def _clock(seconds) -> str:
  return "-" if seconds is None else f"{seconds:.1f} s"


def format_summary(report: dict) -> str:
  """A few lines for the terminal: the video, a table of the steps, the verdict."""
  v = report["video"]
  lo, hi = report["score_range"]
  lines = [f"{v.get('name', 'video')}: {v['duration_s']:.1f} s ({v['frames']} frames at "
           f"{v['fps']:g} fps)",
           f"  {'step':<26} {'done':<5} {'attr':<5} {'score':>5}  {'start':>8} "
           f"{'end':>8}"]
  for s in report["steps"]:
    lines.append(f"  {s['step']} {s['name'][:24]:<24} {'yes' if s['done'] else 'no':<5} "
                 f"{s['attribute']:<5} {s['score']:>5.2f}  {_clock(s['start_s']):>8} "
                 f"{_clock(s['end_s']):>8}")
  missing = ", ".join(map(str, report["missing_steps"])) or "none"
  order = "; ".join(f"{o['step']} starts before {', '.join(map(str, o['starts_before']))}"
                    for o in report["out_of_order"]) or "none"
  lines.append(f"  total score {report['total_score']:.2f} of {hi:g}; "
               f"{report['steps_done']} of {NUM_STEPS} steps done; missing: {missing}; "
               f"out of WHO order: {order}")
  if "ground_truth" in report:
    gt = report["ground_truth"]
    lines.append(f"  ground truth: frame accuracy {gt['frame_accuracy']:.1f} %, missing "
                 f"{', '.join(map(str, gt['missing_steps'])) or 'none'}")
  for note in report.get("warnings", []):
    lines.append(f"  note: {note}")
  return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
h1 { font-size: 1.4em; } table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
td.num { text-align: right; } tr.NE { background: #fde8e8; } tr.EN { background: #fff6db; }
tr.ES { background: #e6f6e6; } .verdict { font-size: 1.1em; } img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; }
"""


def render_html(report: dict, png: bytes | None) -> str:
  """One self-contained HTML page of a report (the timeline embedded as base64)."""
  esc = html.escape
  v = report["video"]
  lo, hi = report["score_range"]
  rows = []
  for s in report["steps"]:
    rows.append(
        f"<tr class=\"{s['attribute']}\"><td>{s['step']}</td><td>{esc(s['name'])}</td>"
        f"<td>{'yes' if s['done'] else 'no'}</td><td>{s['attribute']}</td>"
        f"<td class=\"num\">{s['score']:.2f}</td><td class=\"num\">{_clock(s['start_s'])}"
        f"</td><td class=\"num\">{_clock(s['end_s'])}</td>"
        f"<td class=\"num\">{s['duration_s']:.1f} s</td><td>{esc(s['reason'])}</td></tr>")
  missing = ", ".join(map(str, report["missing_steps"])) or "none"
  order = "; ".join(f"step {o['step']} starts before step(s) "
                    f"{', '.join(map(str, o['starts_before']))}"
                    for o in report["out_of_order"]) or "none"
  image = ("" if png is None else
           f"<img alt=\"timeline\" src=\"data:image/png;base64,"
           f"{base64.b64encode(png).decode('ascii')}\">")
  gt = ""
  if "ground_truth" in report:
    g = report["ground_truth"]
    gt = (f"<p>Ground truth: frame accuracy {g['frame_accuracy']:.1f} %, steps missing "
          f"{', '.join(map(str, g['missing_steps'])) or 'none'}.</p>")
  notes = "".join(f"<li>{esc(n)}</li>" for n in report.get("warnings", []))
  notes = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
  t = report["thresholds"]
  settings = esc(json.dumps(report["model"], indent=2))
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Hand-washing assessment: {esc(str(v.get('name', 'video')))}</title>
<style>{_CSS}</style></head><body>
<h1>Hand-washing assessment: {esc(str(v.get('name', 'video')))}</h1>
<p>{esc(str(v.get('file', '')))}: {v['duration_s']:.1f} s, {v['frames']} frames at
{v['fps']:g} fps.</p>
<p class="verdict"><b>Total score {report['total_score']:.2f} of {hi:g}</b>;
{report['steps_done']} of {NUM_STEPS} WHO steps done. Missing: {missing}.
Out of WHO order: {order}.</p>
{image}
<table><thead><tr><th>Step</th><th>Name</th><th>Done</th><th>Attribute</th><th>Score</th>
<th>Start</th><th>End</th><th>Duration</th><th>Why</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<p>NE: not done (no segment, or score below {t['done']:g}); EN: done, not to standard
(score below {t['es']:g}); ES: done to standard. Steps are scored on their longest
predicted segment; the total is the sum of the six step scores.</p>
{gt}{notes}
<details><summary>Model and feature settings</summary><pre>{settings}</pre></details>
</body></html>
"""


# ---------------------------------------------------------------------------------------
# One video.


def _model_info(loaded: export.LoadedModel, fps_used: float, options) -> dict:
  m = loaded.manifest
  feats = m["features"]
  own = int(loaded.config.model.get("min_segment_frames", 0))
  seconds = getattr(options, "min_segment_seconds", None)
  stride = int(loaded.config.dataset.frame_stride)
  return dict(
      folder=str(loaded.path) if loaded.path is not None else None,
      name=m.get("model"), step=m.get("step"), hhjax=m.get("hhjax"),
      # predicted runs shorter than this were merged into their neighbours (0: none)
      min_segment_seconds=(seconds if seconds is not None
                           else round(own * stride / fps_used, 3) if fps_used else None),
      training=m.get("training", {}).get("dataset"),
      features=dict(stream=feats.get("stream"), fps=fps_used,
                    recorded_fps=feats.get("fps"),
                    frame_stride=feats.get("frame_stride"), streams=feats.get("streams"),
                    standardize=feats.get("standardize"),
                    max_frames=options.max_frames, extraction=feats.get("extraction"),
                    extraction_source=feats.get("extraction_source")))


# What FFmpeg (through decord) prints when it cannot open a file: the VideoError
# raised then says the same in one line naming the file.
DECODER_NOISE = (
  re.compile(r"^\[[\w,]+ @ 0x[0-9a-fA-F]+\] "),
  re.compile(r"video_reader\.cc:\d+: ERROR opening"),
)


def _video_info(path: pathlib.Path) -> video_lib.VideoInfo:
  """`hhjax.video.video_info`, without FFmpeg's own lines about the file on stderr."""
  from hhjax import handpose  # noqa: PLC0415  (its stderr filter)
  with handpose.quiet_native_logs(noise=DECODER_NOISE):
    return video_lib.video_info(path)


def assess_video(path: pathlib.Path, *, loaded: export.LoadedModel, predictor,
                 extractor, out_dir: pathlib.Path, options, thresholds: dict,
                 ground_truth: pathlib.Path | None, progress: bool) -> dict:
  """Assesses one video and writes its JSON, PNG (and HTML); returns the report.

  Raises:
    AssessError: the video cannot be decoded, no hand is found in it (hand-pose
      models), or its ground truth does not fit; each names the file.
  """
  from hhjax import extract  # noqa: PLC0415
  try:
    info = _video_info(path)
    features = extract.extract_with_progress(extractor, path, progress)
  except video_lib.VideoError as e:
    raise AssessError(str(e)) from e
  except ValueError as e:
    raise AssessError(f"{path}: {e}") from e
  num_frames = int(features.shape[1])
  feats = loaded.features
  if feats.get("stream") == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    if not np.any(handpose.presence(features) > 0):
      raise AssessError(f"{path}: no hands detected in any of its {num_frames} frames "
                        "(are the hands in view and lit?)")
  fps = float(feats.get("fps") or info.fps)
  try:
    pred = predictor(features, fps=fps)
  except ValueError as e:
    raise AssessError(f"{path}: {e}") from e
  gt = None
  if ground_truth is not None:
    gt = _align_ground_truth(read_ground_truth(ground_truth, loaded.class_names),
                             ground_truth, num_frames, info, feats.get("fps"),
                             options.max_frames)
  video = dict(file=str(path), name=path.name, source_frames=info.frames,
               source_fps=round(info.fps, 4), width=info.width, height=info.height)
  if ground_truth is not None:
    video["ground_truth_file"] = str(ground_truth)
  lo, hi = loaded.manifest["score_range"]
  report = build_report(pred, fps=fps, class_names=loaded.class_names,
                        thresholds=thresholds, score_range=(lo, hi), video=video,
                        model=_model_info(loaded, fps, options), ground_truth=gt,
                        warnings=_setting_warnings(loaded))
  write_outputs(report, pred.labels, out_dir=out_dir, stem=path.stem,
                fps=fps, class_names=loaded.class_names, ground_truth=gt,
                html_page=options.html)
  return report


def write_outputs(report: dict, labels: np.ndarray, *, out_dir: pathlib.Path, stem: str,
                  fps: float, class_names: Sequence[str], ground_truth: np.ndarray | None = None,
                  html_page: bool = True) -> None:
  """Writes `<stem>.json`, the timeline `<stem>.png` and (with `html_page`)
  `<stem>.html` of one report; `labels` (T,) are the predicted frame labels, at `fps`."""
  (out_dir / f"{stem}.json").write_text(dumps(report) + "\n")
  png_path = out_dir / f"{stem}.png"
  rows = ([("ground truth", ground_truth)] if ground_truth is not None else []) + [
      ("prediction", labels)]
  from hhjax import reporting  # noqa: PLC0415
  hi = report["score_range"][1]
  reporting.plot_timelines(png_path, rows, class_names, fps=fps,
                           title=f"{report['video'].get('name', stem)}: total score "
                                 f"{report['total_score']:.2f} of {hi:g}")
  if html_page:
    (out_dir / f"{stem}.html").write_text(render_html(report, png_path.read_bytes()),
                                          encoding="utf-8")


# ---------------------------------------------------------------------------------------
# Online: one live stream.


def make_frame_features(loaded: export.LoadedModel, options: argparse.Namespace):
  """A context manager giving a callable (H, W, 3) uint8 RGB frame -> (D,) features,
  tracking state kept across frames (`hhjax.handpose.HandTracker`).

  Raises:
    AssessError: the model's features are not hand pose (I3D features are computed
      over windows of frames, with no per-frame form), or MediaPipe is missing.
  """
  stream = loaded.features.get("stream")
  if stream != "handpose":
    raise AssessError(f"online mode computes hand-pose features frame by frame; the "
                      f"model was trained on {stream or 'unrecorded'} features")
  return make_extractor(loaded, options).tracker()


def stable_steps(seconds: float, fps: float, frame_stride: int) -> int:
  """The model steps (every `frame_stride`-th frame at `fps`) a new label must last
  before online mode reports it: `seconds` of them, at least 1.

  Raises:
    AssessError: a negative `seconds`.
  """
  if not seconds >= 0:
    raise AssessError(f"--stable-seconds must be >= 0, got {seconds}")
  return max(1, int(round(seconds * fps / frame_stride)))


def assess_online(source: str, *, loaded: export.LoadedModel, out_dir: pathlib.Path,
                  options, thresholds: dict, progress: bool = True) -> dict:
  """Assesses a video file or camera while it plays, then writes the report files.

  Every frame (at the model's frame rate) goes through the per-frame features, every
  `frame_stride`-th to `StreamingModel.step`; a line on stderr shows the time, the
  current step, the running step scores (`*`: done so far) and the frames per second.
  At the end of the file, or on Ctrl-C, the report (JSON, PNG, HTML) is built from the
  streamed labels and the last running scores, like the offline one.

  Raises:
    AssessError: the model is not causal, the source cannot be opened, no frame was
      read, or no hand was found in any frame; each names the model, file or camera.
  """
  from hhjax.inference import online  # noqa: PLC0415
  try:
    online.require_causal(loaded)
  except ValueError as e:
    raise AssessError(str(e)) from e
  tracker = make_frame_features(loaded, options)
  feats = loaded.features
  try:
    src = online.open_source(source, fps=feats.get("fps"), max_frames=options.max_frames,
                             realtime=options.realtime)
  except online.SourceError as e:
    raise AssessError(str(e)) from e
  fps = src.fps
  done_at = float(thresholds["done"])
  stopped = False
  start = time.perf_counter()
  shown = 0.0
  try:
    with tracker as features:
      runner = online.OnlineRunner(loaded, features, stable_steps(
          options.stable_seconds, fps, int(loaded.config.dataset.frame_stride)))
      try:
        for frame in src.frames:
          stepped = runner.push(frame)
          now = time.perf_counter()
          if progress and stepped and now - shown > 0.1:
            shown = now
            rate = runner.frames / max(now - start, 1e-9)
            print("\r" + online.live_line(runner, fps, loaded.class_names, done_at, rate),
                  end="", file=sys.stderr, flush=True)
      except KeyboardInterrupt:
        stopped = True
  except (video_lib.VideoError, ValueError) as e:
    raise AssessError(f"{src.label}: {e}") from e
  finally:
    src.close()
  if progress and runner.last is not None:
    rate = runner.frames / max(time.perf_counter() - start, 1e-9)
    print("\r" + online.live_line(runner, fps, loaded.class_names, done_at, rate),
          file=sys.stderr, flush=True)
  if runner.last is None:
    raise AssessError(f"{src.label}: no frames were read")
  if stopped:
    print(f"stopped after {runner.frames} frames", file=sys.stderr)
  if feats.get("stream") == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    if not np.any(handpose.presence(runner.feature_matrix()) > 0):
      raise AssessError(f"{src.label}: no hands detected in any of its {runner.frames} "
                        "frames (are the hands in view and lit?)")
  pred = runner.prediction()
  lo, hi = loaded.manifest["score_range"]
  video = dict(src.info, online=True, stopped=stopped)
  report = build_report(pred, fps=fps, class_names=loaded.class_names,
                        thresholds=thresholds, score_range=(lo, hi), video=video,
                        model=_model_info(loaded, fps, options),
                        warnings=_setting_warnings(loaded))
  write_outputs(report, pred.labels, out_dir=out_dir, stem=src.name, fps=fps,
                class_names=loaded.class_names, html_page=options.html)
  return report


# ---------------------------------------------------------------------------------------
# Command line.


SUMMARY_COLUMNS = (["video", "file", "status", "error", "duration_s", "fps",
                    "total_score", "max_score", "steps_done", "missing_steps",
                    "out_of_order"]
                   + [f"step{k}" for k in range(1, NUM_STEPS + 1)]
                   + [f"step{k}_score" for k in range(1, NUM_STEPS + 1)])


def summary_row(path: pathlib.Path, report: dict | None, error: str | None) -> dict:
  """One row of summary.csv (a failed video: its error, the rest empty)."""
  row = {c: "" for c in SUMMARY_COLUMNS}
  row.update(video=path.stem, file=str(path), status="ok" if error is None else "failed",
             error=error or "")
  if report is not None:
    row.update(duration_s=report["video"]["duration_s"], fps=report["video"]["fps"],
               total_score=report["total_score"], max_score=report["score_range"][1],
               steps_done=report["steps_done"],
               missing_steps=" ".join(map(str, report["missing_steps"])),
               out_of_order=" ".join(str(o["step"]) for o in report["out_of_order"]))
    for s in report["steps"]:
      row[f"step{s['step']}"] = s["attribute"]
      row[f"step{s['step']}_score"] = s["score"]
  return row


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m hhjax.assess",
      description="Assess hand-washing videos with a trained model: which WHO steps "
                  "were done, where, how well, and what was missed.")
  p.add_argument("videos", nargs="*", metavar="VIDEO_OR_FOLDER",
                 help="video files, or folders of them")
  p.add_argument("--online", metavar="VIDEO_OR_CAMERA_INDEX",
                 help="assess one stream while it plays, with a causal model: a video "
                      "file, or a camera index (0, 1, ...); Ctrl-C ends a camera")
  p.add_argument("--stable-seconds", type=float, default=0.5,
                 help="online: report a new step only once the model has seen it for "
                      "this long (a causal model flickers without it; 0: every frame's "
                      "own label; default 0.5)")
  p.add_argument("--realtime", action="store_true",
                 help="--online with a video file: play it at its frame rate")
  p.add_argument("--model", help="model folder written by python -m hhjax.export "
                                 f"(default: the shipped model, {DEFAULT_MODEL})")
  p.add_argument("--out", default=DEFAULT_OUT,
                 help=f"output folder (default ./{DEFAULT_OUT})")
  p.add_argument("--ground-truth", metavar="FILE_OR_FOLDER",
                 help="per-frame class names (groundTruth style) drawn above the "
                      "prediction: a file (one video), or a folder of <video stem>.txt")
  p.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                 help="write <out>/<video>.html (default: yes)")
  p.add_argument("--done-threshold", type=float,
                 help="step score from which a step counts as done (default: the "
                      "model's)")
  p.add_argument("--es-threshold", type=float,
                 help="step score from which a done step is ES (default: the model's)")
  p.add_argument("--min-segment-seconds", type=float,
                 help="merge predicted runs shorter than this into their neighbours "
                      "before scoring the steps (0: none; default: the model's own "
                      "model.min_segment_frames); not with --online")
  p.add_argument("--max-frames", type=int,
                 help="assess only the first N frames of each video (quick checks)")
  p.add_argument("--rgb-weights", help="i3d models: the RGB I3D weights (.npz or .pt)")
  p.add_argument("--flow-weights", help="i3d models: the flow I3D weights")
  p.add_argument("--random-weights", action="store_true",
                 help="i3d models trained on random-weight features (pipeline tests)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  return p


def _collect(inputs: Sequence[str]) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
  """Videos of the inputs (folders listed), and (input, error) for unusable ones."""
  from hhjax import extract  # noqa: PLC0415
  videos, errors = [], []
  for item in inputs:
    path = pathlib.Path(item)
    if path.is_dir():
      found = extract.find_videos(path)
      if not found:
        errors.append((item, f"{path}: no videos ({', '.join(extract.VIDEO_EXTENSIONS)}) "
                             "in this folder"))
      videos += found
    elif path.exists():
      videos.append(path)
    else:
      errors.append((item, f"{path}: no such file or folder"))
  return videos, errors


def _load_model(model: str | None) -> export.LoadedModel:
  if model is None:
    if not DEFAULT_MODEL.is_dir():
      raise AssessError(
          f"no model given and none is shipped at {DEFAULT_MODEL}: pass --model DIR, a "
          "folder written by `python -m hhjax.export --workdir RUN` (hhjax.train writes "
          "one in <workdir>/export)")
    model = DEFAULT_MODEL
  try:
    loaded = export.load(model)
  except export.ExportError as e:
    raise AssessError(str(e)) from e
  if len(loaded.class_names) != NUM_STEPS + 1:
    raise AssessError(f"{model}: the model has {len(loaded.class_names)} classes; a "
                      f"hand-washing model has {NUM_STEPS + 1} (background and the six "
                      "WHO steps)")
  cfg = loaded.config.model
  if cfg.get("segmenter", "conv_transformer") == "none" or cfg.get("scoring") == "video":
    raise AssessError(f"{model}: the model scores whole videos only (no step "
                      "segments); assess needs a model that segments the steps")
  return loaded


def _thresholds(loaded: export.LoadedModel, args, parser) -> dict:
  """The model's thresholds, with those given on the command line."""
  thresholds = dict(loaded.manifest["thresholds"])
  for key, value in (("done", args.done_threshold), ("es", args.es_threshold)):
    if value is not None:
      thresholds[key] = value
      thresholds["basis"] = "given on the command line"
  if thresholds["es"] < thresholds["done"]:
    parser.error(f"the ES threshold {thresholds['es']:g} is below the done threshold "
                 f"{thresholds['done']:g}")
  return thresholds


def _main_online(args, parser) -> int:
  """`--online`: one stream, one report; 0 when written, 1 when it cannot be."""
  try:
    loaded = _load_model(args.model)
  except AssessError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  thresholds = _thresholds(loaded, args, parser)
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  print(f"model: {loaded.manifest.get('model')} ({loaded.path}), stream "
        f"{loaded.features.get('stream')}, online from {args.online} -> {out_dir}",
        file=sys.stderr)
  try:
    report = assess_online(args.online, loaded=loaded, out_dir=out_dir, options=args,
                           thresholds=thresholds, progress=not args.no_progress)
  except AssessError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(format_summary(report), flush=True)
  stem = pathlib.Path(report["video"]["name"]).stem
  print(f"  -> {out_dir / stem}.json", file=sys.stderr)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see the module docstring)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.max_frames is not None and args.max_frames < 1:
    parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
  if args.online is not None:
    if args.videos or args.ground_truth:
      parser.error("--online assesses one stream: give no VIDEO_OR_FOLDER nor "
                   "--ground-truth with it")
    if args.min_segment_seconds is not None:
      parser.error("--min-segment-seconds looks at the whole video; --online reports "
                   "as the video plays (see --stable-seconds)")
    return _main_online(args, parser)
  if not args.videos:
    parser.error("give VIDEO_OR_FOLDER..., or --online VIDEO_OR_CAMERA_INDEX")
  if args.realtime:
    parser.error("--realtime goes with --online")
  if args.min_segment_seconds is not None and args.min_segment_seconds < 0:
    parser.error(f"--min-segment-seconds must be >= 0, got {args.min_segment_seconds}")
  from hhjax import extract  # noqa: PLC0415
  videos, failures = _collect(args.videos)
  for _, message in failures:
    print(f"error: {message}", file=sys.stderr)
  collisions = extract.output_collisions(videos)
  if collisions:
    for paths in collisions:
      print(f"error: {' and '.join(map(str, paths))} would write the same "
            f"{paths[0].stem}.json; rename one", file=sys.stderr)
    return 2
  gt_path = pathlib.Path(args.ground_truth) if args.ground_truth else None
  if gt_path is not None and not gt_path.exists():
    print(f"error: {gt_path}: no such ground-truth file or folder", file=sys.stderr)
    return 1
  if gt_path is not None and gt_path.is_file() and len(videos) > 1:
    parser.error("--ground-truth FILE is for one video; give a folder of <video stem>.txt "
                 "for several")
  try:
    loaded = _load_model(args.model)
    extractor = make_extractor(loaded, args)
  except AssessError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  thresholds = _thresholds(loaded, args, parser)
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  predictor = Predictor(loaded, args.min_segment_seconds)
  feats = loaded.features
  print(f"model: {loaded.manifest.get('model')} ({loaded.path}), stream "
        f"{feats.get('stream')}, {len(videos)} video(s) -> {out_dir}", file=sys.stderr)

  rows = [summary_row(pathlib.Path(item), None, message) for item, message in failures]
  done = 0
  for i, path in enumerate(videos, 1):
    print(f"[{i}/{len(videos)}] {path}", file=sys.stderr, flush=True)
    gt = None
    if gt_path is not None:
      gt = gt_path if gt_path.is_file() else gt_path / f"{path.stem}.txt"
      if not gt.is_file():
        print(f"  no ground truth for {path.name} ({gt} is absent)", file=sys.stderr)
        gt = None
    start = time.perf_counter()
    try:
      report = assess_video(path, loaded=loaded, predictor=predictor,
                            extractor=extractor, out_dir=out_dir, options=args,
                            thresholds=thresholds, ground_truth=gt,
                            progress=not args.no_progress)
    except AssessError as e:
      message = str(e)
    except Exception as e:  # keep going with the other videos
      message = f"{path}: {type(e).__name__}: {e}"
    else:
      done += 1
      rows.append(summary_row(path, report, None))
      print(format_summary(report), flush=True)
      print(f"  -> {out_dir / path.stem}.json ({time.perf_counter() - start:.1f} s)",
            file=sys.stderr)
      continue
    print(f"error: {message}", file=sys.stderr, flush=True)
    failures.append((str(path), message))
    rows.append(summary_row(path, None, message))

  several = len(args.videos) > 1 or any(pathlib.Path(v).is_dir() for v in args.videos)
  if several:
    with (out_dir / SUMMARY_FILE).open("w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
  print(f"assessed {done} of {done + len(failures)} video(s)"
        + (f"; {len(failures)} failed:" if failures else "")
        + (f"; summary: {out_dir / SUMMARY_FILE}" if several and not failures else ""),
        file=sys.stderr)
  for _, message in failures:
    print(f"  {message}", file=sys.stderr)
  if several and failures:
    print(f"summary: {out_dir / SUMMARY_FILE}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
