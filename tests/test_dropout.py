"""`hhjax.models.layers.Dropout`: exact keep rates from few bits, scaling, determinism,
broadcast dims, the deterministic switch, and the mask layout against a naive
unpacking of the same random words."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.models import layers
from hhjax.models.layers import (Dropout, effective_keep_prob, effective_rate,
                                 field_bits, keep_mask)


def _apply(rate, x, key, **kw):
  return Dropout(rate, **kw).apply({}, x, deterministic=False, rngs={"dropout": key})


@pytest.mark.parametrize("keep, bits, threshold", [
    (0.5, 1, 1), (0.25, 2, 1), (0.75, 2, 3), (0.875, 4, 14), (1 / 256, 8, 1),
    (255 / 256, 8, 255), (3 / 65536, 16, 3)])
def test_dyadic_keep_probabilities_use_the_fewest_exact_bits(keep, bits, threshold):
  assert field_bits(keep) == (bits, threshold)
  assert threshold / 2**bits == keep   # exact, not approximate


@pytest.mark.parametrize("keep", [0.9, 0.7, 1 / 3, 0.99])
def test_other_keep_probabilities_are_rounded_to_16_bit_fields(keep):
  bits, threshold = field_bits(keep)
  assert bits == 16
  # Nearest multiple of 2^-16, by hand: |k / 2^16 - keep| <= 2^-17.
  assert threshold == int(np.floor(keep * 65536 + 0.5))
  assert abs(threshold / 2**16 - keep) <= 2.0**-17
  assert effective_keep_prob(keep) == threshold / 65536
  rate = 1 - keep
  assert abs(effective_rate(rate) - rate) <= 2.0**-17
  assert abs(effective_rate(rate) - rate) <= 1e-3 * min(keep, rate)


def test_the_attention_dropout_rate_by_hand():
  # 0.9 * 65536 = 58982.4 -> 58982; the rate applied is 1 - 58982 / 65536.
  assert field_bits(0.9) == (16, 58982)
  assert effective_rate(0.1) == 6554 / 65536 == 0.100006103515625


@pytest.mark.parametrize("keep", [0.999, 0.001, 1 - 1e-6])
def test_keep_probabilities_rounding_would_distort_use_a_word_each(keep):
  # Rounding to 2^-16 would move the rarer outcome by more than 0.1 % of itself.
  bits, threshold = field_bits(keep)
  assert bits == 32
  assert abs(threshold / 2**32 - keep) <= 2.0**-33


def test_exact_rates_are_applied_unchanged():
  for rate in (0.0, 0.5, 0.25, 0.75, 1 / 256, 1.0):
    assert effective_rate(rate) == rate


@pytest.mark.parametrize("keep", [0.0, 1.0, -0.1, 1.5])
def test_keep_probability_outside_the_open_interval_is_refused(keep):
  with pytest.raises(ValueError, match="keep probability"):
    field_bits(keep)


def test_invalid_rate_is_refused():
  with pytest.raises(ValueError, match="dropout rate"):
    _apply(1.5, jnp.ones((4,)), jax.random.key(0))


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.25, 1 / 16, 0.9, 0.7])
def test_keep_rate_matches_over_many_draws(keep):
  n = 400_000
  mask = np.asarray(keep_mask(jax.random.key(3), keep, (n,)))
  sigma = np.sqrt(keep * (1 - keep) / n)
  assert abs(mask.mean() - keep) < 5 * sigma


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.9])
def test_every_position_has_the_rate_and_neighbours_are_independent(keep):
  # 4000 masks of (2, 48): each position, and each pair of positions that share a
  # random word (position p and p + W) or sit side by side, behaves as independent
  # Bernoulli(keep) draws.
  keys = jax.random.split(jax.random.key(7), 4000)
  masks = np.asarray(jax.vmap(lambda k: keep_mask(k, keep, (2, 48)))(keys))
  masks = masks.reshape(4000, -1).astype(np.float64)               # (draws, 96)
  sigma = np.sqrt(keep * (1 - keep) / 4000)
  assert np.all(np.abs(masks.mean(0) - keep) < 5 * sigma)
  bits, _ = field_bits(keep)
  words = -(-96 // (32 // bits)) if bits < 32 else 96
  for a, b in [(0, 1), (5, 6), (0, words % 96), (10, (10 + words) % 96)]:
    if a == b:
      continue
    both = (masks[:, a] * masks[:, b]).mean()
    assert abs(both - keep**2) < 5 * np.sqrt(keep**2 * (1 - keep**2) / 4000)


@pytest.mark.parametrize("keep, shape", [(0.5, (4, 64)), (0.75, (3, 7, 5)),
                                         (1 / 256, (2, 9)), (0.5, (33,)),
                                         (0.9, (5, 7))])
def test_mask_is_the_documented_unpacking_of_the_random_words(keep, shape):
  # Naive reference: element j * W + i of the flat mask is field j of word i.
  key = jax.random.key(11)
  bits, threshold = field_bits(keep)
  per_word = 32 // bits
  n = int(np.prod(shape))
  num_words = -(-n // per_word)
  words = np.asarray(jax.random.bits(key, (num_words,), jnp.uint32)).tolist()
  expected = [((words[i] >> (bits * j)) & ((1 << bits) - 1)) < threshold
              for j in range(per_word) for i in range(num_words)][:n]
  got = np.asarray(keep_mask(key, keep, shape))
  assert got.shape == shape
  np.testing.assert_array_equal(got.reshape(-1), np.asarray(expected))


def test_kept_elements_are_scaled_by_the_inverse_keep_rate():
  x = jax.random.normal(jax.random.key(0), (50_000,)) + 3.0
  for rate, keep in ((0.5, 0.5), (0.25, 0.75), (0.1, 58982 / 65536)):
    y = np.asarray(_apply(rate, x, jax.random.key(1)))
    kept = y != 0
    # Scaled by the keep probability the mask applies (for 0.1: 58982 / 2^16).
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / keep, rtol=1e-6)
    assert abs((~kept).mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / x.size)
  # The expectation is preserved: E[y] = x for a constant input.
  y = np.asarray(_apply(0.5, jnp.ones((200_000,)), jax.random.key(2)))
  assert abs(y.mean() - 1.0) < 5 * np.sqrt(1.0 / 200_000)


def test_gradient_passes_only_through_kept_elements():
  x = jnp.ones((8, 64))
  key = jax.random.key(5)
  grad = jax.grad(lambda x: _apply(0.5, x, key).sum())(x)
  mask = np.asarray(_apply(0.5, x, key)) != 0
  np.testing.assert_array_equal(np.asarray(grad), np.where(mask, 2.0, 0.0))


def test_masks_are_deterministic_for_a_key_and_differ_across_keys():
  x = jnp.ones((16, 64))
  a = np.asarray(_apply(0.5, x, jax.random.key(0)))
  b = np.asarray(_apply(0.5, x, jax.random.key(0)))
  c = np.asarray(_apply(0.5, x, jax.random.key(1)))
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.3   # independent masks differ on half the elements


def test_broadcast_dims_share_one_mask():
  x = jnp.ones((3, 40, 64))   # (B, T, D): drop whole channels of a video
  y = np.asarray(_apply(0.5, x, jax.random.key(4), broadcast_dims=(1,)))
  assert np.all(y == y[:, :1, :])                    # the same on every frame
  assert 0 < (y[:, 0, :] == 0).mean() < 1            # but not all or nothing
  assert not np.all(y[0] == y[1])                    # a mask per video
  z = np.asarray(_apply(0.5, x, jax.random.key(4), broadcast_dims=(0, 1)))
  assert np.all(z == z[:1, :1, :])


def test_deterministic_is_identity_and_rate_edges():
  x = jax.random.normal(jax.random.key(0), (4, 32))
  for layer_kw, call_kw in [(dict(deterministic=True), {}),
                            ({}, dict(deterministic=True))]:
    y = Dropout(0.5, **layer_kw).apply({}, x, **call_kw)   # no rng needed
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(_apply(0.0, x, jax.random.key(1))),
                                np.asarray(x))
  assert not np.asarray(_apply(1.0, x, jax.random.key(1))).any()
  with pytest.raises(ValueError, match="deterministic"):
    Dropout(0.5).apply({}, x)   # neither the field nor the call says


def test_an_explicit_rng_and_another_collection_are_honoured():
  x = jnp.ones((8, 64))
  key = jax.random.key(9)
  explicit = Dropout(0.5).apply({}, x, deterministic=False, rng=key)
  collection = Dropout(0.5, rng_collection="noise").apply(
      {}, x, deterministic=False, rngs={"noise": key})
  np.testing.assert_array_equal(np.asarray(explicit) != 0,
                                np.asarray(keep_mask(key, 0.5, x.shape)))
  assert collection.shape == x.shape and 0 < (np.asarray(collection) == 0).mean() < 1


@pytest.mark.parametrize("name", ["mstcn", "conv_transformer"])
def test_segmenters_draw_their_masks_here(monkeypatch, name):
  # Every dropout of the residual layers goes through `keep_mask`: with it forced to
  # keep everything, train mode equals eval mode with the branches scaled by 2.
  from hhjax.models import segmenters
  from hhjax.models.tcn import DilatedResidualLayer
  calls = []

  def keep_all(key, keep_prob, shape):
    calls.append((keep_prob, tuple(shape)))
    return jnp.ones(shape, bool)

  monkeypatch.setattr(layers, "keep_mask", keep_all)
  layer = DilatedResidualLayer(channels=16, dilation=2, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (1, 12, 16))
  mask = jnp.ones((1, 12))
  params = layer.init(jax.random.key(1), x, mask)
  train = layer.apply(params, x, mask, train=True, rngs={"dropout": jax.random.key(2)})
  evals = layer.apply(params, x, mask)
  np.testing.assert_allclose(np.asarray(train - x), 2 * np.asarray(evals - x),
                             rtol=1e-5, atol=1e-6)
  assert calls == [(0.5, (1, 12, 16))]
  calls.clear()
  model = segmenters.get(name)(num_classes=3, num_stages=2, num_layers=2, channels=8)
  x = jnp.ones((1, 10, 6))
  params = model.init(jax.random.key(0), x, jnp.ones((1, 10)))
  model.apply(params, x, jnp.ones((1, 10)), train=True,
              rngs={"dropout": jax.random.key(1)})
  assert len([c for c in calls if c[0] == 0.5]) == 2 * 2   # stages x layers
