"""The training loop: train, evaluate, checkpoint, resume, log.

`train_and_evaluate(config, workdir)` trains the model `config.model` describes on
`config.dataset.train_split`, evaluates it on `config.dataset.eval_split` every
`eval_every_steps` and at the end, and writes in the workdir:

* `checkpoints/` (Orbax): the train state, the input pipeline's position and the
  partial logging window, every `checkpoint_every_steps` steps and at the end;
* `metrics.jsonl` (and TensorBoard event files in `tensorboard/`): `train/*` means at
  every log step, `eval/*` at every evaluation;
* `config.json` (the config of the run's first start) and `train_data.json` (what its
  training split held, checked on resume); `code.jsonl`, one line per start with the
  code it ran (`hhjax.provenance`: commit, local edits, versions); `predictions.jsonl` and
  `eval_results.json` at the end; `feature_stats.npz` when inputs are standardised;
* `export/` at the end: the model folder `python -m hhjax.assess --model` reads
  (`hhjax.export`).

What it guarantees (docs/GUARANTEES.md has the tests):

* **Exact resume.** Rerunning with the same workdir resumes from the latest
  checkpoint; dropout keys are `fold_in(key, step)`, the data order is a pure function
  of the seed, and the logging window is saved with the state, so a run killed at any
  moment and resumed ends with the same parameters and metrics as one never stopped.
  Lines a killed run logged after its last checkpoint (all of them, when it died
  before its first) are dropped on restart, so `metrics.jsonl` never holds a step
  twice.
* **No mixed runs.** A resumed run compares its config with the saved `config.json`
  and refuses a change that would mix two runs (data, model, loss, optimiser, seed),
  naming the fields, unless `config.allow_resume_changes` is set; likewise training
  data that changed under it (other videos, lengths or labels in the training split,
  recorded in `train_data.json`); a checkpoint whose
  arrays cannot hold the configured state is refused even then, naming the arrays.
* **No bad checkpoints.** Losses and gradient norms are checked for NaN/inf before
  every checkpoint (and at every log step); a non-finite value stops the run, naming
  the step, before the state is saved.
* **Preemption.** SIGTERM makes the loop save a checkpoint after the step in flight and
  raise `Preempted`; `python -m hhjax.train` then exits with status 0, and a rerun
  resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections

from hhjax import config as config_lib
from hhjax import evaluation, provenance, reporting
from hhjax.data import augment, layout, pipeline, splits
from hhjax.models.joint import create_model
from hhjax.training import checkpointing, metric_writers, state as state_lib, steps

CONFIG_FILE = "config.json"
TRAIN_DATA_FILE = "train_data.json"
TIMELINE_FILE = "timeline.png"


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint; rerun to resume."""

  def __init__(self, step: int, directory: pathlib.Path):
    self.step = step
    super().__init__(f"stopped by SIGTERM at step {step}; checkpoint saved in "
                     f"{directory}; rerun the same command to resume")


class ConfigMismatchError(ValueError):
  """A resumed run's config differs from the saved one in fields that mix runs."""


def check_resume_config(config, workdir: pathlib.Path, resuming: bool) -> None:
  """Writes `config.json` on a fresh start; on resume compares against it.

  Raises:
    ConfigMismatchError: naming every field whose change would mix the two runs.
  """
  path = workdir / CONFIG_FILE
  now = json.loads(config.to_json_best_effort())
  if not resuming or not path.exists():
    if jax.process_index() == 0:
      path.write_text(json.dumps(now, indent=2))
    return
  saved = json.loads(path.read_text())
  conflicts = config_lib.resume_conflicts(saved, now)
  if not conflicts:
    return
  _allow_or_refuse(config, workdir, "changes", conflicts, "with changed settings",
                   f"config: {workdir} holds a run with other settings, and resuming it "
                   "with these would mix two runs")


