"""Streaming (online) prediction: one jitted update per new frame.

    state = runner.init_state(batch)
    for each new frame x_t (B, D):
      state, out = runner.step(state, x_t)     # labels, probabilities, running scores

`StreamingModel(model, params)` takes the joint model of `hhjax.models.joint`
(`create_model(config)`) and its trained parameters (the `params` tree the trainer
saves, or `{"params": params}`), or a bare causal segmenter and its parameters. The
segmenter must have a frame-by-frame form (`init_cache` / `step`), i.e.
`config.model.segmenter = "causal_conv_transformer"`: its update reads only the state
and the new frame, and its outputs equal those of the same network run on the whole
sequence, frame for frame (to float rounding).

Running step scores. The joint model scores each WHO step from its longest predicted
run (`longest_runs`, ties to the earliest run), the features average-pooled over that
run (`pool_segments`) and the scorer (`KeyActionScorer` or `MLPScorer`). The same
quantities are kept incrementally: per step the current run (start, length, feature
sum) and the best run so far; a run replaces the best only when strictly longer, which
keeps the earliest of equal runs. After frame t the segments are therefore exactly the
joint model's segments of the video cut at frame t, and the scores its scores (to float
rounding: the pooled sums are accumulated in another order); at the last frame, those
of the whole video. The pooled features are the model's inputs (`pool_features="input"`) or
the last stage's features (`"stage"`), as the joint model was trained.

The state is a pytree: `{"segmenter": cache, "runs": {...}}` (see
`CausalMultiStageModel.init_cache` for the cache); `step` never modifies the state it
is given (a stream can be branched). Donating the state's buffers to the update was
measured slower on CPU (about 4 ms against 0.7 ms per frame at the default size), so it
is not done.

Inputs are what the model was trained on: the same feature streams, at the training
frame rate (`config.dataset.frame_stride`: feed every k-th frame), standardised with the
run's `feature_stats.npz` if training standardised them (`stream_video(..., stats=...)`).

Stable labels (`min_steps`). Without the future, a causal model's frame labels
flicker at step boundaries and within long steps, and every flicker is a segment: on
held-out real washes the causal model's edit score is half the offline model's
(docs/ONLINE.md). `StreamingModel(..., min_steps=k)` commits a new label only once it
has been the argmax for k consecutive steps (`debounce_labels` is the NumPy
definition): the reported labels lag a change by k - 1 steps, and the running segments
and scores are those of the committed labels. k = 1 (the default) is the raw argmax.

`benchmark` times the jitted `step` (scripts/bench_streaming.py prints it).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hhjax.models.heads.scorers import KeyActionScorer, MLPScorer, to_score_range
from hhjax.models.joint import JointModel


def init_runs(batch: int, num_steps: int, feature_dim: int, dtype=jnp.float32) -> dict:
  """Run-tracking state before the first frame: no run for any step."""
  zeros_i = lambda: jnp.zeros((batch, num_steps), jnp.int32)
  zeros_f = lambda: jnp.zeros((batch, num_steps, feature_dim), dtype)
  return dict(cur_start=zeros_i(), cur_length=zeros_i(), cur_sum=zeros_f(),
              best_start=zeros_i(), best_length=zeros_i(), best_sum=zeros_f())


def update_runs(runs: dict, t, labels, features) -> dict:
  """Adds frame `t` to the run tracker.

  Args:
    runs: `init_runs`' dict; `(B, S)` starts and lengths, `(B, S, F)` feature sums of
      the current run of each step 1..S and of its longest run so far.
    t: index of the frame (int scalar).
    labels: `(B,)` int frame labels (0 = background, steps 1..S).
    features: `(B, F)` the features pooled for scoring at this frame.

  Returns:
    The updated dict: `best_start` / `best_length` equal `longest_runs` of the labels
    of frames 0..t, and `best_sum` the sum of `features` over that run.
  """
  num_steps = runs["cur_length"].shape[-1]
  hit = labels[:, None] == jnp.arange(1, num_steps + 1)[None, :]        # (B, S)
  length = jnp.where(hit, runs["cur_length"] + 1, 0)
  start = jnp.where(hit & (runs["cur_length"] == 0), t, runs["cur_start"])
  total = jnp.where(hit[..., None], runs["cur_sum"] + features[:, None, :], 0.0)
  better = length > runs["best_length"]                # strictly: ties keep the earliest
  return dict(cur_start=start.astype(jnp.int32), cur_length=length.astype(jnp.int32),
              cur_sum=total,
              best_start=jnp.where(better, start, runs["best_start"]).astype(jnp.int32),
              best_length=jnp.where(better, length, runs["best_length"]).astype(jnp.int32),
              best_sum=jnp.where(better[..., None], total, runs["best_sum"]))


def debounce_labels(labels, min_steps: int) -> np.ndarray:
  """The committed labels of a label sequence (the definition `debounce_step` follows).

  The first label is committed at once. Afterwards a label different from the
  committed one replaces it at the step where it has been seen `min_steps` times in a
  row; anything else (a shorter run, or a run broken by another label) leaves the
  committed label as it was.

  Args:
    labels: (T,) int labels.
    min_steps: k >= 1; 1 returns `labels` unchanged.

  Returns:
    (T,) the committed label at each step.

  Raises:
    ValueError: `min_steps` < 1.
  """
  if int(min_steps) < 1:
    raise ValueError(f"min_steps must be >= 1, got {min_steps}")
  labels = np.asarray(labels)
  out = np.empty_like(labels)
  committed = candidate = labels[0] if labels.size else 0
  count = 0
  for t, label in enumerate(labels):
    if label == committed:
      count = 0
    elif label == candidate and count:
      count += 1
    else:
      candidate, count = label, 1
    if label != committed and count >= min_steps:
      committed, count = label, 0
    out[t] = committed
  return out


def init_debounce(batch: int) -> dict:
  """`debounce_step`'s state before the first frame (nothing committed yet)."""
  zeros = jnp.zeros((batch,), jnp.int32)
  return dict(committed=zeros, candidate=zeros, count=zeros,
              started=jnp.zeros((batch,), bool))


