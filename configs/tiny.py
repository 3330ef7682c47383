r"""A tiny model on the dummy data shipped with the builder: trains in seconds on a CPU.

  python -m hhjax.train --config configs/tiny.py --workdir /tmp/tiny

Used by the tests (end-to-end training, checkpoints, resume, data parallelism).
"""

import pathlib
import tempfile

from hhjax import config as default

DUMMY = pathlib.Path(__file__).resolve().parents[1] / "datasets" / "hha300" / "dummy_data"


def get_config():
  config = default.get_config()
  config.dataset.config = "features"
  config.dataset.manual_dir = str(DUMMY)
  # Its own TFDS folder, so the dummy data never stands in for a user's real
  # `hha300/features` build in the default data directory.
  config.dataset.data_dir = str(pathlib.Path(tempfile.gettempdir()) / "hhjax_tiny_data")
  config.dataset.bucket_size = 32
  config.dataset.num_threads = 1
  config.model.num_stages = 2
  config.model.num_layers = 3
  config.model.channels = 8
  config.model.num_heads = 2
  config.learning_rate = 5e-3   # a visible drop of the loss within a few steps
  config.batch_size = 4
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 3
  config.progress_bar = False
  return config
