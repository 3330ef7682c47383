"""ACTION-NET: the hybrid dynamic-static context-aware attention network (Zeng et al.,
"Hybrid Dynamic-static Context-aware Attention Network for Action Assessment in Long
Videos", ACM MM 2020), as a whole-video regressor.

`ActionNet()(x, mask, *, train=False) -> (B,)` has the call of
`hhjax.models.heads.video.VideoRegressor`: per-frame features `x` (B, T, F), a frame
mask (B, T) that is 1 on a prefix of valid frames and 0 on the padding after it, and
one score per video. The score is a sigmoid output in (0, 1); the caller maps it to
the data set's score range.

Two sets of instances are built from the valid frames of `x` inside the module:

* dynamic stream: `num_segments` segment means (`segment_means`): the valid length L
  is cut into windows [floor(k L / n), floor((k + 1) L / n)), k = 0 .. n - 1, and each
  window's frames are averaged. When L < n a window would be empty; it then holds the
  single frame at its start, so frames repeat. The paper feeds I3D segment features
  here; a mean of per-frame I3D features is the stand-in.
* static stream: `num_frames` frames (`sample_frames`), frame floor((k + 1/2) L / n),
  the centre of window k. The paper feeds ResNet features of the detected athlete in
  frames sampled at 1 frame/s.

Only valid frames are read, so the output does not depend on padding. `dynamic_dims`
and `static_dims` may restrict a stream to a slice `(start, stop)` of the feature axis
(e.g. the flow half of I3D for the dynamic stream and the RGB half for the static one).

Each stream (`ContextAttention`, parameters not shared between the streams):

1. Embedding: Dense -> ReLU -> Dense -> ReLU (`dynamic_embed` 512, 256;
   `static_embed` 1024, 256: the paper's 1024 -> 512 -> 256 and 2048 -> 1024 -> 256).
   Its output f_I^i is the instance feature.
2. Context (`context`):
   * "gcn" (the paper's temporal instance-wise GCN unit): adjacency
     A_ij = exp(-||f_I^i - f_I^j||_2 / K) (eq. 1, K = `kernel_scale`, 1), self-loops
     added and normalised as in the paper's eq. 2, A_hat = D^-1/2 (A + I) D^-1/2 with
     D the row sums of A + I (`gcn_adjacency`); then two GCN layers
     H <- ReLU(Dense(A_hat H)) of width 256 (eq. 3: ReLU after each layer). Eq. 3 writes
     the unnormalised A + I; the normalised A_hat of eq. 2 is used, as the authors'
     released code does. The dense layer's bias is added after the neighbour sum, as
     in that code.
     `adjacency="temporal"` switches to the released code's graph instead: the
     distance is the instances' time offset |i - j| rather than their feature
     distance, and no identity is added (the diagonal exp(0) = 1 already is a
     self-loop); see `temporal_adjacency`.
   * "lstm" / "bilstm": an LSTM (`lstm_hidden`, 256) or a bidirectional LSTM (128 per
     direction) over the instances in time order, in place of the GCN unit (the
     paper's "LSTM/Bi-LSTM + SAU" ablation).
   * "none": no context; the attention reads the instance features alone (the
     paper's "SAU" ablation).
   The fused local-context feature is f_C^i = [f_I^i; f_R^i] (eq. 4), 512 wide, or
   f_I^i alone (256) with `context="none"`.
3. Pooling (`pooling`): "attention" (the ATT-U): weights
   eps = softmax_i(Dense(1)(ReLU(Dense(128)(f_C^i)))) over the instances, and the stream
   feature is sum_i eps_i f_C^i (eq. 5; the hidden width and the softmax are those of
   the released code). "mean": the plain average of the f_C^i (the paper's "Avg
   Pooling" ablation when combined with `context="none"`).

Head (eq. 6): the two stream features are concatenated (2 x 512 = 1024, as the
paper's first score layer of 1024 x 128) -> Dense 128 -> ReLU -> dropout 0.5 ->
Dense 1 -> sigmoid.

Parameter groups: the paper trains the context-aware attention modules (embedding,
GCN and attention unit) at lr 0.01 and the score head at lr 0.05 (SGD, momentum 0.9,
weight decay 1e-4). The parameters sit under three top-level names: "dynamic" and
"static" (the two streams: the attention group) and "head" (the score head);
`param_labels(params)` labels every leaf "attention" or "head" for
`optax.multi_transform`, and `PAPER_LEARNING_RATES` gives the two rates.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.layers import Dropout

ACTION_NET_CONTEXTS = ("gcn", "none", "lstm", "bilstm")
ACTION_NET_POOLINGS = ("attention", "mean")
ACTION_NET_ADJACENCIES = ("feature", "temporal")
# Learning rates per parameter group in the paper (section 5.2).
PAPER_LEARNING_RATES = {"attention": 0.01, "head": 0.05}
FIELD_PREFIX = "config.model.action_net"


def _check_count(name: str, n: int) -> int:
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
  return n


def valid_lengths(mask) -> jnp.ndarray:
  """The number of valid frames of each video, (B,) int32 (mask 1 on a prefix)."""
  return (mask > 0).astype(jnp.int32).sum(-1)


def _zero_padding(x, mask):
  # Padding may hold anything (even NaN); a zero weight times NaN would still be NaN.
  return jnp.where(mask[..., None] > 0, x, jnp.zeros((), x.dtype))


def segment_means(x, mask, n: int) -> jnp.ndarray:
  """Means of `n` nearly-equal windows of each video's valid frames.

  Window k of a video with L valid frames covers frames
  floor(k L / n) .. max(floor((k + 1) L / n), floor(k L / n) + 1) - 1, so the windows
  tile the valid frames when L >= n and repeat frames when L < n. Padding is never
  read; a video with no valid frame gives zeros.

  Args:
    x: (B, T, F) per-frame features.
    mask: (B, T), 1 on the valid frames (a prefix), 0 on padding.
    n: the number of windows (a Python int).

  Returns:
    (B, n, F) window means.

  Raises:
    ValueError: if `n` is not an integer >= 1.
  """
  n = _check_count("segment_means: n", n)
  length = valid_lengths(mask)[:, None]                                 # (B, 1)
  k = jnp.arange(n, dtype=jnp.int32)[None]                               # (1, n)
  start = (k * length) // n
  stop = jnp.maximum(((k + 1) * length) // n, start + 1)                 # (B, n)
  t = jnp.arange(x.shape[1], dtype=jnp.int32)[None, None]                # (1, 1, T)
  inside = (t >= start[..., None]) & (t < stop[..., None])               # (B, n, T)
  weights = inside / (stop - start)[..., None].astype(x.dtype)
  weights = weights * (length[..., None] > 0)
  # HIGHEST: means must not be rounded to bf16/TF32 on accelerators.
  return jnp.einsum("bnt,btf->bnf", weights.astype(x.dtype), _zero_padding(x, mask),
                    precision=jax.lax.Precision.HIGHEST)


def sample_frame_indices(mask, n: int) -> jnp.ndarray:
  """(B, n) int32 indices floor((2k + 1) L / (2n)) of the frames `sample_frames` takes
  (0 for a video with no valid frame)."""
  n = _check_count("sample_frames: n", n)
  length = valid_lengths(mask)[:, None]
  k = jnp.arange(n, dtype=jnp.int32)[None]
  return ((2 * k + 1) * length) // (2 * n)


def sample_frames(x, mask, n: int) -> jnp.ndarray:
  """`n` frames of each video, the centres of `n` equal windows of its valid frames.

  Frame k is floor((k + 1/2) L / n) for L valid frames (deterministic; frames repeat
  when L < n). Padding is never read; a video with no valid frame gives zeros.

  Args:
    x: (B, T, F) per-frame features.
    mask: (B, T), 1 on the valid frames (a prefix), 0 on padding.
    n: the number of frames (a Python int).

  Returns:
    (B, n, F) sampled frames.

  Raises:
    ValueError: if `n` is not an integer >= 1.
  """
  idx = sample_frame_indices(mask, n)                                    # (B, n)
  frames = jnp.take_along_axis(x, idx[..., None], axis=1)                # (B, n, F)
  empty = valid_lengths(mask)[:, None, None] == 0
  return jnp.where(empty, jnp.zeros((), x.dtype), frames)


def _normalise(a) -> jnp.ndarray:
  """D^-1/2 a D^-1/2 with D the row sums of `a` (..., N, N), symmetric `a`."""
  d = jax.lax.rsqrt(a.sum(-1))
  return a * d[..., :, None] * d[..., None, :]


def gcn_adjacency(f, kernel_scale: float = 1.0, self_loops: bool = True) -> jnp.ndarray:
  """The normalised adjacency of the GCN unit over instance features (eqs. 1-2).

  A_ij = exp(-||f_i - f_j||_2 / kernel_scale); with `self_loops`, A + I; then
  D^-1/2 (A + I) D^-1/2 with D the row sums. The distance has a finite gradient also
  where two instances coincide (a zero distance gets a zero gradient).

  Args:
    f: (B, N, D) instance features.
    kernel_scale: K > 0, the distance scale.
    self_loops: add the identity before normalising (eq. 2 of the paper).

  Returns:
    (B, N, N) normalised adjacency.

  Raises:
    ValueError: if `kernel_scale` is not positive.
  """
  if not kernel_scale > 0:
    raise ValueError(f"{FIELD_PREFIX}.kernel_scale must be > 0, got {kernel_scale}")
  diff = f[:, :, None, :] - f[:, None, :, :]                              # (B, N, N, D)
  sq = jnp.sum(diff * diff, axis=-1)
  positive = sq > 0
  dist = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  a = jnp.exp(-dist / kernel_scale)
  if self_loops:
    a = a + jnp.eye(f.shape[1], dtype=a.dtype)
  return _normalise(a)


def temporal_adjacency(n: int, kernel_scale: float = 1.0) -> jnp.ndarray:
  """The graph of the authors' released code: A_ij = exp(-|i - j| / kernel_scale) over
  instance positions, normalised D^-1/2 A D^-1/2 with no identity added; (n, n)."""
  n = _check_count("temporal_adjacency: n", n)
  if not kernel_scale > 0:
    raise ValueError(f"{FIELD_PREFIX}.kernel_scale must be > 0, got {kernel_scale}")
  t = jnp.arange(n, dtype=jnp.float32)
  return _normalise(jnp.exp(-jnp.abs(t[:, None] - t[None, :]) / kernel_scale))


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{FIELD_PREFIX}.{field}={value!r}; expected one of {choices}")


class ContextAttention(nn.Module):
  """One stream: embedding, context unit and pooling (module docstring, 1-3).

  `__call__(instances (B, N, F))` returns `(feature (B, D), weights (B, N))`: the
  pooled fused feature (D = 2 x 256 with a context unit, 256 without) and the
  pooling weights over the instances (uniform for `pooling="mean"`).
  """

  embed: tuple[int, ...] = (512, 256)
  context: str = "gcn"
  pooling: str = "attention"
  adjacency: str = "feature"
  kernel_scale: float = 1.0
  gcn_features: tuple[int, ...] = (256, 256)
  lstm_hidden: int = 256
  attention_hidden: int = 128

  @nn.compact
  def __call__(self, instances):
    _check_choice("context", self.context, ACTION_NET_CONTEXTS)
    _check_choice("pooling", self.pooling, ACTION_NET_POOLINGS)
    _check_choice("adjacency", self.adjacency, ACTION_NET_ADJACENCIES)
    f = instances
    for i, width in enumerate(self.embed):
      f = nn.relu(nn.Dense(width, name=f"embed_{i}")(f))                # (B, N, 256)
    if self.context == "gcn":
      if self.adjacency == "feature":
        adj = gcn_adjacency(f, self.kernel_scale)                        # (B, N, N)
      else:
        adj = temporal_adjacency(f.shape[1], self.kernel_scale)[None].astype(f.dtype)
      c = f
      for i, width in enumerate(self.gcn_features):
        c = nn.relu(nn.Dense(width, name=f"gcn_{i}")(jnp.matmul(adj, c)))
      fused = jnp.concatenate([f, c], axis=-1)                           # (B, N, 512)
    elif self.context == "lstm":
      # Cells named explicitly: a cell built here belongs to this module's scope.
      c = nn.RNN(nn.OptimizedLSTMCell(self.lstm_hidden, name="lstm"))(f)
      fused = jnp.concatenate([f, c], axis=-1)
    elif self.context == "bilstm":
      if self.lstm_hidden % 2:
        raise ValueError(f"{FIELD_PREFIX}.lstm_hidden must be even for "
                         f"context='bilstm' (split between directions), got "
                         f"{self.lstm_hidden}")
      half = self.lstm_hidden // 2
      c = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(half, name="lstm_forward")),
                           nn.RNN(nn.OptimizedLSTMCell(half, name="lstm_backward")))(f)
      fused = jnp.concatenate([f, c], axis=-1)
    else:
      fused = f
    n = fused.shape[1]
    if self.pooling == "mean":
      weights = jnp.full(fused.shape[:2], 1.0 / n, fused.dtype)          # (B, N)
    else:
      e = nn.relu(nn.Dense(self.attention_hidden, name="att_0")(fused))
      e = nn.Dense(1, name="att_1")(e)[..., 0]                           # (B, N)
      weights = jax.nn.softmax(e, axis=-1)
    return jnp.einsum("bn,bnd->bd", weights, fused), weights


class ScoreHead(nn.Module):
  """Dense -> ReLU -> dropout -> Dense 1 -> sigmoid: (B, D) -> (B,) in (0, 1)."""

  hidden: int = 128
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, h, *, train: bool = False):
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(h))
    h = Dropout(self.dropout_rate, deterministic=not train)(h)
    return jax.nn.sigmoid(nn.Dense(1, name="out")(h)[:, 0])


def _feature_slice(field: str, dims, num_features: int) -> slice:
  if dims is None:
    return slice(0, num_features)
  try:
    start, stop = (int(v) for v in dims)
  except (TypeError, ValueError):
    raise ValueError(f"{FIELD_PREFIX}.{field} must be None or (start, stop), got "
                     f"{dims!r}") from None
  if not 0 <= start < stop <= num_features:
    raise ValueError(f"{FIELD_PREFIX}.{field}={tuple(dims)} is not a non-empty slice "
                     f"of the {num_features} feature dimensions")
  return slice(start, stop)


class ActionNet(nn.Module):
  """ACTION-NET as a whole-video regressor; see the module docstring.

  `__call__(x (B, T, F), mask (B, T), *, train=False, return_attention=False)`
  returns the scores (B,) in (0, 1), or with `return_attention` the pair
  `(scores, {"dynamic": (B, num_segments), "static": (B, num_frames)})` of pooling
  weights.
  """

  num_segments: int = 16
  num_frames: int = 16
  dynamic_dims: tuple[int, int] | None = None
  static_dims: tuple[int, int] | None = None
  dynamic_embed: tuple[int, ...] = (512, 256)
  static_embed: tuple[int, ...] = (1024, 256)
  context: str = "gcn"
  pooling: str = "attention"
  adjacency: str = "feature"
  kernel_scale: float = 1.0
  gcn_features: tuple[int, ...] = (256, 256)
  lstm_hidden: int = 256
  attention_hidden: int = 128
  head_hidden: int = 128
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False, return_attention: bool = False):
    if x.ndim != 3:
      raise ValueError(f"action_net: features must be (batch, frames, dims), got "
                       f"shape {tuple(x.shape)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
      raise ValueError(f"action_net: mask shape {tuple(mask.shape)} does not match "
                       f"the features' (batch, frames) {tuple(x.shape[:2])}")
    for field in ("num_segments", "num_frames"):
      _check_count(f"{FIELD_PREFIX}.{field}", getattr(self, field))
    _check_choice("context", self.context, ACTION_NET_CONTEXTS)
    _check_choice("pooling", self.pooling, ACTION_NET_POOLINGS)
    _check_choice("adjacency", self.adjacency, ACTION_NET_ADJACENCIES)
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"{FIELD_PREFIX}.dropout_rate must lie in [0, 1), got "
                       f"{self.dropout_rate}")
    dyn = _feature_slice("dynamic_dims", self.dynamic_dims, x.shape[-1])
    sta = _feature_slice("static_dims", self.static_dims, x.shape[-1])
    segments = segment_means(x[..., dyn], mask, self.num_segments)       # (B, Ns, Fd)
    frames = sample_frames(x[..., sta], mask, self.num_frames)           # (B, Nf, Fs)
    shared: dict[str, Any] = dict(
        context=self.context, pooling=self.pooling, adjacency=self.adjacency,
        kernel_scale=self.kernel_scale, gcn_features=tuple(self.gcn_features),
        lstm_hidden=self.lstm_hidden, attention_hidden=self.attention_hidden)
    f_dyn, w_dyn = ContextAttention(embed=tuple(self.dynamic_embed), name="dynamic",
                                    **shared)(segments)
    f_sta, w_sta = ContextAttention(embed=tuple(self.static_embed), name="static",
                                    **shared)(frames)
    score = ScoreHead(self.head_hidden, self.dropout_rate, name="head")(
        jnp.concatenate([f_dyn, f_sta], axis=-1), train=train)
    if return_attention:
      return score, {"dynamic": w_dyn, "static": w_sta}
    return score


def param_labels(params) -> Any:
  """The parameter tree with every leaf replaced by its group: "head" for the score
  head, "attention" for the two streams (for `optax.multi_transform`).

  Accepts the `params` collection or the whole variables dict holding it.
  """
  tree = params.get("params", params) if hasattr(params, "get") else params

  def label(path, _):
    top = getattr(path[0], "key", None)
    return "head" if top == "head" else "attention"

  return jax.tree_util.tree_map_with_path(label, tree)
