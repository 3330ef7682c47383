"""Viewpoint augmentation of hand-pose features: hand-worked rotations, mirroring,
absent hands, dropped stretches, seeding, and the input-pipeline hook."""

from __future__ import annotations

import functools

import ml_collections
import numpy as np
import pytest

from hhjax import config as config_lib
from hhjax import handpose
from hhjax.data import augment, pipeline

D, H = handpose.FEATURE_DIM, handpose.HAND_DIM
# MediaPipe's hand skeleton: the bones whose lengths a rotation must keep.
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9),
         (9, 10), (10, 11), (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17),
         (0, 17), (17, 18), (18, 19), (19, 20))


def _slot(rel: np.ndarray, wrist_img, size: float, aspect: float) -> np.ndarray:
  """(106,) values of a present hand: wrist-relative `rel` (21, 3) and image
  coordinates wrist + size * rel_xy (in frame heights), as the extractor lays them
  out."""
  img = np.asarray(wrist_img) + size * rel[:, :2] / np.array([aspect, 1.0])
  return np.concatenate([rel.reshape(-1), img.reshape(-1), [1.0]])


def _random_hand(rng) -> np.ndarray:
  """(21, 3) wrist-relative landmarks normalised like the extractor's: wrist at 0,
  the wrist-to-middle-finger-base distance in the image plane 1."""
  rel = rng.normal(0, 0.6, (21, 3))
  rel[0] = 0
  rel[9] = [rng.normal(0, 0.3), -1.0, rng.normal(0, 0.3)]
  return rel / np.hypot(*rel[9, :2])


def _features(t=12, seed=0, aspect=augment.DEFAULT_ASPECT, absent=True) -> np.ndarray:
  """(t, 212) float32: two moving random hands, each missing on some frames."""
  rng = np.random.default_rng(seed)
  hands = [_random_hand(rng), _random_hand(rng)]
  x = np.zeros((t, D))
  for f in range(t):
    for s in range(2):
      if absent and (f % 5 == 2 + s or (s == 1 and f < 2)):
        continue
      wrist = rng.uniform(0.25, 0.75, 2)
      x[f, s * H:(s + 1) * H] = _slot(hands[s], wrist, rng.uniform(0.05, 0.15), aspect)
  return x.astype(np.float32)


def _slots(x):
  return np.asarray(x, np.float64).reshape(-1, 2, H)


def _rel(x):
  return _slots(x)[..., :63].reshape(-1, 2, 21, 3)


def _img(x):
  return _slots(x)[..., 63:105].reshape(-1, 2, 21, 2)


def _config(augment_name="", eval_view="", seed=0):
  return ml_collections.ConfigDict(dict(
      seed=seed, dataset=dict(augment=augment_name, eval_view=eval_view)))


# Geometry worked by hand.


def test_rotation_about_z_by_hand():
  # One hand: landmark 5 at (1, 0, 0), landmark 9 straight up the image (0, -1, 0),
  # the hand 0.1 frame heights per unit, its wrist 0.2 widths right of the centre.
  rel = np.zeros((21, 3))
  rel[5], rel[9] = [1, 0, 0], [0, -1, 0]
  for aspect, wrist_y in ((1.0, 0.7), (1.5, 0.8)):
    x = np.zeros((1, D), np.float32)
    x[0, :H] = _slot(rel, (0.7, 0.5), 0.1, aspect)
    out = augment.rotate_view(x, augment.rotation_matrix(roll=90), aspect=aspect)
    r, img = _rel(out)[0, 0], _img(out)[0, 0]
    np.testing.assert_allclose(r[5], [0, 1, 0], atol=1e-6)     # x turns into y
    np.testing.assert_allclose(r[9], [1, 0, 0], atol=1e-6)
    # The wrist turns about the image centre: 0.2 widths = 0.2 * aspect heights right
    # becomes that far down.
    np.testing.assert_allclose(img[0], [0.5, wrist_y], atol=1e-6)
    np.testing.assert_allclose(img[5], [0.5, wrist_y + 0.1], atol=1e-6)
    np.testing.assert_allclose(img[9], [0.5 + 0.1 / aspect, wrist_y], atol=1e-6)
    assert _slots(out)[0, 0, -1] == 1 and np.all(out[0, H:] == 0)