def _allow_or_refuse(config, workdir: pathlib.Path, record: str, changes: list[str],
                     resuming_what: str, refusal: str) -> None:
  """With `config.allow_resume_changes`: appends `{record: changes}` to
  `config_changes.jsonl` and says so; else raises ConfigMismatchError(`refusal`, the
  changes, the way out)."""
  if config.allow_resume_changes:
    if jax.process_index() == 0:
      with (workdir / "config_changes.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.time(), record: changes}) + "\n")
    print(f"resuming {resuming_what} (config.allow_resume_changes): "
          + "; ".join(changes), flush=True)
    return
  raise ConfigMismatchError(
      refusal + ":\n  " + "\n  ".join(changes) + "\nUse a new --workdir, or pass "
      "--config.allow_resume_changes=True to resume anyway.")


def train_data_fingerprint(config, train: splits.SplitData) -> dict:
  """What `train_data.json` records: `splits.split_fingerprint` without the manual
  directory's path."""
  now = splits.split_fingerprint(config, train)
  now.pop("manual_dir")
  return now


def training_data_changes(workdir: pathlib.Path, config, train: splits.SplitData
                          ) -> list[str] | None:
  """`field: saved -> now` for each way `train` differs from the training data the run
  in `workdir` recorded; None when it recorded none (a run of an older hhjax)."""
  path = pathlib.Path(workdir) / TRAIN_DATA_FILE
  if not path.exists():
    return None
  saved = json.loads(path.read_text())
  return [f"{k}: {saved.get(k)!r} -> {v!r}"
          for k, v in train_data_fingerprint(config, train).items() if saved.get(k) != v]


def check_resume_data(config, workdir: pathlib.Path, resuming: bool,
                      train: splits.SplitData) -> None:
  """Writes `train_data.json` (what the training split holds) on a fresh start; on
  resume compares the split read now against it.

  What is compared: the data set, split and streams, the feature size, and a digest
  of every training video's name, length and frame labels (`splits.split_fingerprint`
  without the manual directory's path, so a moved folder still resumes). Features
  rewritten in place with the same videos and labels are not seen here.

  Raises:
    ConfigMismatchError: the training data changed since the run started (e.g. washes
      composed afresh into the same folder), naming what differs.
  """
  path = workdir / TRAIN_DATA_FILE
  if not resuming or not path.exists():
    if jax.process_index() == 0:
      path.write_text(json.dumps(train_data_fingerprint(config, train), indent=2))
    return
  changed = training_data_changes(workdir, config, train)
  if not changed:
    return
  _allow_or_refuse(config, workdir, "data_changes", changed, "on changed training data",
                   f"data: {workdir} holds a run trained on other data than "
                   f"{config.dataset.name}/{config.dataset.config} split "
                   f"{config.dataset.train_split!r} now holds, and resuming it would "
                   "mix the two")


def check_scores_in_range(config, data: splits.SplitData) -> None:
  """Every video score lies in `config.dataset.score_range`.

  Raises:
    hhjax.data.layout.LayoutError: a manual directory's scores.csv has scores outside
      the range: every such row, by file, line and video.
    ValueError: otherwise, naming the split, the videos and their scores.
  """
  if not data.has_scores:   # a segmentation-only data set: no scores to check
    return
  lo, hi = evaluation.score_range(config)
  bad = [(n, float(s)) for n, s in zip(data.names, data.scores) if not lo <= s <= hi]
  if not bad:
    return
  manual_dir = config.dataset.get("manual_dir")
  scores_file = pathlib.Path(manual_dir or ".") / layout.SCORES_FILE
  if manual_dir and scores_file.is_file():   # name the rows: file, line and video
    try:
      layout.read_scores(scores_file, score_range=(lo, hi))
    except layout.LayoutError as e:
      raise layout.LayoutError(
          [*e.problems, f"(config.dataset.score_range=({lo:g}, {hi:g}); set it to the "
           "data set's range)"]) from None
  listed = ", ".join(f"{n} ({s:g})" for n, s in bad[:5])
  more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
  raise ValueError(
      f"config.dataset.score_range=({lo:g}, {hi:g}) but split "
      f"{data.split!r} of {config.dataset.name}/{config.dataset.config} has video "
      f"scores outside it: {listed}{more} (set config.dataset.score_range to the "
      "data set's range)")


class _LogWindow:
  """Running sums of the step metrics since the last log step (saved in checkpoints,
  so a resumed run logs the same means as an uninterrupted one)."""

  def __init__(self, saved: dict | None = None):
    saved = saved or {}
    self.sums: dict[str, float] = dict(saved.get("sums", {}))
    self.count: int = int(saved.get("count", 0))

  def add(self, step_metrics: list[dict], first_step: int) -> None:
    for offset, m in enumerate(step_metrics):
      for k, v in m.items():
        v = float(v)
        if not math.isfinite(v) and k in ("loss", "grad_norm"):
          raise FloatingPointError(
              f"{k} is {v} at step {first_step + offset}; stopping before anything "
              "is checkpointed (lower config.learning_rate, or check the inputs)")
        self.sums[k] = self.sums.get(k, 0.0) + v
      self.count += 1

  def means(self) -> dict[str, float]:
    return {k: v / max(self.count, 1) for k, v in self.sums.items()}

  def state(self) -> dict:
    return {"sums": dict(self.sums), "count": self.count}


@contextlib.contextmanager
def _sigterm_flag():
  """A dict whose "set" becomes True on SIGTERM while the block runs."""
  flag = {"set": False}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del signum, frame
    flag["set"] = True

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def _progress(config, start: int, total: int):
  if not config.progress_bar or jax.process_index() != 0:
    return None
  from tqdm import tqdm  # noqa: PLC0415
  return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
              file=sys.stdout)


