r"""Training and evaluation of the joint segmentation + scoring model.

  python -m hhjax.train --config configs/hha300_synthetic.py --workdir runs/demo \
      [--config.num_train_steps=2000 ...]

`main` only parses flags; `train_and_evaluate(config, workdir)` does the work, so tests
and notebooks can call it. The train step is a pure function under `jax.jit`,
data-parallel over a one-axis mesh (`data`) of every device: the state is replicated,
batches are split along their first axis, and XLA inserts the gradient all-reduce. With
`jax.distributed.initialize()` the same code runs on several hosts (each loads its own
rows of every global batch).

Outputs in the workdir: `checkpoints/` (Orbax; rerunning resumes), `metrics.jsonl` (one
JSON object per logged step), `eval_results.json` and `predictions.jsonl` (per video),
and with `dataset.standardize` the input statistics (`feature_stats.npz`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
from flax.training import train_state

from hhjax import checkpointing, losses, metrics, reporting
from hhjax.data import pipeline
from hhjax.models.joint import JointModel

DEVICE_KEYS = ("features", "labels", "mask", "score", "weight")
SCORE_RANGE = (0.0, 6.0)   # a video score is the sum of six step scores in [0, 1]


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (Flax's TrainState)."""


def create_model(config: ml_collections.ConfigDict) -> JointModel:
  return JointModel(**config.model.to_dict())


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis (`data`) mesh over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def create_train_state(config, model: JointModel, feature_dim: int, mesh) -> TrainState:
  """Initialises params and Adam state, replicated over the mesh."""
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps)
  tx = optax.adamw(lr, weight_decay=config.weight_decay) if config.weight_decay \
      else optax.adam(lr)

  def init():
    x = jnp.zeros((1, config.dataset.bucket_size, feature_dim), jnp.float32)
    mask = jnp.ones((1, config.dataset.bucket_size), jnp.float32)
    params = model.init(jax.random.key(config.seed), x, mask)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  replicated = NamedSharding(mesh, P())
  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  return jax.jit(init, out_shardings=shardings)()


def train_step(state: TrainState, batch: dict, key, *, model: JointModel, loss_cfg,
               ground_truth_segments: bool):
  """One optimisation step; pure. Dropout keys are `fold_in(key, step)`."""
  rng = jax.random.fold_in(key, state.step)

  def loss_fn(params):
    outputs = model.apply(
        {"params": params}, batch["features"], batch["mask"],
        gt_labels=batch["labels"] if ground_truth_segments else None, train=True,
        rngs={"dropout": rng})
    return losses.joint_loss(outputs, batch, smooth_weight=loss_cfg.smooth_weight,
                             tau=loss_cfg.tau, score_weight=loss_cfg.score_weight)

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  out = dict(loss=loss, **parts, grad_norm=optax.tree.norm(grads),
             param_norm=optax.tree.norm(new_state.params))
  return new_state, out


def eval_step(params, batch: dict, *, model: JointModel):
  """Predictions for one batch (segments always come from the prediction)."""
  out = model.apply({"params": params}, batch["features"], batch["mask"], train=False)
  return {k: out[k] for k in ("labels", "video_score", "step_scores")}


def compile_steps(config, model: JointModel, mesh):
  """Jitted, data-parallel train and eval steps for `mesh`."""
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  p_train_step = jax.jit(
      functools.partial(train_step, model=model, loss_cfg=config.loss,
                        ground_truth_segments=config.training_segments == "ground_truth"),
      in_shardings=(replicated, data, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))   # the old state's buffers are reused for the new one
  p_eval_step = jax.jit(functools.partial(eval_step, model=model),
                        in_shardings=(replicated, data), out_shardings=data)
  return p_train_step, p_eval_step


