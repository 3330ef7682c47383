r"""The 12-action clip classifier of the SUTD hand-washing report (CNN-LSTM) on the real
clips, leave-people-out over 4 folds, beside a hand-pose logistic regression.

  python -m hhjax.clips --config configs/clips_cnn_lstm.py --workdir runs/clips_cnn_lstm

Sized for a 2-core CPU: 64x64 frames, 16 per window, the small CNN. The report's
settings are `--config.data.frame_size=128 --config.data.clip_length=32
--config.batch_size=32` (and `--config.model.cnn=alexnet`, best with its ImageNet
weights: `--config.model.cnn_weights=alexnet.pth --config.model.freeze_cnn=True
--config.data.normalize=imagenet`). docs/CLIPS.md has the fields and the figures.
"""

from hhjax import clips


def get_config():
  config = clips.get_config()
  config.task = "classify"
  config.model.name = "cnn_lstm"
  config.model.cnn = "small"
  config.model.dropout = 0.5
  config.num_train_steps = 500
  config.batch_size = 8
  config.learning_rate = 1e-3
  return config
