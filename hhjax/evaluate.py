r"""Evaluates a checkpoint of a training workdir on a split.

  python -m hhjax.evaluate --config configs/hha300_synthetic.py --workdir runs/demo \
      [--split test] [--step N]

Prints the Table VI-style metrics and writes, beside the run's own report and never
over it, `<workdir>/eval/<split>_step<N>.json` (the metrics) and
`<workdir>/eval/<split>_step<N>.predictions.jsonl` (one JSON object per video:
predicted frame labels, step scores, video score, and the ground truth beside them).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

from absl import app, flags, logging
import jax

from hhjax import cli, evaluation, reporting
from hhjax import config as config_lib
from hhjax.data import splits
from hhjax.models.joint import create_model
from hhjax.training import checkpointing, state as state_lib, steps

EVAL_DIR = "eval"


def eval_name(split: str, view: str = "", min_segment_frames: int = 0) -> str:
  """The file-name stem of an evaluation of `split` seen through the evaluation view
  `view` (config.dataset.eval_view) if any, with short runs merged
  (config.model.min_segment_frames) if asked: each setting gets files of its own."""
  name = split + (f"_view-{view}" if view else "")
  name += f"_minseg-{min_segment_frames}" if min_segment_frames > 1 else ""
  return re.sub(r"[^A-Za-z0-9+_.-]", "_", name)


def output_paths(workdir: pathlib.Path, split: str, step: int, view: str = "",
                 min_segment_frames: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
  """(metrics JSON, predictions JSONL) for `split` at checkpoint `step` (`eval_name`)."""
  base = pathlib.Path(workdir) / EVAL_DIR / (
      f"{eval_name(split, view, min_segment_frames)}_step{step}")
  return base.with_suffix(".json"), base.with_name(base.name + ".predictions.jsonl")


def saved_evaluation(config, workdir: str | pathlib.Path, split: str,
                     data: splits.SplitData | None = None
                     ) -> tuple[pathlib.Path, pathlib.Path] | None:
  """(metrics, predictions) paths of the latest-step evaluation of `split` already
  written in `workdir` with `config`'s evaluation settings, or None.

  With `data` (the split as it is now) an evaluation made on other data is not
  returned (None, and one line on stderr says why): one that recorded its data
  (`splits.evaluation_fingerprint`) must match it; an older one without that record
  must have predicted exactly the split's videos, with the same ground truth.
  """
  stem = eval_name(split, config.dataset.get("eval_view", ""),
                   config.model.get("min_segment_frames", 0))
  found = sorted(pathlib.Path(workdir, EVAL_DIR).glob(f"{stem}_step*[0-9].json"),
                 key=lambda p: int(p.stem.rsplit("_step", 1)[1]))
  if not found:
    return None
  metrics_path = found[-1]
  predictions_path = metrics_path.with_name(metrics_path.stem + ".predictions.jsonl")
  if data is not None:
    stale = _stale_evaluation(config, metrics_path, predictions_path, data)
    if stale:
      print(f"{metrics_path}: {stale}; evaluating again", file=sys.stderr)
      return None
  return metrics_path, predictions_path


def _stale_evaluation(config, metrics_path: pathlib.Path,
                      predictions_path: pathlib.Path, data: splits.SplitData) -> str:
  """Why a saved evaluation no longer describes `data` ('' when it still does)."""
  saved = json.loads(metrics_path.read_text()).get("data")
  if saved is not None:
    now = splits.evaluation_fingerprint(config, data)
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return ("made on other data (" + ", ".join(changed) + " differ)") if changed else ""
  if not predictions_path.is_file():
    return f"its predictions ({predictions_path.name}) are missing"
  with predictions_path.open() as f:
    predictions = [json.loads(line) for line in f if line.strip()]
  if not splits.same_videos(predictions, data):
    return (f"made on other videos or labels than split {data.split!r} holds now "
            f"({len(predictions)} then, {len(data.names)} now)")
  return ""


# Model and data fields that may differ from the training run's: they change how the
# trained model is evaluated (or only how it was trained), not what it is.
EVALUATION_FIELDS = ("dataset.eval_split", "dataset.eval_view", "model.min_segment_frames",
                     "dataset.train_split", "dataset.augment")


def check_trained_config(config, workdir: pathlib.Path) -> None:
  """Raises ConfigMismatchError when `config` describes another model or other input
  features than the run in `workdir` was trained with (its saved config.json), naming
  every such field; `config.allow_resume_changes` lets it through."""
  if config.get("allow_resume_changes", False):
    return
  from hhjax.training.loop import ConfigMismatchError  # noqa: PLC0415
  conflicts = [c for c in config_lib.saved_config_conflicts(config, workdir) or []
               if c.startswith(("model.", "dataset."))
               and c.split(":")[0] not in EVALUATION_FIELDS]
  if conflicts:
    raise ConfigMismatchError(
        f"config: the run in {workdir} was trained with other model or data settings; "
        "evaluating it with these would report another model's figures:\n  "
        + "\n  ".join(conflicts) + "\nPass the run's own config, or "
        "--config.allow_resume_changes=True to evaluate anyway.")


def evaluate_checkpoint(config, workdir: str | pathlib.Path, split: str | None = None,
                        step: int | None = None, data: splits.SplitData | None = None):
  """Restores checkpoint `step` (default: the latest) in `workdir` and evaluates it on
  `split` (default: `config.dataset.eval_split`; `data`: that split already opened
  with `splits.load_split`).

  Returns:
    `(metrics, results)`: the metric dict and the per-video prediction dicts.

  Raises:
    FileNotFoundError: `workdir` holds no checkpoint (or not the one asked for).
  """
  config_lib.check_config(config)
  workdir = pathlib.Path(workdir)
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: train first with "
                            f"`python -m hhjax.train --workdir {workdir}`")
  check_trained_config(config, workdir)
  split = split or config.dataset.eval_split
  if data is None or data.split != split:
    data = splits.load_split(config, split)
  mesh = state_lib.make_mesh()
  model = create_model(config)
  state = state_lib.create_train_state(config, model, splits.feature_dim(config, data),
                                       mesh)
  ckpt = checkpointing.Checkpointer(ckpt_dir, every_steps=1)
  available = ckpt.all_steps()
  if step is not None and step not in available:
    ckpt.close()
    raise FileNotFoundError(f"no checkpoint at step {step} in {ckpt_dir}; there are "
                            f"{available}")
  state, _ = ckpt.restore(checkpointing.abstract_like(state), step)
  ckpt.close()
  _, p_eval_step = steps.compile_steps(config, model, mesh)
  stats = splits.load_saved_stats(config, workdir)
  results = evaluation.predict(config, state.params, p_eval_step, data, mesh, stats)
  metrics = evaluation.summarize_split(results, config, data)
  if jax.process_index() == 0:
    metrics_path, predictions_path = output_paths(
        workdir, split, int(state.step), config.dataset.get("eval_view", ""),
        config.model.get("min_segment_frames", 0))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    reporting.write_predictions(predictions_path, results)
    metrics_path.write_text(json.dumps(dict(
        split=split, step=int(state.step), model=reporting.model_name(config),
        metrics={k: float(v) for k, v in metrics.items()},
        data=splits.evaluation_fingerprint(config, data)), indent=2))
    print(reporting.table([(reporting.model_name(config), metrics)],
                          title=f"step {int(state.step)}, {config.dataset.name}/"
                          f"{config.dataset.config}, split {split} ({len(results)} "
                          "videos)"))
    print(f"metrics: {metrics_path}\npredictions: {predictions_path}")
  return metrics, results


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags (defined only when run as a program; see hhjax.train)."""
  cli.define_config_flags("The training workdir (holds checkpoints/).")
  flags.DEFINE_string("split", None,
                      "Split to evaluate (default: config.dataset.eval_split).")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  with cli.user_errors():
    evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.step)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