def debounce_step(state: dict, labels, min_steps: int) -> tuple[dict, jnp.ndarray]:
  """One step of `debounce_labels` for a batch of streams (jittable).

  Args:
    state: `init_debounce`'s dict, or the previous step's.
    labels: (B,) int32 raw labels of this step.
    min_steps: k >= 1 (a Python int).

  Returns:
    `(state, committed)`, committed (B,) int32.
  """
  labels = labels.astype(jnp.int32)
  committed = jnp.where(state["started"], state["committed"], labels)
  same = labels == committed
  run = (labels == state["candidate"]) & (state["count"] > 0)
  count = jnp.where(same, 0, jnp.where(run, state["count"] + 1, 1))
  switch = ~same & (count >= min_steps)
  committed = jnp.where(switch, labels, committed)
  count = jnp.where(switch, 0, count)
  return dict(committed=committed, candidate=jnp.where(same, committed, labels),
              count=count, started=jnp.ones_like(state["started"])), committed


def _unwrap(params):
  """Accepts the `params` tree or Flax's `{"params": params}` variables."""
  if isinstance(params, dict) or hasattr(params, "keys"):
    if set(params.keys()) == {"params"}:
      return params["params"]
  return params


class StreamingModel:
  """Frame-by-frame runner of a causal segmenter and the joint model's step scorer.

  Args:
    model: a `JointModel` whose segmenter has a frame-by-frame form
      (`causal_conv_transformer`), or such a segmenter alone (then no scores).
    params: the model's parameters (`params` or `{"params": params}`).
    min_steps: commit a new label after this many consecutive steps of it (module
      docstring, `debounce_labels`); 1: the raw argmax.

  Raises:
    ValueError: the model cannot stream (offline segmenter, no segmenter, or
      `scoring="video"`), or the parameters do not fit it.
  """

  def __init__(self, model, params, min_steps: int = 1):
    if isinstance(min_steps, bool) or not isinstance(min_steps, (int, np.integer)) \
        or min_steps < 1:
      raise ValueError(f"min_steps must be an integer >= 1, got {min_steps!r}")
    self.min_steps = int(min_steps)
    params = _unwrap(params)
    if isinstance(model, JointModel):
      if model.segmenter is None:
        raise ValueError("StreamingModel needs a segmenter; config.model.segmenter="
                         "'none' has no frame labels to stream")
      if model.scoring != "steps":
        raise ValueError(f"StreamingModel scores steps from their segments; "
                         f"config.model.scoring={model.scoring!r} has no running form")
      for key in ("segmenter", "scorer"):
        if key not in params:
          raise ValueError(f"the parameters have no {key!r} entry: not the parameters "
                           f"of this joint model (keys {sorted(params)})")
      self.segmenter, self.joint = model.segmenter, model
    else:
      self.segmenter, self.joint = model, None
    if not (hasattr(self.segmenter, "step") and hasattr(self.segmenter, "init_cache")):
      raise ValueError(
          f"the segmenter {type(self.segmenter).__name__} has no frame-by-frame form; "
          "streaming needs config.model.segmenter='causal_conv_transformer'")
    self.params = params
    seg_params = params["segmenter"] if self.joint is not None else params
    try:
      kernel = seg_params["stages_0"]["conv_in"]["kernel"]
    except (KeyError, TypeError) as e:
      raise ValueError("the parameters are not those of a causal_conv_transformer "
                       f"(no stages_0/conv_in/kernel): {e!r}") from None
    self.feature_dim = int(kernel.shape[0])
    self.num_classes = self.segmenter.num_classes
    self.num_steps = self.num_classes - 1
    if self.joint is not None:
      if self.joint.scorer == "kas":
        self._scorer = KeyActionScorer(self.num_steps, self.joint.num_branches,
                                       self.joint.learnable_sigmoid)
      else:
        self._scorer = MLPScorer(self.num_steps)
      self.pooled_dim = (self.feature_dim if self.joint.pool_features == "input"
                         else self.segmenter.channels)
    self._update = jax.jit(self._update_fn)

  def init_state(self, batch: int = 1) -> dict:
    """The state before the first frame of `batch` videos streamed side by side."""
    if batch < 1:
      raise ValueError(f"batch must be >= 1, got {batch}")
    state = dict(segmenter=self.segmenter.init_cache(batch),
                 debounce=init_debounce(batch))
    if self.joint is not None:
      state["runs"] = init_runs(batch, self.num_steps, self.pooled_dim)
    return state

  def step(self, state: dict, frame_features) -> tuple[dict, dict[str, jnp.ndarray]]:
    """Feeds one frame of each video; jitted (compiled once per batch size).

    Args:
      state: from `init_state` or the previous `step`.
      frame_features: `(B, D)` the new frame's features.

    Returns:
      `(state, outputs)` with `logits` (S, B, C) of every stage, `probs` (B, C),
      `raw_labels` (B,) int32 (the last stage's argmax at this frame) and `labels`
      (B,) int32 (the committed labels, `min_steps`), and with a joint model the
      running scores: `seg_start`, `seg_length` (B, num_steps) int32 (longest run of
      each step so far; length 0 = none yet), `pooled` (B, num_steps, F) the mean
      features of those runs, `step_scores` (B, num_steps) (the bottom of the step
      range, 0 by default, for a step with no run)
      and `video_score` (B,) their sum.
    """
    frame_features = jnp.asarray(frame_features, jnp.float32)
    batch = state["segmenter"]["stages"][0]["conv"][0].shape[0] \
        if state["segmenter"]["stages"][0]["conv"] else None
    if frame_features.ndim != 2 or frame_features.shape[-1] != self.feature_dim or \
        (batch is not None and frame_features.shape[0] != batch):
      raise ValueError(f"frame_features has shape {tuple(frame_features.shape)}; the "
                       f"model and state expect ({batch or 'B'}, {self.feature_dim})")
    return self._update(self.params, state, frame_features)

  def _update_fn(self, params, state, x):
    seg_params = params["segmenter"] if self.joint is not None else params
    cache, seg = self.segmenter.apply({"params": seg_params}, state["segmenter"], x,
                                      method="step")
    last = seg["logits"][-1]                                               # (B, C)
    raw = jnp.argmax(last, axis=-1).astype(jnp.int32)
    debounce, labels = debounce_step(state["debounce"], raw, self.min_steps)
    out = dict(logits=seg["logits"], probs=jax.nn.softmax(last, axis=-1), labels=labels,
               raw_labels=raw)
    new_state = dict(segmenter=cache, debounce=debounce)
    if self.joint is not None:
      pooled_src = x if self.joint.pool_features == "input" else seg["features"]
      runs = update_runs(state["runs"], state["segmenter"]["t"], labels, pooled_src)
      length = runs["best_length"]
      pooled = runs["best_sum"] / jnp.maximum(length, 1)[..., None].astype(x.dtype)
      scores = self._scorer.apply({"params": params["scorer"]}, pooled)
      scores = to_score_range(scores, length, self.joint.score_range, self.num_steps)
      out.update(seg_start=runs["best_start"], seg_length=length, pooled=pooled,
                 step_scores=scores, video_score=scores.sum(-1))
      new_state["runs"] = runs
    return new_state, out


