r"""Per-frame step classification with the hand-guided two-stream model of Myers et al.
(TSM ResNet on the frame + ResNet on each hand's high-resolution cut-out) on the real
clips, leave-people-out over 4 folds, beside a per-frame hand-pose classifier.

  python -m hhjax.clips --config configs/clips_tsm.py --workdir runs/clips_tsm

Ablations, each one flag (the same folds and seed):

  --config.frames.temporal_shift=0          # no temporal shift
  --config.frames.use_hand_stream=False     # no hand stream

Sized for a 2-core CPU and trained from scratch (no ImageNet weights can be fetched):
ResNet-18 on 64x64 whole frames, windows of 8 frames (every 4th frame of the 30 fps
clips), hand cut-outs of 64 original pixels resized to 32x32, batch 4. The paper used
a ResNet-50 TSM on 224x224 crops, ImageNet weights and 8-frame segments.
"""

from hhjax import clips


def get_config():
  config = clips.get_config()
  config.task = "frames"
  config.data.frame_stride = 4
  config.data.frame_size = 64
  config.data.clip_length = 8
  config.frames.backbone_depth = 18
  config.frames.hand_depth = 18
  config.frames.temporal_shift = 0.25
  config.frames.use_hand_stream = True
  config.frames.fusion = "aligned"
  config.frames.hand_crop = 64
  config.frames.hand_size = 32
  config.frames.dropout = 0.5
  config.num_train_steps = 300
  config.batch_size = 4
  config.eval_batch_size = 8
  config.learning_rate = 1e-3
  config.log_every_steps = 50
  return config
