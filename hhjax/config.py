"""Every config field hhjax knows, with its default (the base of all configs).

Other configs start from `get_config()` here and change a few fields, so that a test
can check that no config carries a key this file does not define. `check_config`
checks the values a typo could break, and `resume_conflicts` names the fields whose
change would mix two runs in one workdir.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

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
  config.dataset.bucket_policy = "multiple"   # buckets: "multiple"s of bucket_size, or
                                              # "pow2" (bucket_size x 2^k: fewer shapes
                                              # to compile, more padding)
  config.dataset.frame_stride = 1             # keep every k-th frame (MS-TCN sample rate)
  config.dataset.standardize = False          # z-score features with the train split's
                                              # mean / std (saved in the workdir)
  config.dataset.num_threads = 2
  # Hand-pose features only (hhjax.data.augment): "" (off) | "handpose" (mirroring,
  # camera turns, image jitter, dropped hands) | "handpose_half" (the same on half the
  # videos, the rest as filmed) on the training split, and a fixed view
  # ("" | "rot30_yaw", "rot45_pitch", "mirror", ...) of the evaluation split, to
  # measure robustness to other cameras.
  config.dataset.augment = ""
  config.dataset.eval_view = ""
  config.dataset.score_range = (0.0, 6.0)     # video scores lie in [lo, hi] (checked
                                              # against the data; scales R-l2)

  config.model = ml_collections.ConfigDict()
  # The segmentation network (hhjax.models.segmenters): "conv_transformer" (Li et al.)
  # | "mstcn" | "mstcn_pp" | "asrf" | "bcn" | "asformer" | "none" (video-level only).
  config.model.segmenter = "conv_transformer"
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
  config.model.video_pool = "mean"            # scoring="video": "mean" | "max" pooling
                                              # + MLP, or "lstm"; or the whole-video
                                              # assessors "action_net" | "sa_rnn"
  config.model.score_dropout_rate = 0.0
  # Offline post-processing of every network's predicted labels: runs shorter than
  # this many (strided) frames are merged into their longer neighbour before the
  # scorer picks each step's run (hhjax/models/segmenters/postprocess.py). 0: off,
  # as in the paper; not for causal (streaming) models.
  config.model.min_segment_frames = 0
  # Fields of one network only (the shared ones above - num_stages, num_layers,
  # channels, dropout_rate, input_dropout_rate - apply to every network that has them;
  # dropout and input dropout stay shared so that compared networks train alike).
  config.model.mstcn_pp = ml_collections.ConfigDict(dict(
      num_layers_pg=11, num_layers_r=10, num_refinements=3))
  config.model.asrf = ml_collections.ConfigDict(dict(
      # None: num_stages (the action / boundary branch stage counts)
      num_stages_asb=ml_collections.config_dict.placeholder(int),
      num_stages_brb=ml_collections.config_dict.placeholder(int),
      boundary_weight=0.1, boundary_pos_weight=0.0, boundary_threshold=0.5,
      gstmse_weight=0.0, gstmse_sigma=1.0))
  config.model.asformer = ml_collections.ConfigDict(dict(num_decoders=3, r1=2, r2=2))
  # Whole-video assessors (video_pool="action_net" | "sa_rnn", with segmenter="none"
  # and scoring="video"); hhjax/models/heads/{action_net,sa_rnn}.py.
  config.model.action_net = ml_collections.ConfigDict(dict(
      num_segments=16, num_frames=16,     # dynamic (segment means) / static instances
      context="gcn",                      # "gcn" | "none" | "lstm" | "bilstm"
      pooling="attention",                # "attention" | "mean"
      adjacency="feature", kernel_scale=1.0, dropout_rate=0.5,
      # None: every feature dimension; else a (start, stop) slice for that stream
      dynamic_dims=ml_collections.config_dict.placeholder(tuple),
      static_dims=ml_collections.config_dict.placeholder(tuple)))
  config.model.sa_rnn = ml_collections.ConfigDict(dict(
      num_segments=16,
      tokens="landmarks",                 # "landmarks" (42 hand-pose tokens) | "grid"
      grid_size=ml_collections.config_dict.placeholder(int),  # "grid": F = L x C
      channels=64, attention_dim=32, hidden=128, dropout_rate=0.0))

  config.training_segments = "predicted"      # "predicted" | "ground_truth"

  config.loss = ml_collections.ConfigDict()
  config.loss.smooth_weight = 0.15
  config.loss.tau = 4.0
  config.loss.score_weight = 1.0
  config.loss.step_score_weight = 0.0         # per-step score MSE where the data has them
  config.loss.ranking_weight = 0.0            # pairwise hinge ranking loss over the
  config.loss.ranking_margin = 1.0            # batch's videos (needs batch_size >= 2)
  config.loss.ranking_tie_tolerance = 0.0     # scores this close count as tied
  config.loss.ranking_tie_weight = 0.0        # tied pairs: 0 skips them, > 0 pulls
                                              # their predictions together

  config.learning_rate = 5e-4
  config.lr_schedule = "constant"             # "constant" (the paper) | "cosine" decay
  config.weight_decay = 0.0
  config.optimizer = "adam"                   # "adam" (AdamW with weight_decay) | "sgd"
  config.momentum = 0.9                       # SGD only
  # Parameter groups at a multiple of the learning rate: "regex=factor,...", matched
  # against "/"-joined parameter paths, e.g. "video_regressor/head=5" (ACTION-NET).
  config.lr_multipliers = ""
  config.batch_size = 1                       # global; divisible by the device count
  # The network's forward and backward pass: "float32", or "bfloat16" (mixed precision:
  # parameters, gradients and optimiser state stay float32; for GPUs and TPUs, see
  # hhjax.training.steps).
  config.compute_dtype = "float32"
  config.num_train_steps = 1000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.report_baselines = False             # also fit the non-temporal baselines
  config.progress_bar = True
  config.tensorboard = True                   # event files in <workdir>/tensorboard
  # JAX's persistent compilation cache: "" -> $XDG_CACHE_HOME/hhjax/jax_cache (else
  # ~/.cache/hhjax/jax_cache); "none" -> hhjax sets up none. A rerun then loads its
  # compiled steps instead of compiling them again.
  config.compilation_cache_dir = ""
  # Resuming with a config that differs in a field that would mix two runs (data,
  # model, loss, optimiser, seed, ...) is refused unless this is set.
  config.allow_resume_changes = False
  return config


# Fields a resumed run may change freely: they do not alter what is computed.
RESUME_SAFE_FIELDS = frozenset({
    "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "report_baselines", "progress_bar", "tensorboard",
    "allow_resume_changes", "dataset.num_threads", "dataset.data_dir",
    # The cache only saves compile time; padding never changes the outputs on real
    # frames (the networks mask it).
    "compilation_cache_dir", "dataset.bucket_policy"})


# Fields added after runs were saved without them, and the value their absence means:
# a saved config lacking one resumes as if it held that value.
ABSENT_MEANS = {"dataset.augment": "", "dataset.eval_view": "",
                "loss.ranking_weight": 0.0, "loss.ranking_margin": 1.0,
                "loss.ranking_tie_tolerance": 0.0, "loss.ranking_tie_weight": 0.0,
                "optimizer": "adam", "momentum": 0.9, "lr_multipliers": "",
                "model.min_segment_frames": 0, "compute_dtype": "float32"}
# Sections added later that only a head added with them reads: a saved config without
# the whole section resumes as if it held today's values.
ABSENT_SECTIONS = ("model.action_net.", "model.sa_rnn.")


def flatten(tree, prefix=""):
  """{"a.b": value} of a nested dict (a saved config.json); tuples as lists, as JSON
  gives them back."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = list(v) if isinstance(v, tuple) else v
  return out