def test_pitch_looking_down_by_hand():
  rel = np.zeros((21, 3))
  rel[5], rel[9] = [1, 0, 0], [0, -1, 0]          # finger pointing up
  x = np.zeros((1, D), np.float32)
  x[0, H:] = _slot(rel, (0.5, 0.7), 0.1, 1.0)     # in the right slot this time
  out = augment.view_transform(x, "rot45_pitch", aspect=1.0)
  c = np.cos(np.pi / 4)
  r, img = _rel(out)[0, 1], _img(out)[0, 1]
  # Turned: (0, -1, 0) -> (0, -c, -c), towards a camera above; (1, 0, 0) stays. Then
  # divided by the new image-plane length of landmark 9, c.
  np.testing.assert_allclose(r[9], [0, -1, -1], atol=1e-6)
  np.testing.assert_allclose(r[5], [1 / c, 0, 0], atol=1e-6)
  # Positions across the image foreshorten by cos 45: the wrist 0.2 below the centre
  # moves to 0.2 c, landmark 9 (0.1 below) to 0.1 c.
  np.testing.assert_allclose(img[0], [0.5, 0.5 + 0.2 * c], atol=1e-6)
  np.testing.assert_allclose(img[9], [0.5, 0.5 + 0.1 * c], atol=1e-6)
  np.testing.assert_allclose(img[5], [0.6, 0.5 + 0.2 * c], atol=1e-6)
  assert np.all(out[0, :H] == 0)


def test_yaw_foreshortens_across_the_width():
  x = np.zeros((1, D), np.float32)
  rel = np.zeros((21, 3))
  rel[9] = [0, -1, 0]
  x[0, :H] = _slot(rel, (0.9, 0.5), 0.1, 1.5)
  out = augment.view_transform(x, "rot30_yaw")
  # 0.4 widths right of the centre -> 0.4 cos 30 (the wrist is on the plane z = 0).
  np.testing.assert_allclose(_img(out)[0, 0, 0], [0.5 + 0.4 * np.cos(np.pi / 6), 0.5],
                             atol=1e-6)


def test_rotation_matrix_matches_naive_formulas():
  rng = np.random.default_rng(1)
  yaw, pitch, roll = rng.uniform(-50, 50, 3)
  p = rng.normal(size=3)
  a, b, c = np.radians([yaw, pitch, roll])
  q = [p[0] * np.cos(a) + p[2] * np.sin(a), p[1], -p[0] * np.sin(a) + p[2] * np.cos(a)]
  q = [q[0], q[1] * np.cos(b) - q[2] * np.sin(b), q[1] * np.sin(b) + q[2] * np.cos(b)]
  q = [q[0] * np.cos(c) - q[1] * np.sin(c), q[0] * np.sin(c) + q[1] * np.cos(c), q[2]]
  np.testing.assert_allclose(augment.rotation_matrix(yaw, pitch, roll) @ p, q, atol=1e-12)


def test_rotation_keeps_bone_lengths_and_the_two_blocks_consistent():
  x = _features(absent=False)
  rng = np.random.default_rng(2)
  for _ in range(5):
    matrix = augment.rotation_matrix(*rng.uniform(-45, 45, 3))
    plain = augment.rotate_view(x, matrix, renormalise=False)
    bones = lambda y: np.stack([np.linalg.norm(_rel(y)[..., i, :] - _rel(y)[..., j, :],
                                               axis=-1) for i, j in BONES], -1)
    np.testing.assert_allclose(bones(plain), bones(x), rtol=1e-5, atol=1e-5)
    out = augment.rotate_view(x, matrix)
    # Renormalised: lengths change by one factor per hand and frame, and the middle
    # finger's base is again at image-plane distance 1 (where it is not foreshortened
    # below the floor).
    ratio = bones(out) / bones(x)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape),
                               rtol=1e-4)
    planar = np.hypot(*np.moveaxis(_rel(out)[..., 9, :2], -1, 0))
    ok = planar > augment.MIN_RELATIVE_SCALE
    np.testing.assert_allclose(planar[ok], 1, rtol=1e-5)
    # The image outline is the projection of the turned shape: image offsets from the
    # wrist (in frame heights) are one multiple of the wrist-relative xy.
    offset = (_img(out) - _img(out)[:, :, :1]) * [augment.DEFAULT_ASPECT, 1]
    scale = offset[..., 9, 1] / _rel(out)[..., 9, 1]
    np.testing.assert_allclose(offset, scale[..., None, None] * _rel(out)[..., :2],
                               atol=1e-5)


