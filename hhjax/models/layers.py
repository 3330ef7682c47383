"""Small layers the networks share: a dropout that draws few random bits per element.

`Dropout` is a drop-in replacement for `flax.linen.Dropout` (same fields: `rate`,
`broadcast_dims`, `deterministic`, `rng_collection`; same call) that keeps an element
with probability `1 - rate` (exactly, for the rates networks use: 0.5, 0.25, any
multiple of 2^-16; within 2^-17 for others, below) and scales kept elements by the
inverse of that probability, as Flax's does, but draws its mask from far fewer random
bits.

Why: Flax draws a float32 uniform per element (`jax.random.bernoulli`): 32 random bits
from the threefry counter-mode generator, a float conversion and a compare for every
element. In an MS-TCN-style network with dropout in every residual layer that costs a
large share of each training step; with this layer a 4 x 10 x 64 MS-TCN trains about
1.3x - 1.4x faster on a CPU (docs/BENCHMARKS.md, "Dropout").
A Bernoulli(q) draw with q a multiple of 2^-b needs only b uniform bits: keep an
element iff the b-bit integer u (uniform on 0 .. 2^b - 1) satisfies u < q 2^b, which
has probability exactly q. So:

* `keep_prob = 1 - rate` is written as k / 2^b with the smallest b in {1, 2, 4, 8, 16}
  (rate 0.5: b = 1, one bit per element; rate 0.25 or 0.75: b = 2; any rate that is a
  multiple of 1/256: b <= 8); each 32-bit word of `jax.random.bits` then holds 32 / b
  independent b-bit fields, unpacked with shifts and masks. The draw is **exact**.
* Any other rate (0.1, 0.3, ...) is rounded to the nearest multiple of 2^-16 and drawn
  from 16-bit fields (two elements per word): the rate applied is `effective_rate(rate)`,
  within 2^-17 of the one asked for (0.1 becomes 0.1000061), and kept elements are
  scaled by the inverse of the keep probability *applied*, so E[output] = input exactly.
  Where that rounding would move the rate by more than 0.1 % of itself (rates below
  about 0.008 or above 0.992), one 32-bit word per element is used instead, within
  2^-33 of the rate (finer than `jax.random.bernoulli`'s float32 uniform, 2^-23).
  Why round: with a full word per element the attention dropout (0.1) of Li et al.'s
  joint model drew 5x more random bits than the 40 rate-0.5 dropouts of its
  convolutions together; 16-bit fields halve that and make the training step about
  9 % faster (docs/BENCHMARKS.md, "Dropout").

The bits of threefry's output words are independent and uniform, so fields cut from
one word are independent draws. Masks are a pure function of (key, shape, rate):
deterministic for a key, different for different keys. They are not the same masks as
Flax's for the same key (another stream of bits), which only matters to code that
compares masks across the two layers.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Field widths tried for an exact draw, narrowest first (each divides 32).
EXACT_FIELD_BITS = (1, 2, 4, 8, 16)
WORD_BITS = 32
# Other keep probabilities are rounded to a multiple of 2^-ROUNDED_FIELD_BITS unless
# that moves the keep or the drop probability by more than MAX_ROUNDING of itself.
ROUNDED_FIELD_BITS = 16
MAX_ROUNDING = 1e-3


def field_bits(keep_prob: float) -> tuple[int, int]:
  """`(b, k)` such that an element is kept iff its b-bit uniform field is `< k`.

  `b` is the fewest bits that represent `keep_prob` exactly as k / 2^b (exact test:
  scaling a float by a power of two is exact); otherwise `b = 16` and
  `k = round(keep_prob * 2^16)` where that moves neither the keep nor the drop
  probability by more than `MAX_ROUNDING` of itself, else `b = 32` and
  `k = round(keep_prob * 2^32)`, clipped to 1 .. 2^32 - 1. The keep probability
  applied is `k / 2^b` (`effective_keep_prob`).

  Raises:
    ValueError: unless 0 < keep_prob < 1.
  """
  if not 0.0 < keep_prob < 1.0:
    raise ValueError(f"keep probability must lie in (0, 1), got {keep_prob}")
  for bits in EXACT_FIELD_BITS:
    scaled = keep_prob * (1 << bits)
    if float(scaled).is_integer():
      return bits, int(scaled)
  k = int(round(keep_prob * 2.0**ROUNDED_FIELD_BITS))
  error = abs(k / 2.0**ROUNDED_FIELD_BITS - keep_prob)
  if 0 < k < (1 << ROUNDED_FIELD_BITS) and \
      error <= MAX_ROUNDING * min(keep_prob, 1.0 - keep_prob):
    return ROUNDED_FIELD_BITS, k
  k = int(round(keep_prob * 2.0**WORD_BITS))
  return WORD_BITS, min(max(k, 1), (1 << WORD_BITS) - 1)


def effective_keep_prob(keep_prob: float) -> float:
  """The keep probability `keep_mask` applies for `keep_prob` (`k / 2^b`)."""
  bits, threshold = field_bits(keep_prob)
  return threshold / 2.0**bits


def effective_rate(rate: float) -> float:
  """The dropout rate `Dropout(rate)` applies: `rate` itself when 1 - rate is a
  multiple of 2^-16 (0.5, 0.25, ...), else within 2^-17 (or 2^-33) of it."""
  if rate in (0.0, 1.0):
    return rate
  return 1.0 - effective_keep_prob(1.0 - rate)


def keep_mask(key, keep_prob: float, shape: Sequence[int]) -> jnp.ndarray:
  """A boolean array of `shape`, each element True with probability `keep_prob`,
  independently: exactly for multiples of 2^-16, else with probability
  `effective_keep_prob(keep_prob)` (module docstring).

  With b-bit fields, `32 / b` elements share one random word: element `j * W + i` of
  the flattened mask is field j of word i (W words). Fields run along the *major*
  axis so that every unpacking step is a long vector operation over the words (with
  the fields along the minor axis XLA's CPU code is several times slower).
  """
  shape = tuple(int(s) for s in shape)
  bits, threshold = field_bits(keep_prob)
  if bits == WORD_BITS:
    return jax.random.bits(key, shape, jnp.uint32) < jnp.uint32(threshold)
  per_word = WORD_BITS // bits
  n = math.prod(shape)
  num_words = -(-n // per_word)
  words = jax.random.bits(key, (num_words,), jnp.uint32)              # (W,)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * bits              # (per_word,)
  fields = (words[None, :] >> shifts[:, None]) & jnp.uint32((1 << bits) - 1)
  keep = (fields < jnp.uint32(threshold)).reshape(-1)                 # (per_word * W,)
  if keep.shape[0] != n:
    keep = keep[:n]
  return keep.reshape(shape)


class Dropout(nn.Module):
  """Dropout with a cheap mask (module docstring); the API of `nn.Dropout`.

  Attributes:
    rate: the probability of dropping an element (not the keep rate).
    broadcast_dims: dimensions that share one mask (e.g. `(1,)` on (B, T, D) drops
      whole feature channels of a video, like PyTorch's Dropout2d).
    deterministic: True returns the input unchanged; False masks it and scales the
      kept elements by `1 / (1 - effective_rate(rate))` (`1 / (1 - rate)` for rates
      whose keep probability is a multiple of 2^-16). May instead be given to
      `__call__`.
    rng_collection: the rng collection the key is drawn from.
  """

  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"dropout rate must lie in [0, 1], got {self.rate}")
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:   # no mask to draw; also keeps gradients finite
      return jnp.zeros_like(inputs)
    keep_prob = effective_keep_prob(1.0 - self.rate)   # the probability the mask has
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    mask = jnp.broadcast_to(keep_mask(rng, keep_prob, shape), inputs.shape)
    return lax.select(mask, inputs / jnp.asarray(keep_prob, inputs.dtype),
                      jnp.zeros_like(inputs))

