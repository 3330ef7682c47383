"""Multi-head temporal attention: linear (O(T)), softmax (O(T^2)) or none.

Shapes: inputs `(B, T, C)`, frame mask `(B, T)`. Padded frames neither attend (their
outputs are zeroed) nor are attended (their keys and values are dropped), so padding
never changes the outputs on valid frames.

* `softmax` (eq. 2 of Li et al.): `softmax(Q K^T / sqrt(d)) V`.
* `linear` (eq. 3-4, Katharopoulos et al.): with the feature map `phi(x) = elu(x) + 1`,
  `out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j))`. The two sums
  are computed once, so time and memory grow linearly with T.
* `none`: no attention (returns zeros, the block's residual carries the input).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ATTENTION_KINDS = ("linear", "softmax", "none")


def elu_feature_map(x: jnp.ndarray) -> jnp.ndarray:
  """phi(x) = elu(x) + 1, positive everywhere."""
  return jax.nn.elu(x) + 1.0


def linear_attention(q, k, v, mask, eps: float = 1e-6):
  """Linear attention over frames in O(T).

  Args:
    q, k, v: `(B, T, H, d)`.
    mask: `(B, T)`, 1 for real frames.
    eps: guards the normaliser.

  Returns:
    `(B, T, H, d)`; padded query frames are zero.
  """
  m = mask[:, :, None, None].astype(q.dtype)
  phi_q = elu_feature_map(q)
  phi_k = elu_feature_map(k) * m                       # padded keys dropped
  kv = jnp.einsum("bthd,bthe->bhde", phi_k, v * m)     # (B, H, d, d)
  k_sum = phi_k.sum(axis=1)                            # (B, H, d)
  num = jnp.einsum("bthd,bhde->bthe", phi_q, kv)       # (B, T, H, d)
  den = jnp.einsum("bthd,bhd->bth", phi_q, k_sum)[..., None]
  return num / (den + eps) * m


def softmax_attention(q, k, v, mask):
  """Scaled dot-product attention with padded keys masked out; `(B, T, H, d)`."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale          # (B, H, T, T)
  key_ok = mask[:, None, None, :].astype(bool)
  logits = jnp.where(key_ok, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return out * mask[:, :, None, None].astype(q.dtype)


class MultiHeadAttention(nn.Module):
  """Q/K/V projections, per-head attention of the chosen kind, output projection."""

  kind: str = "linear"
  num_heads: int = 4
  qkv_features: int | None = None

  @nn.compact
  def __call__(self, x, mask):
    if self.kind not in ATTENTION_KINDS:
      raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {self.kind!r}")
    channels = x.shape[-1]
    if self.kind == "none":
      return jnp.zeros_like(x)
    features = self.qkv_features or channels
    if features % self.num_heads:
      raise ValueError(f"qkv_features={features} is not divisible by num_heads={self.num_heads}")
    head_dim = features // self.num_heads
    proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), name=name)(x)
    q, k, v = proj("query"), proj("key"), proj("value")          # (B, T, H, d)
    if self.kind == "linear":
      out = linear_attention(q, k, v, mask)
    else:
      out = softmax_attention(q, k, v, mask)
    return nn.DenseGeneral(channels, axis=(-2, -1), name="out")(out)
