r"""Real HHA300-style data from a manual directory (layout in DESIGN.md / datasets/hha300).

  python -m hhjax.train --config configs/hha300.py --workdir runs/hha300 \
      --config.dataset.manual_dir=/path/to/manual_dir

As in Li et al.: Adam, lr 5e-4, no weight decay, 4 stages x 10 layers x 64 channels,
linear attention, Key Action Scorer with learnable sigmoids.
"""

from hhjax import config as default


def get_config():
  config = default.get_config()
  config.dataset.config = "features"
  config.batch_size = 1
  config.num_train_steps = 225 * 50   # about 50 epochs of 225 videos
  config.eval_every_steps = 2250
  config.checkpoint_every_steps = 1125
  return config
