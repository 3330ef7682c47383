"""Speed of the feature extractor's parts: I3D (dense and fast modes) and TV-L1 flow.

Prints, for this machine, the two-stream I3D throughput in frames per second for the
dense mode (one window per frame) and the fast mode (overlapping chunks), and TV-L1 frame
pairs per second from hhjax beside OpenCV's `cv2.optflow.DualTVL1OpticalFlow_create()`
on the same 224x224 grey frames, plus the reduced flow setting given by --flow-size etc.
hhjax's flow is timed as the extractor computes it, all --pairs pairs in one call, with
each of --flow-batches pairs side by side (1: one after another). Compile times are
measured separately (ahead-of-time `lower().compile()`) and excluded from the rates;
every timed call follows one warm-up call.

With --end-to-end N, `FeatureExtractor.extract` runs on the clip's first N frames (fast
mode, random weights) once to compile, then once with decoding in the calling thread
(--decode-ahead 0) and once with decoding in a background thread (2 chunks ahead), and
prints the frames/s of each; the features of the two runs must be equal. With
--end-to-end-stream handpose the same is done with `HandPoseExtractor` (MediaPipe) on
the clip's first N frames.

Example (from the repository root):

  python scripts/bench_extract.py --pairs 5 --batch-size 2

Frames come from a real clip (from frame --start, resized to short side 256, centre
crop 224); random weights are used (speed does not depend on the values). Needs decord and
opencv-contrib-python-headless (the OpenCV column is skipped without it).
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
  p.add_argument("--start", type=int, default=100,
                 help="first frame used (the clips' first frames have little motion)")
  p.add_argument("--size", type=int, default=224, help="crop side fed to I3D and TV-L1")
  p.add_argument("--pairs", type=int, default=3, help="timed TV-L1 frame pairs")
  p.add_argument("--window", type=int, default=21, help="dense window")
  p.add_argument("--batch-size", type=int, default=2, help="windows / chunks per call")
  p.add_argument("--chunk", type=int, default=64, help="fast-mode chunk")
  p.add_argument("--margin", type=int, default=16, help="fast-mode margin")
  p.add_argument("--repeats", type=int, default=1, help="timed calls per I3D measurement")
  p.add_argument("--flow-size", type=int, default=112, help="reduced flow setting: side")
  p.add_argument("--flow-scales", type=int, default=3, help="reduced flow setting: levels")
  p.add_argument("--flow-warps", type=int, default=2, help="reduced flow setting: warps")
  p.add_argument("--flow-iterations", type=int, default=10,
                 help="reduced flow setting: inner iterations")
  p.add_argument("--flow-outer", type=int, default=2, help="reduced flow setting: outer")
  p.add_argument("--flow-batches", type=int, nargs="+",
                 help="pairs side by side within the call, one measurement each "
                      "(default: 1 and --pairs)")
  p.add_argument("--end-to-end", type=int, default=0, metavar="N",
                 help="also time the whole extractor on the clip's first N frames")
  p.add_argument("--end-to-end-flow", choices=("default", "reduced"), default="default",
                 help="flow setting of --end-to-end (reduced: the --flow-* options)")
  p.add_argument("--end-to-end-stream", choices=("i3d", "handpose"), default="i3d",
                 help="extractor of --end-to-end (handpose: MediaPipe's hand pose)")
  p.add_argument("--skip-i3d", action="store_true")
  p.add_argument("--skip-flow", action="store_true")
  return p.parse_args()


def _timed(fn, *args, repeats: int = 1):
  """(compile seconds, steady seconds per call) of a jitted function."""
  import jax  # noqa: PLC0415

  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # warm-up
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(compiled(*args))
  return compile_s, (time.perf_counter() - start) / repeats


def main() -> int:
  args = _parse()
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from hhjax import extract, video  # noqa: PLC0415

  need = max(args.window, args.chunk, args.pairs + 2)
  if args.clip.exists():
    frames = video.read_frames(args.clip, max_frames=args.start + need,
                               short_side=round(args.size * 8 / 7), crop=args.size)
    if frames.shape[0] > args.start:
      frames = frames[args.start:]
    source = f"{args.clip.name} ({frames.shape[0]} frames from frame {args.start})"
  else:
    frames = np.random.default_rng(0).integers(0, 256, (need, args.size, args.size, 3), np.uint8)
    source = "random frames (clip not found)"
  if frames.shape[0] < need:  # short clip: repeat it
    frames = np.concatenate([frames] * (-(-need // frames.shape[0])))[:need]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"jax {jax.__version__}; frames: {source}, {args.size}x{args.size}")

  if not args.skip_i3d:
    rgb_vars = extract.random_variables(3, 0)
    flow_vars = extract.random_variables(2, 1)
    b = args.batch_size
    for mode, length, per_item in (
        ("dense", args.window, 1),
        ("fast", args.chunk, args.chunk - 2 * args.margin)):
      rgb_fn = extract._features_fn(400, 3, mode == "dense")
      flow_fn = extract._features_fn(400, 2, mode == "dense")
      x_rgb = jnp.asarray(np.stack([frames[:length]] * b))  # (B, L, S, S, 3) uint8
      x_flow = jnp.asarray(
        np.random.default_rng(0).uniform(-1, 1, x_rgb.shape[:-1] + (2,)).astype(np.float32))
      c_rgb, t_rgb = _timed(rgb_fn, rgb_vars, x_rgb, repeats=args.repeats)
      c_flow, t_flow = _timed(flow_fn, flow_vars, x_flow, repeats=args.repeats)
      out_frames = b * per_item
      print(f"I3D {mode:5s} (input {length} frames x B={b}, {out_frames} output frames/call): "
            f"RGB {out_frames / t_rgb:.2f} frames/s, flow {out_frames / t_flow:.2f} frames/s, "
            f"two-stream {out_frames / (t_rgb + t_flow):.2f} frames/s "
            f"(call {t_rgb:.2f} + {t_flow:.2f} s; compile {c_rgb:.1f} + {c_flow:.1f} s)")

  if not args.skip_flow:
    gray = np.asarray(extract._gray_fn()(frames[:args.pairs + 1]))  # (P+1, S, S) uint8
    s = args.size
    settings = [("OpenCV defaults", s, 5, 5, 30, 10),
                (f"reduced (--flow-size {args.flow_size} --flow-scales {args.flow_scales} "
                 f"--flow-warps {args.flow_warps} --flow-iterations {args.flow_iterations} "
                 f"--flow-outer {args.flow_outer})", args.flow_size, args.flow_scales,
                 args.flow_warps, args.flow_iterations, args.flow_outer)]
    batches = args.flow_batches or sorted({1, args.pairs})
    for label, flow_size, scales, warps, inner, outer in settings:
      for flow_batch in batches:
        fn = extract._chunk_flow_fn(s, flow_size, scales, warps, inner, outer, flow_batch)
        compile_s, call_s = _timed(fn, gray, repeats=args.repeats)
        print(f"TV-L1 hhjax, {label}, {args.pairs} pairs per call, {flow_batch} side by "
              f"side: {args.pairs / call_s:.2f} pairs/s (compile {compile_s:.1f} s)")
    try:
      import cv2  # noqa: PLC0415

      tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    except (ImportError, AttributeError):
      print("TV-L1 OpenCV: skipped (needs opencv-contrib-python-headless)")
    else:
      tvl1.calc(gray[0], gray[1], None)  # warm-up
      start = time.perf_counter()
      for i in range(args.pairs):
        tvl1.calc(gray[i], gray[i + 1], None)
      rate = args.pairs / (time.perf_counter() - start)
      print(f"TV-L1 OpenCV DualTVL1OpticalFlow_create() defaults: {rate:.2f} pairs/s "
            f"({args.pairs} pairs, {cv2.getNumThreads()} threads)")
  if args.end_to_end:
    _end_to_end(args)
  return 0


def _end_to_end_extractor(args, ahead: int):
  """The extractor `_end_to_end` times: I3D (random weights, fast mode) or hand pose."""
  if args.end_to_end_stream == "handpose":
    from hhjax import handpose  # noqa: PLC0415
    return handpose.HandPoseExtractor(max_frames=args.end_to_end, decode_ahead=ahead)
  from hhjax import extract  # noqa: PLC0415
  flow = {}
  if args.end_to_end_flow == "reduced":
    flow = dict(flow_size=args.flow_size, flow_scales=args.flow_scales,
                flow_warps=args.flow_warps, flow_iterations=args.flow_iterations,
                flow_outer=args.flow_outer)
  config = extract.ExtractConfig(
    mode="fast", chunk=args.chunk, margin=args.margin, batch_size=args.batch_size,
    size=args.size, max_frames=args.end_to_end, decode_ahead=ahead, **flow)
  return extract.FeatureExtractor(extract.random_variables(3, 0),
                                  extract.random_variables(2, 1), config)


def _end_to_end(args) -> None:
  """Times an extractor's `extract` with and without decoding in a background thread."""
  if not args.clip.exists():
    print(f"end to end: skipped ({args.clip} not found)")
    return
  features = {}
  for ahead in (None, 0, 2):  # None: the first run (compiles, loads the models)
    extractor = _end_to_end_extractor(args, ahead or 0)
    start = time.perf_counter()
    out = extractor.extract(args.clip)
    seconds = time.perf_counter() - start
    if ahead is None:
      print(f"end to end: first run {seconds:.1f} s")
      continue
    features[ahead] = out
    what = (f"{args.end_to_end_flow} flow, flow {extractor.flow_batch} side by side"
            if args.end_to_end_stream == "i3d" else "hand pose")
    print(f"end to end, {what}, {out.shape[1]} frames, decode ahead {ahead}: "
          f"{out.shape[1] / seconds:.2f} frames/s ({seconds:.1f} s)")
  same = np.array_equal(features[0], features[2])
  print(f"end to end: features with and without decoding ahead equal: {same}")
  if not same:
    raise SystemExit("decoding ahead changed the features")


if __name__ == "__main__":
  sys.exit(main())