def _draw_timeline(path: pathlib.Path, result: dict, step: int,
                   class_names: tuple[str, ...]) -> bool:
  """The first test video's ground truth above its prediction; False without
  matplotlib or segmentation."""
  if result.get("labels") is None:
    return False
  try:
    if not class_names:
      from hhjax.data.synthetic import CLASS_NAMES as class_names  # noqa: PLC0415
    reporting.plot_timelines(path, [("ground truth", result["gt_labels"]),
                                    ("prediction", result["labels"])], class_names,
                             title=f"{result['video']} at step {step}")
  except ImportError:
    return False
  return True


PERSISTENT_CACHE_MIN_COMPILE_SECS = 0.1   # keep every executable worth reloading


def setup_compilation_cache(config) -> str | None:
  """Points JAX's persistent compilation cache at `config.compilation_cache_dir`.

  "" means `$XDG_CACHE_HOME/hhjax/jax_cache` (else `~/.cache/hhjax/jax_cache`); "none"
  sets up nothing (JAX's own settings, e.g. `JAX_COMPILATION_CACHE_DIR`, still apply).
  Executables that took over `PERSISTENT_CACHE_MIN_COMPILE_SECS` to compile are written
  there, so a rerun, or another run with the same shapes, loads its train and eval
  steps instead of compiling them. Call it before anything compiles.

  Returns:
    The cache folder, or None.

  Raises:
    ValueError: an explicitly named folder cannot be created (the default folder only
      warns: training then compiles as usual).
  """
  setting = config.get("compilation_cache_dir", "")
  if setting.strip().lower() == "none":
    return None
  default = not setting
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  path = (pathlib.Path(base) / "hhjax" / "jax_cache" if default
          else pathlib.Path(setting).expanduser()).absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    if default:
      logging.warning("no persistent compilation cache: cannot create %s (%s)", path, e)
      return None
    raise ValueError(f"config.compilation_cache_dir={setting!r}: cannot create the "
                     f"folder {path}: {e}") from e
  from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415
  if jax.config.jax_compilation_cache_dir != str(path):
    jax.config.update("jax_compilation_cache_dir", str(path))
    compilation_cache.reset_cache()   # a cache opened on another folder reopens here
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    PERSISTENT_CACHE_MIN_COMPILE_SECS)
  return str(path)


class CompileClock:
  """Seconds JAX spends making executables: tracing, lowering to MLIR and compiling
  with XLA (or loading from the persistent cache), summed from `jax.monitoring`'s
  duration events, with the number of XLA compilations and of cache hits. Listeners
  are registered once per process; a run reads the difference of two `read()`s."""

  EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    self._lock = threading.Lock()
    self._totals = [0.0, 0, 0]   # seconds, XLA compilations, persistent-cache hits
    self._registered = False

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in self.EVENTS:
      with self._lock:
        self._totals[0] += duration
        if event == self.EVENTS[-1]:
          self._totals[1] += 1

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == "/jax/compilation_cache/cache_hits":
      with self._lock:
        self._totals[2] += 1

  def read(self) -> tuple[float, int, int]:
    """(seconds, XLA compilations, cache hits) since the first `read()`."""
    with self._lock:
      if not self._registered:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        self._registered = True
      return tuple(self._totals)


