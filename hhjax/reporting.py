"""Human-readable reports: the Table VI-style results table and prediction files."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

# Columns of Li et al.'s Table VI: segmentation, then assessment.
COLUMNS = (("acc", "Acc"), ("edit", "Edit"), ("f1@10", "F1@10"), ("f1@25", "F1@25"),
           ("f1@50", "F1@50"), ("spearman", "Sp.Corr"), ("rl2", "R-l2(x100)"))


def _cell(key: str, value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:.3f}" if key == "spearman" else f"{value:.2f}"


def format_metrics(m: dict) -> str:
  """One line: `acc 91.2  edit 85.0 ...`."""
  return "  ".join(f"{label} {_cell(key, m.get(key))}" for key, label in COLUMNS
                   if key in m)


def table(rows: list[tuple[str, dict]], title: str = "") -> str:
  """A fixed-width table, one row per method; missing metrics print as '-'."""
  name_w = max([len("Method")] + [len(n) for n, _ in rows])
  head = f"{'Method':<{name_w}}  " + "  ".join(f"{label:>10}" for _, label in COLUMNS)
  lines = [title] if title else []
  lines += [head, "-" * len(head)]
  for name, m in rows:
    lines.append(f"{name:<{name_w}}  " + "  ".join(
        f"{_cell(key, m.get(key)):>10}" for key, _ in COLUMNS))
  return "\n".join(lines)


def model_name(config) -> str:
  m = config.model
  scorer = ("KAS" + ("" if m.learnable_sigmoid else " fixed-sigmoid")
            if m.scorer == "kas" else "MLP scorer")
  if m.scoring == "video":
    scorer = "whole-video scorer"
  return f"joint model ({m.attention} attention, {scorer})"


def write_predictions(path: str | pathlib.Path, results: list[dict]) -> None:
  """One JSON object per video: predicted frame labels, step scores, video score, and
  the ground truth beside them."""
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
      }) + "\n")
