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

# Training videos of one split: about 1712 x 3/4; the four splits differ a little.
TRAIN_VIDEOS = 1284


def get_config(split: str | None = None):
  """The config for split `split` (1..4; default 1)."""
  return default.action_segmentation_config("breakfast", TRAIN_VIDEOS, split, epochs=50)