COMPILE_CLOCK = CompileClock()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint) and evaluates.

  Returns:
    The final evaluation metrics (`acc`, `edit`, `f1@10`, `f1@25`, `f1@50` for models
    that segment; `spearman`, `rl2`).

  Raises:
    Preempted: SIGTERM arrived; a checkpoint was saved.
    ConfigMismatchError: resuming with settings that would mix two runs.
    FloatingPointError: a non-finite loss or gradient (nothing was checkpointed).
  """
  config_lib.check_config(config)
  provenance.code_version()   # read now (then cached): the code this process runs
  cache_dir = setup_compilation_cache(config)   # before anything compiles
  compile_start = COMPILE_CLOCK.read()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints",
                                    every_steps=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints)
  resuming = ckpt.latest_step() is not None
  check_resume_config(config, workdir, resuming)
  mesh = state_lib.make_mesh()
  logging.info("devices: %s (%d processes)", jax.devices(), jax.process_count())

  t0 = time.time()
  train = splits.load_split(config, config.dataset.train_split)
  test = splits.load_split(config, config.dataset.eval_split)
  for data in (train, test):
    check_scores_in_range(config, data)
  check_resume_data(config, workdir, resuming, train)
  if jax.process_index() == 0:
    print(f"data: {config.dataset.name}/{config.dataset.config}: "
          f"{len(train.lengths)} train / {len(test.lengths)} "
          f"{config.dataset.eval_split} videos ({time.time() - t0:.0f}s)", flush=True)

  stats = splits.feature_stats(config, train, workdir)
  model = create_model(config)
  state = state_lib.create_train_state(config, model, splits.feature_dim(config, train),
                                       mesh)
  if jax.process_index() == 0:
    print(f"model: {reporting.model_name(config)}, "
          f"{state_lib.parameter_count(state.params):,} parameters", flush=True)
  p_train_step, p_eval_step = steps.compile_steps(config, model, mesh)
  # Made by every process under jit (device_put cannot place an array on another
  # host's devices).
  key = jax.jit(lambda: jax.random.key(config.seed),
                out_shardings=NamedSharding(mesh, P()))()

  plan_epochs = math.ceil(config.num_train_steps / math.ceil(len(train.lengths) /
                                                             config.batch_size))
  stride = config.dataset.frame_stride
  plan = pipeline.BatchPlan(tuple(pipeline.strided_length(train.lengths, stride).tolist()),
                            config.batch_size, seed=config.seed, shuffle=True,
                            drop_remainder=False, bucket_size=config.dataset.bucket_size,
                            num_epochs=max(1, plan_epochs),
                            bucket_policy=config.dataset.get("bucket_policy", "multiple"))
  if jax.process_index() == 0:
    padding = plan.padding()
    print(f"padding: {padding.waste:.1%} of the train frames over {plan.num_epochs} "
          f"epoch(s); {len(padding.shapes)} train shape(s) {list(padding.shapes)} "
          f"(bucket_policy={plan.bucket_policy!r}, bucket_size={plan.bucket_size})",
          flush=True)
  loader = iter(pipeline.make_loader(
      train.source, plan, streams=config.dataset.streams, frame_stride=stride,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.dataset.num_threads, stats=stats,
      transform=augment.training_transform(config, splits.feature_dim(config, train))))

  writer = metric_writers.create(workdir, tensorboard=config.tensorboard)
  start, window = 0, _LogWindow()
  if resuming:
    state, extra = ckpt.restore(checkpointing.abstract_like(state))
    loader.set_state(extra["loader"])
    window = _LogWindow(extra.get("log"))
    start = int(state.step)
    dropped = writer.truncate_after(start)
    note = f" (dropped {dropped} metric lines logged after it)" if dropped else ""
    if jax.process_index() == 0:
      print(f"resumed from {ckpt.directory} at step {start}{note}", flush=True)
  else:   # lines of an attempt killed before its first checkpoint was complete
    writer.truncate_after(0)
  if jax.process_index() == 0:
    provenance.record_start(workdir, start, config.num_train_steps)
    version = provenance.code_version()
    commit = f"commit {version['commit'][:12]}; " if version["commit"] else ""
    print(f"code: {provenance.code_label(version)} ({commit}recorded in "
          f"{workdir / provenance.CODE_FILE})", flush=True)

  score_range = evaluation.score_range(config)
  bar = _progress(config, start, config.num_train_steps)
  pending, pending_from = [], start + 1
  last_log, eval_metrics, results = time.time(), None, []
  with _sigterm_flag() as sigterm:
    for step in range(start + 1, config.num_train_steps + 1):
      batch = next(loader)
      state, step_metrics = p_train_step(state, steps.to_device(batch, mesh), key)
      pending.append(step_metrics)
      if bar is not None:
        bar.update(1)
      final = step == config.num_train_steps
      log_due = step % config.log_every_steps == 0 or final
      ckpt_due = step % config.checkpoint_every_steps == 0 or final or sigterm["set"]
      if log_due or ckpt_due:
        # Host transfer only here: the device runs ahead in between.
        try:
          window.add(jax.device_get(pending), pending_from)
        except FloatingPointError:
          ckpt.close()   # the earlier, finite checkpoints finish saving
          writer.close()
          raise
        pending, pending_from = [], step + 1
      if log_due:
        now = time.time()
        means = window.means()
        means["steps_per_sec"] = window.count / max(now - last_log, 1e-9)
        window, last_log = _LogWindow(), now
        writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
        if bar is not None:
          bar.set_postfix(loss=f"{means['loss']:.3f}")
      if step % config.eval_every_steps == 0 or final:
        results = evaluation.predict(config, state.params, p_eval_step, test, mesh, stats)
        eval_metrics = evaluation.summarize_split(results, config, test)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        if jax.process_index() == 0 and config.tensorboard and results and \
            _draw_timeline(workdir / TIMELINE_FILE, results[0], step,
                           test.class_names):
          writer.write_image(step, "eval/timeline", workdir / TIMELINE_FILE)
        if bar is not None:
          bar.write(f"step {step}: " + reporting.format_metrics(eval_metrics))
      if ckpt_due:
        ckpt.save(step, state, {"loader": loader.get_state(), "log": window.state()},
                  force=True)
      if sigterm["set"] and not final:
        if bar is not None:
          bar.close()
        ckpt.close()
        writer.close()
        raise Preempted(step, ckpt.directory)
  if bar is not None:
    bar.close()
  ckpt.close()
  writer.close()

  if eval_metrics is None:   # resumed at the end: nothing left to train
    results = evaluation.predict(config, state.params, p_eval_step, test, mesh, stats)
    eval_metrics = evaluation.summarize_split(results, config, test)
  if jax.process_index() == 0:
    reporting.write_predictions(workdir / "predictions.jsonl", results)
    rows = []
    if config.report_baselines:
      from hhjax import baselines  # noqa: PLC0415
      print("fitting the non-temporal baselines ...", flush=True)
      rows += baselines.run_all(train, test, config.dataset.streams, seed=config.seed,
                                score_range=score_range)
    rows.append((reporting.model_name(config), eval_metrics))
    (workdir / "eval_results.json").write_text(json.dumps(
        {name: {k: float(v) for k, v in m.items()} for name, m in rows}, indent=2))
    print(reporting.table(rows, title=f"{config.dataset.name}/{config.dataset.config}, "
                          f"split {config.dataset.eval_split} ({len(results)} videos)"))
    from hhjax import export  # noqa: PLC0415  (the model folder for hhjax.assess)
    export.save_training_run(workdir, state.params, config, stats=stats, step=state.step,
                             train=train)
    seconds, compiles, hits = (b - a for a, b in zip(compile_start, COMPILE_CLOCK.read()))
    print(f"compile: {seconds:.1f}s tracing, lowering and compiling ({compiles} "
          f"executables, {hits} of them loaded from the cache"
          + (f" in {cache_dir})" if cache_dir else "; no persistent cache)"), flush=True)
  return eval_metrics
