"""The spatial-attention RNN: token layouts, the per-step equations against NumPy, and
padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.handpose import FEATURE_DIM
from hhjax.models.heads import sa_rnn
from hhjax.models.heads.sa_rnn import SpatialAttentionRNN

N = 4


def _tiny(**overrides):
  fields = dict(num_segments=N, channels=5, attention_dim=3, hidden=4)
  fields.update(overrides)
  return SpatialAttentionRNN(**fields)


def _mask(lengths, t):
  return jnp.asarray(np.arange(t)[None] < np.asarray(lengths)[:, None], jnp.float32)


def _landmark_tokens_loop(v):
  """One frame's 212 values -> (42, 6), written out from the hhjax.handpose layout."""
  out = []
  for s in range(2):
    o = 106 * s
    for k in range(21):
      out.append([v[o + 3 * k], v[o + 3 * k + 1], v[o + 3 * k + 2],
                  v[o + 63 + 2 * k], v[o + 63 + 2 * k + 1], v[o + 105]])
  return np.array(out)


def test_landmark_tokens_follow_the_handpose_layout():
  x = np.random.default_rng(0).normal(size=(2, 3, FEATURE_DIM)).astype(np.float32)
  got = np.asarray(sa_rnn.landmark_tokens(jnp.asarray(x)))
  assert got.shape == (2, 3, 42, 6)
  for b in range(2):
    for t in range(3):
      np.testing.assert_array_equal(got[b, t], _landmark_tokens_loop(x[b, t]))
  # A spot check by index: right hand (slot 1), landmark 5.
  v = np.zeros(FEATURE_DIM, np.float32)
  v[106 + 15:106 + 18] = [1, 2, 3]
  v[106 + 63 + 10:106 + 63 + 12] = [4, 5]
  v[106 + 105] = 1
  tok = np.asarray(sa_rnn.landmark_tokens(jnp.asarray(v)))
  np.testing.assert_array_equal(tok[21 + 5], [1, 2, 3, 4, 5, 1])
  assert np.all(tok[:21, 5] == 0) and np.all(tok[21:, 5] == 1)
  with pytest.raises(ValueError, match="config.model.sa_rnn.tokens='landmarks'"):
    sa_rnn.landmark_tokens(jnp.zeros((2, 100)))


def test_grid_tokens():
  x = jnp.arange(24, dtype=jnp.float32).reshape(2, 12)
  got = sa_rnn.grid_tokens(x, 4)
  np.testing.assert_array_equal(got[1, 2], [18, 19, 20])   # location 2 of row 1
  with pytest.raises(ValueError, match="grid_size=5 does not divide"):
    sa_rnn.grid_tokens(x, 5)
  with pytest.raises(ValueError, match="config.model.sa_rnn.grid_size"):
    sa_rnn.grid_tokens(x, None)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _gru(p, h, x):
  """flax.linen.GRUCell: r, z gates; n = tanh(W_in x + b_in + r (W_hn h + b_hn))."""
  r = _sigmoid(x @ p["ir"]["kernel"] + p["ir"]["bias"] + h @ p["hr"]["kernel"])
  z = _sigmoid(x @ p["iz"]["kernel"] + p["iz"]["bias"] + h @ p["hz"]["kernel"])
  n = np.tanh(x @ p["in"]["kernel"] + p["in"]["bias"]
              + r * (h @ p["hn"]["kernel"] + p["hn"]["bias"]))
  return (1.0 - z) * n + z * h


