r"""The ConvLSTM clip classifier of the SUTD hand-washing report on the real clips,
leave-people-out over 4 folds, beside a hand-pose logistic regression.

  python -m hhjax.clips --config configs/clips_convlstm.py --workdir runs/clips_convlstm

The report's ConvLSTM: 8 hidden channels, 3x3 kernel, dropout 0.8. Its recurrent
convolution runs at full frame resolution and is slow on a CPU (2.3-2.5 s a step
here at 48x48, 16 frames, batch 8, on 2 busy cores), so this config is smaller still:
48x48 frames, 16 per window, 300 steps. The report's frames are
`--config.data.frame_size=128 --config.data.clip_length=32` (its reference code ran
the ConvLSTM at 64x64).
"""

from hhjax import clips


def get_config():
  config = clips.get_config()
  config.task = "classify"
  config.model.name = "convlstm"
  config.model.convlstm_features = 8
  config.model.kernel_size = (3, 3)
  config.model.dropout = 0.8
  config.data.frame_size = 48
  config.num_train_steps = 300
  config.batch_size = 8
  config.learning_rate = 1e-3
  return config
