"""The synthetic HHA300 generator: deterministic, and its statistics are as documented."""

import dataclasses

import numpy as np
import pytest

from hhjax.data import layout, synthetic

SMALL = dataclasses.replace(synthetic.PRESETS["synthetic_small"], num_train=12,
                            num_test=4, num_people=6, feature_dim=64)


def test_same_seed_same_data_other_seed_other_data():
  a = list(synthetic.generate(SMALL))
  b = list(synthetic.generate(SMALL))
  c = list(synthetic.generate(dataclasses.replace(SMALL, seed=1)))
  for (sa, va), (sb, vb) in zip(a, b):
    assert sa == sb and va.name == vb.name
    np.testing.assert_array_equal(va.features, vb.features)
    np.testing.assert_array_equal(va.labels, vb.labels)
    assert va.score == vb.score
  assert any(not np.array_equal(va.labels, vc.labels) for (_, va), (_, vc) in zip(a, c))


def test_labels_scores_and_people():
  videos = list(synthetic.generate(SMALL))
  assert sum(s == "train" for s, _ in videos) == 12
  train_people = {v.person for s, v in videos if s == "train"}
  test_people = {v.person for s, v in videos if s == "test"}
  assert not train_people & test_people
  for _, v in videos:
    t = len(v.labels)
    assert SMALL.min_len <= t <= SMALL.max_len
    assert v.features.shape == (t, 64) and v.features.dtype == np.float32
    assert np.isfinite(v.features).all()
    present = set(np.unique(v.labels).tolist()) - {0}
    for step in range(1, 7):
      done = v.attributes[step - 1] > 0
      assert (step in present) == done
      if not done:
        assert v.step_scores[step - 1] == 0
      else:
        assert 0 <= v.step_scores[step - 1] <= 1
    es = v.attributes == 2
    assert np.all(v.step_scores[es] >= 0.7)   # ES: both key actions done well
    assert v.score == pytest.approx(float(v.step_scores.sum()), abs=1e-5)


def test_statistics_follow_hha300_at_scale():
  cfg = dataclasses.replace(synthetic.PRESETS["synthetic"], feature_dim=8)
  videos = [v for _, v in synthetic.generate(cfg)]
  lengths = np.array([len(v.labels) for v in videos])
  assert len(videos) == 300
  assert 950 < lengths.mean() < 1150 and lengths.min() >= 373 and lengths.max() <= 1579
  attrs = np.stack([v.attributes for v in videos])
  ne = (attrs == 0).mean(0)
  np.testing.assert_allclose(ne, cfg.ne_rates, atol=0.06)
  # Mostly in order: most videos' step sequence is increasing.
  in_order = 0
  for v in videos:
    seq = [c for i, c in enumerate(v.labels) if c and (i == 0 or v.labels[i - 1] != c)]
    in_order += all(a < b for a, b in zip(seq, seq[1:]))
  assert 0.6 < in_order / len(videos) < 0.95


def test_written_layout_reads_back(tmp_path):
  cfg = dataclasses.replace(SMALL, num_train=3, num_test=2)
  synthetic.write_layout(tmp_path, cfg)
  summary = layout.validate_manual_dir(tmp_path)
  assert summary.feature_dim == 64
  generated = {v.name: v for _, v in synthetic.generate(cfg)}
  for split in ("train", "test"):
    for name, ex in layout.iter_examples(tmp_path, split):
      v = generated[name]
      np.testing.assert_array_equal(ex["features"], v.features)
      np.testing.assert_array_equal(ex["labels"], v.labels)
      assert ex["score"] == pytest.approx(v.score, abs=1e-5)
      np.testing.assert_array_equal(ex["attributes"], v.attributes)


def test_config_validation():
  with pytest.raises(ValueError, match="feature_dim"):
    synthetic.SyntheticConfig(feature_dim=7)
  with pytest.raises(ValueError, match="ne_rates"):
    synthetic.SyntheticConfig(ne_rates=(0.1,) * 5)
