r"""Benchmarks: attention cost against length, model size and FLOPs, training speed.

  python -m hhjax.bench attention [--max-length 65536] [--plot docs/bench_attention.png]
  python -m hhjax.bench model [--length 1048]
  python -m hhjax.bench train [--config configs/hha300_synthetic.py] [--length 400]
  python -m hhjax.bench long [--length 100000]
  python -m hhjax.bench versus [--lengths 1024 4096]   (against PyTorch; bench_versus.py)
  python -m hhjax.bench i3d [--frames 64 --size 224]   (I3D against PyTorch; bench_i3d.py)

Every subcommand prints the device and the JAX version, then a table (or, with
`--json`, one JSON object per line: first an `env` record, then one per result).
Timed figures are the median of `--repeats` runs after one warm-up run; compile time
is measured on its own (`jit(f).lower(...).compile()`), so it never enters a median.

FLOPs come from XLA's compiled cost analysis, which counts a multiply-add as 2 FLOPs
and transcendental functions (`exp`, `expm1`) not at all. Memory is XLA's compiled
memory analysis: temp + argument + output bytes (minus aliased bytes), i.e. what the
executable needs while it runs; on a GPU the device's own peak
(`device.memory_stats()['peak_bytes_in_use']`, a high-water mark for the process)
is printed beside it.

A variant whose memory would exceed `--memory-budget-gb` (estimated *before* it
runs: analytically for softmax's T x T matrices, then from the compiled memory
analysis), or whose predicted run time would exceed `--time-budget-s`, is reported
as "over budget" and skipped.

Analytic FLOPs of `MultiHeadAttention` (batch B, length T, model width C, H heads of
size d, F = H d), forward:

  projections:  8 B T C F              (Q, K, V, output: 4 matmuls, 2 FLOPs / MAC)
              + 3 B T F + B T C        (biases)
  linear core:  4 B T F d              (sum_j phi(k_j) v_j^T and phi(q_i)^T KV)
              + 2 B T F                (the normaliser phi(q_i)^T sum_j phi(k_j))
              + 12 B T F               (elementwise: elu + 1 on q and k, key mask on
                                        k and v, the key sum, + eps, divide, query mask,
                                        ...; ~12 per element)
  softmax core: 4 B T^2 F              (Q K^T and the weights times V)
              + 5 B H T^2              (scale, key mask, max, subtract, sum + divide)
              + B T F                  (query mask)

so linear attention costs O(T (C F + F d)) and softmax O(T C F + T^2 F). The
forward+backward count is 3x the forward (the backward of each matmul is two matmuls
of the same size; elementwise terms are approximately doubled too).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hhjax.models.attention import MultiHeadAttention
from hhjax.models.joint import JointModel
from hhjax.models.segmenters.conv_transformer import MultiStageModel

OVER_BUDGET = "over budget"
HHA300_TYPICAL_LENGTH = 1048
FEATURE_DIM = 2048

# Table X of Li et al. (GFLOPs, GPU memory in GB, parameters in millions).
PAPER_TABLE_X = {
    "linear": dict(gflops=5.77, memory_gb=2.09, params_m=12.46),
    "softmax": dict(gflops=6.14, memory_gb=2.63, params_m=12.46),
}


# --------------------------------------------------------------------------- helpers


def environment() -> dict[str, Any]:
  """Device, JAX version, CPU model and core count, date (UTC)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  dev = jax.devices()[0]
  return dict(record="env", jax=jax.__version__, backend=jax.default_backend(),
              device=str(getattr(dev, "device_kind", dev.platform)),
              num_devices=jax.device_count(), cpu=cpu, cores=os.cpu_count(),
              date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def xla_flops(compiled) -> float:
  """FLOPs of a compiled executable from XLA's cost analysis (NaN if unavailable)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):   # older JAX: one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def xla_memory(compiled) -> int:
  """Temp + argument + output bytes (minus aliased) of a compiled executable."""
  m = compiled.memory_analysis()
  if m is None:
    return 0
  return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes)


def device_peak_bytes() -> int | None:
  """The device's peak bytes in use (GPU/TPU); None where not reported (CPU)."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return stats.get("peak_bytes_in_use")


def rss_peak_bytes() -> int:
  """The process's peak resident set size (Linux reports kilobytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024


def compile_timed(fn: Callable, *args):
  """`jit(fn).lower(*args).compile()`; returns (compiled, seconds)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def time_runs(run: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
  """One warm-up call, then `repeats` timed calls; returns (median s, all times)."""
  jax.block_until_ready(run())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def param_count(params) -> int:
  """Number of scalars in a parameter tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _fmt(value, unit: str = "") -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if isinstance(value, str):
    return value
  return f"{value:,.4g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]],
                file=None) -> None:
  """Prints `rows` as a fixed-width table; `columns` are (key, header) pairs."""
  file = file or sys.stdout
  cells = [[h for _, h in columns]]
  for r in rows:
    cells.append([r.get(k) if isinstance(r.get(k), str) else _fmt(r.get(k))
                  for k, _ in columns])
  widths = [max(len(str(c[i])) for c in cells) for i in range(len(columns))]
  for n, line in enumerate(cells):
    print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)), file=file)
    if n == 0:
      print("  ".join("-" * w for w in widths), file=file)


def emit(args, env: dict, rows: list[dict], columns, notes: Sequence[str] = ()) -> None:
  """Table (with the environment and notes) or JSON lines on stdout."""
  if args.json:
    print(json.dumps(env))
    for r in rows:
      print(json.dumps(r))
    for n in notes:
      print(json.dumps(dict(record="note", text=n)))
    return
  print(f"device: {env['device']} ({env['backend']}, {env['num_devices']} device(s)); "
        f"JAX {env['jax']}; CPU: {env['cpu']}, {env['cores']} cores; {env['date']}")
  print_table(rows, columns)
  for n in notes:
    print(n)
  sys.stdout.flush()


# ------------------------------------------------------------------------- attention


def attention_flops(kind: str, length: int, channels: int = 64, num_heads: int = 4,
                    batch: int = 1, backward: bool = False) -> float:
  """Analytic FLOPs of `MultiHeadAttention` (formula in the module docstring)."""
  b, t, c, h = batch, length, channels, num_heads
  f = channels
  d = f // h
  total = 8 * b * t * c * f + 3 * b * t * f + b * t * c
  if kind == "linear":
    total += 4 * b * t * f * d + 2 * b * t * f + 12 * b * t * f
  elif kind == "softmax":
    total += 4 * b * t * t * f + 5 * b * h * t * t + b * t * f
  elif kind != "none":
    raise ValueError(f"unknown attention kind {kind!r}")
  return float(3 * total if backward else total)


def softmax_memory_lower_bound(length: int, num_heads: int = 4, batch: int = 1,
                               backward: bool = False, itemsize: int = 4) -> int:
  """Bytes of the T x T matrices softmax attention must hold at once.

  At least one (B, H, T, T) array lives during the forward pass (the weights); the
  backward pass keeps the weights and their gradient.
  """
  return (2 if backward else 1) * batch * num_heads * length * length * itemsize


def _attention_fns(kind: str, length: int, channels: int, num_heads: int, batch: int,
                   seed: int = 0):
  """(forward, forward+backward, params, x, mask) for one attention variant."""
  module = MultiHeadAttention(kind, num_heads)
  key = jax.random.key(seed)
  x = jax.random.normal(key, (batch, length, channels), jnp.float32)
  mask = jnp.ones((batch, length), jnp.float32)
  params = module.init(key, x[:, :8], mask[:, :8])["params"]

  def forward(params, x, mask):
    return module.apply({"params": params}, x, mask)

  def loss(params, x, mask):
    return jnp.sum(forward(params, x, mask) ** 2)

  fwd_bwd = jax.value_and_grad(loss, argnums=(0, 1))
  return forward, fwd_bwd, params, x, mask


def bench_attention_one(kind: str, mode: str, length: int, *, channels: int = 64,
                        num_heads: int = 4, batch: int = 1, repeats: int = 5,
                        memory_budget_bytes: float = 16e9,
                        time_budget_s: float = float("inf"),
                        predicted_time_s: float | None = None,
                        run: bool = True) -> dict[str, Any]:
  """Measures one attention variant at one length (see `run_attention`).

  Returns a result record; `status` is "ok" or starts with "over budget".
  """
  backward = mode == "fwd+bwd"
  row = dict(record="attention", kind=kind, mode=mode, length=length,
             flops_analytic=attention_flops(kind, length, channels, num_heads, batch,
                                            backward),
             flops_xla=None, memory_xla=None, device_peak=None, time_ms=None,
             compile_s=None, status="ok")
  if kind == "softmax":
    lower = softmax_memory_lower_bound(length, num_heads, batch, backward)
    if lower > memory_budget_bytes:
      row["status"] = f"{OVER_BUDGET} (memory >= {lower / 1e9:.3g} GB, analytic)"
      return row
  forward, fwd_bwd, params, x, mask = _attention_fns(kind, length, channels, num_heads,
                                                     batch)
  compiled, row["compile_s"] = compile_timed(fwd_bwd if backward else forward,
                                             params, x, mask)
  row["flops_xla"] = xla_flops(compiled)
  row["memory_xla"] = xla_memory(compiled)
  if row["memory_xla"] > memory_budget_bytes:
    row["status"] = f"{OVER_BUDGET} (memory {row['memory_xla'] / 1e9:.3g} GB, XLA)"
    return row
  if predicted_time_s is not None and predicted_time_s * (repeats + 1) > time_budget_s:
    row["status"] = (f"{OVER_BUDGET} (time ~{predicted_time_s * (repeats + 1):.0f} s "
                     "predicted)")
    return row
  if run:
    median, _ = time_runs(lambda: compiled(params, x, mask), repeats)
    row["time_ms"] = median * 1e3
    row["device_peak"] = device_peak_bytes()
  return row


def run_attention(args) -> list[dict]:
  """Linear vs softmax attention, lengths doubling from `--min-length`."""
  lengths = []
  t = args.min_length
  while t <= args.max_length:
    lengths.append(t)
    t *= 2
  rows = []
  budget = args.memory_budget_gb * 1e9
  for kind in args.kinds:
    for mode in args.modes:
      previous = None   # (length, seconds) of the last timed run
      for length in lengths:
        predicted = None
        if previous is not None:
          exponent = 2 if kind == "softmax" else 1
          predicted = previous[1] * (length / previous[0]) ** exponent
        row = bench_attention_one(kind, mode, length, channels=args.d_model,
                                  num_heads=args.num_heads, batch=args.batch,
                                  repeats=args.repeats, memory_budget_bytes=budget,
                                  time_budget_s=args.time_budget_s,
                                  predicted_time_s=predicted)
        if row["time_ms"] is not None:
          previous = (length, row["time_ms"] / 1e3)
        if not args.json:
          print(f"  {kind:7s} {mode:7s} T={length:6d}: {row['status']}"
                + (f", {row['time_ms']:.3g} ms" if row["time_ms"] else ""),
                file=sys.stderr, flush=True)
        rows.append(row)
  return rows


def attention_summary(rows: list[dict]) -> list[str]:
  """Crossover length and softmax/linear time ratios, per mode."""
  notes = []
  by = {(r["kind"], r["mode"], r["length"]): r for r in rows}
  for kind in ("linear", "softmax"):
    for mode in ("fwd", "fwd+bwd"):
      for key, what in (("time_ms", "time"), ("memory_xla", "memory")):
        pts = [(r["length"], r[key]) for r in rows if r["kind"] == kind and
               r["mode"] == mode and r[key] and r["length"] >= 1024]
        if len(pts) >= 2:
          slope = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
          notes.append(f"{kind} {mode}: {what} grows as T^{slope:.2f} "
                       f"(log-log fit, T = {pts[0][0]}..{pts[-1][0]})")
  for mode in sorted({r["mode"] for r in rows}):
    lengths = sorted({r["length"] for r in rows if r["mode"] == mode})
    # The crossover: the shortest length from which linear is faster at every longer
    # length timed (single noisy points at short lengths do not count).
    crossover = None
    for t in reversed(lengths):
      lin, soft = by.get(("linear", mode, t)), by.get(("softmax", mode, t))
      if not (lin and soft and lin["time_ms"] and soft["time_ms"]):
        continue
      if soft["time_ms"] <= lin["time_ms"]:
        break
      crossover = t
    notes.append(f"{mode}: linear is faster than softmax from T = "
                 f"{crossover if crossover else 'n/a (never within the lengths run)'}"
                 " on (at every longer length timed)")
    for t in (16384, 65536):
      lin, soft = by.get(("linear", mode, t)), by.get(("softmax", mode, t))
      if not lin:
        continue
      if soft and soft["time_ms"] and lin["time_ms"]:
        notes.append(f"{mode}: T = {t}: softmax / linear time = "
                     f"{soft['time_ms'] / lin['time_ms']:.1f}x")
      elif soft:
        notes.append(f"{mode}: T = {t}: softmax {soft['status']}")
  return notes


def plot_attention(rows: list[dict], path: str) -> None:
  """Log-log time and memory against length, one line per kind and mode."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  styles = {"linear": "tab:blue", "softmax": "tab:red"}
  for kind in ("linear", "softmax"):
    for mode, ls in (("fwd", "-"), ("fwd+bwd", "--")):
      sel = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
      if not sel:
        continue
      timed = [r for r in sel if r["time_ms"]]
      mem = [r for r in sel if r["memory_xla"]]
      label = f"{kind} {mode}"
      if timed:
        axes[0].loglog([r["length"] for r in timed], [r["time_ms"] for r in timed],
                       ls, marker="o", color=styles[kind], label=label, base=2)
      if mem:
        axes[1].loglog([r["length"] for r in mem],
                       [r["memory_xla"] / 2**20 for r in mem], ls, marker="o",
                       color=styles[kind], label=label, base=2)
  axes[0].set(xlabel="frames T", ylabel="time (ms, median)",
              title="Attention time (batch 1, d_model 64, 4 heads)")
  axes[1].set(xlabel="frames T", ylabel="XLA memory (MiB)",
              title="Compiled memory: temp + args + outputs")
  for ax in axes:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


ATTENTION_COLUMNS = [("kind", "kind"), ("mode", "mode"), ("length", "T"),
                     ("flops_xla", "FLOPs (XLA)"), ("flops_analytic", "FLOPs (formula)"),
                     ("time_ms", "ms"), ("compile_s", "compile s"),
                     ("memory_xla", "XLA mem B"), ("device_peak", "dev peak B"),
                     ("status", "status")]


# ----------------------------------------------------------------------------- model


def model_stats(attention: str, length: int, *, joint: bool = False,
                feature_dim: int = FEATURE_DIM, backward: bool = True,
                **model_kwargs) -> dict[str, Any]:
  """Parameters, XLA FLOPs and memory of the segmentation (or joint) model, batch 1.

  Nothing is run: parameters come from `jax.eval_shape(init)`, FLOPs and memory from
  the compiled inference function and, if `backward`, from a forward+backward of a
  sum-of-squares loss on the logits.
  """
  model = (_joint_model(attention, **model_kwargs) if joint
           else MultiStageModel(attention=attention, **model_kwargs))
  x = jax.ShapeDtypeStruct((1, length, feature_dim), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, length), jnp.float32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                             jnp.ones(mask.shape))["params"])

  def forward(params, x, mask):
    out = model.apply({"params": params}, x, mask)
    if joint:   # every output, so that XLA keeps the scorer
      return out["logits"], out["step_scores"], out["video_score"]
    return out["logits"]

  def loss(params, x, mask):
    return sum(jnp.sum(y ** 2) for y in jax.tree.leaves(forward(params, x, mask)))

  fwd, compile_s = compile_timed(forward, params, x, mask)
  flops = xla_flops(fwd)
  row = dict(record="model", model="joint" if joint else "segmentation",
             attention=attention, length=length, params=param_count(params),
             flops_xla=flops, gmacs=flops / 2e9, memory_xla=xla_memory(fwd),
             memory_train_xla=None, flops_train_xla=None, compile_s=compile_s)
  if backward:
    bwd, _ = compile_timed(jax.grad(loss), params, x, mask)
    row.update(memory_train_xla=xla_memory(bwd), flops_train_xla=xla_flops(bwd))
  return row


