"""Human-readable reports: the Table VI-style results table and prediction files."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from hhjax.data.layout import ATTRIBUTES

# Columns of Li et al.'s Table VI: segmentation, then assessment; beside them the
# segment ratio (predicted segments per true one: above 1 is over-segmentation) and
# the ranking accuracy of the skill-assessment literature.
COLUMNS = (("acc", "Acc"), ("edit", "Edit"), ("f1@10", "F1@10"), ("f1@25", "F1@25"),
           ("f1@50", "F1@50"), ("segs", "Segs/true"), ("spearman", "Sp.Corr"),
           ("rl2", "R-l2(x100)"),
           ("rank_acc", "RankAcc"))   # the share of video pairs ordered right (%)


def cell(key: str, value, decimals: int = 2) -> str:
  """One metric as printed in every table: '-' when missing or not finite; Spearman
  with three decimals, the segment ratio with two, the others with `decimals`."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  places = {"spearman": 3, "segs": 2}.get(key, decimals)
  return f"{value:.{places}f}"


def format_metrics(m: dict) -> str:
  """One line: `acc 91.2  edit 85.0 ...`."""
  return "  ".join(f"{label} {cell(key, m.get(key))}" for key, label in COLUMNS
                   if key in m)


def table(rows: list[tuple[str, dict]], title: str = "") -> str:
  """A fixed-width table, one row per method; missing metrics print as '-'."""
  name_w = max([len("Method")] + [len(n) for n, _ in rows])
  head = f"{'Method':<{name_w}}  " + "  ".join(f"{label:>10}" for _, label in COLUMNS)
  lines = [title] if title else []
  lines += [head, "-" * len(head)]
  for name, m in rows:
    lines.append(f"{name:<{name_w}}  " + "  ".join(
        f"{cell(key, m.get(key)):>10}" for key, _ in COLUMNS))
  return "\n".join(lines)


SEGMENTER_NAMES = dict(conv_transformer="joint model", mstcn="MS-TCN", mstcn_pp="MS-TCN++",
                       asrf="ASRF", bcn="BCN", asformer="ASFormer",
                       causal_conv_transformer="causal joint model")
VIDEO_POOL_NAMES = dict(mean="average pooling + MLP", max="max pooling + MLP",
                        lstm="LSTM", action_net="ACTION-NET",
                        sa_rnn="spatial-attention RNN")


def model_name(config) -> str:
  """A row name for the results table, e.g. 'MS-TCN + MLP scorer' or
  'joint model (linear attention, KAS)'."""
  m = config.model
  segmenter = m.get("segmenter", "conv_transformer")
  if m.scoring == "video":
    scorer = "whole-video " + VIDEO_POOL_NAMES.get(m.get("video_pool", "mean"), "MLP")
  elif m.scorer == "kas":
    scorer = "KAS" + ("" if m.learnable_sigmoid else " fixed-sigmoid")
  else:
    scorer = "MLP scorer"
  if segmenter == "none":
    return f"video-level regressor ({VIDEO_POOL_NAMES.get(m.video_pool, m.video_pool)})"
  name = SEGMENTER_NAMES.get(segmenter, segmenter)
  if segmenter in ("conv_transformer", "causal_conv_transformer"):
    return f"{name} ({m.attention} attention, {scorer})"
  return f"{name} + {scorer}"


def write_predictions(path: str | pathlib.Path, results: list[dict]) -> None:
  """One JSON object per video: predicted frame labels, step scores, video score, and
  the ground truth beside them (`gt_attributes`: NE / EN / ES per step)."""
  with pathlib.Path(path).open("w") as f:
    for r in results:
      f.write(json.dumps({
          "video": r["video"],
          "video_score": round(float(r["video_score"]), 5),
          "step_scores": [round(float(s), 5) for s in r["step_scores"]],
          "frame_labels": np.asarray(r["labels"]).tolist(),
          "gt_score": float(r["gt_score"]),
          "gt_step_scores": [float(s) for s in r["gt_step_scores"]],
          "gt_frame_labels": np.asarray(r["gt_labels"]).tolist(),
          "gt_attributes": [ATTRIBUTES[int(a)] for a in r["gt_attributes"]],
      }) + "\n")


def plot_timelines(path: str | pathlib.Path, rows, class_names, *, fps: float = 30.0,
                   title: str = "") -> None:
  """Draws step timelines one above the other (as in Li et al.'s Fig. 7) to a PNG.

  Args:
    path: the image file to write.
    rows: `[(name, labels), ...]`, top to bottom; labels are (T,) class indices, all of
      one length.
    class_names: name per class index; class 0 (background) is drawn light grey.
    fps: frames per second, for the time axis.
    title: the figure's title.
  """
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from matplotlib.patches import Patch  # noqa: PLC0415
  from hhjax.metrics import segments  # noqa: PLC0415

  lengths = {len(labels) for _, labels in rows}
  if len(lengths) != 1:
    raise ValueError(f"timelines differ in length: {sorted(lengths)}")
  colours = ["#dddddd"] + [plt.get_cmap("tab10")(i) for i in range(len(class_names) - 1)]
  fig, ax = plt.subplots(figsize=(11, 1.2 + 0.5 * max(len(rows), 3)))
  for r, (_, labels) in enumerate(rows):
    y = len(rows) - 1 - r
    for label, start, end in segments(np.asarray(labels)):
      ax.broken_barh([(start / fps, (end - start) / fps)], (y - 0.4, 0.8),
                     facecolors=colours[label], edgecolors="none")
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels([name for name, _ in rows][::-1])
  ax.set_xlim(0, lengths.pop() / fps)
  ax.set_xlabel("time (s)")
  if title:
    ax.set_title(title)
  handles = [Patch(facecolor=colours[i], label=f"{i} {name}")
             for i, name in enumerate(class_names)]
  ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
            frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
