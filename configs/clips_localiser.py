r"""The hand localiser of Myers et al. (presence and position of each hand per frame)
on the real clips, leave-people-out over 4 folds, scored by F1@T_L.

  python -m hhjax.clips --config configs/clips_localiser.py --workdir runs/clips_loc

Its targets are machine-made: the clips' MediaPipe hand-pose features
(`python -m hhjax.extract --stream handpose ... --out data/handwash_clips`), not hand
labels. Sized for a 2-core CPU: every 6th frame at 96x96, the small CNN; the paper's
network is `--config.localiser.backbone=mobilenet_v2` (at a larger
`--config.data.frame_size`, e.g. 160).
"""

from hhjax import clips


def get_config():
  config = clips.get_config()
  config.task = "localise"
  config.data.frame_stride = 6
  config.data.frame_size = 96
  config.localiser.backbone = "small"
  config.localiser.lam = 0.1
  config.num_train_steps = 1000
  config.batch_size = 32
  config.eval_batch_size = 64
  config.learning_rate = 1e-3
  config.log_every_steps = 100
  return config
