r"""Breakfast with Li et al.'s segmentation model, by MS-TCN's protocol (Table VII).

  python -m hhjax.train --config configs/mstcn_breakfast.py \
      --workdir runs/breakfast/split1 --config.dataset.manual_dir=/path/to/data/breakfast

The manual directory is Breakfast's folder of the MS-TCN release (1712 videos, 48
classes; features/, groundTruth/, mapping.txt, splits/; docs/DATASETS.md). Split k of
4: add `--config.dataset.train_split=train_splitK
--config.dataset.eval_split=test_splitK`, or name it after the file,
`--config=configs/mstcn_breakfast.py:K`; split 1 by default. Every frame is used
(MS-TCN's sample rate for Breakfast is 1).

MS-TCN's recipe: Adam at lr 5e-4, batch 1, about 50 epochs: the four splits hold
different numbers of training videos (about 1284 each); for exactly 50 epochs set
`--config.num_train_steps` to 50 x the line count of `splits/train.splitK.bundle`.
There are no assessment labels, so the score loss is off and Spearman prints as '-'.
"""

from hhjax import config as default
from hhjax.data import hha300

NAME = "breakfast"
# Training videos of one split: about 1712 x 3/4; the four splits differ a little.
TRAIN_VIDEOS = 1284
EPOCHS = 50


def get_config(split: str | None = None):
  """The config for split `split` (1..4; default 1)."""
  facts = hha300.builder_config(NAME, hha300.ACTION_SEGMENTATION)
  k = int(split) if split and split.isdigit() else (1 if not split else 0)
  if not 1 <= k <= facts.num_splits:
    raise ValueError(f"configs/mstcn_{NAME}.py: split {split!r}; {NAME} has splits "
                     f"1..{facts.num_splits}")
  config = default.get_config()
  config.dataset.name = hha300.ACTION_SEGMENTATION
  config.dataset.config = NAME
  config.dataset.train_split = f"train_split{k}"
  config.dataset.eval_split = f"test_split{k}"
  config.dataset.frame_stride = facts.sample_rate   # MS-TCN's sample rate
  config.model.num_classes = facts.num_classes
  config.loss.score_weight = 0.0                    # no scores in these data sets
  config.learning_rate = 5e-4
  config.batch_size = 1
  steps_per_epoch = TRAIN_VIDEOS // config.batch_size
  config.num_train_steps = EPOCHS * steps_per_epoch
  config.eval_every_steps = 10 * steps_per_epoch
  config.checkpoint_every_steps = 5 * steps_per_epoch
  return config