def model_notes(rows: list[dict]) -> list[str]:
  """Comparison with Table X: parameters, FLOPs ratio, FLOP convention."""
  seg = {r["attention"]: r for r in rows if r["model"] == "segmentation"}
  notes = ["Table X (Li et al.): linear 5.77 GFLOPs, ~2.09 GB GPU memory; softmax 6.14 "
           "GFLOPs, ~2.63 GB; 12.46 M parameters."]
  if "linear" in seg:
    p = seg["linear"]["params"]
    notes.append(
        f"parameters: {p / 1e6:.3f} M here vs 12.46 M in the paper. The paper states "
        "4 stages x 10 layers x 64 channels but not every width (input projection, "
        "feed-forward, scorer); with those stated sizes the network has "
        f"{p / 1e6:.2f} M parameters, so the paper's model must be wider somewhere.")
  if "linear" in seg and "softmax" in seg:
    lin, soft = seg["linear"], seg["softmax"]
    notes.append(
        f"FLOPs ratio linear / softmax at T = {lin['length']}: "
        f"{lin['flops_xla'] / soft['flops_xla']:.3f} (paper: 5.77 / 6.14 = "
        f"{5.77 / 6.14:.3f}); softmax - linear = "
        f"{(soft['flops_xla'] - lin['flops_xla']) / 1e9:.3f} G (XLA FLOPs) = "
        f"{(soft['flops_xla'] - lin['flops_xla']) / 2e9:.3f} G multiply-adds "
        "(paper: 6.14 - 5.77 = 0.37 G).")
    extra = soft["flops_xla"] - lin["flops_xla"]   # grows as T^2
    t_macs = lin["length"] * math.sqrt(0.37e9 / (extra / 2))
    t_flops = lin["length"] * math.sqrt(0.37e9 / extra)
    notes.append(
        f"The paper's 0.37 G difference equals this model's softmax - linear difference "
        f"at T = {t_macs:.0f} counted in multiply-adds, or at T = {t_flops:.0f} counted "
        "in XLA FLOPs.")
    notes.append(
        "XLA counts a multiply-add as 2 FLOPs. The paper's difference of 0.37 G between "
        "softmax and linear at a typical length is close to the multiply-add count of "
        "the extra T x T products, so its 'FLOPs' are most likely multiply-adds (MACs, "
        "as thop/ptflops-style counters report them): compare its figures with the "
        "'GMACs' column.")
  return notes


