r"""hhjax against a PyTorch MS-TCN: training and inference speed, memory, compile time.

  python -m hhjax.bench versus [--lengths 1024 4096] [--repeats 3] [--steps 5]
                               [--torch-threads 2] [--contenders ...] [--json]

Contenders (all: 4 stages x 10 layers x 64 channels, 2048-d input, 7 classes, batch 1,
Adam at 5e-4, dropout 0.5 after every residual layer, random data):

* `torch-mstcn`: MS-TCN written here in PyTorch to the authors' released code
  (yabufarha/ms-tcn): Conv1d layers on (B, D, T), `nn.Dropout()` (p = 0.5) in every
  residual layer, later stages fed the softmax of the previous stage, and its training
  recipe: per stage cross-entropy + 0.15 x the mean of min(squared log-probability
  difference of neighbouring frames, 16) (earlier frame detached), Adam, `loss.item()`
  every step. Eager PyTorch (no compilation), `torch.set_num_threads(--torch-threads)`,
  `OMP_WAIT_POLICY=PASSIVE` unless set (see `run_worker`).
* `hhjax-mstcn`: hhjax's trainer (`hhjax.training.steps`: the jitted train step with
  loss, Adam update and logged norms; the eval step) on `config.model.segmenter =
  "mstcn"`. Like every hhjax model it carries the KAS assessment head and its loss,
  a small extra cost the PyTorch MS-TCN does not pay.
* `hhjax-joint`: the same trainer on Li et al.'s joint model (the conv-transformer
  segmenter with linear attention, attention dropout 0.1, and the KAS head).
* `hhjax-mstcn-bernoulli`, `hhjax-joint-bernoulli` (opt-in): the same, with dropout
  masks drawn as `flax.linen.Dropout` draws them (a float32 uniform per element,
  `jax.random.bernoulli`) instead of `hhjax.models.layers.Dropout`'s few-bit draw:
  what hhjax's dropout cost before.

Every (contender, length, repeat) runs in a fresh subprocess, so each contender's peak
memory is its own process's resident-set high-water (`getrusage`; "base" is the same
mark once the framework is imported and the data made, before the model exists), and
the contenders are interleaved (the order rotates every repeat) so that a shared
machine's load hits them alike. In a process: the steps are compiled (JAX), one
warm-up step, then `--steps` timed steps, each waited for; the same for inference (the
eval step, or `no_grad` forward + argmax). A repeat's figure is the median of its
steps; the table gives the median over repeats (and their min - max).

Compile time is `jit(...).lower(...).compile()` of the train step plus the eval step.
The JAX subprocesses share a persistent compilation cache in a temporary folder
(removed afterwards; `--no-cache` turns it off): the first repeat of each contender
and length compiles cold, later ones load the executables, so the table shows both
what a first run pays and what a rerun with a warm cache pays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

CONTENDERS = ("torch-mstcn", "hhjax-mstcn", "hhjax-joint", "hhjax-mstcn-bernoulli",
              "hhjax-joint-bernoulli")
DEFAULT_CONTENDERS = ("torch-mstcn", "hhjax-mstcn", "hhjax-joint")
REFERENCE = "torch-mstcn"
LEARNING_RATE = 5e-4
SMOOTH_WEIGHT = 0.15
TAU = 4.0
RESULT_PREFIX = "VERSUS_RESULT "


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Network and input sizes shared by every contender."""

  num_stages: int = 4
  num_layers: int = 10
  channels: int = 64
  feature_dim: int = 2048
  num_classes: int = 7
  batch: int = 1
  dropout_rate: float = 0.5


PAPER = Sizes()
SMALL = Sizes(num_stages=2, num_layers=2, channels=8, feature_dim=16)


# --------------------------------------------------------------------------- PyTorch