# Mirroring.


def test_mirroring_twice_is_identity_and_swaps_the_slots():
  x = _features()
  once = augment.mirror(x)
  np.testing.assert_allclose(augment.mirror(once), x, atol=1e-7)
  a, b = _slots(x), _slots(once)
  present = a[:, 0, -1] == 1
  np.testing.assert_array_equal(b[:, 1, -1], a[:, 0, -1])    # left slot -> right
  np.testing.assert_array_equal(b[:, 0, -1], a[:, 1, -1])
  rel_a, rel_b = _rel(x)[present, 0], _rel(once)[present, 1]
  np.testing.assert_allclose(rel_b[..., 0], -rel_a[..., 0], atol=1e-7)
  np.testing.assert_allclose(rel_b[..., 1:], rel_a[..., 1:], atol=1e-7)
  img_a, img_b = _img(x)[present, 0], _img(once)[present, 1]
  np.testing.assert_allclose(img_b[..., 0], 1 - img_a[..., 0], atol=1e-7)
  np.testing.assert_allclose(img_b[..., 1], img_a[..., 1], atol=1e-7)
  np.testing.assert_array_equal(augment.view_transform(x, "mirror"), once)


# Absent hands and dropped stretches.

TRANSFORMS = {
    "rotate": lambda x, rng: augment.rotate_view(x, augment.rotation_matrix(20, -35, 10)),
    "mirror": lambda x, rng: augment.mirror(x),
    "jitter": lambda x, rng: augment.jitter(x, 1.2, (0.1, -0.05)),
    "random_rotation": augment.random_rotation,
    "random_mirror": functools.partial(augment.random_mirror, prob=1.0),
    "jitter_image": augment.jitter_image,
    "drop_hands": functools.partial(augment.drop_hands, rate=0.2),
    "handpose": augment.handpose_default,
    "handpose_half": augment.handpose_half,
    **{view: (lambda v: lambda x, rng: augment.view_transform(x, v))(view)
       for view in augment.VIEW_EXAMPLES},
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_absent_hands_stay_exactly_zero(name):
  x = _features()
  before = x.copy()
  out = TRANSFORMS[name](x, np.random.default_rng(0))
  np.testing.assert_array_equal(x, before)            # the input is not changed
  assert out.shape == x.shape and out.dtype == np.float32
  slots = _slots(out)
  absent_out = slots[..., -1] == 0
  assert np.all(slots[absent_out] == 0)               # an absent slot is all zero
  absent_in = _slots(x)[..., -1] == 0
  swapped = absent_in[:, ::-1]
  # A hand missing before is missing after (in the other slot after mirroring), and,
  # but for dropped stretches, no other hand goes missing.
  assert np.all(absent_out[absent_in]) or np.all(absent_out[swapped])
  if "drop" not in name and not name.startswith("handpose"):
    assert (absent_out == absent_in).all() or (absent_out == swapped).all()


def test_dropped_stretch_zeroes_exactly_the_slot_and_its_presence():
  x = _features(t=10, absent=False)
  out = augment.drop_stretches(x, 1, [(2, 5), (8, 20)])
  dropped = np.zeros(10, bool)
  dropped[[2, 3, 4, 8, 9]] = True
  assert np.all(out[dropped, H:] == 0)                 # values and presence flag
  np.testing.assert_array_equal(out[~dropped, H:], x[~dropped, H:])
  np.testing.assert_array_equal(out[:, :H], x[:, :H])  # the other slot untouched


def test_random_drops_are_whole_slot_stretches_of_the_drawn_lengths():
  x = _features(t=400, absent=False)
  out = augment.drop_hands(x, np.random.default_rng(3), rate=1 / 50, min_len=4,
                           max_len=9)
  a, b = _slots(x), _slots(out)
  changed = np.any(a != b, axis=-1)                    # (T, 2)
  assert changed.sum() > 0
  assert np.all(b[changed] == 0)                       # a change is a zeroed slot
  np.testing.assert_array_equal(b[~changed], a[~changed])
  for s in range(2):                                   # runs at least min_len long
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, changed[:, s], 0])))[::2]
    assert runs.min() >= 4 or changed[-1, s]