MODEL_COLUMNS = [("model", "model"), ("attention", "attention"), ("length", "T"),
                 ("params", "params"), ("flops_xla", "FLOPs (XLA)"), ("gmacs", "GMACs"),
                 ("memory_xla", "infer mem B"), ("memory_train_xla", "fwd+bwd mem B"),
                 ("paper_gflops", "paper GFLOPs"), ("paper_memory_gb", "paper GB"),
                 ("paper_params_m", "paper M params")]


def run_model(args) -> list[dict]:
  rows = []
  kwargs = {}
  if args.small:   # a tiny model, for quick checks
    kwargs = dict(num_stages=2, num_layers=2, channels=8, num_heads=2)
  for joint in (False, True) if not args.segmentation_only else (False,):
    for attention in args.kinds:
      r = model_stats(attention, args.length, joint=joint, feature_dim=args.feature_dim,
                      backward=not args.forward_only, **kwargs)
      paper = PAPER_TABLE_X.get(attention) if not joint else None
      if paper:
        r.update(paper_gflops=paper["gflops"], paper_memory_gb=paper["memory_gb"],
                 paper_params_m=paper["params_m"])
      rows.append(r)
  return rows


# ----------------------------------------------------------------------------- train


def load_config(path: str):
  """Loads an ml_collections config file (a module with `get_config()`)."""
  from hhjax import config as config_lib  # noqa: PLC0415
  return config_lib.from_file(path)


