r"""The joint model of configs/handwash_real.py on the hand-guided feature stream
(a ResNet on the frame and one on each hand's high-resolution cut-out, 1536 values a
frame for ResNet-18s) instead of the 212 hand-pose values, on the same composed washes:

  python -m hhjax.extract --stream hand_guided \
      --videos ../shared/realdata/kaggle_handwash_train --out data/handwash_hg_clips \
      --hands-from data/handwash_clips --resnet-weights weights/resnet18-f37072fd.pth
  python -m hhjax.data.compose --folds 4 --style mix \
      --clips ../shared/realdata/kaggle_handwash_train/clips.csv \
      --features data/handwash_hg_clips/features --out data/handwash_hg
  python -m hhjax.crossval --config configs/handwash_hand_guided.py \
      --workdir runs/handwash_hg_cv

`--hands-from` is the hand-pose extraction of docs/HANDWASH.md (it places the hand
cut-outs). Without ImageNet weights, `--random-weights --seed 0` gives seeded random
ResNets (the measured run of docs/HANDWASH.md, "The hand-guided stream"). Composing
with the same clips, style and seed gives the same washes, frame for frame, as the
hand-pose layout, so the two streams are compared on identical labels.
"""

import pathlib

from hhjax import config as config_lib

_REAL = pathlib.Path(__file__).with_name("handwash_real.py")


def get_config():
  config = config_lib.from_file(_REAL)
  config.dataset.manual_dir = "data/handwash_hg"
  config.dataset.data_dir = "data/handwash_hg/tfds"
  return config
