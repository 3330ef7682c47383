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


@pytest.mark.parametrize("policy, expected", [
    ("multiple", {1: 8, 8: 8, 9: 16, 17: 24, 40: 40, 41: 48}),
    ("pow2", {1: 8, 8: 8, 9: 16, 17: 32, 33: 64, 64: 64, 65: 128})])
def test_lengths_map_to_their_buckets(policy, expected):
  for n, padded in expected.items():
    assert pipeline.bucket_length(n, 8, policy) == padded


def test_bad_bucket_policy_or_size_names_the_config_field():
  with pytest.raises(ValueError, match="config.dataset.bucket_policy"):
    pipeline.bucket_length(10, 8, "log")
  with pytest.raises(ValueError, match="config.dataset.bucket_policy"):
    _plan(bucket_policy="powers")
  with pytest.raises(ValueError, match="config.dataset.bucket_size"):
    _plan(bucket_size=0)


def test_pow2_bounds_the_number_of_shapes():
  rng = np.random.default_rng(0)
  lengths = tuple(int(n) for n in rng.integers(1, 1000, size=300))
  plans = {p: pipeline.BatchPlan(lengths, batch_size=3, bucket_size=16, num_epochs=4,
                                 drop_remainder=False, bucket_policy=p)
           for p in pipeline.BUCKET_POLICIES}
  shapes = {p: plan.padding().shapes for p, plan in plans.items()}
  # pow2: 16 x {1, 2, 4, ..., 64} = at most 7 shapes for lengths below 1024.
  assert pipeline.max_shapes(999, 16, "pow2") == 7
  assert set(shapes["pow2"]) <= {16 * 2**k for k in range(7)}
  assert len(shapes["multiple"]) > 7 >= len(shapes["pow2"])
  assert len(shapes["multiple"]) <= pipeline.max_shapes(999, 16, "multiple") == 63
  # The price: more padding, but a pow2 batch is never more than half padding (its
  # longest video exceeds half its bucket, unless it fits the first bucket).
  pad = {p: plan.padding() for p, plan in plans.items()}
  assert pad["pow2"].waste > pad["multiple"].waste
  plan = plans["pow2"]
  for i in range(len(plan)):
    indices, padded = plan[i]
    assert padded == 16 or max(lengths[k] for k in indices) > padded // 2


@pytest.mark.parametrize("policy, shapes, padded_frames", [
    ("multiple", (8, 16, 24, 40), 2 * (8 + 16 + 24 + 40 + 40)),
    ("pow2", (8, 16, 32, 64), 2 * (8 + 16 + 32 + 64 + 64))])
def test_padding_waste_by_hand(policy, shapes, padded_frames):
  # Unshuffled, LENGTHS sort into the batches (3, 5) (9, 12) (17, 21) (28, 33) (38, 40).
  plan = _plan(shuffle=False, num_epochs=1, bucket_policy=policy)
  pad = plan.padding()
  assert pad.real_frames == sum(LENGTHS) == 206
  assert pad.shapes == shapes and pad.padded_frames == padded_frames
  assert pad.waste == pytest.approx(1 - 206 / padded_frames)


def test_padding_counts_the_filler_rows_of_an_incomplete_batch():
  # (3, 6) pads to 8 under both policies; (10,) to 12 or 16, with a filler row.
  for policy, padded in (("multiple", 2 * 8 + 2 * 12), ("pow2", 2 * 8 + 2 * 16)):
    plan = pipeline.BatchPlan((3, 10, 6), batch_size=2, shuffle=False, bucket_size=4,
                              drop_remainder=False, bucket_policy=policy)
    pad = plan.padding()
    assert (pad.real_frames, pad.padded_frames) == (19, padded)
    assert pad.waste == pytest.approx(1 - 19 / padded)


def test_loader_pads_to_the_policy_bucket():
  source = _Source((5, 9, 20))
  plan = pipeline.BatchPlan((5, 9, 20), batch_size=1, shuffle=False, bucket_size=4,
                            drop_remainder=False, bucket_policy="pow2")
  got = [b["features"].shape[1] for b in pipeline.make_loader(source, plan)]
  assert got == [8, 16, 32]
  assert [int(b["mask"].sum()) for b in pipeline.make_loader(source, plan)] == [5, 9, 20]


def test_one_stream_of_hand_pose_features_is_refused():
  from hhjax import config as default_config
  from hhjax.data import splits
  config = default_config.get_config()
  data = splits.SplitData(source=None, lengths=np.array([3]), names=["v"],
                          raw_feature_dim=212, labels=[], scores=np.zeros(1),
                          step_scores=np.zeros((1, 6)), attributes=np.zeros((1, 6)),
                          split="fold0")
  config.dataset.streams = "all"
  assert splits.feature_dim(config, data) == 212
  config.dataset.streams = "rgb"
  with pytest.raises(ValueError, match="hand-pose.*streams=all"):
    splits.feature_dim(config, data)
  data.raw_feature_dim = 2048
  assert splits.feature_dim(config, data) == 1024
