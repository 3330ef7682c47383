"""Compares hhjax.ops.flow.tvl1 with OpenCV's DualTVL1 optical flow on a real clip.

Prints the end-point error (EPE) of hhjax against OpenCV over all pixels and over the
pixels where OpenCV's flow exceeds 1 px, and the speed of both (pairs per second; the
JAX compile time is reported separately and excluded from the rate).

Example (from the repository root):

  python scripts/flow_compare.py \\
      --clip ../shared/realdata/kaggle_handwash_s002/HandWash_002_A_04_G_01.mp4 \\
      --size 224 --pairs 8 --gap 1

Frames are decoded with decord, resized so that the shorter side is --size (aspect kept;
--square resizes to size x size), converted to grey (BT.601), and both implementations get
the same uint8 images (hhjax as float32 0-255). hhjax runs with OpenCV's default
parameters, once pair by pair (one jitted function) and once as one jax.vmap batch.
Needs opencv-contrib-python-headless and decord.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CLIP = (REPO.parent / "shared" / "realdata" / "kaggle_handwash_s002" /
                "HandWash_002_A_04_G_01.mp4")


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--clip", type=pathlib.Path, default=DEFAULT_CLIP, help="video file")
  p.add_argument("--size", type=int, default=224, help="shorter side after resizing")
  p.add_argument("--square", action="store_true", help="resize to size x size instead")
  p.add_argument("--pairs", type=int, default=8, help="number of frame pairs")
  p.add_argument("--gap", type=int, default=1, help="frames between the two of a pair")
  p.add_argument("--start", type=int, default=-1,
                 help="first frame (default: a third into the clip)")
  p.add_argument("--no-vmap", action="store_true", help="skip the batched (vmap) run")
  return p.parse_args()


def _load_pairs(args):
  import cv2
  import decord
  vr = decord.VideoReader(str(args.clip))
  n = len(vr)
  start = args.start if args.start >= 0 else n // 3
  last = start + args.pairs - 1 + args.gap
  if last >= n:
    raise SystemExit(f"{args.clip} has {n} frames; frames {start}..{last} requested")
  frames = vr.get_batch(list(range(start, last + 1))).asnumpy()
  h, w = frames.shape[1:3]
  if args.square:
    size = (args.size, args.size)
  elif h <= w:
    size = (int(round(w * args.size / h)), args.size)
  else:
    size = (args.size, int(round(h * args.size / w)))
  grey = np.stack([cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA),
                                cv2.COLOR_RGB2GRAY) for f in frames])
  f0 = grey[:args.pairs]
  f1 = grey[args.gap:args.gap + args.pairs]
  return start, f0, f1


def _epe_maps(pred, ref):
  """Per-pixel end-point error and OpenCV flow magnitude."""
  return np.linalg.norm(pred - ref, axis=-1), np.linalg.norm(ref, axis=-1)


def _summary(epe, mag):
  """(EPE over all pixels, EPE over moving pixels, |f_cv| over moving, moving fraction)."""
  moving = mag > 1.0
  if not moving.any():
    return float(epe.mean()), float("nan"), float("nan"), 0.0
  return (float(epe.mean()), float(epe[moving].mean()), float(mag[moving].mean()),
          float(moving.mean()))


def main():
  args = _parse()
  import cv2
  import jax
  from hhjax.ops import flow

  start, f0, f1 = _load_pairs(args)
  n, h, w = f0.shape
  print(f"clip {args.clip.name}: {n} pairs ({start}+i -> {start}+i+{args.gap}), {w}x{h} grey")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"opencv {cv2.__version__} with {cv2.getNumThreads()} threads")

  # OpenCV.
  tvl1_cv = cv2.optflow.DualTVL1OpticalFlow_create()
  t = time.perf_counter()
  ref = np.stack([tvl1_cv.calc(a, b, None) for a, b in zip(f0, f1)])
  cv_s = time.perf_counter() - t

  # hhjax, pair by pair.
  single = jax.jit(flow.tvl1)
  a0, b0 = f0[0].astype(np.float32), f1[0].astype(np.float32)
  t = time.perf_counter()
  compiled = single.lower(a0, b0).compile()
  compile_single = time.perf_counter() - t
  compiled(a0, b0).block_until_ready()  # warm-up
  t = time.perf_counter()
  got = [compiled(a.astype(np.float32), b.astype(np.float32)) for a, b in zip(f0, f1)]
  got = np.stack([np.asarray(g) for g in got])
  single_s = time.perf_counter() - t

  epe, mag = _epe_maps(got, ref)
  print("\npair  EPE_all  EPE_moving  |f_cv|_moving    rel  moving_frac")
  for k in range(n):
    ea, em, mm, fr = _summary(epe[k], mag[k])
    print(f"{k:4d}  {ea:7.3f}  {em:10.3f}  {mm:13.3f}  {em / mm:5.1%}  {fr:11.2f}")
  ea, em, mm, fr = _summary(epe, mag)  # pooled over the pixels of all pairs
  print(f"all   {ea:7.3f}  {em:10.3f}  {mm:13.3f}  {em / mm:5.1%}  {fr:11.2f}")
  print(f"zero flow (all pairs): EPE_all {mag.mean():.3f}, EPE_moving {mm:.3f} (100%)")
  print("criteria (all pairs): EPE_moving <= 25% of |f_cv|_moving: "
        f"{'pass' if em <= 0.25 * mm else 'FAIL'}; EPE_all <= 0.5 px: "
        f"{'pass' if ea <= 0.5 else 'FAIL'}")

  print("\ntiming (pairs/s, after warm-up; compile excluded)")
  print(f"  opencv              {n / cv_s:8.2f}  ({1e3 * cv_s / n:.0f} ms/pair)")
  print(f"  hhjax pair by pair  {n / single_s:8.2f}  ({1e3 * single_s / n:.0f} ms/pair), "
        f"compile {compile_single:.1f} s")

  if not args.no_vmap:
    batched = jax.jit(jax.vmap(flow.tvl1))
    fa, fb = f0.astype(np.float32), f1.astype(np.float32)
    t = time.perf_counter()
    compiled_b = batched.lower(fa, fb).compile()
    compile_batch = time.perf_counter() - t
    compiled_b(fa, fb).block_until_ready()  # warm-up
    t = time.perf_counter()
    got_b = np.asarray(compiled_b(fa, fb))
    batch_s = time.perf_counter() - t
    d = np.linalg.norm(got_b - got, axis=-1)
    print(f"  hhjax vmap (B={n})   {n / batch_s:8.2f}  ({1e3 * batch_s / n:.0f} ms/pair), "
          f"compile {compile_batch:.1f} s")
    print(f"  vmap vs pair by pair: mean {d.mean():.4f} px, max {d.max():.3f} px, "
          f"{(d > 0.1).mean():.2%} of pixels > 0.1 px (float32 rounding, amplified)")


if __name__ == "__main__":
  main()
