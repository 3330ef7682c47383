"""Writes `dummy_data/`: a tiny HHA300 manual directory for the builder test.

Run once from the repository root (the output is committed):

  python datasets/hha300/make_dummy_data.py

3 train + 2 test videos, D = 16, 20-60 frames, the real seven class names, and a
scores.csv with per-step scores. Values are seeded, so reruns give the same files.
"""

import pathlib

import numpy as np

from hhjax.data.synthetic import ATTRIBUTES, CLASS_NAMES
FEATURE_DIM = 16
VIDEOS = {
    "train": (("hha_train_000", 24), ("hha_train_001", 41), ("hha_train_002", 60)),
    "test": (("hha_test_000", 20), ("hha_test_001", 33)),
}
OUT = pathlib.Path(__file__).resolve().parent / "dummy_data"


def _video(rng: np.random.Generator, num_frames: int):
  """Frame labels (background, steps in order, some left out) and per-step scores."""
  attributes = rng.choice(3, size=6, p=(0.2, 0.4, 0.4))
  steps = [s for s in range(1, 7) if attributes[s - 1] > 0]
  cuts = np.sort(rng.choice(np.arange(2, num_frames - 1), size=len(steps) + 1,
                            replace=False))
  labels = np.zeros(num_frames, np.int32)
  for step, start, end in zip(steps, cuts[:-1], cuts[1:]):
    labels[start:end] = step
  step_scores = np.where(attributes == 0, 0.0,
                         np.where(attributes == 1, rng.uniform(0.2, 0.6, 6),
                                  rng.uniform(0.7, 1.0, 6)))
  return labels, attributes, step_scores


def main():
  rng = np.random.default_rng(0)
  for sub in ("features", "groundTruth", "splits"):
    (OUT / sub).mkdir(parents=True, exist_ok=True)
  (OUT / "mapping.txt").write_text(
      "".join(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES)))
  rows = ["video,score," + ",".join(f"step{k}" for k in range(1, 7)) + ","
          + ",".join(f"step{k}_score" for k in range(1, 7))]
  for split, videos in VIDEOS.items():
    bundle = []
    for video, num_frames in videos:
      labels, attributes, step_scores = _video(rng, num_frames)
      # (D, T), MS-TCN convention; small values keep the .npy files tiny and exact.
      features = (rng.normal(size=(FEATURE_DIM, num_frames))
                  + labels[None, :]).astype(np.float32)
      np.save(OUT / "features" / f"{video}.npy", features)
      (OUT / "groundTruth" / f"{video}.txt").write_text(
          "".join(CLASS_NAMES[c] + "\n" for c in labels))
      rows.append(",".join([video, f"{step_scores.sum():.4f}"]
                           + [ATTRIBUTES[a] for a in attributes]
                           + [f"{s:.4f}" for s in step_scores]))
      # The MS-TCN ".txt" suffix on test ids checks that both spellings are read.
      bundle.append(video + (".txt" if split == "test" else ""))
    (OUT / "splits" / f"{split}.bundle").write_text("".join(v + "\n" for v in bundle))
  (OUT / "scores.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