def stream_video(model, params, features, stats=None, min_steps: int = 1
                 ) -> dict[str, np.ndarray]:
  """Runs one video through `StreamingModel.step`, frame by frame.

  Args:
    model, params: as for `StreamingModel`.
    features: `(T, D)` the video's features (streams and frame rate as in training).
    stats: a `hhjax.data.pipeline.FeatureStats` to standardise them with (the run's
      `feature_stats.npz`, when training standardised its inputs), or None.
    min_steps: as for `StreamingModel`.

  Returns:
    Per frame t (the state after frame t): `labels` (T,) int32 (committed),
    `raw_labels` (T,) int32, `probs` (T, C), and
    with a joint model `step_scores` (T, num_steps), `video_score` (T,), `seg_start`,
    `seg_length` (T, num_steps) int32.
  """
  features = np.asarray(features, np.float32)
  if features.ndim != 2 or features.shape[0] < 1:
    raise ValueError(f"features must be (T, D) with T >= 1, got shape {features.shape}")
  if not np.all(np.isfinite(features)):
    raise ValueError("features contain NaN or infinite values")
  if stats is not None:
    features = stats.apply(features)
  runner = StreamingModel(model, params, min_steps)
  state = runner.init_state(1)
  joint_keys = ("step_scores", "video_score", "seg_start", "seg_length")
  keys = ("labels", "raw_labels", "probs") + (joint_keys if runner.joint is not None
                                              else ())
  frames: list[dict[str, Any]] = []
  for t in range(features.shape[0]):
    state, out = runner.step(state, features[t:t + 1])
    frames.append({k: out[k] for k in keys})        # stays on device: no sync per frame
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.concatenate(xs), *frames))
  return {k: np.asarray(v) for k, v in stacked.items()}