def random_batch(batch: int, length: int, feature_dim: int, num_classes: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """A training batch of random features, labels and scores."""
  rng = np.random.default_rng(seed)
  return dict(
      features=rng.normal(size=(batch, length, feature_dim)).astype(np.float32),
      labels=rng.integers(0, num_classes, size=(batch, length)).astype(np.int32),
      mask=np.ones((batch, length), np.float32),
      score=rng.uniform(0, 6, size=(batch,)).astype(np.float32),
      step_scores=rng.uniform(0, 1, size=(batch, 6)).astype(np.float32),
      weight=np.ones((batch,), np.float32))


def run_train(args) -> list[dict]:
  """ms per train step and frames/s with the trainer's compiled step, random data: one
  row per (segmenter, compute dtype, length) asked for."""
  from hhjax.models.joint import create_model
  from hhjax.training import state as state_lib, steps

  rows = []
  base = load_config(args.config)
  segmenter_names = args.segmenter or [base.model.segmenter]
  for segmenter, dtype, length_arg in itertools.product(
      segmenter_names, args.compute_dtype or [base.compute_dtype], args.length or [0]):
    config = load_config(args.config)
    config.model.segmenter = segmenter
    config.compute_dtype = dtype
    if args.attention:
      config.model.attention = args.attention
    batch_size = args.batch_size or config.batch_size
    if batch_size % len(jax.local_devices()):
      raise ValueError(f"batch size {batch_size} (--batch-size, else the config's) is not "
                       f"divisible by the {len(jax.local_devices())} devices the step "
                       "splits it over: give a multiple")
    length = length_arg or config.dataset.bucket_size
    feature_dim = FEATURE_DIM if config.dataset.streams == "rgb+flow" else FEATURE_DIM // 2
    mesh = state_lib.make_mesh(jax.local_devices())
    model = create_model(config)
    state = state_lib.create_train_state(config, model, feature_dim, mesh)
    p_train_step, _ = steps.compile_steps(config, model, mesh)
    batch = steps.to_device(random_batch(batch_size, length, feature_dim,
                                         config.model.num_classes), mesh)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = p_train_step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    holder = [state]

    def step(compiled=compiled, holder=holder, batch=batch, key=key):
      holder[0], out = compiled(holder[0], batch, key)
      return out

    median, _ = time_runs(step, args.repeats)
    rows.append(dict(record="train", config=os.path.basename(args.config),
                     segmenter=segmenter, compute_dtype=dtype,
                     attention=config.model.attention, batch=batch_size, length=length,
                     devices=len(jax.local_devices()), ms_per_step=median * 1e3,
                     frames_per_s=batch_size * length / median, compile_s=compile_s,
                     flops_xla=xla_flops(compiled), memory_xla=xla_memory(compiled),
                     device_peak=device_peak_bytes()))
    del holder, state, compiled
  return rows


TRAIN_COLUMNS = [("config", "config"), ("segmenter", "segmenter"),
                 ("compute_dtype", "compute"), ("attention", "attention"), ("batch", "batch"),
                 ("length", "T"), ("devices", "devices"), ("ms_per_step", "ms/step"),
                 ("frames_per_s", "frames/s"), ("compile_s", "compile s"),
                 ("flops_xla", "FLOPs (XLA)"), ("memory_xla", "XLA mem B"),
                 ("device_peak", "device peak B")]


# ------------------------------------------------------------------------------ long


def _joint_model(attention: str, **model_kwargs) -> JointModel:
  """The joint model with the conv-transformer segmenter; `model_kwargs` are fields of
  either (`MultiStageModel`'s go to the segmenter, the rest to `JointModel`)."""
  seg_fields = {f.name for f in dataclasses.fields(MultiStageModel)}
  seg = {k: v for k, v in model_kwargs.items() if k in seg_fields}
  head = {k: v for k, v in model_kwargs.items() if k not in seg_fields}
  if "num_classes" in seg:
    head["num_classes"] = seg["num_classes"]
  return JointModel(segmenter=MultiStageModel(attention=attention, **seg), **head)


def _joint_eval(attention: str, length: int, feature_dim: int, **model_kwargs):
  """(compiled eval step, params, compile seconds) of the joint model, batch 1."""
  from hhjax.training import steps

  model = _joint_model(attention, **model_kwargs)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, feature_dim)),
                               jnp.ones((1, 16)))["params"]
  batch = dict(features=jax.ShapeDtypeStruct((1, length, feature_dim), jnp.float32),
               mask=jax.ShapeDtypeStruct((1, length), jnp.float32))
  compiled, compile_s = compile_timed(functools.partial(steps.eval_step, model=model),
                                      params, batch)
  return compiled, params, compile_s


