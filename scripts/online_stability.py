r"""Stable labels for online assessment: what committing a new label only after k model
steps does to a causal model's segmentation (hhjax.inference.streaming.debounce_labels).

  python scripts/online_stability.py RUN_DIR [RUN_DIR ...] [--steps 1 3 5 10 15]

Each RUN_DIR is a training run of a causal model (its `predictions.jsonl`, written at
the end of training, holds every test video's frame labels at the full frame rate, and
its `config.json` the frame stride). The labels of the model's own steps are every
stride-th frame's; they are debounced, brought back to the full frame rate and scored
against the ground truth with the Table VI metrics, all runs' videos together.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from hhjax import metrics
from hhjax.data import pipeline
from hhjax.inference.streaming import debounce_labels


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", type=pathlib.Path)
  p.add_argument("--steps", nargs="+", type=int, default=[1, 3, 5, 10, 15])
  p.add_argument("--fps", type=float, default=30.0, help="the videos' frame rate")
  args = p.parse_args(argv)
  videos = []
  for run in args.runs:
    stride = int(json.loads((run / "config.json").read_text())["dataset"]["frame_stride"])
    for line in (run / "predictions.jsonl").read_text().splitlines():
      row = json.loads(line)
      labels = np.asarray(row["frame_labels"])
      videos.append((labels[::stride], np.asarray(row["gt_frame_labels"]), stride))
  fps = args.fps
  print(f"{len(videos)} videos from {len(args.runs)} run(s)")
  print(f"{'k steps':>8} {'lag':>8} " + " ".join(f"{m:>6}" for m in
                                                   ("acc", "edit", "f1@10", "f1@50")))
  for k in args.steps:
    preds = [pipeline.upsample(debounce_labels(steps, k), stride, len(gt))
             for steps, gt, stride in videos]
    report = metrics.segmentation_report(preds, [gt for _, gt, _ in videos])
    latency = (k - 1) * videos[0][2] / fps
    print(f"{k:>8} {latency:>7.2f}s " + " ".join(
        f"{report[m]:6.1f}" for m in ("acc", "edit", "f1@10", "f1@50")))
  return 0


if __name__ == "__main__":
  sys.exit(main())