def from_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, loaded by path (`configs/` is no package)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"hhjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def resume_conflicts(saved: dict, new: dict, finished: bool = False) -> list[str]:
  """`field: old -> new` for every field whose change would mix two runs.

  `num_train_steps` is safe unless the learning rate decays over it (cosine), or the
  saved run is `finished` and its results are to be read back as the new config's."""
  old_flat, new_flat = flatten(saved), flatten(new)
  safe = set(RESUME_SAFE_FIELDS)
  if finished or new_flat.get("lr_schedule") == "cosine":
    safe.discard("num_train_steps")
  out = []
  sections_absent = {p for p in ABSENT_SECTIONS
                     if not any(k.startswith(p) for k in old_flat)}
  for key in sorted(set(old_flat) | set(new_flat)):
    if key in safe or any(key.startswith(p) for p in sections_absent):
      continue
    a = old_flat.get(key, ABSENT_MEANS.get(key, "<absent>"))
    b = new_flat.get(key, ABSENT_MEANS.get(key, "<absent>"))
    if a != b:
      out.append(f"{key}: {a!r} -> {b!r}")
  return out


def saved_config_conflicts(config, workdir, finished: bool = False) -> list[str] | None:
  """`resume_conflicts` between the `config.json` a run saved in `workdir` and
  `config`; None when the run saved none."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    return None
  return resume_conflicts(json.loads(path.read_text()),
                          json.loads(config.to_json_best_effort()), finished=finished)


def check_config(config) -> None:
  """Checks values a typo could break; clear errors naming the field."""
  import jax  # noqa: PLC0415
  from hhjax.data import pipeline  # noqa: PLC0415
  from hhjax.models import segmenters  # noqa: PLC0415
  choices = dict(attention=("linear", "softmax", "none"), scorer=("kas", "mlp"),
                 pool_features=("input", "stage"), scoring=("steps", "video"),
                 video_pool=("mean", "max", "lstm", "action_net", "sa_rnn"),
                 segmenter=segmenters.names() + ("none",))
  for field, allowed in choices.items():
    value = config.model[field]
    if value not in allowed:
      raise ValueError(f"config.model.{field}={value!r}; expected one of {allowed}")
  if config.model.segmenter == "none" and config.model.scoring != "video":
    raise ValueError("config.model.segmenter='none' needs config.model.scoring='video'")
  min_frames = config.model.get("min_segment_frames", 0)
  if not isinstance(min_frames, int) or isinstance(min_frames, bool) or min_frames < 0:
    raise ValueError("config.model.min_segment_frames must be a whole number of frames "
                     f">= 0 (0: off), got {min_frames!r}")
  if min_frames > 1 and config.model.segmenter.startswith("causal"):
    raise ValueError(f"config.model.min_segment_frames={min_frames} looks at the whole "
                     f"video; the causal segmenter {config.model.segmenter!r} streams "
                     "frame by frame and cannot use it: set it to 0")
  if config.lr_schedule not in ("constant", "cosine"):
    raise ValueError(f"config.lr_schedule={config.lr_schedule!r}; expected 'constant' or "
                     "'cosine'")
  from hhjax.training import state, steps  # noqa: PLC0415
  state.check_optimizer(config)
  steps.compute_dtype(config)
  if config.training_segments not in ("predicted", "ground_truth"):
    raise ValueError(f"config.training_segments={config.training_segments!r}; expected "
                     "'predicted' or 'ground_truth'")
  if config.dataset.streams not in pipeline.STREAMS:
    raise ValueError(f"config.dataset.streams={config.dataset.streams!r}; expected one "
                     f"of {pipeline.STREAMS}")
  if config.loss.get("ranking_weight", 0.0):
    for field in ("ranking_weight", "ranking_margin", "ranking_tie_tolerance",
                  "ranking_tie_weight"):
      if not config.loss.get(field, 0.0) >= 0:
        raise ValueError(f"config.loss.{field} must be >= 0, got "
                         f"{config.loss[field]}")
    if config.batch_size < 2:
      raise ValueError(f"config.loss.ranking_weight={config.loss.ranking_weight} ranks "
                       f"the videos of a batch against each other, but "
                       f"config.batch_size={config.batch_size}: set it to 2 or more")
  lo, hi = config.dataset.score_range
  if not lo < hi:
    raise ValueError(f"config.dataset.score_range={tuple(config.dataset.score_range)}: "
                     "needs lo < hi")
  if config.dataset.frame_stride < 1:
    raise ValueError(f"config.dataset.frame_stride must be >= 1, got "
                     f"{config.dataset.frame_stride}")
  pipeline.check_bucket_policy(config.dataset.get("bucket_policy", "multiple"),
                               config.dataset.bucket_size)
  from hhjax.data import augment  # noqa: PLC0415
  augment.check_config(config)
  if config.batch_size % jax.device_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the "
                     f"{jax.device_count()} devices")
  for field in ("num_train_steps", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps", "batch_size"):
    if config[field] < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")


def action_segmentation_config(name: str, train_videos: int, split: str | None = None,
                               epochs: int = 50) -> ml_collections.ConfigDict:
  """A public action-segmentation data set (`configs/mstcn_<name>.py`, Table VII) by
  MS-TCN's protocol: its sample rate as the frame stride, its class count, Adam at
  5e-4, batch 1, `epochs` epochs of `train_videos` videos, no score loss.

  Args:
    name: the builder config ("gtea", "50salads", "breakfast").
    train_videos: training videos in one split (sets the number of steps).
    split: "1".."K" (the config file's `:K` suffix); default 1.
    epochs: passes over the training videos.
  """
  from hhjax.data import hha300  # noqa: PLC0415
  facts = hha300.builder_config(name, hha300.ACTION_SEGMENTATION)
  k = int(split) if split and split.isdigit() else (1 if not split else 0)
  if not 1 <= k <= facts.num_splits:
    raise ValueError(f"configs/mstcn_{name}.py: split {split!r}; {name} has splits "
                     f"1..{facts.num_splits}")
  config = get_config()
  config.dataset.name = hha300.ACTION_SEGMENTATION
  config.dataset.config = name
  config.dataset.train_split = f"train_split{k}"
  config.dataset.eval_split = f"test_split{k}"
  config.dataset.frame_stride = facts.sample_rate   # MS-TCN's sample rate
  config.model.num_classes = facts.num_classes
  config.loss.score_weight = 0.0                    # no scores in these data sets
  config.learning_rate = 5e-4
  config.batch_size = 1
  steps_per_epoch = train_videos // config.batch_size
  config.num_train_steps = epochs * steps_per_epoch
  config.eval_every_steps = 10 * steps_per_epoch
  config.checkpoint_every_steps = 5 * steps_per_epoch
  return config
