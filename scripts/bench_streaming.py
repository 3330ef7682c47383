"""Latency of the streaming (online) update: milliseconds per frame of the jitted `step`.

Times `hhjax.inference.streaming.StreamingModel.step` (the causal segmenter and the
running KAS step scores) for one video, one frame per call, each call waiting for its
result as a live stream would. Prints the median and 99th percentile after warm-up, for
the hand-pose stream's 212-d inputs and I3D's 2048-d ones by default.

Example (from the repository root):

  python scripts/bench_streaming.py --frames 1000 --warmup 100

Random weights and frames (the speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--feature-dims", type=int, nargs="+", default=[212, 2048],
                 help="input feature sizes (212: hand pose, 2048: two-stream I3D)")
  p.add_argument("--stages", type=int, default=4)
  p.add_argument("--layers", type=int, default=10)
  p.add_argument("--channels", type=int, default=64)
  p.add_argument("--frames", type=int, default=1000, help="timed frames")
  p.add_argument("--warmup", type=int, default=100, help="untimed frames first")
  return p.parse_args()


def main():
  args = _parse()
  import jax  # noqa: PLC0415
  from hhjax.inference import streaming  # noqa: PLC0415
  print(f"device: {jax.devices()[0].device_kind} ({platform.processor() or 'cpu'}), "
        f"model: {args.stages} stages x {args.layers} layers x {args.channels} channels, "
        f"{args.frames} timed frames after {args.warmup}")
  print(f"{'input dim':>10} {'median ms':>10} {'p99 ms':>10} {'mean ms':>10} "
        f"{'compile s':>10}")
  for dim in args.feature_dims:
    r = streaming.benchmark(dim, num_stages=args.stages, num_layers=args.layers,
                            channels=args.channels, frames=args.frames,
                            warmup=args.warmup)
    print(f"{dim:>10} {r['median_ms']:>10.3f} {r['p99_ms']:>10.3f} {r['mean_ms']:>10.3f} "
          f"{r['compile_s']:>10.1f}")


if __name__ == "__main__":
  main()
