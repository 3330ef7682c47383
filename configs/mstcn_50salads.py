r"""50Salads with Li et al.'s segmentation model, by MS-TCN's protocol (Table VII).

  python -m hhjax.train --config configs/mstcn_50salads.py \
      --workdir runs/50salads/split1 --config.dataset.manual_dir=/path/to/data/50salads

The manual directory is 50Salads' folder of the MS-TCN release (50 videos, 19 classes;
features/, groundTruth/, mapping.txt, splits/; docs/DATASETS.md). Split k of 5: add
`--config.dataset.train_split=train_splitK --config.dataset.eval_split=test_splitK`,
or name it after the file, `--config=configs/mstcn_50salads.py:K`; split 1 by default.
Every 2nd frame is used, as MS-TCN does for 50Salads (sample rate 2); predictions are
repeated back to every frame before they are scored.

MS-TCN's recipe: Adam at lr 5e-4, batch 1, 50 epochs (2000 steps of one video). There
are no assessment labels, so the score loss is off and Spearman prints as '-'.
"""

from hhjax import config as default
from hhjax.data import hha300

NAME = "50salads"
# Training videos of one split: 50 videos, 10 held out per split.
TRAIN_VIDEOS = 40
EPOCHS = 50


def get_config(split: str | None = None):
  """The config for split `split` (1..5; default 1)."""
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