def build_torch_mstcn(sizes: Sizes):
  """MS-TCN in PyTorch, laid out as the released code: `forward(x (B, D, T), mask
  (B, C, T))` returns per-stage logits (S, B, C, T), zero where the mask is 0."""
  import torch  # noqa: PLC0415
  from torch import nn  # noqa: PLC0415
  from torch.nn import functional as F  # noqa: PLC0415

  channels = sizes.channels

  class ResidualLayer(nn.Module):
    """(x + dropout(1x1 conv(ReLU(dilated conv k=3 (x))))) x mask."""

    def __init__(self, dilation: int):
      super().__init__()
      self.dilated = nn.Conv1d(channels, channels, 3, padding=dilation,
                               dilation=dilation)
      self.pointwise = nn.Conv1d(channels, channels, 1)
      self.dropout = nn.Dropout(sizes.dropout_rate)

    def forward(self, x, m):
      return (x + self.dropout(self.pointwise(F.relu(self.dilated(x))))) * m

  class Stage(nn.Module):
    """1x1 projection, dilated residual layers (dilation 2^i), 1x1 classifier."""

    def __init__(self, in_dim: int):
      super().__init__()
      self.project = nn.Conv1d(in_dim, channels, 1)
      self.layers = nn.ModuleList([ResidualLayer(2**i) for i in range(sizes.num_layers)])
      self.classify = nn.Conv1d(channels, sizes.num_classes, 1)

    def forward(self, x, m):
      h = self.project(x)
      for layer in self.layers:
        h = layer(h, m)
      return self.classify(h) * m

  class MSTCN(nn.Module):
    def __init__(self):
      super().__init__()
      dims = [sizes.feature_dim] + [sizes.num_classes] * (sizes.num_stages - 1)
      self.stages = nn.ModuleList([Stage(d) for d in dims])

    def forward(self, x, mask):
      m = mask[:, :1]                                  # (B, 1, T)
      logits = self.stages[0](x, m)                    # (B, C, T)
      out = [logits]
      for stage in self.stages[1:]:                    # refine the previous softmax
        logits = stage(F.softmax(logits, dim=1) * m, m)
        out.append(logits)
      return torch.stack(out)                          # (S, B, C, T)

  return MSTCN()


def torch_mstcn_loss(logits, labels, mask, smooth_weight: float = SMOOTH_WEIGHT,
                     tau: float = TAU):
  """MS-TCN's training loss as its released code computes it.

  Per stage `p` (B, C, T): cross-entropy over every frame, plus `smooth_weight` x the
  mean over (B, C, T - 1) of min((log p_t - log p_{t-1})^2, tau^2) x mask, the earlier
  frame's log-probabilities detached. `labels` (B, T) int64, `mask` (B, C, T).
  """
  import torch  # noqa: PLC0415
  from torch.nn import functional as F  # noqa: PLC0415
  num_classes = logits.shape[2]
  total = logits.new_zeros(())
  for p in logits:
    total = total + F.cross_entropy(p.transpose(2, 1).reshape(-1, num_classes),
                                    labels.reshape(-1))
    diff = F.log_softmax(p[:, :, 1:], dim=1) - F.log_softmax(p.detach()[:, :, :-1], dim=1)
    total = total + smooth_weight * torch.mean(
        torch.clamp(diff**2, min=0, max=tau**2) * mask[:, :, 1:])
  return total


# --------------------------------------------------------------------------- workers


def rss_peak_bytes() -> int:
  """This process's peak resident set size (Linux reports kilobytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024


def timed(fn, steps: int) -> tuple[float, list[float]]:
  """(seconds of the first call, seconds of each of `steps` further calls)."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return first, times


def _torch_worker(spec: dict, sizes: Sizes) -> dict:
  import torch  # noqa: PLC0415

  torch.set_num_threads(spec["threads"])
  torch.manual_seed(spec["seed"])
  b, t = sizes.batch, spec["length"]
  rng = np.random.default_rng(spec["seed"])
  x = torch.from_numpy(rng.normal(size=(b, sizes.feature_dim, t)).astype(np.float32))
  labels = torch.from_numpy(rng.integers(0, sizes.num_classes, size=(b, t)))
  mask = torch.ones(b, sizes.num_classes, t)
  rss_base = rss_peak_bytes()
  model = build_torch_mstcn(sizes)
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

  def train_step():
    model.train()
    optimizer.zero_grad()
    loss = torch_mstcn_loss(model(x, mask), labels, mask)
    loss.backward()
    optimizer.step()
    return loss.item()

  def infer():
    model.eval()
    with torch.no_grad():
      return model(x, mask)[-1].argmax(1)

  first_train, train_times = timed(train_step, spec["steps"])
  first_infer, infer_times = timed(infer, spec["steps"])
  return dict(framework=f"torch {torch.__version__}", threads=torch.get_num_threads(),
              compile_s=0.0, compile_train_s=0.0, compile_eval_s=0.0, cache_hits=0,
              first_train_s=first_train, first_infer_s=first_infer,
              train_times=train_times, infer_times=infer_times, rss_base=rss_base,
              params=int(sum(p.numel() for p in model.parameters())))


