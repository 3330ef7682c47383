"""Every config field hhjax knows, with its default (the base of all configs).

Other configs start from `get_config()` here and change a few fields, so that a test
can check that no config carries a key this file does not define.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "hha300"
  config.dataset.config = "synthetic_small"   # TFDS builder config
  config.dataset.data_dir = ""                # "" -> TFDS's default (~/tensorflow_datasets)
  config.dataset.manual_dir = ""              # real data: the manual layout (DESIGN.md)
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.dataset.streams = "rgb+flow"         # ablation: "rgb", "flow" or both halves
  config.dataset.bucket_size = 256            # pad lengths to multiples of this
  config.dataset.frame_stride = 1             # keep every k-th frame (MS-TCN sample rate)
  config.dataset.standardize = False          # z-score features with the train split's
                                              # mean / std (saved in the workdir)
  config.dataset.num_threads = 2

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 7
  config.model.num_stages = 4
  config.model.num_layers = 10
  config.model.channels = 64
  config.model.attention = "linear"           # "linear" | "softmax" | "none"
  config.model.num_heads = 4
  config.model.dropout_rate = 0.5
  config.model.input_dropout_rate = 0.0
  config.model.attention_dropout_rate = 0.1
  config.model.scorer = "kas"                 # "kas" | "mlp"
  config.model.learnable_sigmoid = True       # False: lambda frozen at 1
  config.model.num_branches = 2               # key actions per step
  config.model.pool_features = "input"        # "input" | "stage" features are pooled
  config.model.scoring = "steps"              # "steps" (KAS) | "video" (whole video)
  config.model.score_dropout_rate = 0.0

  config.training_segments = "predicted"      # "predicted" | "ground_truth"

  config.loss = ml_collections.ConfigDict()
  config.loss.smooth_weight = 0.15
  config.loss.tau = 4.0
  config.loss.score_weight = 1.0

  config.learning_rate = 5e-4
  config.lr_schedule = "constant"             # "constant" (the paper) | "cosine" decay
  config.weight_decay = 0.0
  config.batch_size = 1                       # global; divisible by the device count
  config.num_train_steps = 1000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.report_baselines = False             # also fit the non-temporal baselines
  config.progress_bar = True
  return config