def softmax_max_length(memory_bytes: float, feature_dim: int, *, start: int = 1024,
                       granularity: int = 256, upper: int | None = None,
                       memory_fn: Callable[[int], int] | None = None,
                       **model_kwargs) -> tuple[int, list[dict]]:
  """Longest length (a multiple of `granularity`) the softmax joint model's compiled
  inference fits in `memory_bytes`; doubling, then bisection. Nothing is run.

  Args:
    memory_bytes: the budget (e.g. linear attention's memory at the long length).
    feature_dim: input feature size.
    start: first length tried; doubled while it fits.
    granularity: resolution of the bisection.
    upper: stop at this length (returned if it fits).
    memory_fn: length -> bytes; default: the compiled memory analysis of the
      softmax joint model's eval step.
    **model_kwargs: `JointModel` fields.

  Returns:
    (the length, or 0 if even `start` does not fit; the probes as records).
  """
  probes = []
  if memory_fn is None:
    def memory_fn(t):
      compiled, _, _ = _joint_eval("softmax", t, feature_dim, **model_kwargs)
      return xla_memory(compiled)

  def fits(t):
    mem = memory_fn(t)
    probes.append(dict(record="probe", attention="softmax", length=t, memory_xla=mem,
                       fits=mem <= memory_bytes,
                       status="fits" if mem <= memory_bytes else "does not fit"))
    return mem <= memory_bytes

  lo, hi = 0, None
  t = start
  while hi is None:
    if upper is not None and t >= upper:
      if fits(upper):
        return upper, probes
      hi = upper
      break
    if fits(t):
      lo, t = t, t * 2
    else:
      hi = t
  while hi - lo > granularity:
    mid = (lo + hi) // 2 // granularity * granularity
    if mid <= lo:
      break
    if fits(mid):
      lo = mid
    else:
      hi = mid
  return lo, probes


