r"""Trains and evaluates a model (python -m hhjax.train).

  python -m hhjax.train --config configs/hha300_synthetic.py --workdir runs/demo \
      [--config.num_train_steps=2000 --config.model.segmenter=mstcn ...]

Only the command lives here: `hhjax.training.loop.train_and_evaluate(config, workdir)`
does the work (re-exported here), so tests, notebooks and the experiment runner call it
directly. The train step is a pure function under `jax.jit`, data-parallel over a
one-axis mesh (`data`) of every device. On several hosts, run the same command on
each with `--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`
(`jax.distributed.initialize`); each host loads its own rows of every global batch
(docs/GUARANTEES.md).
"""

from __future__ import annotations

from absl import app, flags, logging

from hhjax import cli
from hhjax.training.loop import train_and_evaluate  # noqa: F401  (the library entry)

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags; defined only when run as a program, so that the library
  modules can all be imported into one process."""
  cli.define_config_flags("Where checkpoints, metrics and predictions go.")
  flags.DEFINE_string("coordinator_address", None,
                      "Several hosts: host:port of process 0 (jax.distributed).")
  flags.DEFINE_integer("num_processes", None, "Several hosts: how many processes.")
  flags.DEFINE_integer("process_id", None, "Several hosts: this process's index.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:   # Orbax and grain log every save at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.coordinator_address or FLAGS.num_processes:
    import jax  # noqa: PLC0415
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  with cli.user_errors():
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
