"""Short predicted runs merged into their neighbours, against a loop written from the
rule's description, and its effect on the joint model's labels and step segments."""

import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import config as config_lib
from hhjax.models.segmenters import postprocess


def _runs(x):
  out, start = [], 0
  for t in range(1, len(x) + 1):
    if t == len(x) or x[t] != x[start]:
      out.append([int(x[start]), start, t])
      start = t
  return out


def reference(labels, valid_len, k, max_passes=postprocess.MAX_PASSES):
  """The rule as a plain loop over runs: all short runs of a pass take the label of
  their longer neighbour (the earlier on a tie); repeat until nothing changes."""
  x = [int(v) for v in labels[:valid_len]]
  for _ in range(max_passes):
    runs = _runs(x)
    y = list(x)
    for i, (lab, s, e) in enumerate(runs):
      if e - s >= k or len(runs) == 1:
        continue
      left = runs[i - 1] if i > 0 else None
      right = runs[i + 1] if i + 1 < len(runs) else None
      ll = left[2] - left[1] if left else -1
      rl = right[2] - right[1] if right else -1
      y[s:e] = [left[0] if ll >= rl else right[0]] * (e - s)
    if y == x:
      break
    x = y
  return np.array(x + [0] * (len(labels) - valid_len))


def _merge(rows, lengths, k):
  labels = jnp.asarray(np.array(rows))
  mask = jnp.asarray(np.arange(labels.shape[1])[None] < np.array(lengths)[:, None])
  return np.asarray(postprocess.merge_short_runs(labels, mask, k))


def test_hand_examples():
  # A one-frame flicker inside a step goes back to the step.
  assert _merge([[1, 1, 1, 2, 1, 1, 1]], [7], 2).tolist() == [[1, 1, 1, 1, 1, 1, 1]]
  # A short run between two steps joins the longer one (right, 4 against 2 frames).
  assert _merge([[1, 1, 3, 2, 2, 2, 2]], [7], 2).tolist() == [[1, 1, 2, 2, 2, 2, 2]]
  # On a tie the earlier neighbour wins.
  assert _merge([[1, 1, 3, 2, 2]], [5], 2).tolist() == [[1, 1, 1, 2, 2]]
  # Two passes: 1 1 1 1 | 2 | 3 | 4 4 4 4 -> both short runs join their longer
  # neighbours at once (2 -> 1, 3 -> 4).
  assert _merge([[1, 1, 1, 1, 2, 3, 4, 4, 4, 4]], [10], 2).tolist() == [
      [1, 1, 1, 1, 1, 4, 4, 4, 4, 4]]
  # Padding is never a neighbour and stays 0; a video of one short run is kept.
  assert _merge([[1, 1, 1, 2, 9, 9]], [4], 2).tolist() == [[1, 1, 1, 1, 0, 0]]
  assert _merge([[5, 5, 0, 0]], [2], 3).tolist() == [[5, 5, 0, 0]]
  # min_frames <= 1 changes nothing but the padding.
  assert _merge([[1, 2, 1, 7]], [3], 1).tolist() == [[1, 2, 1, 0]]


def test_matches_the_loop_on_random_labels():
  rng = np.random.default_rng(0)
  for k in (2, 3, 5, 9):
    rows, lengths = [], []
    for _ in range(8):
      t = 40
      n = int(rng.integers(1, t + 1))
      # Runs of random lengths (many short) over 7 classes.
      x, lab = [], int(rng.integers(0, 7))
      while len(x) < t:
        x += [lab] * int(rng.geometric(0.3))
        lab = int(rng.integers(0, 7))
      rows.append(x[:t])
      lengths.append(n)
    got = _merge(rows, lengths, k)
    for r, n, g in zip(rows, lengths, got):
      np.testing.assert_array_equal(g, reference(r, n, k), err_msg=f"k={k} {r[:n]}")


def test_joint_model_scores_the_merged_runs():
  import jax  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  config = config_lib.get_config()
  config.model.num_stages, config.model.num_layers, config.model.channels = 2, 3, 8
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 48, 16))
  mask = jnp.ones((2, 48)).at[1, 40:].set(0)
  raw = create_model(config)
  params = raw.init(jax.random.PRNGKey(1), x, mask)
  config.model.min_segment_frames = 6
  merged = create_model(config)
  out_raw = raw.apply(params, x, mask)
  out = merged.apply(params, x, mask)
  expected = postprocess.merge_short_runs(out_raw["labels"], mask, 6)
  np.testing.assert_array_equal(out["labels"], expected)
  assert (np.asarray(expected) != np.asarray(out_raw["labels"])).any()  # it did merge
  # The scorer's step runs come from the merged labels: the same as passing them in.
  given = raw.apply(params, x, mask, gt_labels=expected)
  np.testing.assert_array_equal(out["seg_length"], given["seg_length"])
  np.testing.assert_allclose(out["video_score"], given["video_score"], rtol=1e-6)


def test_config_checks_name_the_field():
  config = config_lib.get_config()
  config.model.min_segment_frames = -1
  with pytest.raises(ValueError, match="config.model.min_segment_frames"):
    config_lib.check_config(config)
  config.model.min_segment_frames = 10
  config.model.segmenter = "causal_conv_transformer"
  with pytest.raises(ValueError, match="causal"):
    config_lib.check_config(config)