def run_long(args) -> list[dict]:
  """The joint model with linear attention on one long video, then softmax's limit."""
  rows = []
  kwargs = dict(num_stages=2, num_layers=2, channels=8, num_heads=2) if args.small \
      else {}
  compiled, params, compile_s = _joint_eval("linear", args.length, args.feature_dim,
                                            **kwargs)
  mem = xla_memory(compiled)
  row = dict(record="long", attention="linear", length=args.length, memory_xla=mem,
             compile_s=compile_s, flops_xla=xla_flops(compiled), time_ms=None,
             rss_peak=None, device_peak=None, status="ok")
  if mem > args.memory_budget_gb * 1e9:
    row["status"] = f"{OVER_BUDGET} (memory {mem / 1e9:.3g} GB, XLA)"
  else:
    rng = np.random.default_rng(0)
    batch = dict(features=jnp.asarray(rng.normal(size=(1, args.length, args.feature_dim))
                                      .astype(np.float32)),
                 mask=jnp.ones((1, args.length), jnp.float32))
    median, _ = time_runs(lambda: compiled(params, batch), args.repeats)
    row.update(time_ms=median * 1e3, frames_per_s=args.length / median,
               rss_peak=rss_peak_bytes(), device_peak=device_peak_bytes())
  rows.append(row)
  if not args.no_search:
    best, probes = softmax_max_length(mem, args.feature_dim,
                                      granularity=args.granularity,
                                      upper=args.length, **kwargs)
    rows.extend(probes)
    rows.append(dict(record="long", attention="softmax", length=best,
                     memory_xla=max([p["memory_xla"] for p in probes
                                     if p["length"] == best], default=None),
                     status=f"longest within {mem / 1e9:.3g} GB (XLA memory analysis)"))
  return rows


