r"""Real hand-washing video: the joint model on MediaPipe hand-pose features of whole
washes composed from the single-step clips in `../shared/realdata/kaggle_handwash_train`.

  python -m hhjax.extract --stream handpose --workers 2 \
      --videos ../shared/realdata/kaggle_handwash_train --out data/handwash_clips
  python -m hhjax.data.compose --folds 4 \
      --clips ../shared/realdata/kaggle_handwash_train/clips.csv \
      --features data/handwash_clips/features --out data/handwash
  python -m hhjax.crossval --config configs/handwash_real.py --workdir runs/handwash_cv

`python -m hhjax.train --config configs/handwash_real.py --workdir DIR` trains and tests
one fold (fold 0 held out). The composed washes carry completeness scores only (a step
done counts 1, a step left out 0; see hhjax.data.compose), so the scorer learns which
steps were done, not how well. docs/HANDWASH.md has the figures.
"""

from hhjax import config as default


def get_config():
  config = default.get_config()
  config.dataset.config = "handwash"
  config.dataset.manual_dir = "data/handwash"
  # Beside the layout, so that composing afresh (with --overwrite) drops the old build.
  config.dataset.data_dir = "data/handwash/tfds"
  config.dataset.train_split = "fold1+fold2+fold3"
  config.dataset.eval_split = "fold0"
  config.dataset.streams = "all"        # 212 hand-pose values, not two halves
  # 30 fps clips; every 3rd frame (10 fps) still gives each step about 100 frames.
  config.dataset.frame_stride = 3
  config.dataset.bucket_size = 256
  # Hand-pose values differ in scale (image coordinates, wrist-relative shape, depth,
  # presence flags); z-scoring them with the training people's statistics lifted fold
  # 2's frame accuracy from 72.7 to 88.6 (docs/HANDWASH.md).
  config.dataset.standardize = True
  config.model.dropout_rate = 0.0
  config.model.attention_dropout_rate = 0.0
  config.model.input_dropout_rate = 0.3
  config.training_segments = "ground_truth"
  config.batch_size = 4
  config.num_train_steps = 600
  config.lr_schedule = "cosine"
  config.log_every_steps = 50
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 300
  return config