def to_device(batch: dict, mesh) -> dict:
  """Assembles the global batch from every process's rows (the `data` axis)."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, batch[k])
          for k in DEVICE_KEYS}


def to_host(tree) -> Any:
  """Global device arrays -> NumPy on every host."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def check_config(config) -> None:
  """Checks values a typo could break; clear errors naming the field."""
  choices = dict(attention=("linear", "softmax", "none"), scorer=("kas", "mlp"),
                 pool_features=("input", "stage"), scoring=("steps", "video"))
  for field, allowed in choices.items():
    value = config.model[field]
    if value not in allowed:
      raise ValueError(f"config.model.{field}={value!r}; expected one of {allowed}")
  if config.lr_schedule not in ("constant", "cosine"):
    raise ValueError(f"config.lr_schedule={config.lr_schedule!r}; expected 'constant' or "
                     "'cosine'")
  if config.training_segments not in ("predicted", "ground_truth"):
    raise ValueError(f"config.training_segments={config.training_segments!r}; expected "
                     "'predicted' or 'ground_truth'")
  if config.dataset.streams not in pipeline.STREAMS:
    raise ValueError(f"config.dataset.streams={config.dataset.streams!r}; expected one "
                     f"of {pipeline.STREAMS}")
  if config.dataset.frame_stride < 1:
    raise ValueError(f"config.dataset.frame_stride must be >= 1, got "
                     f"{config.dataset.frame_stride}")
  if config.batch_size % jax.device_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the "
                     f"{jax.device_count()} devices")
  for field in ("num_train_steps", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "batch_size"):
    if config[field] < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")


@dataclasses.dataclass
class SplitData:
  """A split's data source and, read once when it is opened, each video's length,
  name, feature size and ground truth (so evaluation never re-reads the features)."""

  source: Any
  lengths: np.ndarray
  names: list[str]
  raw_feature_dim: int
  labels: list[np.ndarray]
  scores: np.ndarray
  step_scores: np.ndarray
  attributes: np.ndarray


def load_split(config, split: str) -> SplitData:
  """Builds the TFDS data set if needed and opens one split."""
  from hhjax.data import hha300   # registers the builder
  if config.dataset.name != "hha300":
    raise ValueError(f"config.dataset.name={config.dataset.name!r}: only 'hha300' "
                     "(with its configs features / handwash / synthetic / synthetic_small) is known")
  previous = logging.get_verbosity()
  if previous <= logging.WARNING:
    # TFDS warns about the not-yet-built version folder before every first build.
    logging.set_verbosity(logging.ERROR)
  try:
    source = hha300.load_source(config.dataset.config, split,
                                data_dir=config.dataset.data_dir or None,
                                manual_dir=config.dataset.manual_dir or None)
  finally:
    logging.set_verbosity(previous)
  # One pass, one example at a time, keeping only the small fields (not features).
  small = collections.defaultdict(list)
  dim = 0
  for i in range(len(source)):
    ex = source[i]
    dim = int(np.shape(ex["features"])[-1])
    name = ex["video"]
    small["names"].append(name.decode() if isinstance(name, bytes) else str(name))
    small["lengths"].append(int(ex["num_frames"]))
    for key in ("labels", "score", "step_scores", "attributes"):
      small[key].append(np.asarray(ex[key]))
  return SplitData(
      source=source, lengths=np.array(small["lengths"]), names=small["names"],
      raw_feature_dim=dim, labels=small["labels"], scores=np.array(small["score"]),
      step_scores=np.array(small["step_scores"]), attributes=np.array(small["attributes"]))


def feature_dim(config, data: SplitData) -> int:
  """Input size of the model: the raw feature size, halved for one stream."""
  probe = np.zeros((1, data.raw_feature_dim), np.float32)
  return pipeline.select_streams(probe, config.dataset.streams).shape[-1]


STATS_FILE = "feature_stats.npz"


def feature_stats(config, train: SplitData, workdir: pathlib.Path
                  ) -> pipeline.FeatureStats | None:
  """The input statistics when `config.dataset.standardize` is set, else None.

  Computed from the training split on the first run and saved in the workdir; a resumed
  run (and `hhjax.evaluate`) reads them back, so a model always sees inputs scaled as in
  its training.
  """
  if not config.dataset.standardize:
    return None
  path = workdir / STATS_FILE
  if path.exists():
    return pipeline.FeatureStats.load(path)
  stats = pipeline.feature_stats(train.source, config.dataset.streams)
  if jax.process_index() == 0:
    stats.save(path)
  return stats