LONG_COLUMNS = [("record", "record"), ("attention", "attention"), ("length", "T"),
                ("time_ms", "ms"), ("frames_per_s", "frames/s"),
                ("compile_s", "compile s"), ("flops_xla", "FLOPs (XLA)"),
                ("memory_xla", "XLA mem B"), ("rss_peak", "RSS peak B"),
                ("device_peak", "dev peak B"), ("status", "status")]


# ------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m hhjax.bench", description=__doc__
                                   .split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--json", action="store_true", help="JSON lines instead of a table")
  common.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
  common.add_argument("--memory-budget-gb", type=float, default=16.0)
  common.add_argument("--time-budget-s", type=float, default=120.0,
                      help="skip a variant whose predicted warm-up + repeats exceed it")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("attention", parents=[common], help="linear vs softmax attention")
  p.add_argument("--min-length", type=int, default=256)
  p.add_argument("--max-length", type=int, default=65536)
  p.add_argument("--d-model", type=int, default=64)
  p.add_argument("--num-heads", type=int, default=4)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--kinds", nargs="+", default=["linear", "softmax"],
                 choices=["linear", "softmax"])
  p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"],
                 choices=["fwd", "fwd+bwd"])
  p.add_argument("--plot", help="write a log-log plot of time and memory to this PNG")

  p = sub.add_parser("model", parents=[common], help="parameters and FLOPs vs Table X")
  p.add_argument("--length", type=int, default=HHA300_TYPICAL_LENGTH)
  p.add_argument("--feature-dim", type=int, default=FEATURE_DIM)
  p.add_argument("--kinds", nargs="+", default=["linear", "softmax", "none"],
                 choices=["linear", "softmax", "none"])
  p.add_argument("--segmentation-only", action="store_true")
  p.add_argument("--forward-only", action="store_true",
                 help="skip the forward+backward compile (its memory and FLOPs)")
  p.add_argument("--small", action="store_true", help="a tiny model (quick checks)")

  p = sub.add_parser("train", parents=[common], help="train step speed")
  p.add_argument("--config", default="configs/hha300_synthetic.py")
  p.add_argument("--length", type=int, nargs="+", default=None,
                 help="one or more lengths (default: the config's bucket)")
  p.add_argument("--batch-size", type=int, default=0, help="default: the config's")
  p.add_argument("--segmenter", nargs="+", default=None,
                 help="one or more segmentation networks (default: the config's)")
  p.add_argument("--compute-dtype", nargs="+", choices=["float32", "bfloat16"],
                 default=None, help="one or more (default: the config's)")
  p.add_argument("--attention", choices=["linear", "softmax", "none"])

  p = sub.add_parser("long", parents=[common], help="one long video, joint model")
  p.add_argument("--length", type=int, default=100_000)
  p.add_argument("--feature-dim", type=int, default=FEATURE_DIM)
  p.add_argument("--granularity", type=int, default=256,
                 help="resolution of softmax's longest-length search")
  p.add_argument("--no-search", action="store_true",
                 help="skip the softmax longest-length search")
  p.add_argument("--small", action="store_true", help="a tiny model (quick checks)")
  p.set_defaults(repeats=3)

  from hhjax import bench_versus  # noqa: PLC0415
  p = sub.add_parser("versus", parents=[common],
                     help="hhjax vs a PyTorch MS-TCN: train/infer frames/s, memory")
  bench_versus.add_arguments(p)

  from hhjax import bench_i3d  # noqa: PLC0415
  p = sub.add_parser("i3d", parents=[common],
                     help="hhjax's I3D forward vs a PyTorch I3D: frames/s, memory")
  bench_i3d.add_arguments(p)
  return parser


