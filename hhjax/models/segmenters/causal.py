"""A causal (online) multi-stage convolution-transformer: Li et al.'s network without
look-ahead (registered as `causal_conv_transformer`).

The structure is that of `conv_transformer` (stages of dilated residual layers, a
transformer block in every stage after the first, a classifier per stage, the softmax of
one stage's logits feeding the next), but the output at frame t reads only frames
0..t, so the same network can label a video while it is being recorded (Li et al.
assess finished videos; this online variant is not in their paper):

* **Causal dilated convolutions.** Kernel 3 with dilation d reads frames t-2d, t-d and t
  (left padding of 2d zeros, none on the right): y_t = W_0 x_{t-2d} + W_1 x_{t-d} +
  W_2 x_t + b. A stage of L layers (dilations 1..2^(L-1)) sees frames
  t - (2^(L+1) - 2) .. t, i.e. 2046 past frames at L = 10 (the offline stage sees
  2^L - 1 = 1023 frames on each side).
* **Causal linear attention** (Katharopoulos et al.'s recurrent form): with
  phi(x) = elu(x) + 1,
      out_t = phi(q_t)^T S_t / (phi(q_t)^T z_t),
      S_t = sum_{j<=t} phi(k_j) v_j^T,   z_t = sum_{j<=t} phi(k_j).
  Over a whole sequence S and z are prefix sums over time (`jnp.cumsum`): O(T d^2)
  memory per head, small at d = channels / heads = 16. Frame by frame they are two
  running sums, so the per-frame cost does not grow with t. Softmax attention has no
  such constant-memory recurrence and is refused (`attention` is "linear" or "none").
* **Per-frame pieces** (LayerNorm, the 1x1 convolutions as `Dense`, the FFN, the
  classifiers) are causal as they stand; the input's channel dropout (MS-TCN's
  Dropout2d) is one mask per video, off at inference.

Masking: the model is meant for videos padded at their END (the repository's batches);
causality alone makes the outputs at valid frames independent of the padding, every
convolution still reads its input times the mask, padded keys are dropped from the
running sums, and padded frames' outputs are 0.

Streaming: besides `__call__(x (B, T, D), mask (B, T), train=False)` (the segmenter
contract: `logits` (S, B, T, C), `features` (B, T, channels)), the module has
`init_cache(batch)` (unbound: zeros shaped from the fields) and `step(cache, x_t (B, D))`
(apply with `method="step"`) -> `(cache, {"logits": (S, B, C), "features": (B,
channels)})`, which equals `__call__` on the whole sequence frame for frame. The cache
holds the frame counter `t` and, per stage, a ring buffer of the last 2d inputs of each
causal convolution (the slot of frame j is j mod 2d, so frame t-2d is overwritten by
frame t after being read) and the attention sums `s` (B, H, d, d) and `z` (B, H, d).
`hhjax.inference.streaming` wraps this with the scoring head.

Choices: the parameter shapes and counts equal those of `conv_transformer` at the same
sizes (the 1x1 convolutions become `Dense` layers of the same size; the causal kernel
is (3, C, C) with the same initialisation as `nn.Conv`), so the two are compared at
equal capacity. Dropout is the networks' shared `hhjax.models.layers.Dropout`. The
layers are written in `setup` style so that `__call__` and `step` share their
parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from hhjax.models.attention import elu_feature_map
from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.segmenters.conv_transformer import ConvTransformerFields
from hhjax.models.tcn import masked, residual

CAUSAL_ATTENTION_KINDS = ("linear", "none")


def causal_conv(x, kernel, bias, dilation: int):
  """Causal dilated convolution over a sequence.

  Args:
    x: `(B, T, C)`.
    kernel: `(3, C, F)`; tap k reads frame t - (2 - k) * dilation.
    bias: `(F,)`.
    dilation: d >= 1.

  Returns:
    `(B, T, F)`: y_t = W_0 x_{t-2d} + W_1 x_{t-d} + W_2 x_t + b, with x_j = 0 for j < 0.
  """
  t = x.shape[1]
  padded = jnp.pad(x, ((0, 0), (2 * dilation, 0), (0, 0)))               # (B, T+2d, C)
  taps = jnp.concatenate([padded[:, :t], padded[:, dilation:dilation + t], x],
                         axis=-1)                                        # (B, T, 3C)
  return taps @ kernel.reshape(-1, kernel.shape[-1]) + bias


def causal_conv_step(buffer, t, x, kernel, bias, dilation: int):
  """One frame of `causal_conv`.

  Args:
    buffer: `(B, 2d, C)` ring of the last 2d inputs; frame j lives in slot j mod 2d
      (zeros before the first frames, as the left padding).
    t: the index of the current frame (int scalar, may be traced).
    x: `(B, C)` the input at frame t.
    kernel, bias, dilation: as in `causal_conv`.

  Returns:
    `(buffer, y)`: the ring with frame t written over frame t-2d, and y_t `(B, F)`.
  """
  slot = t % (2 * dilation)
  oldest = lax.dynamic_index_in_dim(buffer, slot, axis=1, keepdims=False)  # x_{t-2d}
  middle = lax.dynamic_index_in_dim(buffer, (slot + dilation) % (2 * dilation), axis=1,
                                    keepdims=False)                         # x_{t-d}
  taps = jnp.concatenate([oldest, middle, x], axis=-1)                      # (B, 3C)
  y = taps @ kernel.reshape(-1, kernel.shape[-1]) + bias
  buffer = lax.dynamic_update_index_in_dim(buffer, x, slot, axis=1)
  return buffer, y


def causal_linear_attention(q, k, v, mask, eps: float = 1e-6):
  """Linear attention in which frame t attends to frames 0..t only.

  Args:
    q, k, v: `(B, T, H, d)`.
    mask: `(B, T)`, 1 for real frames (padded keys are dropped from the sums).
    eps: guards the normaliser (as `hhjax.models.attention.linear_attention`).

  Returns:
    `(B, T, H, d)`; padded query frames are zero. Memory O(B T H d^2) for the prefix
    sums.
  """
  m = mask[:, :, None, None].astype(q.dtype)
  phi_q = elu_feature_map(q)
  phi_k = elu_feature_map(k) * m
  s = jnp.cumsum(jnp.einsum("bthd,bthe->bthde", phi_k, v * m), axis=1)  # (B, T, H, d, d)
  z = jnp.cumsum(phi_k, axis=1)                                          # (B, T, H, d)
  num = jnp.einsum("bthd,bthde->bthe", phi_q, s)
  den = jnp.einsum("bthd,bthd->bth", phi_q, z)[..., None]
  return num / (den + eps) * m


def causal_linear_attention_step(s, z, q, k, v, eps: float = 1e-6):
  """One frame of `causal_linear_attention`.

  Args:
    s: `(B, H, d, d)` running sum of phi(k_j) v_j^T over the past frames.
    z: `(B, H, d)` running sum of phi(k_j).
    q, k, v: `(B, H, d)` at the current frame.

  Returns:
    `(s, z, out)` with the sums updated to include the current frame and out `(B, H, d)`.
  """
  phi_k = elu_feature_map(k)
  s = s + jnp.einsum("bhd,bhe->bhde", phi_k, v)
  z = z + phi_k
  phi_q = elu_feature_map(q)
  num = jnp.einsum("bhd,bhde->bhe", phi_q, s)
  den = jnp.einsum("bhd,bhd->bh", phi_q, z)[..., None]
  return s, z, num / (den + eps)


class CausalConv(nn.Module):
  """Kernel-3 causal dilated convolution, `channels` -> `channels`."""

  channels: int
  dilation: int = 1

  def setup(self):
    # nn.Conv's default initialisation for a (3, C, C) kernel (fan-in 3C).
    self.kernel = self.param("kernel", nn.linear.default_kernel_init,
                             (3, self.channels, self.channels))
    self.bias = self.param("bias", nn.initializers.zeros, (self.channels,))

  def __call__(self, x):
    """`(B, T, C)` -> `(B, T, C)`."""
    return causal_conv(x, self.kernel, self.bias, self.dilation)

  def step(self, buffer, t, x):
    """`(B, 2d, C)` ring, frame index, `(B, C)` -> `(ring, (B, C))`."""
    return causal_conv_step(buffer, t, x, self.kernel, self.bias, self.dilation)


class CausalResidualLayer(nn.Module):
  """ReLU(causal dilated conv) -> 1x1 conv -> dropout, added to the input."""

  channels: int
  dilation: int
  dropout_rate: float = 0.5

  def setup(self):
    self.conv_dilated = CausalConv(self.channels, self.dilation)
    self.conv_1x1 = nn.Dense(self.channels)
    self.dropout = Dropout(self.dropout_rate)

  def __call__(self, x, mask, *, train: bool = False):
    h = nn.relu(self.conv_dilated(masked(x, mask)))                       # (B, T, C)
    h = self.dropout(self.conv_1x1(h), deterministic=not train)
    return residual(x, h, mask)

  def step(self, buffer, t, x):
    buffer, h = self.conv_dilated.step(buffer, t, x)                     # (B, C)
    return buffer, x + self.conv_1x1(nn.relu(h))


class CausalMultiHeadAttention(nn.Module):
  """Q/K/V projections, causal linear attention per head, output projection."""

  channels: int
  num_heads: int = 4

  def setup(self):
    if self.channels % self.num_heads:
      raise ValueError(f"channels={self.channels} is not divisible by "
                       f"num_heads={self.num_heads}")
    head = (self.num_heads, self.channels // self.num_heads)
    self.query = nn.DenseGeneral(head)
    self.key = nn.DenseGeneral(head)
    self.value = nn.DenseGeneral(head)
    self.out = nn.DenseGeneral(self.channels, axis=(-2, -1))

  def __call__(self, x, mask):
    """`(B, T, C)` -> `(B, T, C)`."""
    out = causal_linear_attention(self.query(x), self.key(x), self.value(x), mask)
    return self.out(out)

  def step(self, s, z, x):
    """Running sums and `(B, C)` -> `(s, z, (B, C))`."""
    s, z, out = causal_linear_attention_step(s, z, self.query(x), self.key(x),
                                             self.value(x))
    return s, z, self.out(out)


class CausalTransformerBlock(nn.Module):
  """Pre-norm block: x + Attn(LN(x)), then x + FFN(LN(x)); per-frame LayerNorm."""

  channels: int
  attention: str = "linear"
  num_heads: int = 4
  ffn_factor: int = 2
  dropout_rate: float = 0.1

  def setup(self):
    if self.attention == "linear":
      self.norm_attn = nn.LayerNorm()
      self.attn = CausalMultiHeadAttention(self.channels, self.num_heads)
    self.norm_ffn = nn.LayerNorm()
    self.ffn_in = nn.Dense(self.channels * self.ffn_factor)
    self.ffn_out = nn.Dense(self.channels)
    self.dropout = Dropout(self.dropout_rate)

  def __call__(self, x, mask, *, train: bool = False):
    if self.attention == "linear":
      h = self.attn(self.norm_attn(x), mask)
      x = residual(x, self.dropout(h, deterministic=not train), mask)
    h = self.ffn_out(nn.gelu(self.ffn_in(self.norm_ffn(x))))
    return residual(x, self.dropout(h, deterministic=not train), mask)

  def step(self, cache: dict, x):
    """`cache` {"s", "z"} (empty without attention), `(B, C)` -> `(cache, (B, C))`."""
    if self.attention == "linear":
      s, z, h = self.attn.step(cache["s"], cache["z"], self.norm_attn(x))
      cache = dict(s=s, z=z)
      x = x + h
    return cache, x + self.ffn_out(nn.gelu(self.ffn_in(self.norm_ffn(x))))


class CausalStage(nn.Module):
  """1x1 input projection, `num_layers` causal residual layers (dilation 2^i), the
  transformer block (`with_block`), a per-frame classifier."""

  num_classes: int
  num_layers: int
  channels: int
  dropout_rate: float
  with_block: bool
  attention: str = "linear"
  num_heads: int = 4
  attention_dropout_rate: float = 0.1

  def setup(self):
    self.conv_in = nn.Dense(self.channels)
    self.layers = [CausalResidualLayer(self.channels, 2**i, self.dropout_rate)
                   for i in range(self.num_layers)]
    self.block = (CausalTransformerBlock(self.channels, self.attention, self.num_heads,
                                         dropout_rate=self.attention_dropout_rate)
                  if self.with_block else None)
    self.classifier = nn.Dense(self.num_classes)

  def __call__(self, x, mask, *, train: bool = False):
    """`(B, T, D)` -> features `(B, T, C)`, logits `(B, T, num_classes)`."""
    h = masked(self.conv_in(x), mask)
    for layer in self.layers:
      h = layer(h, mask, train=train)
    if self.block is not None:
      h = self.block(h, mask, train=train)
    return h, masked(self.classifier(h), mask)

  def step(self, cache: dict, t, x):
    """`cache` {"conv": [rings], "block": {...}}, `(B, D)` -> `(cache, h, logits)`."""
    h = self.conv_in(x)
    rings = []
    for layer, ring in zip(self.layers, cache["conv"]):
      ring, h = layer.step(ring, t, h)
      rings.append(ring)
    new = dict(conv=rings)
    if self.block is not None:
      new["block"], h = self.block.step(cache["block"], h)
    return new, h, self.classifier(h)


@register("causal_conv_transformer")
class CausalMultiStageModel(ConvTransformerFields):
  """Causal multi-stage convolution-transformer (defaults: 4 stages x 10 layers x 64
  channels, linear attention with 4 heads); see the module docstring.

  `__call__(x, mask)` with `x` (B, T, D) returns `{"logits", "features"}`: per-stage
  logits `(S, B, T, num_classes)` and the last stage's features `(B, T, channels)`.
  `step(cache, x_t)` is the same computation for one new frame.
  """

  def __post_init__(self):
    # Checked at construction, so that `segmenters.build` refuses a bad config at once.
    if self.attention not in CAUSAL_ATTENTION_KINDS:
      raise ValueError(
          f"config.model.attention={self.attention!r}: the causal_conv_transformer takes "
          f"one of {CAUSAL_ATTENTION_KINDS}; softmax attention has no causal recurrent "
          "form with a fixed-size state, so it cannot run frame by frame")
    if self.num_stages < 1:
      raise ValueError(f"config.model.num_stages must be >= 1, got {self.num_stages}")
    if self.num_layers < 0:
      raise ValueError(f"config.model.num_layers must be >= 0, got {self.num_layers}")
    if self.attention == "linear" and self.num_stages > 1 \
        and self.channels % self.num_heads:
      raise ValueError(f"config.model.channels={self.channels} is not divisible by "
                       f"config.model.num_heads={self.num_heads}")
    super().__post_init__()

  def setup(self):
    # Channel dropout on the input features (MS-TCN's Dropout2d): whole feature
    # dimensions are dropped for a video, never single frames.
    self.input_dropout = Dropout(self.input_dropout_rate, broadcast_dims=(1,))
    self.stages = [CausalStage(self.num_classes, self.num_layers, self.channels,
                               self.dropout_rate, with_block=s > 0,
                               attention=self.attention, num_heads=self.num_heads,
                               attention_dropout_rate=self.attention_dropout_rate)
                   for s in range(self.num_stages)]

  def __call__(self, x, mask, *, train: bool = False):
    x = self.input_dropout(x, deterministic=not train)
    # Unmasked: the first stage's first layer is per-frame and masks its output
    # (docs/BENCHMARKS.md, "The mask multiply").
    inputs = x
    all_logits = []
    for stage in self.stages:
      h, logits = stage(inputs, mask, train=train)
      all_logits.append(logits)
      inputs = masked(jax.nn.softmax(logits, axis=-1), mask)
    return {"logits": jnp.stack(all_logits), "features": h}

  @nn.nowrap
  def init_cache(self, batch: int = 1, dtype=jnp.float32) -> dict:
    """The state before the first frame: zero rings and sums, `t` = 0."""
    stages = []
    for s in range(self.num_stages):
      stage = dict(conv=[jnp.zeros((batch, 2 * 2**i, self.channels), dtype)
                         for i in range(self.num_layers)])
      if s > 0:
        block = {}
        if self.attention == "linear":
          d = self.channels // self.num_heads
          block = dict(s=jnp.zeros((batch, self.num_heads, d, d), dtype),
                       z=jnp.zeros((batch, self.num_heads, d), dtype))
        stage["block"] = block
      stages.append(stage)
    return dict(t=jnp.zeros((), jnp.int32), stages=stages)

  def step(self, cache: dict, x):
    """One new frame `x` (B, D) -> `(cache, {"logits": (S, B, C), "features": (B, F)})`,
    equal to frame `cache["t"]` of `__call__` on the whole sequence (train=False)."""
    t = cache["t"]
    inputs = x
    stages, all_logits = [], []
    for stage, stage_cache in zip(self.stages, cache["stages"]):
      stage_cache, h, logits = stage.step(stage_cache, t, inputs)
      stages.append(stage_cache)
      all_logits.append(logits)
      inputs = jax.nn.softmax(logits, axis=-1)
    return (dict(t=t + 1, stages=stages),
            {"logits": jnp.stack(all_logits), "features": h})
