r"""Evaluates the latest checkpoint of a workdir on the test split.

  python -m hhjax.evaluate --config configs/hha300_synthetic.py --workdir runs/demo

Prints the Table VI-style metrics and writes `<workdir>/predictions.jsonl` (one JSON
object per video: predicted frame labels, step scores, video score, and the ground
truth beside them) and `<workdir>/eval_results.json`.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from hhjax import checkpointing, reporting
from hhjax import train as train_lib
from hhjax.data import pipeline


def evaluate_checkpoint(config, workdir: str | pathlib.Path, split: str | None = None):
  """Restores the latest checkpoint in `workdir` and evaluates it on `split`.

  Returns:
    `(metrics, results)`: the metric dict and the per-video prediction dicts.

  Raises:
    FileNotFoundError: `workdir` holds no checkpoint.
  """
  train_lib.check_config(config)
  workdir = pathlib.Path(workdir)
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: train first with "
                            f"`python -m hhjax.train --workdir {workdir}`")
  split = split or config.dataset.eval_split
  data = train_lib.load_split(config, split)
  mesh = train_lib.make_mesh()
  model = train_lib.create_model(config)
  state = train_lib.create_train_state(config, model, train_lib.feature_dim(config, data),
                                       mesh)
  ckpt = checkpointing.Checkpointer(ckpt_dir, every_steps=1)
  state, _ = ckpt.restore(checkpointing.abstract_like(state))
  ckpt.close()
  _, p_eval_step = train_lib.compile_steps(config, model, mesh)
  stats = None
  if config.dataset.standardize:
    stats_path = workdir / train_lib.STATS_FILE
    if not stats_path.exists():
      raise FileNotFoundError(f"{stats_path} is missing: config.dataset.standardize needs "
                              "the training split's statistics that training saved there")
    stats = pipeline.FeatureStats.load(stats_path)
  results = train_lib.predict(config, state.params, p_eval_step, data, mesh, stats)
  metrics = train_lib.summarize(results)
  if jax.process_index() == 0:
    reporting.write_predictions(workdir / "predictions.jsonl", results)
    (workdir / "eval_results.json").write_text(json.dumps(
        {reporting.model_name(config): {k: float(v) for k, v in metrics.items()}},
        indent=2))
    print(reporting.table([(reporting.model_name(config), metrics)],
                          title=f"step {int(state.step)}, hha300/{config.dataset.config}"
                          f", split {split} ({len(results)} videos)"))
    print(f"predictions: {workdir / 'predictions.jsonl'}")
  return metrics, results


FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags (defined only when run as a program; see hhjax.train)."""
  config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The training workdir (holds checkpoints/).")
  flags.DEFINE_string("split", None,
                      "Split to evaluate (default: config.dataset.eval_split).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  with train_lib.user_errors():
    try:
      evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.split)
    except FileNotFoundError as e:
      sys.exit(f"error: {e}")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