def bernoulli_keep_mask(key, keep_prob: float, shape):
  """The mask `flax.linen.Dropout` draws: a float32 uniform per element."""
  import jax  # noqa: PLC0415
  return jax.random.bernoulli(key, keep_prob, tuple(shape))


def use_compilation_cache(cache_dir: str | None) -> list:
  """Points this process's JAX at a persistent compilation cache (every executable
  kept), or turns the cache off when `cache_dir` is empty; returns a list that
  collects one entry per executable loaded from the cache."""
  import jax  # noqa: PLC0415

  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  else:
    jax.config.update("jax_enable_compilation_cache", False)
  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(event)
      if event == "/jax/compilation_cache/cache_hits" else None)
  return hits


def _jax_worker(spec: dict, sizes: Sizes) -> dict:
  import jax  # noqa: PLC0415

  hits = use_compilation_cache(spec["cache_dir"])

  from hhjax import config as config_lib  # noqa: PLC0415
  from hhjax.models import layers  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  from hhjax.training import state as state_lib, steps  # noqa: PLC0415

  contender = spec["contender"]
  if contender.endswith("-bernoulli"):
    layers.keep_mask = bernoulli_keep_mask   # read when the steps are traced
  config = config_lib.get_config()
  config.model.segmenter = "mstcn" if contender.startswith("hhjax-mstcn") \
      else "conv_transformer"
  config.model.num_stages = sizes.num_stages
  config.model.num_layers = sizes.num_layers
  config.model.channels = sizes.channels
  config.model.num_classes = sizes.num_classes
  config.model.dropout_rate = sizes.dropout_rate
  config.batch_size = sizes.batch
  config.learning_rate = LEARNING_RATE
  config.dataset.bucket_size = 16   # only the shape `init` traces with

  b, t = sizes.batch, spec["length"]
  rng = np.random.default_rng(spec["seed"])
  host = dict(
      features=rng.normal(size=(b, t, sizes.feature_dim)).astype(np.float32),
      labels=rng.integers(0, sizes.num_classes, size=(b, t)).astype(np.int32),
      mask=np.ones((b, t), np.float32),
      score=rng.uniform(0, 6, size=(b,)).astype(np.float32),
      step_scores=rng.uniform(0, 1, size=(b, sizes.num_classes - 1)).astype(np.float32),
      weight=np.ones((b,), np.float32))
  mesh = state_lib.make_mesh(jax.local_devices()[:1])
  batch = steps.to_device(host, mesh)
  jax.block_until_ready(batch)
  rss_base = rss_peak_bytes()
  model = create_model(config)
  state = state_lib.create_train_state(config, model, sizes.feature_dim, mesh)
  p_train_step, p_eval_step = steps.compile_steps(config, model, mesh)
  key = jax.random.key(spec["seed"])
  t0 = time.perf_counter()
  train_step = p_train_step.lower(state, batch, key).compile()
  compile_train = time.perf_counter() - t0
  t0 = time.perf_counter()
  eval_step = p_eval_step.lower(state.params, batch).compile()
  compile_eval = time.perf_counter() - t0
  holder = [state]

  def train():
    holder[0], out = train_step(holder[0], batch, key)
    jax.block_until_ready(out)

  def infer():
    jax.block_until_ready(eval_step(holder[0].params, batch))

  first_train, train_times = timed(train, spec["steps"])
  first_infer, infer_times = timed(infer, spec["steps"])
  return dict(framework=f"jax {jax.__version__}", threads=os.cpu_count(),
              compile_s=compile_train + compile_eval, compile_train_s=compile_train,
              compile_eval_s=compile_eval, cache_hits=len(hits),
              first_train_s=first_train, first_infer_s=first_infer,
              train_times=train_times, infer_times=infer_times, rss_base=rss_base,
              params=int(sum(np.prod(p.shape) for p in
                             jax.tree.leaves(holder[0].params))))