# Seeding.


def test_draws_depend_only_on_seed_epoch_and_index():
  x = _features()
  aug = augment.SeededAugmentation(augment.handpose_default, seed=7)
  first = {(e, i): aug(x, i, e) for e in range(2) for i in range(3)}
  for (e, i) in reversed(list(first)):                 # any order, a fresh object
    again = augment.SeededAugmentation(augment.handpose_default, seed=7)(x, i, e)
    np.testing.assert_array_equal(again, first[e, i])
  values = [v.tobytes() for v in first.values()]
  assert len(set(values)) == len(values)               # epochs and indices differ
  other = augment.SeededAugmentation(augment.handpose_default, seed=8)(x, 0, 0)
  assert not np.array_equal(other, first[0, 0])


# The pipeline hook.


class _HandSource:
  """Videos of random hand-pose features with the builder's example keys."""

  def __init__(self, lengths):
    self.examples = [dict(
        video=f"v{i}".encode(), num_frames=t, score=1.0, features=_features(t, seed=i),
        labels=np.zeros(t, np.int32), attributes=np.zeros(6, np.int32),
        step_scores=np.zeros(6, np.float32)) for i, t in enumerate(lengths)]

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]


def _batches(transform, plan, source):
  return list(pipeline.make_loader(source, plan, streams="all", num_threads=1,
                                   transform=transform))


def test_loader_applies_the_seeded_augmentation_per_epoch_and_index():
  lengths = (9, 14, 6, 11)
  source = _HandSource(lengths)
  plan = pipeline.BatchPlan(lengths, batch_size=2, seed=0, bucket_size=8, num_epochs=2)
  aug = augment.training_transform(_config("handpose", seed=0), D)
  plain = _batches(None, plan, source)
  first = _batches(aug, plan, source)
  second = _batches(augment.training_transform(_config("handpose", seed=0), D), plan,
                    source)
  other_seed = _batches(augment.training_transform(_config("handpose", seed=1), D),
                        plan, source)
  assert any(not np.array_equal(a["features"], b["features"])
             for a, b in zip(plain, first))
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a["features"], b["features"])
  assert any(not np.array_equal(a["features"], b["features"])
             for a, b in zip(first, other_seed))
  # Each row is the hook applied to its video with its index and the batch's epoch.
  seen = {}
  for k, batch in enumerate(first):
    epoch = k // plan.batches_per_epoch
    for r, i in enumerate(batch["index"]):
      t = lengths[i]
      want = aug(source[i]["features"], int(i), epoch)
      np.testing.assert_array_equal(batch["features"][r, :t], want)
      assert np.all(batch["features"][r, t:] == 0)
      seen[epoch, int(i)] = batch["features"][r, :t]
  for i in range(len(lengths)):                         # a fresh draw each epoch
    assert not np.array_equal(seen[0, i], seen[1, i])


def test_loader_resumes_with_the_same_augmented_batches():
  lengths = (9, 14, 6, 11, 5)
  source = _HandSource(lengths)
  plan = pipeline.BatchPlan(lengths, batch_size=2, seed=3, bucket_size=8, num_epochs=3,
                            drop_remainder=False)
  loader = pipeline.make_loader(source, plan, streams="all", num_threads=1,
                                transform=augment.training_transform(
                                    _config("handpose"), D))
  it = iter(loader)
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it)["features"] for _ in range(4)]
  resumed = iter(loader)
  resumed.set_state(state)
  for want in rest:
    np.testing.assert_array_equal(next(resumed)["features"], want)


