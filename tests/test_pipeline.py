"""The grain input pipeline: determinism, buckets, masks, process sharding, resume."""

import numpy as np
import pytest

from hhjax.data import pipeline


class _Source:
  """A tiny in-memory data source with the builder's example keys."""

  def __init__(self, lengths, dim=4):
    self.examples = []
    for i, t in enumerate(lengths):
      self.examples.append(dict(
          video=f"v{i}".encode(), num_frames=t, score=float(i),
          features=(np.full((t, dim), i) + np.arange(t)[:, None] / 1000).astype(np.float32),
          labels=(np.arange(t) % 7).astype(np.int32),
          attributes=np.full(6, 2, np.int32), step_scores=np.full(6, 0.5, np.float32)))

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]


LENGTHS = (5, 40, 17, 33, 9, 21, 28, 12, 3, 38)


def _plan(**kw):
  args = dict(lengths=LENGTHS, batch_size=2, seed=0, bucket_size=8, num_epochs=3)
  args.update(kw)
  return pipeline.BatchPlan(**args)


def test_plan_is_deterministic_and_reshuffles_per_epoch():
  a, b = _plan(), _plan()
  assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
  assert [a[i] for i in range(len(a))] != [_plan(seed=1)[i] for i in range(len(a))]
  epoch0 = [a[i][0] for i in range(5)]
  epoch1 = [a[i][0] for i in range(5, 10)]
  assert epoch0 != epoch1
  for epoch in (epoch0, epoch1):   # every example exactly once per epoch
    assert sorted(i for batch in epoch for i in batch) == list(range(10))


def test_padding_is_bucketed_and_batches_group_similar_lengths():
  plan = _plan(window_batches=5)   # one window per epoch: fully length-sorted
  for i in range(len(plan)):
    indices, padded = plan[i]
    longest = max(LENGTHS[k] for k in indices)
    assert padded % 8 == 0 and longest <= padded < longest + 8
  spread = [max(LENGTHS[k] for k in b) - min(LENGTHS[k] for k in b)
            for b, _ in (plan[i] for i in range(5))]
  assert max(spread) <= 8   # sorted within the window, neighbours are close


def test_loaded_batch_masks_and_fills():
  source = _Source(LENGTHS)
  plan = pipeline.BatchPlan(LENGTHS, batch_size=4, shuffle=False, drop_remainder=False,
                            bucket_size=8)
  batches = list(pipeline.make_loader(source, plan, num_threads=1))
  assert len(batches) == 3
  last = batches[-1]   # 10 videos in batches of 4: two filler rows
  np.testing.assert_array_equal(last["weight"], [1, 1, 0, 0])
  np.testing.assert_array_equal(last["index"][2:], [-1, -1])
  seen = []
  for batch in batches:
    for r, i in enumerate(batch["index"]):
      if i < 0:
        assert batch["mask"][r].sum() == 0
        continue
      seen.append(int(i))
      t = LENGTHS[i]
      assert batch["mask"][r].sum() == t and batch["num_frames"][r] == t
      np.testing.assert_array_equal(batch["features"][r, :t], source[i]["features"])
      assert np.all(batch["features"][r, t:] == 0)
      assert batch["score"][r] == float(i)
  assert sorted(seen) == list(range(10))


def test_processes_load_disjoint_rows_of_the_same_global_batch():
  source = _Source(LENGTHS)
  plan = _plan(batch_size=4, drop_remainder=False)
  item = plan[0]
  full = pipeline.load_batch(source, item, batch_size=4)
  parts = [pipeline.load_batch(source, item, batch_size=4, process_index=p,
                               process_count=2) for p in range(2)]
  for key in ("features", "mask", "index", "weight"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.load_batch(source, item, batch_size=4, process_count=3)


def test_iterator_state_round_trip():
  source = _Source(LENGTHS)
  loader = pipeline.make_loader(source, _plan(), num_threads=1)
  it = iter(loader)
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it)["index"].tolist() for _ in range(5)]
  it2 = iter(loader)
  it2.set_state(state)
  assert [next(it2)["index"].tolist() for _ in range(5)] == rest


def test_frame_stride_and_upsample():
  source = _Source((10,))
  plan = pipeline.BatchPlan((pipeline.strided_length(10, 3),), batch_size=1,
                            shuffle=False, bucket_size=4)
  batch = pipeline.load_batch(source, plan[0], batch_size=1, frame_stride=3)
  assert batch["num_frames"][0] == 4   # frames 0, 3, 6, 9
  np.testing.assert_array_equal(batch["labels"][0, :4], [0, 3, 6, 2])
  np.testing.assert_array_equal(pipeline.upsample(np.array([1, 2, 3, 4]), 3, 10),
                                [1, 1, 1, 2, 2, 2, 3, 3, 3, 4])


def test_streams_select_halves():
  x = np.arange(8, dtype=np.float32)[None]
  np.testing.assert_array_equal(pipeline.select_streams(x, "rgb"), [[0, 1, 2, 3]])
  np.testing.assert_array_equal(pipeline.select_streams(x, "flow"), [[4, 5, 6, 7]])
  with pytest.raises(ValueError, match="streams"):
    pipeline.select_streams(x, "depth")


def test_feature_stats_match_a_naive_computation(tmp_path):
  source = _Source((5, 9, 2), dim=3)
  for ex in source.examples:
    ex["features"][:, 2] = 7.0                      # a constant feature
  stats = pipeline.feature_stats(source)
  frames = np.concatenate([ex["features"] for ex in source.examples]).astype(np.float64)
  np.testing.assert_allclose(stats.mean, frames.mean(0), rtol=1e-6)
  np.testing.assert_allclose(stats.std[:2], frames.std(0)[:2], rtol=1e-5)
  assert stats.std[2] == pytest.approx(1e-3)        # floored, not zero
  half = pipeline.feature_stats(source, "flow")     # the second half: feature 1 of 3
  assert half.mean.shape == (2,)
  stats.save(tmp_path / "s.npz")
  again = pipeline.FeatureStats.load(tmp_path / "s.npz")
  np.testing.assert_array_equal(again.mean, stats.mean)
  np.testing.assert_array_equal(again.std, stats.std)


def test_standardised_batch_keeps_padding_zero():
  source = _Source((5, 9), dim=3)
  stats = pipeline.feature_stats(source)
  plan = pipeline.BatchPlan((5, 9), batch_size=2, shuffle=False, bucket_size=16)
  batch = pipeline.load_batch(source, plan[0], batch_size=2, stats=stats)
  for r, i in enumerate(batch["index"]):
    t = batch["num_frames"][r]
    want = (source[i]["features"] - stats.mean) / stats.std
    np.testing.assert_allclose(batch["features"][r, :t], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batch["features"][r, t:], 0)
  pooled = np.concatenate([batch["features"][r, :batch["num_frames"][r]] for r in range(2)])
  np.testing.assert_allclose(pooled.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(pooled.std(0), 1, atol=1e-4)
  with pytest.raises(ValueError, match="D=3"):
    pipeline.FeatureStats(np.zeros(4), np.ones(4)).apply(np.zeros((2, 3)))


def test_all_streams_keeps_every_row():
  x = np.arange(6, dtype=np.float32)[None]
  np.testing.assert_array_equal(pipeline.select_streams(x, "all"), x)
