r"""Full-size synthetic HHA300 (300 videos, 225 train / 75 test), as in the paper.

  python -m hhjax.train --config configs/hha300_synthetic_full.py --workdir runs/full
"""

from hhjax import config as default


def get_config():
  config = default.get_config()
  config.dataset.config = "synthetic"
  config.batch_size = 2
  config.report_baselines = True
  config.num_train_steps = 6000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
