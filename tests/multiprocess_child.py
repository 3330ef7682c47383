r"""One process of a multi-process training run on this machine (CPU), for tests.

  python tests/multiprocess_child.py '{"process_id": 0, "num_processes": 2,
      "port": 12345, "workdir": "...", "data_dir": "...", "num_train_steps": 4,
      "compilation_cache_dir": "..."}'

With `num_processes` > 1 the process joins a `jax.distributed` job whose coordinator
is 127.0.0.1:`port` (process 0 serves it), exactly as each host of a multi-host run
does; with 1 it trains alone. It then trains `configs/tiny.py` with a global batch of
2 (so each of two processes loads one row of every batch) via
`hhjax.training.loop.train_and_evaluate`, and prints one JSON line with what it saw.
Run it with one CPU device per process
(XLA_FLAGS=--xla_force_host_platform_device_count=1).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def main(args: dict) -> None:
  import jax  # noqa: PLC0415
  if args["num_processes"] > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args['port']}",
                               num_processes=args["num_processes"],
                               process_id=args["process_id"])
  sys.path.insert(0, str(REPO))
  from hhjax.training import loop  # noqa: PLC0415
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  tiny = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tiny)
  config = tiny.get_config()
  config.dataset.data_dir = args["data_dir"]
  config.compilation_cache_dir = args.get("compilation_cache_dir", "")
  config.batch_size = 2
  config.num_train_steps = args["num_train_steps"]
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.eval_every_steps = 100
  config.tensorboard = False
  metrics = loop.train_and_evaluate(config, args["workdir"])
  print(json.dumps(dict(process_index=jax.process_index(),
                        process_count=jax.process_count(),
                        local_devices=jax.local_device_count(),
                        devices=jax.device_count(),
                        metrics={k: float(v) for k, v in metrics.items()})), flush=True)


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
