"""How much the extractor's flow moves when a chunk's pairs run side by side.

  python scripts/flow_batch_diff.py --pairs 8

TV-L1 (OpenCV's defaults unless the --flow-* options say otherwise) of consecutive
frame pairs of a real clip, three ways: one jitted call per pair
(`hhjax.extract._pair_flow_fn`), and all pairs in one call
(`hhjax.extract._chunk_flow_fn`) one after another (`--flow-batch 1`) or all side by
side (`--flow-batch` = pairs). Prints whether one after another equals the per-pair
flow bit for bit, and how far side by side moves it, in pixels. Written for
docs/EXTRACT.md ("Decoding ahead, and a chunk's flow in one call").
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CLIP = (REPO.parent / "shared" / "realdata" / "kaggle_handwash_s002" /
                "HandWash_002_A_04_G_01.mp4")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--clip", type=pathlib.Path, default=DEFAULT_CLIP)
  p.add_argument("--start", type=int, default=100, help="first frame")
  p.add_argument("--pairs", type=int, default=8)
  p.add_argument("--flow-size", type=int, default=224)
  p.add_argument("--flow-scales", type=int, default=5)
  p.add_argument("--flow-warps", type=int, default=5)
  p.add_argument("--flow-iterations", type=int, default=30)
  p.add_argument("--flow-outer", type=int, default=10)
  args = p.parse_args()
  if not args.clip.exists():
    sys.exit(f"{args.clip} not found (the shared real-data folder is absent)")
  from hhjax import extract, video  # noqa: PLC0415

  frames = video.read_frames(args.clip, short_side=256, crop=224,
                             max_frames=args.start + args.pairs + 1)[args.start:]
  gray = np.asarray(extract._gray_fn()(frames))           # (P + 1, 224, 224) uint8
  setting = (224, args.flow_size, args.flow_scales, args.flow_warps,
             args.flow_iterations, args.flow_outer)
  pair = extract._pair_flow_fn(*setting)
  alone = np.stack([np.asarray(pair(gray[i], gray[i + 1])) for i in range(args.pairs)])
  in_turn = np.asarray(extract._chunk_flow_fn(*setting, 1)(gray))
  side = np.asarray(extract._chunk_flow_fn(*setting, args.pairs)(gray))
  px = 20.0   # flow inputs are pixels / 20, clipped to [-1, 1]
  print(f"{args.clip.name}, frames {args.start}-{args.start + args.pairs}, "
        f"{args.pairs} pairs, flow setting {setting[1:]}")
  print(f"one after another equals one call per pair bit for bit: "
        f"{np.array_equal(in_turn, alone)}")
  d = np.abs(side - alone) * px
  print(f"side by side against one call per pair: mean {d.mean():.4f} px, max "
        f"{d.max():.2f} px, {100 * (d > 0.2).mean():.2f} % of values by more than 0.2 px")
  return 0


if __name__ == "__main__":
  sys.exit(main())
