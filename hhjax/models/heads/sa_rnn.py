"""The spatial-attention RNN for skill assessment (Li, Huang, Cai and Sato,
"Manipulation-Skill Assessment from Videos with Spatial Attention Network", ICCV
Workshops 2019), as a whole-video regressor.

`SpatialAttentionRNN()(x, mask, *, train=False) -> (B,)` has the call of
`hhjax.models.heads.video.VideoRegressor`: per-frame features `x` (B, T, F), a frame
mask (B, T) that is 1 on a prefix of valid frames and 0 after it, one score per video.
The score is unbounded (the paper trains it with a pairwise ranking loss, see
`hhjax.ranking`).

Spatial tokens. The model attends over L locations of C channels per frame:

* `tokens="landmarks"` (hand-pose features, F = 212, layout in `hhjax.handpose`): one
  token per hand landmark, L = 42 (21 per hand slot, left slot first), C = 6: the
  landmark's 3 wrist-relative values, its 2 image coordinates and the hand's presence
  flag (`landmark_tokens`).
* `tokens="grid"`: the frame's features are a flattened feature map, L = `grid_size`
  locations of C = F / L channels each, location-major (e.g. a 7 x 7 x 1024 map
  written in (H, W, C) order: `grid_size=49`). `python -m hhjax.extract --grid G`
  writes such maps from I3D's Mixed_5c (G x G cells per stream: `grid_size=G*G` with
  `dataset.streams="rgb"`).
* `tokens="auto"`: "landmarks" for 212-d hand-pose features, else "grid" (so one
  config serves both streams; on features with no spatial layout, such as pooled I3D
  vectors, the grid's "locations" are just equal chunks of the vector).

Steps (N = `num_segments`, 16; the paper uses 25):

1. Sampling: one frame per segment, the centre of each of N equal windows of the
   valid frames (`action_net.sample_frames`; the paper samples at random in training
   and takes the segment's last frame in testing). Padding is never read, so padding
   does not change the output.
2. Appearance and motion: appearance A_t is the sampled frame's tokens; motion is
   A_t - A_{t-1}, the change of every token since the previous sampled frame (zeros
   for the first). The paper feeds a second ResNet with stacked TV-L1 optical flow;
   the token difference is a cheap stand-in that needs no flow: for landmark tokens it
   is the landmark's displacement, for a feature grid the change of each location's
   features.
3. Fusion (eq. 1): X_t = Dense(ReLU(Dense([A_t; motion_t]))) over the channels of each
   location (two 1x1 convolutions), width `channels` (64): X_t is (L, D).
4. Per time step t = 1 .. N (eqs. 2-8), with h^task_0 = h^att_0 = 0:
     x_t = AvgPool(X_t) + MaxPool(X_t)                     (over the L locations)
     c_t = [x_t; h^task_{t-1}]
     h^att_t = GRU_att(c_t)
     e_i = w^T tanh(W_xa x_i + W_ha h^att_t + b)           (i = 1 .. L; x_i = X_t[i])
     alpha_t = softmax(e),  v_t = sum_i alpha_i x_i
     h^task_t = GRU_task(v_t)
   GRUs of `hidden` (128) units (flax `GRUCell`), attention width `attention_dim`
   (32, the paper's). The paper's two biases b_xa + b_ha are one bias b here (the
   `att_x` layer's).
5. Score (eq. 9): S = Dense(1)(h^task_N), after optional dropout (`dropout_rate`,
   0: the paper has none).

`return_attention=True` also returns alpha (B, N, L), for tests and figures.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.handpose import FEATURE_DIM, HAND_DIM, NUM_LANDMARKS
from hhjax.models.heads.action_net import sample_frames
from hhjax.models.layers import Dropout

SA_RNN_TOKENS = ("landmarks", "grid", "auto")
FIELD_PREFIX = "config.model.sa_rnn"
NUM_SLOTS = FEATURE_DIM // HAND_DIM                  # 2 hand slots
LANDMARK_TOKENS = NUM_SLOTS * NUM_LANDMARKS           # 42
LANDMARK_CHANNELS = 6                                 # x, y, z, u, v, presence


def landmark_tokens(x) -> jnp.ndarray:
  """Hand-pose features (..., 212) -> one token per landmark (..., 42, 6).

  Token s * 21 + k (slot s, landmark k) holds the landmark's wrist-relative (x, y, z),
  its image coordinates (u, v) and the presence flag of slot s.

  Raises:
    ValueError: if the last axis is not `hhjax.handpose.FEATURE_DIM` (212).
  """
  if x.shape[-1] != FEATURE_DIM:
    raise ValueError(f"{FIELD_PREFIX}.tokens='landmarks' needs hand-pose features of "
                     f"{FEATURE_DIM} dims (hhjax.handpose), got {x.shape[-1]}")
  lead = x.shape[:-1]
  per_slot = []
  for s in range(NUM_SLOTS):
    o = s * HAND_DIM
    rel = x[..., o:o + 3 * NUM_LANDMARKS].reshape(*lead, NUM_LANDMARKS, 3)
    img = x[..., o + 3 * NUM_LANDMARKS:o + 5 * NUM_LANDMARKS].reshape(
        *lead, NUM_LANDMARKS, 2)
    presence = jnp.broadcast_to(x[..., o + HAND_DIM - 1, None, None],
                                (*lead, NUM_LANDMARKS, 1))
    per_slot.append(jnp.concatenate([rel, img, presence], axis=-1))    # (..., 21, 6)
  return jnp.concatenate(per_slot, axis=-2)                            # (..., 42, 6)


def grid_tokens(x, grid_size: int) -> jnp.ndarray:
  """Flattened feature maps (..., L * C) -> (..., L, C), location-major.

  Raises:
    ValueError: unless `grid_size` is an integer >= 1 that divides the feature size.
  """
  if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
    raise ValueError(f"{FIELD_PREFIX}.grid_size must be an integer >= 1 for "
                     f"tokens='grid', got {grid_size!r}")
  if x.shape[-1] % grid_size:
    raise ValueError(f"{FIELD_PREFIX}.grid_size={grid_size} does not divide the "
                     f"feature size {x.shape[-1]}")
  return x.reshape(*x.shape[:-1], grid_size, x.shape[-1] // grid_size)


class SpatialAttentionRNN(nn.Module):
  """The spatial-attention RNN as a whole-video regressor; see the module docstring.

  `__call__(x (B, T, F), mask (B, T), *, train=False, return_attention=False)`
  returns the scores (B,), or `(scores, alpha (B, num_segments, L))`.
  """

  num_segments: int = 16
  tokens: str = "landmarks"
  grid_size: int | None = None
  channels: int = 64
  attention_dim: int = 32
  hidden: int = 128
  dropout_rate: float = 0.0

  def _check_fields(self) -> None:
    if self.tokens not in SA_RNN_TOKENS:
      raise ValueError(f"{FIELD_PREFIX}.tokens={self.tokens!r}; expected one of "
                       f"{SA_RNN_TOKENS}")
    for field in ("num_segments", "channels", "attention_dim", "hidden"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{FIELD_PREFIX}.{field} must be an integer >= 1, got "
                         f"{value!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"{FIELD_PREFIX}.dropout_rate must lie in [0, 1), got "
                       f"{self.dropout_rate}")

  def tokenize(self, x) -> jnp.ndarray:
    """(..., F) -> (..., L, C) spatial tokens, as configured by `tokens`."""
    if self.tokens == "landmarks" or (self.tokens == "auto"
                                      and x.shape[-1] == FEATURE_DIM):
      return landmark_tokens(x)
    return grid_tokens(x, self.grid_size)

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False, return_attention: bool = False):
    if x.ndim != 3:
      raise ValueError(f"sa_rnn: features must be (batch, frames, dims), got shape "
                       f"{tuple(x.shape)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
      raise ValueError(f"sa_rnn: mask shape {tuple(mask.shape)} does not match the "
                       f"features' (batch, frames) {tuple(x.shape[:2])}")
    self._check_fields()
    frames = sample_frames(x, mask, self.num_segments)                  # (B, N, F)
    appearance = self.tokenize(frames)                                  # (B, N, L, C)
    previous = jnp.concatenate([appearance[:, :1], appearance[:, :-1]], axis=1)
    motion = appearance - previous                                      # 0 at t = 0
    h = jnp.concatenate([appearance, motion], axis=-1)
    h = nn.relu(nn.Dense(self.channels, name="fuse_0")(h))
    feats = nn.Dense(self.channels, name="fuse_1")(h)                   # (B, N, L, D)

    att_cell = nn.GRUCell(self.hidden, name="rnn_att")
    task_cell = nn.GRUCell(self.hidden, name="rnn_task")
    proj_x = nn.Dense(self.attention_dim, name="att_x")(feats)          # (B, N, L, A)
    proj_h = nn.Dense(self.attention_dim, use_bias=False, name="att_h")
    att_w = nn.Dense(1, use_bias=False, name="att_w")
    batch = x.shape[0]
    h_att = jnp.zeros((batch, self.hidden), feats.dtype)
    h_task = jnp.zeros((batch, self.hidden), feats.dtype)
    alphas = []
    # A Python loop: N is small (16-25) and each step reads the other RNN's state.
    for t in range(self.num_segments):
      x_t = feats[:, t]                                                 # (B, L, D)
      pooled = x_t.mean(axis=1) + x_t.max(axis=1)                       # (B, D)
      h_att, _ = att_cell(h_att, jnp.concatenate([pooled, h_task], axis=-1))
      e = att_w(jnp.tanh(proj_x[:, t] + proj_h(h_att)[:, None]))[..., 0]  # (B, L)
      alpha = jax.nn.softmax(e, axis=-1)
      v = jnp.einsum("bl,bld->bd", alpha, x_t)
      h_task, _ = task_cell(h_task, v)
      alphas.append(alpha)
    h_task = Dropout(self.dropout_rate, deterministic=not train)(h_task)
    score = nn.Dense(1, name="out")(h_task)[:, 0]
    if return_attention:
      return score, jnp.stack(alphas, axis=1)                           # (B, N, L)
    return score