def predict(config, params, p_eval_step, data: SplitData, mesh,
            stats: pipeline.FeatureStats | None = None) -> list[dict]:
  """Runs the model over a whole split (inputs standardised with `stats` if given);
  returns one prediction dict per video."""
  stride = config.dataset.frame_stride
  plan = pipeline.BatchPlan(
      tuple(pipeline.strided_length(data.lengths, stride).tolist()), config.batch_size,
      shuffle=False, drop_remainder=False, bucket_size=config.dataset.bucket_size)
  loader = pipeline.make_loader(data.source, plan, streams=config.dataset.streams,
                                frame_stride=stride, process_index=jax.process_index(),
                                process_count=jax.process_count(),
                                num_threads=config.dataset.num_threads, stats=stats)
  results = []
  for batch in loader:
    out = to_host(p_eval_step(params, to_device(batch, mesh)))
    host = to_host({k: batch[k] for k in ("index", "num_frames")}) \
        if jax.process_count() > 1 else batch
    for r, index in enumerate(np.asarray(host["index"])):
      if index < 0:
        continue
      t = int(host["num_frames"][r])
      results.append(dict(
          index=int(index), video=data.names[index],
          labels=pipeline.upsample(np.asarray(out["labels"][r, :t]), stride,
                                   int(data.lengths[index])),
          step_scores=np.asarray(out["step_scores"][r]),
          video_score=float(out["video_score"][r])))
  results.sort(key=lambda r: r["index"])
  for r in results:
    i = r["index"]
    r["gt_labels"] = data.labels[i]
    r["gt_score"] = float(data.scores[i])
    r["gt_step_scores"] = data.step_scores[i]
    r["gt_attributes"] = data.attributes[i]
  return results


def summarize(results: list[dict]) -> dict[str, float]:
  """Segmentation and assessment metrics over a list of per-video predictions."""
  seg = metrics.segmentation_report([r["labels"] for r in results],
                                    [r["gt_labels"] for r in results])
  pred = np.array([r["video_score"] for r in results])
  gt = np.array([r["gt_score"] for r in results])
  seg["spearman"] = metrics.spearman(pred, gt)
  seg["rl2"] = metrics.relative_l2(pred, gt, *SCORE_RANGE) * 100
  return seg