def run_worker_here(spec: dict) -> dict:
  """Runs one contender in this process (the subprocess's side); returns its record."""
  sizes = SMALL if spec.get("small") else PAPER
  if spec["contender"] not in CONTENDERS:
    raise ValueError(f"unknown contender {spec['contender']!r}; expected one of "
                     f"{CONTENDERS}")
  worker = _torch_worker if spec["contender"] == REFERENCE else _jax_worker
  out = worker(spec, sizes)
  frames = sizes.batch * spec["length"]
  out.update(record="run", contender=spec["contender"], length=spec["length"],
             repeat=spec.get("repeat", 0), batch=sizes.batch,
             train_fps=frames / statistics.median(out["train_times"]),
             infer_fps=frames / statistics.median(out["infer_times"]),
             rss_peak=rss_peak_bytes(), status="ok")
  return out


def run_worker(spec: dict, timeout_s: float, module: str = "hhjax.bench_versus",
               torch_worker: bool | None = None) -> dict:
  """Runs one contender in a fresh Python process; returns its record (status
  "error: ..." with the end of its stderr if it failed).

  Args:
    spec: the worker's settings (`contender`, `length`, `repeat`, `threads`, ...),
      passed as JSON to `python -m <module> SPEC`, which prints its record on a line
      starting with `RESULT_PREFIX`.
    timeout_s: the worker is stopped (and reported as an error) after this long.
    module: the worker's module (default: this one, the MS-TCN contenders).
    torch_worker: whether the worker runs PyTorch (its thread settings below);
      default: the contender is `torch-mstcn`.
  """
  env = dict(os.environ)
  threads = str(spec["threads"])
  if torch_worker is None:
    torch_worker = spec["contender"] == REFERENCE
  if torch_worker:   # PyTorch's intra-op pools
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    # Waiting OpenMP threads sleep instead of spinning: on a machine shared with other
    # jobs a spinning thread burns the time slice its partner needs, and a PyTorch
    # step can then take ~100x longer (33 s instead of 0.43 s measured here).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  cmd = [sys.executable, "-m", module, json.dumps(spec)]
  base = dict(record="run", contender=spec["contender"], length=spec["length"],
              repeat=spec.get("repeat", 0))
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env=env)
  except subprocess.TimeoutExpired:
    return dict(base, status=f"error: over the {timeout_s:.0f} s worker timeout")
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  return dict(base, status=f"error (exit {proc.returncode}): " + " | ".join(tail))


def torch_available() -> bool:
  import importlib.util  # noqa: PLC0415
  return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------------------- parent


def schedule(contenders: Sequence[str], lengths: Sequence[int], repeats: int
             ) -> list[tuple[int, int, str]]:
  """(repeat, length, contender) in run order: every repeat runs each length's
  contenders back to back, in an order rotated by one each repeat."""
  order = []
  for r in range(repeats):
    shift = r % max(len(contenders), 1)
    rotated = list(contenders[shift:]) + list(contenders[:shift])
    for length in lengths:
      order += [(r, length, c) for c in rotated]
  return order


def median(values):
  """Median of the values that are not None; None if there are none."""
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def summarize(runs: Sequence[dict]) -> list[dict]:
  """One row per (contender, length) from the per-repeat run records.

  frames/s: median over repeats of each repeat's median (with min and max); the
  ratios divide by `torch-mstcn`'s median at the same length; compile "cold" is the
  first repeat's, "cached" the median of the later ones; memory: medians.
  """
  rows = []
  keys = []
  for r in runs:
    if (r["contender"], r["length"]) not in keys:
      keys.append((r["contender"], r["length"]))
  for contender, length in keys:
    sel = sorted((r for r in runs if r["contender"] == contender and
                  r["length"] == length), key=lambda r: r.get("repeat", 0))
    ok = [r for r in sel if r.get("status") == "ok"]
    row = dict(record="versus", contender=contender, length=length, repeats=len(ok),
               status="ok" if ok else (sel[0].get("status") if sel else "no runs"))
    if ok:
      train, infer = [r["train_fps"] for r in ok], [r["infer_fps"] for r in ok]
      later = [r["compile_s"] for r in ok[1:]]
      row.update(
          framework=ok[0]["framework"], params=ok[0].get("params"),
          train_fps=median(train), train_fps_min=min(train), train_fps_max=max(train),
          infer_fps=median(infer), infer_fps_min=min(infer), infer_fps_max=max(infer),
          compile_cold_s=ok[0]["compile_s"], compile_cached_s=median(later),
          cache_hits_cached=median([r["cache_hits"] for r in ok[1:]]),
          rss_peak=median([r["rss_peak"] for r in ok]),
          rss_base=median([r["rss_base"] for r in ok]))
      row.update(rss_peak_mb=row["rss_peak"] / 2**20, rss_base_mb=row["rss_base"] / 2**20)
    rows.append(row)
  for row in rows:
    ref = next((r for r in rows if r["contender"] == REFERENCE and
                r["length"] == row["length"] and r.get("train_fps")), None)
    if ref is not None and row.get("train_fps"):
      row["train_vs_torch"] = row["train_fps"] / ref["train_fps"]
      row["infer_vs_torch"] = row["infer_fps"] / ref["infer_fps"]
  return rows