def test_evaluation_view_is_applied_before_standardising():
  source = _HandSource((7, 5))
  plan = pipeline.BatchPlan((7, 5), batch_size=2, shuffle=False, bucket_size=8)
  stats = pipeline.FeatureStats(np.full(D, 0.1, np.float32), np.full(D, 2.0, np.float32))
  view = augment.evaluation_transform(_config(eval_view="rot45_pitch"), D)
  batch = pipeline.load_batch(source, plan[0], batch_size=2, streams="all",
                              stats=stats, transform=view)
  for r, i in enumerate(batch["index"]):
    t = source[i]["num_frames"]
    want = (augment.view_transform(source[i]["features"], "rot45_pitch") - 0.1) / 2.0
    np.testing.assert_allclose(batch["features"][r, :t], want, rtol=1e-6, atol=1e-6)


def test_off_means_no_hook():
  assert augment.training_transform(_config(), 8) is None
  assert augment.evaluation_transform(_config(), 8) is None


def test_augment_refused_for_other_feature_sizes():
  with pytest.raises(ValueError, match=r"config\.dataset\.augment.*feature size 2048"):
    augment.training_transform(_config("handpose"), 2048)
  with pytest.raises(ValueError, match=r"config\.dataset\.eval_view.*feature size 8"):
    augment.evaluation_transform(_config(eval_view="mirror"), 8)
  with pytest.raises(ValueError, match=r"\(T, 212\)"):
    augment.mirror(np.zeros((3, 8), np.float32))


def test_unknown_names_are_refused_naming_the_field():
  config = config_lib.get_config()
  config.dataset.augment = "rgb"
  with pytest.raises(ValueError, match=r"config\.dataset\.augment='rgb'"):
    config_lib.check_config(config)
  config.dataset.augment = ""
  config.dataset.eval_view = "rot30_tilt"
  with pytest.raises(ValueError, match=r"config\.dataset\.eval_view='rot30_tilt'"):
    config_lib.check_config(config)


def test_runs_saved_before_the_fields_existed_resume_unless_augmenting():
  new = config_lib.get_config().to_dict()
  saved = config_lib.get_config().to_dict()
  del saved["dataset"]["augment"], saved["dataset"]["eval_view"]
  assert config_lib.resume_conflicts(saved, new) == []
  new["dataset"]["augment"] = "handpose"
  assert config_lib.resume_conflicts(saved, new) == ["dataset.augment: '' -> 'handpose'"]


def test_rotate_view_refuses_what_is_not_a_rotation():
  x = _features()
  for bad in (np.diag([-1.0, 1, 1]), 2 * np.eye(3), np.eye(2)):
    with pytest.raises(ValueError, match="rotation matrix"):
      augment.rotate_view(x, bad)


# "handpose_half": the preset on half the videos.


def test_sometimes_applies_the_augmentation_with_its_probability():
  x = _features()
  mark = lambda f, rng: f + 1.0                         # noqa: E731
  never = augment.sometimes(mark, 0.0)
  always = augment.sometimes(mark, 1.0)
  rng = np.random.default_rng(3)
  np.testing.assert_array_equal(never(x, rng), x.astype(np.float32))
  np.testing.assert_array_equal(always(x, rng), x + 1.0)
  half = augment.sometimes(mark, 0.5)
  changed = [not np.array_equal(half(x, np.random.default_rng(i)), x)
             for i in range(2000)]
  # Binomial(2000, 0.5): sd 22 videos; 5 sd either side.
  assert abs(sum(changed) - 1000) < 110
  with pytest.raises(ValueError, match="prob must lie in"):
    augment.sometimes(mark, 1.5)


def test_handpose_half_is_the_preset_or_the_video_as_filmed():
  x = _features()
  kinds = set()
  for i in range(40):
    out = augment.handpose_half(x, np.random.default_rng(i))
    if np.array_equal(out, x.astype(np.float32)):
      kinds.add("as filmed")
      continue
    # Otherwise the full preset, drawn with the same generator after the coin.
    rng = np.random.default_rng(i)
    rng.uniform()
    np.testing.assert_array_equal(out, augment.handpose_default(x, rng))
    kinds.add("augmented")
  assert kinds == {"as filmed", "augmented"}
  config = ml_collections.ConfigDict({"seed": 0, "dataset": {
      "augment": "handpose_half", "eval_view": ""}})
  assert augment.training_transform(config, augment.FEATURE_DIM).fn is \
      augment.handpose_half
