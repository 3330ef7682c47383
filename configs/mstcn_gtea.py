r"""GTEA with Li et al.'s segmentation model, by MS-TCN's protocol (Table VII).

  python -m hhjax.train --config configs/mstcn_gtea.py --workdir runs/gtea/split1 \
      --config.dataset.manual_dir=/path/to/data/gtea

The manual directory is GTEA's folder of the MS-TCN release (28 videos, 11 classes;
features/, groundTruth/, mapping.txt, splits/; docs/DATASETS.md). Split k of 4: add
`--config.dataset.train_split=train_splitK --config.dataset.eval_split=test_splitK`,
or name it after the file, `--config=configs/mstcn_gtea.py:K`; split 1 by default.
Every frame is used (MS-TCN's sample rate for GTEA is 1).

MS-TCN's recipe: Adam at lr 5e-4, batch 1, 50 epochs (1050 steps of one video). There
are no assessment labels, so the score loss is off and Spearman prints as '-'.
"""

from hhjax import config as default

# Training videos of one split: 28 videos, 7 held out per split.
TRAIN_VIDEOS = 21


def get_config(split: str | None = None):
  """The config for split `split` (1..4; default 1)."""
  return default.action_segmentation_config("gtea", TRAIN_VIDEOS, split, epochs=50)
