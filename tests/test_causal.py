"""The causal conv-transformer and the streaming runner (hhjax.inference.streaming).

The causal pieces are checked against naive NumPy loops (which frames a convolution
reads; attention with a lower-triangular mask), the whole network for causality and end
padding, and the frame-by-frame runner against the same network run on the whole
sequence and against the joint model's offline step scores.
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import config as default_config
from hhjax.data import pipeline
from hhjax.inference import streaming
from hhjax.models import segmenters
from hhjax.models.heads.scorers import longest_runs, pool_segments
from hhjax.models.joint import create_model
from hhjax.models.segmenters import causal
from hhjax.training import state as state_lib, steps

REPO = pathlib.Path(__file__).resolve().parents[1]
NAME = "causal_conv_transformer"
TINY = dict(num_stages=2, num_layers=3, channels=8, num_heads=2, dropout_rate=0.0,
            attention_dropout_rate=0.0)


def _load_config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _phi(a):
  """elu(a) + 1 in NumPy."""
  return np.where(a > 0, a + 1.0, np.exp(np.minimum(a, 0.0)))


def _naive_conv(x, w, b, d):
  """y_t = sum_k w[k] x_{t - (2 - k) d}, frames before 0 read as zeros."""
  y = np.zeros(x.shape[:2] + (w.shape[-1],)) + b
  for t in range(x.shape[1]):
    for k, lag in enumerate((2 * d, d, 0)):
      if t - lag >= 0:
        y[:, t] += x[:, t - lag] @ w[k]
  return y


def _tiny_joint(**model):
  config = default_config.get_config()
  config.model.segmenter = NAME
  config.model.update(TINY)
  config.model.update(model)
  return config, create_model(config)


@pytest.mark.parametrize("dilation", [1, 3])
def test_causal_conv_matches_a_naive_loop(dilation):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 20, 4)).astype(np.float32)
  w = rng.normal(size=(3, 4, 5)).astype(np.float32)
  b = rng.normal(size=(5,)).astype(np.float32)
  want = _naive_conv(x, w, b, dilation)
  got = causal.causal_conv(jnp.asarray(x), w, b, dilation)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The same, one frame at a time through the ring buffer of 2d past inputs.
  ring = jnp.zeros((2, 2 * dilation, 4))
  for t in range(20):
    ring, y = causal.causal_conv_step(ring, t, jnp.asarray(x[:, t]), w, b, dilation)
    np.testing.assert_allclose(y, want[:, t], atol=1e-5)


def test_causal_conv_reads_frames_t_minus_2d_t_minus_d_and_t():
  # An impulse at frame 5 reaches exactly frames 5, 5 + d and 5 + 2d, through taps
  # 2, 1 and 0 of the kernel: never an earlier frame.
  d, t0 = 4, 5
  x = np.zeros((1, 20, 1), np.float32)
  x[0, t0, 0] = 1.0
  w = np.array([2.0, 3.0, 5.0], np.float32).reshape(3, 1, 1)
  y = np.asarray(causal.causal_conv(jnp.asarray(x), w, np.zeros(1, np.float32), d))
  want = np.zeros(20)
  want[t0], want[t0 + d], want[t0 + 2 * d] = 5.0, 3.0, 2.0
  np.testing.assert_array_equal(y[0, :, 0], want)


def test_causal_linear_attention_matches_a_masked_quadratic_loop():
  rng = np.random.default_rng(1)
  b, t, h, d = 2, 12, 2, 3
  q, k, v = (rng.normal(size=(b, t, h, d)).astype(np.float32) for _ in range(3))
  mask = np.ones((b, t), np.float32)
  mask[1, 9:] = 0.0                                     # video 1 is padded at its end
  eps = 1e-6
  want = np.zeros((b, t, h, d))
  tril = np.tril(np.ones((t, t)))
  for i in range(b):
    for j in range(h):
      w = (_phi(q[i, :, j]) @ _phi(k[i, :, j]).T) * tril * mask[i][None, :]   # (T, T)
      want[i, :, j] = (w @ v[i, :, j]) / (w.sum(-1, keepdims=True) + eps)
  want *= mask[:, :, None, None]
  got = causal.causal_linear_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                       jnp.asarray(mask), eps)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[1, 9:] == 0.0)
  # Frame by frame with the two running sums.
  s, z = jnp.zeros((b, h, d, d)), jnp.zeros((b, h, d))
  for i in range(9):
    s, z, out = causal.causal_linear_attention_step(s, z, q[:, i], k[:, i], v[:, i], eps)
    np.testing.assert_allclose(out, want[:, i], rtol=1e-5, atol=1e-6)


def _segmenter_and_params(feature_dim=6, length=40, **fields):
  model = segmenters.build(NAME, dict(TINY, **fields))
  x = jnp.zeros((1, length, feature_dim))
  params = model.init(jax.random.key(0), x, jnp.ones((1, length)))
  return model, params


def test_changing_later_frames_leaves_earlier_outputs_unchanged():
  model, params = _segmenter_and_params()
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 40, 6)).astype(np.float32)
  y = x.copy()
  y[:, 25:] = rng.normal(size=(1, 15, 6)) * 3.0
  mask = jnp.ones((1, 40))
  apply = jax.jit(model.apply)
  a, b = apply(params, x, mask), apply(params, y, mask)
  for key in ("logits", "features"):
    np.testing.assert_allclose(a[key][..., :25, :], b[key][..., :25, :], atol=1e-6)
    assert np.abs(a[key][..., 25, :] - b[key][..., 25, :]).max() > 1e-3, key


def test_end_padding_never_changes_valid_frames_and_padded_outputs_are_zero():
  model, params = _segmenter_and_params()
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 30, 6)).astype(np.float32)
  padded = np.concatenate([x, rng.normal(size=(1, 10, 6)).astype(np.float32) * 50], 1)
  mask = np.zeros((1, 40), np.float32)
  mask[:, :30] = 1.0
  short = model.apply(params, x, jnp.ones((1, 30)))
  long = model.apply(params, padded, mask)
  for key in ("logits", "features"):
    np.testing.assert_allclose(long[key][..., :30, :], short[key], atol=1e-5)
    assert np.all(np.asarray(long[key])[..., 30:, :] == 0.0), key


@pytest.mark.parametrize("scorer,pool_features", [("kas", "input"), ("mlp", "stage")])
def test_streaming_equals_the_whole_sequence_and_the_offline_scores(scorer, pool_features):
  _, model = _tiny_joint(scorer=scorer, pool_features=pool_features)
  t, d = 60, 6
  rng = np.random.default_rng(4)
  raw = (rng.normal(size=(t, d)) * 2.0 + 1.0).astype(np.float32)
  stats = pipeline.FeatureStats(mean=np.full(d, 1.0, np.float32),
                                std=np.full(d, 2.0, np.float32))
  x = stats.apply(raw)[None]                                            # (1, T, D)
  params = model.init(jax.random.key(5), x, jnp.ones((1, t)))["params"]
  offline = model.apply({"params": params}, x, jnp.ones((1, t)))

  runner = streaming.StreamingModel(model, params)
  state = runner.init_state(1)
  frames = []
  for i in range(t):
    state, out = runner.step(state, x[:, i])
    frames.append(jax.device_get(out))
  logits = np.stack([f["logits"] for f in frames], axis=2)              # (S, 1, T, C)
  assert np.abs(logits - np.asarray(offline["logits"])).max() <= 1e-5
  labels = np.stack([f["labels"] for f in frames], axis=1)
  np.testing.assert_array_equal(labels, offline["labels"])
  np.testing.assert_allclose(frames[-1]["probs"],
                             jax.nn.softmax(offline["logits"][-1, :, -1]), atol=1e-6)
  # The running scores after the last frame are the joint model's offline scores.
  last = frames[-1]
  assert (np.asarray(offline["seg_length"]) > 0).sum() >= 2   # several steps are seen
  np.testing.assert_array_equal(last["seg_start"], offline["seg_start"])
  np.testing.assert_array_equal(last["seg_length"], offline["seg_length"])
  np.testing.assert_allclose(last["step_scores"], offline["step_scores"], atol=1e-5)
  np.testing.assert_allclose(last["video_score"], offline["video_score"], atol=1e-5)
  # After frame i, they are the offline scores of the video cut after frame i.
  for i in (9, 33):
    mask = (np.arange(t) <= i).astype(np.float32)[None]
    cut = model.apply({"params": params}, x, jnp.asarray(mask))
    np.testing.assert_array_equal(frames[i]["seg_length"], cut["seg_length"])
    np.testing.assert_allclose(frames[i]["step_scores"], cut["step_scores"], atol=1e-5)
  # stream_video standardises with `stats` and returns the same per-frame results.
  video = streaming.stream_video(model, params, raw, stats=stats)
  np.testing.assert_array_equal(video["labels"], labels[0])
  np.testing.assert_allclose(video["step_scores"],
                             np.concatenate([f["step_scores"] for f in frames]),
                             atol=1e-6)
  assert video["video_score"].shape == (t,)


def test_run_tracker_equals_longest_runs_and_pooling():
  # Hand-worked: step 1 has three runs of length 2 (the earliest wins), step 2 one
  # frame, step 3 none.
  labels = np.array([[1, 1, 0, 1, 1, 2, 1, 1]])
  feats = np.arange(8, dtype=np.float32)[None, :, None] * np.ones((1, 1, 2), np.float32)
  runs = streaming.init_runs(1, 3, 2)
  for t in range(8):
    runs = streaming.update_runs(runs, t, jnp.asarray(labels[:, t]),
                                 jnp.asarray(feats[:, t]))
  np.testing.assert_array_equal(runs["best_start"], [[0, 5, 0]])
  np.testing.assert_array_equal(runs["best_length"], [[2, 1, 0]])
  np.testing.assert_allclose(runs["best_sum"][0, :, 0], [0 + 1, 5, 0])
  # Random labels with many runs and ties, against longest_runs / pool_segments after
  # every frame.
  rng = np.random.default_rng(6)
  labels = np.repeat(rng.integers(0, 7, size=(3, 24)), rng.integers(2, 5, size=24),
                     axis=1)[:, :48]                            # >= 48 frames of runs
  feats = rng.normal(size=(3, 48, 4)).astype(np.float32)
  runs = streaming.init_runs(3, 6, 4)
  update, offline = jax.jit(streaming.update_runs), jax.jit(longest_runs)
  for t in range(48):
    runs = update(runs, t, jnp.asarray(labels[:, t]), jnp.asarray(feats[:, t]))
    cut = (np.arange(48) <= t)[None].repeat(3, 0)          # frames 0..t of each video
    start, length = offline(jnp.asarray(labels), jnp.asarray(cut))
    np.testing.assert_array_equal(runs["best_start"], start)
    np.testing.assert_array_equal(runs["best_length"], length)
  pooled = runs["best_sum"] / np.maximum(np.asarray(runs["best_length"]), 1)[..., None]
  np.testing.assert_allclose(pooled, pool_segments(jnp.asarray(feats), start, length),
                             atol=1e-5)


def test_softmax_attention_is_refused():
  with pytest.raises(ValueError, match="softmax.*causal"):
    segmenters.build(NAME, dict(TINY, attention="softmax"))
  config, _ = _tiny_joint()
  config.model.attention = "softmax"
  with pytest.raises(ValueError, match="config.model.attention='softmax'"):
    create_model(config)


def test_streaming_refuses_an_offline_segmenter_and_bad_frames():
  config = default_config.get_config()
  config.model.update(TINY)
  model = create_model(config)                     # the offline conv_transformer
  init = lambda m: jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 8, 6)),
                                  jnp.ones((1, 8)))       # shapes suffice: nothing runs
  with pytest.raises(ValueError, match="causal_conv_transformer"):
    streaming.StreamingModel(model, init(model))
  _, model = _tiny_joint()
  params = init(model)
  runner = streaming.StreamingModel(model, params)       # {"params": ...} is accepted
  with pytest.raises(ValueError, match=r"expect \(1, 6\)"):
    runner.step(runner.init_state(1), jnp.zeros((1, 5)))


def test_registry_build_shapes_and_the_config_file():
  assert NAME in segmenters.names()
  model = segmenters.build(NAME, dict(TINY, num_classes=5, **{NAME: {"num_heads": 4}}))
  assert isinstance(model, causal.CausalMultiStageModel)
  assert (model.num_heads, model.channels, model.num_classes) == (4, 8, 5)
  x = jnp.ones((2, 16, 6))
  out, _ = model.init_with_output(jax.random.key(0), x, jnp.ones((2, 16)))
  assert out["logits"].shape == (2, 2, 16, 5)
  assert out["features"].shape == (2, 16, 8)
  # The causal demo config is the offline demo with only the segmenter changed.
  offline = _load_config("hha300_synthetic")
  online = _load_config("hha300_synthetic_causal")
  assert online.model.segmenter == NAME
  online.model.segmenter = offline.model.segmenter
  assert online.to_dict() == offline.to_dict()


def test_parameter_count_equals_the_offline_network_at_default_sizes():
  # Same layers, same sizes: only which frames the convolutions and attention read
  # differs, so the count is the offline conv_transformer's (4 stages x 10 layers x
  # 64 channels, 4 heads, 2048-d I3D inputs).
  def count(name):
    model = segmenters.build(name, {})
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 2048)),
                            jnp.ones((1, 32)))
    return state_lib.parameter_count(shapes["params"])
  assert count(NAME) == count("conv_transformer")


def test_trains_with_the_shared_train_step():
  config, model = _tiny_joint(dropout_rate=0.3, input_dropout_rate=0.2)
  config.dataset.bucket_size = 24
  config.batch_size = 4
  config.learning_rate = 5e-3
  mesh = state_lib.make_mesh()
  state = state_lib.create_train_state(config, model, 6, mesh)
  train_step, _ = steps.compile_steps(config, model, mesh)
  rng = np.random.default_rng(7)
  labels = np.repeat(np.arange(6)[None], 4, axis=0).repeat(4, axis=1)   # (4, 24)
  batch = dict(features=rng.normal(size=(4, 24, 6)).astype(np.float32) + labels[..., None],
               labels=labels.astype(np.int32), mask=np.ones((4, 24), np.float32),
               score=np.full(4, 3.0, np.float32), step_scores=np.full((4, 6), 0.5,
                                                                        np.float32),
               weight=np.ones(4, np.float32))
  batch = steps.to_device(batch, mesh)
  before = jax.tree.map(np.asarray, state.params)
  losses = []
  for _ in range(4):
    state, m = train_step(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  # Every parameter of the causal network received a gradient.
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                       state.params["segmenter"], before["segmenter"])
  assert all(jax.tree.leaves(moved)), moved


def test_debounce_labels_by_hand():
  raw = [0, 0, 1, 0, 1, 1, 1, 2, 1, 2, 2, 2, 2]
  # k = 3: the lone 1 (step 2) and the single 2 (step 7) never commit; the run of
  # three 1s commits at its third step (6), the run of four 2s at its third (11).
  want = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
  np.testing.assert_array_equal(streaming.debounce_labels(raw, 3), want)
  np.testing.assert_array_equal(streaming.debounce_labels(raw, 1), raw)
  with pytest.raises(ValueError, match="min_steps"):
    streaming.debounce_labels(raw, 0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_debounce_step_follows_the_numpy_definition(k):
  rng = np.random.default_rng(k)
  raw = np.where(rng.random((3, 80)) < 0.3, rng.integers(0, 4, (3, 80)),
                 np.repeat(rng.integers(0, 4, (3, 8)), 10, axis=1))     # runs + noise
  state = streaming.init_debounce(3)
  step = jax.jit(streaming.debounce_step, static_argnums=2)
  got = []
  for t in range(raw.shape[1]):
    state, committed = step(state, jnp.asarray(raw[:, t], jnp.int32), k)
    got.append(np.asarray(committed))
  got = np.stack(got, axis=1)
  for b in range(3):
    np.testing.assert_array_equal(got[b], streaming.debounce_labels(raw[b], k))


def test_streaming_with_stable_labels_scores_the_committed_segments():
  _, model = _tiny_joint()
  t, d = 50, 6
  x = np.random.default_rng(7).normal(size=(t, d)).astype(np.float32) * 2
  params = model.init(jax.random.key(1), x[None], jnp.ones((1, t)))["params"]
  params = jax.tree.map(lambda a: a * 3.0, params)      # labels that change often
  plain = streaming.stream_video(model, params, x)
  stable = streaming.stream_video(model, params, x, min_steps=4)
  np.testing.assert_array_equal(stable["raw_labels"], plain["labels"])
  np.testing.assert_array_equal(stable["labels"],
                                streaming.debounce_labels(plain["labels"], 4))
  assert (np.diff(stable["labels"]) != 0).sum() < (np.diff(plain["labels"]) != 0).sum()
  # The running segments are the longest runs of the committed labels.
  start, length = longest_runs(jnp.asarray(stable["labels"])[None], jnp.ones((1, t)), 6)
  np.testing.assert_array_equal(stable["seg_start"][-1], start[0])
  np.testing.assert_array_equal(stable["seg_length"][-1], length[0])
  with pytest.raises(ValueError, match="min_steps"):
    streaming.StreamingModel(model, params, min_steps=0)