def main(argv: Sequence[str] | None = None) -> list[dict]:
  """Runs one subcommand; prints its table or JSON lines and returns the records."""
  args = build_parser().parse_args(argv)
  env = environment()
  if args.command == "attention":
    rows = run_attention(args)
    emit(args, env, rows, ATTENTION_COLUMNS, attention_summary(rows))
    if args.plot:
      plot_attention(rows, args.plot)
  elif args.command == "model":
    rows = run_model(args)
    emit(args, env, rows, MODEL_COLUMNS, model_notes(rows))
  elif args.command == "train":
    rows = run_train(args)
    emit(args, env, rows, TRAIN_COLUMNS)
  elif args.command in ("versus", "i3d"):
    from hhjax import bench_i3d, bench_versus  # noqa: PLC0415
    against = bench_versus if args.command == "versus" else bench_i3d
    if args.json:   # the env record first; each run's record as soon as it ends
      print(json.dumps(env), flush=True)
    summary, runs, notes = against.run(args)
    if args.json:
      for r in summary:
        print(json.dumps(r))
      for n in notes:
        print(json.dumps(dict(record="note", text=n)), flush=True)
    else:
      emit(args, env, summary, against.COLUMNS, notes)
    rows = runs + summary
  else:
    rows = run_long(args)
    emit(args, env, rows, LONG_COLUMNS)
  return rows


if __name__ == "__main__":
  main()
