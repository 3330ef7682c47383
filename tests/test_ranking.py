"""Pairwise ranking loss, ranking accuracy and pair sampling, against hand-worked
pairs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import ranking

# Four videos: 0 is best, 1 and 2 are tied, 3 is worst.
PRED = np.array([0.5, 1.0, 0.0, 0.2], np.float32)
TARGET = np.array([2.0, 1.0, 1.0, 0.0], np.float32)


def test_loss_hand_worked_pairs():
  # Ordered pairs (i better than j) and margin - (p_i - p_j), margin 1:
  # (0,1): 1 - (0.5 - 1.0) = 1.5   (0,2): 1 - 0.5 = 0.5   (0,3): 1 - 0.3 = 0.7
  # (1,3): 1 - 0.8 = 0.2           (2,3): 1 - (-0.2) = 1.2      mean 4.1 / 5
  got = ranking.pairwise_ranking_loss(PRED, TARGET)
  np.testing.assert_allclose(got, 4.1 / 5, rtol=1e-6)
  # The tie (1, 2) adds tie_weight * |1.0 - 0.0| (both orders, mean 1.0).
  got = ranking.pairwise_ranking_loss(PRED, TARGET, tie_weight=0.5)
  np.testing.assert_allclose(got, 4.1 / 5 + 0.5, rtol=1e-6)
  # A hinge that is met contributes 0: margin 0.25 leaves (0,1) 0.75 and (2,3) 0.45.
  got = ranking.pairwise_ranking_loss(PRED, TARGET, margin=0.25)
  np.testing.assert_allclose(got, (0.75 + 0.45) / 5, rtol=1e-6)


def test_loss_filler_rows_are_ignored():
  # Row 2 is filler: pairs (0,1) 1.5, (0,3) 0.7, (1,3) 0.2; no tie remains.
  weight = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  got = ranking.pairwise_ranking_loss(PRED, TARGET, weight, tie_weight=0.5)
  np.testing.assert_allclose(got, 2.4 / 3, rtol=1e-6)
  # Whatever a filler row holds, the loss is the same.
  other = PRED.copy()
  other[2] = 123.0
  np.testing.assert_allclose(
      ranking.pairwise_ranking_loss(other, TARGET, weight, tie_weight=0.5), got)


def test_loss_tie_tolerance():
  # With tolerance 1 only (0,3) (target gap 2) is ordered: 0.7. Ties: (0,1) 0.5,
  # (0,2) 0.5, (1,2) 1.0, (1,3) 0.8, (2,3) 0.2: mean 0.6.
  got = ranking.pairwise_ranking_loss(PRED, TARGET, tie_tolerance=1.0)
  np.testing.assert_allclose(got, 0.7, rtol=1e-6)
  got = ranking.pairwise_ranking_loss(PRED, TARGET, tie_tolerance=1.0, tie_weight=2.0)
  np.testing.assert_allclose(got, 0.7 + 2.0 * 0.6, rtol=1e-6)


def test_loss_without_pairs_is_zero_and_jittable():
  same = np.ones(4, np.float32)
  assert float(ranking.pairwise_ranking_loss(PRED, same)) == 0.0
  only_one = np.array([0.0, 0.0, 1.0, 0.0], np.float32)
  assert float(ranking.pairwise_ranking_loss(PRED, TARGET, only_one)) == 0.0
  loss = jax.jit(lambda p, t, w: ranking.pairwise_ranking_loss(p, t, w, margin=0.5,
                                                               tie_weight=0.1))
  got = loss(PRED, TARGET, np.ones(4, np.float32))
  ref = ranking.pairwise_ranking_loss(PRED, TARGET, margin=0.5, tie_weight=0.1)
  np.testing.assert_allclose(got, ref, rtol=1e-6)
  # Gradient: all five hinges are active at margin 1, each adds -1/5 to its better
  # video and +1/5 to its worse one: p0 better in 3; p1 and p2 better in 1, worse in
  # 1; p3 worse in 3.
  grad = jax.grad(lambda p: ranking.pairwise_ranking_loss(p, TARGET))(jnp.asarray(PRED))
  np.testing.assert_allclose(grad, np.array([-3, 0, 0, 3]) / 5, rtol=1e-6)


def test_loss_bad_arguments():
  with pytest.raises(ValueError, match="margin"):
    ranking.pairwise_ranking_loss(PRED, TARGET, margin=-1.0)
  with pytest.raises(ValueError, match="tie_tolerance"):
    ranking.pairwise_ranking_loss(PRED, TARGET, tie_tolerance=-0.1)
  with pytest.raises(ValueError, match="weight"):
    ranking.pairwise_ranking_loss(PRED, TARGET, np.ones(3))
  with pytest.raises(ValueError, match="pred and target"):
    ranking.pairwise_ranking_loss(PRED, TARGET[:3])


def test_ranking_accuracy_hand_worked():
  # Distinct-target pairs: (0,1) wrong, (0,2) right, (0,3) right, (1,3) right,
  # (2,3) wrong -> 3 / 5.
  assert ranking.ranking_accuracy(PRED, TARGET) == pytest.approx(0.6)
  # A tie in pred counts half: (0,1) becomes 0.5.
  tied = np.array([1.0, 1.0, 0.0, 0.2])
  assert ranking.ranking_accuracy(tied, TARGET) == pytest.approx(3.5 / 5)
  # With tolerance 1 only (0,3) counts, and it is right.
  assert ranking.ranking_accuracy(PRED, TARGET, tie_tolerance=1.0) == 1.0
  assert ranking.ranking_accuracy(-TARGET, TARGET) == 0.0
  assert np.isnan(ranking.ranking_accuracy(PRED, np.ones(4)))
  assert np.isnan(ranking.ranking_accuracy([1.0], [2.0]))
  with pytest.raises(ValueError, match="pred and target"):
    ranking.ranking_accuracy(PRED, TARGET[:2])


SAMPLE_TARGET = np.array([3.0, 1.0, 1.0, 2.0, 0.0])
# Every unordered pair with distinct targets, better first (10 pairs minus the tie 1-2).
ALL_PAIRS = {(0, 1), (0, 2), (0, 3), (0, 4), (1, 4), (2, 4), (3, 1), (3, 2), (3, 4)}


def test_sample_pairs_all_when_few():
  got = ranking.sample_pairs(SAMPLE_TARGET, 100, seed=0)
  assert got.shape == (9, 2)
  assert set(map(tuple, got.tolist())) == ALL_PAIRS
  got = ranking.sample_pairs(SAMPLE_TARGET, 100, seed=0, tie_tolerance=1.0)
  assert set(map(tuple, got.tolist())) == {(0, 1), (0, 2), (0, 4), (3, 4)}
  assert ranking.sample_pairs(np.ones(5), 3, seed=0).shape == (0, 2)
  assert ranking.sample_pairs(SAMPLE_TARGET, 0, seed=0).shape == (0, 2)


def test_sample_pairs_seeded_without_repeats():
  draws = {seed: ranking.sample_pairs(SAMPLE_TARGET, 4, seed=seed) for seed in range(4)}
  for got in draws.values():
    pairs = list(map(tuple, got.tolist()))
    assert len(pairs) == 4 and len(set(pairs)) == 4
    assert set(pairs) <= ALL_PAIRS
  again = ranking.sample_pairs(SAMPLE_TARGET, 4, seed=2)
  np.testing.assert_array_equal(again, draws[2])
  assert any(not np.array_equal(a, b)
             for a, b in itertools.combinations(draws.values(), 2))
  assert not np.array_equal(draws[0], draws[1])
  with pytest.raises(ValueError, match="num_pairs"):
    ranking.sample_pairs(SAMPLE_TARGET, -1, seed=0)
  with pytest.raises(ValueError, match="target"):
    ranking.sample_pairs(np.ones((2, 2)), 1, seed=0)