class MetricWriter:
  """Appends one JSON object per call to `metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: pathlib.Path):
    self.path = workdir / "metrics.jsonl"
    self.enabled = jax.process_index() == 0

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self.enabled:
      with self.path.open("a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in
                                                  scalars.items()}}) + "\n")


def _progress(config, start: int, total: int):
  if not config.progress_bar or jax.process_index() != 0:
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
              file=sys.stdout)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint) and evaluates.

  Returns:
    The final evaluation metrics (`acc`, `edit`, `f1@10`, `f1@25`, `f1@50`,
    `spearman`, `rl2`).
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  mesh = make_mesh()
  logging.info("devices: %s (%d processes)", jax.devices(), jax.process_count())

  t0 = time.time()
  train = load_split(config, config.dataset.train_split)
  test = load_split(config, config.dataset.eval_split)
  logging.info("data ready in %.1fs: %d train / %d test videos", time.time() - t0,
               len(train.lengths), len(test.lengths))
  print(f"data: hha300/{config.dataset.config}: {len(train.lengths)} train / "
        f"{len(test.lengths)} {config.dataset.eval_split} videos "
        f"({time.time() - t0:.0f}s)", flush=True)

  stats = feature_stats(config, train, workdir)
  model = create_model(config)
  state = create_train_state(config, model, feature_dim(config, train), mesh)
  p_train_step, p_eval_step = compile_steps(config, model, mesh)
  key = jax.device_put(jax.random.key(config.seed), NamedSharding(mesh, P()))

  plan_epochs = math.ceil(config.num_train_steps / math.ceil(len(train.lengths) /
                                                             config.batch_size))
  stride = config.dataset.frame_stride
  plan = pipeline.BatchPlan(tuple(pipeline.strided_length(train.lengths, stride).tolist()),
                            config.batch_size, seed=config.seed, shuffle=True, drop_remainder=False,
                            bucket_size=config.dataset.bucket_size,
                            num_epochs=max(1, plan_epochs))
  loader = iter(pipeline.make_loader(
      train.source, plan, streams=config.dataset.streams, frame_stride=stride,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.dataset.num_threads, stats=stats))

  ckpt = checkpointing.Checkpointer(workdir / "checkpoints",
                                    every_steps=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints)
  start = 0
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(checkpointing.abstract_like(state))
    loader.set_state(data_state)
    start = int(state.step)
    print(f"resumed from {ckpt.directory} at step {start}", flush=True)

  writer = MetricWriter(workdir)
  bar = _progress(config, start, config.num_train_steps)
  pending, last_log, eval_metrics, results = [], time.time(), None, []
  for step in range(start + 1, config.num_train_steps + 1):
    batch = next(loader)
    state, step_metrics = p_train_step(state, to_device(batch, mesh), key)
    pending.append(step_metrics)
    if bar is not None:
      bar.update(1)
    if step % config.log_every_steps == 0 or step == config.num_train_steps:
      # Host transfer only at log steps: the device runs ahead in between.
      means = {k: float(np.mean([m[k] for m in jax.device_get(pending)]))
               for k in pending[0]}
      if not math.isfinite(means["loss"]):
        raise FloatingPointError(f"loss is {means['loss']} at step {step}")
      now = time.time()
      means["steps_per_sec"] = len(pending) / max(now - last_log, 1e-9)
      pending, last_log = [], now
      writer.write(step, {f"train/{k}": v for k, v in means.items()})
      if bar is not None:
        bar.set_postfix(loss=f"{means['loss']:.3f}")
    ckpt.save(step, state, loader.get_state(), force=step == config.num_train_steps)
    if step % config.eval_every_steps == 0 or step == config.num_train_steps:
      results = predict(config, state.params, p_eval_step, test, mesh, stats)
      eval_metrics = summarize(results)
      writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
      if bar is not None:
        bar.write(f"step {step}: " + reporting.format_metrics(eval_metrics))
  if bar is not None:
    bar.close()
  ckpt.close()

  if eval_metrics is None:   # resumed at the end: nothing left to train
    results = predict(config, state.params, p_eval_step, test, mesh, stats)
    eval_metrics = summarize(results)
  if jax.process_index() == 0:
    reporting.write_predictions(workdir / "predictions.jsonl", results)
    rows = []
    if config.report_baselines:
      from hhjax import baselines
      print("fitting the non-temporal baselines ...", flush=True)
      rows += baselines.run_all(train, test, config.dataset.streams, seed=config.seed)
    rows.append((reporting.model_name(config), eval_metrics))
    (workdir / "eval_results.json").write_text(json.dumps(
        {name: {k: float(v) for k, v in m.items()} for name, m in rows}, indent=2))
    print(reporting.table(rows, title=f"hha300/{config.dataset.config}, split "
                          f"{config.dataset.eval_split} ({len(results)} videos)"))
  return eval_metrics


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags; defined only when run as a program, so that the library
  modules can all be imported into one process."""
  config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and predictions go.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:   # Orbax and grain log every save at INFO
    logging.set_verbosity(logging.WARNING)
  with user_errors():
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


@contextlib.contextmanager
def user_errors():
  """Turns bad-input errors into a short message and exit status 1 (no traceback):
  the message already names the file, field or video at fault."""
  from hhjax.data import layout
  try:
    yield
  except layout.LayoutError as e:
    hint = ("\n(set the manual directory with --config.dataset.manual_dir=DIR)"
            if "anual directory" in str(e) else "")
    sys.exit(f"error: {e}{hint}")
  except ValueError as e:
    if not str(e).startswith("config."):
      raise
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