def run(args) -> tuple[list[dict], list[dict], list[str]]:
  """Runs the schedule; returns (summary rows, per-repeat run records, notes)."""
  contenders = list(dict.fromkeys(args.contenders))
  notes = []
  runs = []
  if REFERENCE in contenders and not torch_available():
    contenders.remove(REFERENCE)
    runs.append(dict(record="run", contender=REFERENCE, length=args.lengths[0],
                     repeat=0, status="skipped: torch is not installed (pip install "
                     "-e '.[bench]')"))
    if args.json:
      print(json.dumps(runs[-1]), flush=True)
    notes.append("torch is not installed: no PyTorch contender, no ratios.")
  cache_dir = None if args.no_cache else tempfile.mkdtemp(prefix="hhjax_versus_cache_")
  try:
    for repeat, length, contender in schedule(contenders, args.lengths, args.repeats):
      spec = dict(contender=contender, length=length, repeat=repeat, steps=args.steps,
                  seed=args.seed, threads=args.torch_threads, cache_dir=cache_dir,
                  small=args.small)
      record = run_worker(spec, args.worker_timeout_s)
      runs.append(record)
      if args.json:
        print(json.dumps(record), flush=True)
      else:
        detail = (f"train {record['train_fps']:,.0f} frames/s, infer "
                  f"{record['infer_fps']:,.0f} frames/s, compile "
                  f"{record['compile_s']:.1f} s" if record.get("status") == "ok"
                  else record.get("status"))
        print(f"  repeat {repeat} T={length} {contender}: {detail}", file=sys.stderr,
              flush=True)
  finally:
    if cache_dir:
      shutil.rmtree(cache_dir, ignore_errors=True)
  rows = summarize(runs)
  sizes = SMALL if args.small else PAPER
  notes.append(
      f"{sizes.num_stages} stages x {sizes.num_layers} layers x {sizes.channels} "
      f"channels, {sizes.feature_dim}-d input, {sizes.num_classes} classes, batch "
      f"{sizes.batch}, dropout {sizes.dropout_rate}; {args.repeats} repeat(s) x "
      f"{args.steps} timed steps after one warm-up; torch threads "
      f"{args.torch_threads}; frames/s are medians over repeats (min - max in JSON).")
  return rows, runs, notes


COLUMNS = [("contender", "contender"), ("length", "T"), ("train_fps", "train frames/s"),
           ("train_vs_torch", "x torch"), ("infer_fps", "infer frames/s"),
           ("infer_vs_torch", "x torch"), ("compile_cold_s", "compile s (cold)"),
           ("compile_cached_s", "compile s (cached)"), ("rss_peak_mb", "peak RSS MiB"),
           ("rss_base_mb", "base RSS MiB"), ("status", "status")]


def add_arguments(parser) -> None:
  """The `versus` subcommand's options (its parser has bench's common ones)."""
  parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
  parser.add_argument("--contenders", nargs="+", default=list(DEFAULT_CONTENDERS),
                      choices=CONTENDERS)
  parser.add_argument("--torch-threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-cache", action="store_true",
                      help="no shared persistent compilation cache: every repeat "
                           "compiles cold")
  parser.add_argument("--worker-timeout-s", type=float, default=1800.0)
  parser.add_argument("--small", action="store_true",
                      help="a tiny network (2 x 2 x 8, 16-d input): quick checks")
  parser.set_defaults(repeats=3)


def main(argv: Sequence[str]) -> None:
  """The subprocess entry: `python -m hhjax.bench_versus SPEC_JSON`."""
  if len(argv) != 1:
    raise SystemExit("usage: python -m hhjax.bench_versus SPEC_JSON (started by "
                     "`python -m hhjax.bench versus`)")
  record = run_worker_here(json.loads(argv[0]))
  print(RESULT_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