def _sa_rnn_numpy(p, x, lengths, tokens):
  """The module docstring's steps, one video at a time."""
  scores, alphas = [], []
  for b, length in enumerate(lengths):
    idx = [int((k + 0.5) * length / N) for k in range(N)]       # window centres
    toks = [tokens(x[b, i]) for i in idx]                       # N x (L, C)
    h_att = np.zeros(p["rnn_att"]["hr"]["kernel"].shape[0])
    h_task = np.zeros_like(h_att)
    video_alpha = []
    for t in range(N):
      motion = toks[t] - toks[t - 1] if t else np.zeros_like(toks[t])
      h = np.concatenate([toks[t], motion], axis=-1)
      h = np.maximum(h @ p["fuse_0"]["kernel"] + p["fuse_0"]["bias"], 0)
      xt = h @ p["fuse_1"]["kernel"] + p["fuse_1"]["bias"]      # (L, D)
      c = np.concatenate([xt.mean(0) + xt.max(0), h_task])
      h_att = _gru(p["rnn_att"], h_att, c)
      e = np.tanh(xt @ p["att_x"]["kernel"] + p["att_x"]["bias"]
                  + h_att @ p["att_h"]["kernel"]) @ p["att_w"]["kernel"][:, 0]
      alpha = np.exp(e - e.max())
      alpha /= alpha.sum()
      h_task = _gru(p["rnn_task"], h_task, alpha @ xt)
      video_alpha.append(alpha)
    scores.append(h_task @ p["out"]["kernel"][:, 0] + p["out"]["bias"][0])
    alphas.append(video_alpha)
  return np.array(scores), np.array(alphas)


@pytest.mark.parametrize("tokens", ["landmarks", "grid"])
def test_matches_numpy_step_equations(tokens):
  if tokens == "landmarks":
    net, f, ref_tokens = _tiny(), FEATURE_DIM, _landmark_tokens_loop
  else:
    net, f = _tiny(tokens="grid", grid_size=4), 12
    ref_tokens = lambda v: v.reshape(4, 3)                      # noqa: E731
  lengths = [9, 3]                                              # 3 < N: frames repeat
  x = np.random.default_rng(1).normal(size=(2, 9, f)).astype(np.float32)
  mask = _mask(lengths, 9)
  params = net.init(jax.random.key(0), jnp.asarray(x), mask)
  score, alpha = net.apply(params, jnp.asarray(x), mask, return_attention=True)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params["params"])
  ref_score, ref_alpha = _sa_rnn_numpy(p, x.astype(np.float64), lengths, ref_tokens)
  assert alpha.shape == ref_alpha.shape == (2, N, 42 if tokens == "landmarks" else 4)
  np.testing.assert_allclose(alpha, ref_alpha, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(score, ref_score, rtol=1e-4, atol=1e-5)
  # Attention is not uniform: it depends on the tokens.
  assert float(np.ptp(np.asarray(alpha), axis=-1).max()) > 1e-4


def test_padding_never_changes_the_output():
  net = _tiny()
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, FEATURE_DIM)),
                  jnp.float32)
  mask = _mask([6, 2], 6)
  params = net.init(jax.random.key(1), x, mask)
  score, alpha = net.apply(params, x, mask, return_attention=True)
  padded = jnp.concatenate([x, jnp.full((2, 7, FEATURE_DIM), jnp.nan)], axis=1)
  got_score, got_alpha = jax.jit(
      lambda p, v, m: net.apply(p, v, m, return_attention=True))(
          params, padded, _mask([6, 2], 13))
  np.testing.assert_allclose(got_score, score, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_alpha, alpha, rtol=1e-5, atol=1e-6)
  # Garbage inside the valid frames does change it.
  assert not np.allclose(net.apply(params, x.at[0, 2].add(1.0), mask), score)


@pytest.mark.parametrize("field,value", [("tokens", "pixels"), ("num_segments", 0),
                                         ("channels", 0), ("hidden", -2),
                                         ("dropout_rate", 1.5)])
def test_bad_fields_name_the_config_field(field, value):
  x = jnp.zeros((1, 4, FEATURE_DIM))
  with pytest.raises(ValueError, match=f"config.model.sa_rnn.{field}"):
    _tiny(**{field: value}).init(jax.random.key(0), x, jnp.ones((1, 4)))


def test_auto_tokens_pick_landmarks_for_hand_pose_and_the_grid_otherwise():
  auto = sa_rnn.SpatialAttentionRNN(tokens="auto", grid_size=4)
  pose = jnp.zeros((1, 2, 212))
  np.testing.assert_array_equal(auto.tokenize(pose), sa_rnn.landmark_tokens(pose))
  flat = jnp.arange(16.0).reshape(1, 1, 16)
  np.testing.assert_array_equal(auto.tokenize(flat), flat.reshape(1, 1, 4, 4))