def benchmark(feature_dim: int, *, num_stages: int = 4, num_layers: int = 10,
              channels: int = 64, frames: int = 500, warmup: int = 50, seed: int = 0
              ) -> dict[str, float]:
  """Milliseconds per frame of the jitted `step` (segmenter + running KAS scores).

  Random parameters and frames (the speed does not depend on their values); the model
  is the joint model of the default config with the causal segmenter at the given
  sizes. Each timed call waits for its result (`block_until_ready`), as a live stream
  would; `warmup` untimed calls (compilation included) come first.

  Returns:
    `median_ms`, `p99_ms`, `mean_ms`, `compile_s` (the first call), `frames`.
  """
  from hhjax import config as default_config  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  config = default_config.get_config()
  config.model.segmenter = "causal_conv_transformer"
  config.model.num_stages, config.model.num_layers = num_stages, num_layers
  config.model.channels = channels
  model = create_model(config)
  key_init, key_x = jax.random.split(jax.random.key(seed))
  x0 = jnp.zeros((1, 8, feature_dim), jnp.float32)
  params = jax.jit(model.init)(key_init, x0, jnp.ones((1, 8)))["params"]
  runner = StreamingModel(model, params)
  xs = np.asarray(jax.random.normal(key_x, (warmup + frames, 1, feature_dim)))
  state = runner.init_state(1)
  start = time.perf_counter()
  state, out = runner.step(state, xs[0])
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - start
  for i in range(1, warmup):
    state, out = runner.step(state, xs[i])
    jax.block_until_ready(out)
  times = np.empty(frames)
  for i in range(frames):
    start = time.perf_counter()
    state, out = runner.step(state, xs[warmup + i])
    jax.block_until_ready(out)
    times[i] = time.perf_counter() - start
  ms = times * 1e3
  return dict(median_ms=float(np.median(ms)), p99_ms=float(np.percentile(ms, 99)),
              mean_ms=float(ms.mean()), compile_s=compile_s, frames=frames)
