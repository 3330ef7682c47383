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

# Training videos of one split: 50 videos, 10 held out per split.
TRAIN_VIDEOS = 40


def get_config(split: str | None = None):
  """The config for split `split` (1..5; default 1)."""
  return default.action_segmentation_config("50salads", TRAIN_VIDEOS, split, epochs=50)
