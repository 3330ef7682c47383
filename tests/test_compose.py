"""Tests for `hhjax.data.compose`: composed washes are traceable frame by frame to the
clips they were cut from, splits keep people apart, and the written folder reads back.

Clip features are synthetic: value [0, t] of clip i is i, value [1, t] is t, so every
composed frame tells which clip and frame it came from.
"""

import collections
import itertools
import pathlib

import numpy as np
import pytest

from hhjax.data import compose
from hhjax.data import layout
from hhjax.data.synthetic import CLASS_NAMES

REAL_CLIPS = (pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
              / "kaggle_handwash_train" / "clips.csv")
D = 3

# (subject, action, who_step, length). Person "a" has every step (two clips for steps 2
# and 4) and one background clip; "b" lacks step 3 and has two background clips; "c"
# has steps 1, 2, 6 only and no background.
CLIP_SPEC = [
    ("a", 1, 1, 20), ("a", 2, 2, 15), ("a", 3, 2, 18), ("a", 4, 3, 22),
    ("a", 5, 4, 12), ("a", 6, 4, 16), ("a", 7, 5, 25), ("a", 9, 6, 14),
    ("a", 11, 0, 30),
    ("b", 1, 1, 11), ("b", 2, 2, 13), ("b", 5, 4, 17), ("b", 7, 5, 19),
    ("b", 9, 6, 21), ("b", 11, 0, 24), ("b", 12, 0, 28),
    ("c", 1, 1, 9), ("c", 2, 2, 10), ("c", 9, 6, 8),
]


def _fake_clips():
  clips, features = [], {}
  for i, (subject, action, step, length) in enumerate(CLIP_SPEC):
    clip = compose.Clip(name=f"clip{i:02d}_{subject}_{action:02d}.mp4",
                        subject=subject, action=action, who_step=step)
    clips.append(clip)
    array = np.zeros((D, length), np.float32)
    array[0] = i
    array[1] = np.arange(length)
    array[2] = step
    features[clip.stem] = array
  return clips, features


@pytest.fixture(scope="module")
def fake():
  clips, features = _fake_clips()
  washes = compose.compose_washes(clips, features, washes_per_person=8, seed=3)
  return clips, features, washes


def test_read_clips_and_errors(tmp_path):
  path = tmp_path / "clips.csv"
  path.write_text("clip,subject,action,who_step,split\n"
                  "x_01.mp4,001,1,1,train\n\n"
                  "x_11.mp4,001,11,0,train\n")
  clips = compose.read_clips(path)
  assert [c.stem for c in clips] == ["x_01", "x_11"]
  assert clips[1] == compose.Clip("x_11.mp4", "001", 11, 0, "train")
  bad_rows = {
      "x_02.mp4,001,two,2,train": "action 'two' is not an integer",
      "x_02.mp4,001,2,7,train": "who_step 7 is not in 0..6",
      "x_02.mp4,001,2,train": "expected 5 columns",
      "x_01.mp4,001,1,1,train": r"repeats \(first at line 2\)",
  }
  for row, message in bad_rows.items():
    path.write_text("clip,subject,action,who_step,split\nx_01.mp4,001,1,1,train\n"
                    + row + "\n")
    with pytest.raises(compose.ClipsError, match=message) as info:
      compose.read_clips(path)
    assert f"{path}:3" in str(info.value)
  path.write_text("clip,subject,who_step\n")
  with pytest.raises(compose.ClipsError, match=r"lacks column\(s\) \['action'\]"):
    compose.read_clips(path)
  with pytest.raises(compose.ClipsError, match="cannot read"):
    compose.read_clips(tmp_path / "missing.csv")


def _assert_traced(wash, clips, features, min_part=0.5):
  """Every frame of `wash` is the claimed frame of the claimed clip of its person, with
  that clip's label; a step part is at least `min_part` of its clip."""
  by_name = {c.name: c for c in clips}
  index = {c.name: i for i, c in enumerate(clips)}
  offset = 0
  for seg in wash.segments:
    clip = by_name[seg.clip]
    assert clip.subject == wash.person
    assert seg.offset == offset and seg.label == clip.who_step
    length = features[clip.stem].shape[1]
    assert 0 <= seg.start < seg.end <= length
    if seg.label != compose.BACKGROUND:
      assert seg.length >= np.ceil(min_part * length)
    part = wash.features[:, offset:offset + seg.length]
    np.testing.assert_array_equal(part[0], index[seg.clip])
    np.testing.assert_array_equal(part[1], np.arange(seg.start, seg.end))
    np.testing.assert_array_equal(wash.labels[offset:offset + seg.length], seg.label)
    offset += seg.length
  assert offset == wash.num_frames == wash.features.shape[1]
  assert wash.features.dtype == np.float32 and wash.features.shape[0] == D


def test_frames_come_from_the_claimed_clips(fake):
  clips, features, washes = fake
  assert len(washes) == 3 * 8
  for wash in washes:
    assert wash.style == "cut"
    _assert_traced(wash, clips, features)


def test_steps_order_attributes_and_score(fake):
  clips, _, washes = fake
  has = {(c.subject, c.who_step) for c in clips}
  saw_skip = saw_swap = saw_gap = False
  for wash in washes:
    steps = [s.label for s in wash.segments if s.label != compose.BACKGROUND]
    assert tuple(steps) == wash.step_order and len(set(steps)) == len(steps)
    for step in range(1, 7):
      done = step in steps
      assert wash.attributes[step - 1] == layout.ATTRIBUTES.index("ES" if done else "NE")
      if (wash.person, step) not in has:
        assert not done
      elif not done:
        saw_skip = True
    assert wash.score == len(steps) >= 1
    # Mostly in order: each step is at most one place from its sorted position.
    ranks = np.argsort(np.argsort(steps))
    assert np.all(np.abs(ranks - np.arange(len(steps))) <= 1)
    saw_swap |= steps != sorted(steps)
    labels = [s.label for s in wash.segments]
    if wash.person == "c":
      assert compose.BACKGROUND not in labels
    else:
      assert labels[0] == labels[-1] == compose.BACKGROUND
      saw_gap |= compose.BACKGROUND in labels[1:-1]
  assert saw_skip and saw_swap and saw_gap


def test_picks_among_several_clips_for_a_step():
  # Person "a" has two clips each for steps 2 and 4, "b" two background clips.
  washes = compose.compose_washes(*_fake_clips(), washes_per_person=40, seed=0)
  for person, label in (("a", 2), ("a", 4), ("b", 0)):
    used = {s.clip for w in washes if w.person == person
            for s in w.segments if s.label == label}
    assert len(used) == 2, (person, label, used)


def test_deterministic_for_a_seed(fake):
  clips, features, washes = fake
  again = compose.compose_washes(clips, features, washes_per_person=8, seed=3)
  other = compose.compose_washes(clips, features, washes_per_person=8, seed=4)
  assert [w.segments for w in again] == [w.segments for w in washes]
  for a, b in zip(again, washes):
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
  assert [w.segments for w in other] != [w.segments for w in washes]


def test_missing_features_and_bad_arguments():
  clips, features = _fake_clips()
  del features[clips[4].stem]
  with pytest.raises(compose.ClipsError, match=clips[4].name):
    compose.compose_washes(clips, features)
  clips, features = _fake_clips()
  features[clips[0].stem] = np.zeros((D + 1, 5), np.float32)
  with pytest.raises(compose.ClipsError, match="disagree on D"):
    compose.compose_washes(clips, features)
  with pytest.raises(ValueError, match="min_part"):
    compose.compose_washes(*_fake_clips(), min_part=0.0)


def test_leave_people_out_folds():
  people = ["p3", "p1", "p2", "p5", "p4", "p1"]
  groups = compose.leave_people_out_folds(people, 3)
  assert groups == [("p1", "p4"), ("p2", "p5"), ("p3",)]
  with pytest.raises(ValueError, match="num_folds"):
    compose.leave_people_out_folds(people, 6)
  assert compose.fold_split_names(4, 1) == ("fold0+fold2+fold3", "fold1")
  with pytest.raises(ValueError, match="fold"):
    compose.fold_split_names(4, 4)


def test_written_folds_keep_people_apart(fake, tmp_path):
  _, _, washes = fake
  splits = compose.write_layout(tmp_path, washes, folds=3)
  assert set(splits) == {"fold0", "fold1", "fold2"}
  assert layout.list_splits(tmp_path) == ("fold0", "fold1", "fold2")
  # All fold bundles checked together: the checker refuses a video in two splits.
  summary = layout.validate_manual_dir(tmp_path, splits=list(splits), num_classes=7)
  person = {w.name: w.person for w in washes}
  groups = [{person[v] for v in summary.splits[f"fold{k}"]} for k in range(3)]
  assert groups == [{"a"}, {"b"}, {"c"}]
  for k in range(3):
    train_expr, test_expr = compose.fold_split_names(3, k)
    train_people = set().union(*(groups[int(name[4:])] for name in train_expr.split("+")))
    test_people = groups[int(test_expr[4:])]
    assert not train_people & test_people
    assert train_people | test_people == {"a", "b", "c"}
  assert sorted(v for s in splits.values() for v in s) == sorted(person)
  with pytest.raises(ValueError, match="folds 0 and 1"):
    compose.write_layout(tmp_path / "x", washes, folds=[("a",), ("a", "b"), ("c",)])
  with pytest.raises(ValueError, match="in no fold"):
    compose.write_layout(tmp_path / "y", washes, folds=[("a",), ("b",)])
  with pytest.raises(ValueError, match="exactly one"):
    compose.write_layout(tmp_path / "z", washes, folds=3, test_people=["c"])


def test_written_layout_reads_back(fake, tmp_path):
  _, _, washes = fake
  splits = compose.write_layout(tmp_path, washes, test_people=["c"])
  assert set(splits) == {"train", "test"}
  summary = layout.validate_manual_dir(tmp_path, splits=["train", "test"], num_classes=7)
  assert summary.feature_dim == D
  person = {w.name: w.person for w in washes}
  assert {person[v] for v in summary.splits["test"]} == {"c"}
  assert {person[v] for v in summary.splits["train"]} == {"a", "b"}
  by_name = {w.name: w for w in washes}
  seen = []
  for split in ("train", "test"):
    for video, example in layout.iter_examples(tmp_path, split):
      wash = by_name[video]
      seen.append(video)
      np.testing.assert_array_equal(example["labels"], wash.labels)
      np.testing.assert_array_equal(example["features"], wash.features.T)
      np.testing.assert_array_equal(example["attributes"], wash.attributes)
      assert example["score"] == wash.score
  assert sorted(seen) == sorted(by_name)
  with pytest.raises(ValueError, match="no washes"):
    compose.write_layout(tmp_path / "x", washes, test_people=["nobody"])


def test_command_writes_folds_and_refuses_to_overwrite(tmp_path, capsys):
  clips, features = _fake_clips()
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("clip,subject,action,who_step\n" + "".join(
      f"{c.name},{c.subject},{c.action},{c.who_step}\n" for c in clips))
  feature_dir = tmp_path / "clip_features"
  feature_dir.mkdir()
  for stem, array in features.items():
    np.save(feature_dir / f"{stem}.npy", array)
  out = tmp_path / "layout"
  argv = ["--clips", str(csv_path), "--features", str(feature_dir), "--out", str(out),
          "--folds", "3", "--washes-per-person", "4", "--seed", "5"]
  assert compose.main(argv) == 0
  printed = capsys.readouterr().out
  assert "12 washes of 3 people from 19 clips" in printed
  assert "fold2: 4 washes of people c" in printed
  expected = compose.compose_washes(clips, features, washes_per_person=4, seed=5)
  for wash in expected:
    np.testing.assert_array_equal(np.load(out / "features" / f"{wash.name}.npy"),
                                  wash.features)
  assert compose.main(argv) == 1
  assert "--overwrite" in capsys.readouterr().err
  (out / "tfds").mkdir()
  assert compose.main(argv + ["--overwrite", "--washes-per-person", "2"]) == 0
  assert not (out / "tfds").exists()
  assert len(list((out / "features").iterdir())) == 6
  np.save(feature_dir / f"{clips[0].stem}.npy", np.zeros((D + 1, 5), np.float32))
  assert compose.main(argv + ["--overwrite"]) == 1
  assert "disagree on D" in capsys.readouterr().err


def test_real_clip_list():
  if not REAL_CLIPS.is_file():
    pytest.skip(f"real clip list not available ({REAL_CLIPS} is absent)")
  clips = compose.read_clips(REAL_CLIPS)
  assert len(clips) == 65
  assert len({c.subject for c in clips}) == 8
  assert all(0 <= c.who_step <= 6 for c in clips)
  assert all(c.who_step == 0 for c in clips if c.action in (11, 12))
  # Compose from stand-in features to check every real person can be used.
  features = {c.stem: np.zeros((2, 10), np.float32) for c in clips}
  washes = compose.compose_washes(clips, features, washes_per_person=2)
  assert {w.person for w in washes} == {c.subject for c in clips}


# ---------------------------------------------------------------------------------------
# The "real" and "mix" styles.


@pytest.fixture(scope="module")
def real():
  clips, features = _fake_clips()
  washes = compose.compose_washes(clips, features, washes_per_person=30, seed=2,
                                  style="real")
  return clips, features, washes


def _runs(wash):
  """(label, [segments]) of the wash's consecutive segments of one label."""
  return [(label, list(group))
          for label, group in itertools.groupby(wash.segments, key=lambda s: s.label)]


def test_real_style_plays_every_hand_of_a_step_in_turn(real):
  clips, features, washes = real
  own = collections.defaultdict(set)
  for c in clips:
    own[(c.subject, c.who_step)].add(c.name)
  length = {c.name: features[c.stem].shape[1] for c in clips}
  orders, whole, cut = set(), 0, 0
  for wash in washes:
    assert wash.style == "real"
    _assert_traced(wash, clips, features)
    runs = [(label, group) for label, group in _runs(wash) if label != compose.BACKGROUND]
    # Each step done is ONE run of consecutive segments, in the order of step_order ...
    assert tuple(label for label, _ in runs) == wash.step_order
    for label, group in runs:
      # ... made of every clip the person has for it, each once.
      names = [s.clip for s in group]
      assert sorted(names) == sorted(own[(wash.person, label)])
      if len(group) == 2:
        orders.add((wash.person, label, tuple(names)))
      for seg in group:
        if (seg.start, seg.end) == (0, length[seg.clip]):
          whole += 1
        else:
          cut += 1
  # Person a's two-hand steps 2 and 4 come in both orders; clips whole and cut both occur.
  for step in (2, 4):
    assert len([o for o in orders if o[:2] == ("a", step)]) == 2, orders
  assert {o[:2] for o in orders} == {("a", 2), ("a", 4)}
  assert whole > 0 and cut > 0


def test_real_style_at_full_length_plays_whole_clips():
  clips, features = _fake_clips()
  washes = compose.compose_washes(clips, features, washes_per_person=3, seed=0,
                                  style="real", full_prob=1.0, skip_prob=0.0,
                                  swap_prob=0.0, gap_prob=0.0)
  length = {c.name: features[c.stem].shape[1] for c in clips}
  for wash in washes:
    _assert_traced(wash, clips, features)
    for seg in wash.segments:
      assert (seg.start, seg.end) == (0, length[seg.clip])
    if wash.person == "a":
      # Steps 1..6, both clips of steps 2 and 4, framed by the one 30-frame wrist clip.
      assert [s.label for s in wash.segments] == [0, 1, 2, 2, 3, 4, 4, 5, 6, 0]
      assert wash.num_frames == 30 + 20 + (15 + 18) + 22 + (12 + 16) + 25 + 14 + 30
    if wash.person == "c":
      assert [s.label for s in wash.segments] == [1, 2, 6]
      assert wash.num_frames == 9 + 10 + 8
    assert wash.score == len(wash.step_order)


def test_real_style_cut_parts_keep_min_part():
  clips, features = _fake_clips()
  washes = compose.compose_washes(clips, features, washes_per_person=10, seed=4,
                                  style="real", full_prob=0.0, min_part=0.8)
  length = {c.name: features[c.stem].shape[1] for c in clips}
  shorter = 0
  for wash in washes:
    _assert_traced(wash, clips, features, min_part=0.8)
    shorter += sum(s.length < length[s.clip] for s in wash.segments)
  assert shorter > 0


def test_mix_style_alternates_per_person():
  clips, features = _fake_clips()
  washes = compose.compose_washes(clips, features, washes_per_person=6, seed=1,
                                  style="mix")
  for person in ("a", "b", "c"):
    assert [w.style for w in washes if w.person == person] == ["cut", "real"] * 3
  for wash in washes:
    _assert_traced(wash, clips, features)
    if wash.person == "a":
      # A cut wash takes one clip per step; a real one both of person a's clips for
      # steps 2 and 4.
      per_step = collections.Counter(s.label for s in wash.segments
                                     if s.label != compose.BACKGROUND)
      assert per_step == {step: 2 if wash.style == "real" and step in (2, 4) else 1
                          for step in wash.step_order}


def test_real_and_mix_deterministic_for_a_seed():
  clips, features = _fake_clips()
  for style in ("real", "mix"):
    first = compose.compose_washes(clips, features, washes_per_person=4, seed=7,
                                   style=style)
    again = compose.compose_washes(clips, features, washes_per_person=4, seed=7,
                                   style=style)
    other = compose.compose_washes(clips, features, washes_per_person=4, seed=8,
                                   style=style)
    assert [w.segments for w in again] == [w.segments for w in first]
    for a, b in zip(again, first):
      np.testing.assert_array_equal(a.features, b.features)
      np.testing.assert_array_equal(a.labels, b.labels)
    assert [w.segments for w in other] != [w.segments for w in first]
  with pytest.raises(ValueError, match="style must be one of cut, real, mix"):
    compose.compose_washes(clips, features, style="long")
  with pytest.raises(ValueError, match="full_prob"):
    compose.compose_washes(clips, features, style="real", full_prob=1.5)


def _write_inputs(tmp_path, clips, features=None):
  """clips.csv (and a features folder) for the command; returns their paths."""
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("clip,subject,action,who_step\n" + "".join(
      f"{c.name},{c.subject},{c.action},{c.who_step}\n" for c in clips))
  feature_dir = tmp_path / "clip_features"
  if features is not None:
    feature_dir.mkdir()
    for stem, array in features.items():
      np.save(feature_dir / f"{stem}.npy", array)
  return csv_path, feature_dir


def test_command_mix_style(tmp_path, capsys):
  clips, features = _fake_clips()
  csv_path, feature_dir = _write_inputs(tmp_path, clips, features)
  out = tmp_path / "layout"
  argv = ["--clips", str(csv_path), "--features", str(feature_dir), "--out", str(out),
          "--folds", "3", "--washes-per-person", "2", "--seed", "6", "--style", "mix",
          "--full-prob", "0.7", "--min-part", "0.6"]
  assert compose.main(argv) == 0
  printed = capsys.readouterr().out
  assert "cut style: 3 washes" in printed and "real style: 3 washes" in printed
  expected = compose.compose_washes(clips, features, washes_per_person=2, seed=6,
                                    style="mix", full_prob=0.7, min_part=0.6)
  for wash in expected:
    np.testing.assert_array_equal(np.load(out / "features" / f"{wash.name}.npy"),
                                  wash.features)
  with pytest.raises(SystemExit):
    compose.main(argv + ["--overwrite", "--max-frames", "5"])
  assert "apply to --videos only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Whole-clip washes, as video.


def test_wholeclip_order():
  clips, _ = _fake_clips()
  clips.append(compose.Clip(name="d_11.mp4", subject="d", action=11, who_step=0))
  order = compose.wholeclip_order(clips)
  assert list(order) == ["a", "b", "c"]  # d has no step clip
  steps = {p: [(c.who_step, c.action) for c in cs] for p, cs in order.items()}
  # One wrist clip closes the wash; with two, the first opens it and the other closes it.
  assert steps["a"] == [(1, 1), (2, 2), (2, 3), (3, 4), (4, 5), (4, 6), (5, 7), (6, 9),
                        (0, 11)]
  assert steps["b"] == [(0, 11), (1, 1), (2, 2), (4, 5), (5, 7), (6, 9), (0, 12)]
  assert steps["c"] == [(1, 1), (2, 2), (6, 9)]


# Three short clips of person 002 (wrists, step 5 left, wrists) and one of 004 (step 6).
WHOLECLIP_NAMES = ("HandWash_002_A_11_G_01.mp4", "HandWash_002_A_07_G_01.mp4",
                   "HandWash_002_A_12_G_01.mp4", "HandWash_004_A_10_G_01.mp4")


def _real_subset():
  if not REAL_CLIPS.is_file():
    pytest.skip(f"real clips not available ({REAL_CLIPS} is absent)")
  pytest.importorskip("cv2")
  pytest.importorskip("decord")
  return [c for c in compose.read_clips(REAL_CLIPS) if c.name in WHOLECLIP_NAMES]


@pytest.fixture(scope="module")
def wholeclip(tmp_path_factory):
  clips = _real_subset()
  out = tmp_path_factory.mktemp("wholeclip")
  return clips, out, compose.write_wholeclip_layout(clips, REAL_CLIPS.parent, out)


def test_wholeclip_video_holds_every_clip_in_full(wholeclip):
  from hhjax import video
  _, out, washes = wholeclip
  assert [w.name for w in washes] == ["002_wash_whole", "004_wash_whole"]
  assert layout.read_split(out, "wholeclip") == ["002_wash_whole", "004_wash_whole"]
  expected_clips = {"002_wash_whole": WHOLECLIP_NAMES[:3],
                    "004_wash_whole": WHOLECLIP_NAMES[3:]}
  for wash in washes:
    assert wash.video == out / "videos" / f"{wash.name}.mp4"
    names = [s.clip for s in wash.segments]
    assert tuple(names) == expected_clips[wash.name]
    sources = [video.video_info(REAL_CLIPS.parent / n) for n in names]
    written = video.video_info(wash.video)
    # Frame count = the clips' frame counts summed; rate and size kept.
    assert written.frames == wash.num_frames == sum(i.frames for i in sources)
    assert (written.fps, written.width, written.height) == (30.0, 360, 240)
    # Labels follow the clip order.
    steps = [{"HandWash_002_A_07_G_01.mp4": 5, "HandWash_004_A_10_G_01.mp4": 6}.get(n, 0)
             for n in names]
    np.testing.assert_array_equal(
        wash.labels, np.repeat(steps, [i.frames for i in sources]))
    lines = (out / "groundTruth" / f"{wash.name}.txt").read_text().split()
    assert lines == [CLASS_NAMES[c] for c in wash.labels]
  scores = layout.read_scores(out / "scores.csv")
  assert scores["002_wash_whole"].score == 1
  assert [layout.ATTRIBUTES[a] for a in scores["002_wash_whole"].attributes] == [
      "NE", "NE", "NE", "NE", "ES", "NE"]
  assert [layout.ATTRIBUTES[a] for a in scores["004_wash_whole"].attributes] == [
      "NE", "NE", "NE", "NE", "NE", "ES"]
  assert not (out / "videos" / ".partial").exists()


def test_wholeclip_frames_match_the_source_clips(wholeclip):
  import decord
  _, _, washes = wholeclip
  wash = washes[0]
  written = decord.VideoReader(str(wash.video))
  for k, seg in enumerate(wash.segments):
    own = decord.VideoReader(str(REAL_CLIPS.parent / seg.clip))
    other = decord.VideoReader(str(REAL_CLIPS.parent
                                   / wash.segments[(k + 1) % 3].clip))
    for j in (0, seg.length // 2, seg.length - 1):
      frame = written[seg.offset + j].asnumpy().astype(np.int16)
      diff = np.abs(frame - own[j].asnumpy()).mean()
      assert diff < 10, (seg.clip, j, diff)  # mp4v re-encoding loss only
      # The same moment of another clip differs far more: the frames are in place.
      assert np.abs(frame - other[min(j, len(other) - 1)].asnumpy()).mean() > 2 * diff


def test_wholeclip_layout_validates_once_features_exist(wholeclip):
  _, out, washes = wholeclip
  (out / "features").mkdir(exist_ok=True)
  for wash in washes:  # stand-ins for `python -m hhjax.extract` output
    np.save(out / "features" / f"{wash.name}.npy",
            np.zeros((2, wash.num_frames), np.float32))
  summary = layout.validate_manual_dir(out, splits=["wholeclip"], num_classes=7)
  assert list(summary.splits["wholeclip"]) == [w.name for w in washes]


def test_wholeclip_command(tmp_path, capsys):
  from hhjax import video
  clips = _real_subset()
  csv_path, _ = _write_inputs(tmp_path, clips)
  out = tmp_path / "whole"
  argv = ["--clips", str(csv_path), "--videos", str(REAL_CLIPS.parent), "--out",
          str(out), "--people", "002", "--max-frames", "5"]
  assert compose.main(argv) == 0
  assert "1 whole-clip washes (15 frames" in capsys.readouterr().out
  assert video.video_info(out / "videos" / "002_wash_whole.mp4").frames == 15
  assert (out / "groundTruth" / "002_wash_whole.txt").read_text().split() == (
      ["background"] * 5 + [CLASS_NAMES[5]] * 5 + ["background"] * 5)
  assert compose.main(argv) == 1
  assert "--overwrite" in capsys.readouterr().err
  csv_path.write_text(csv_path.read_text() + "missing_clip.mp4,002,8,5\n")
  assert compose.main(argv + ["--overwrite"]) == 1
  assert "missing_clip.mp4" in capsys.readouterr().err
  assert compose.main(argv[:-4] + ["--overwrite", "--people", "999"]) == 1
  assert "999" in capsys.readouterr().err


def test_wholeclip_bundles_follow_the_folds(fake, tmp_path):
  clips, features, washes = fake
  out = tmp_path / "composed"
  splits = compose.write_layout(out, washes, folds=3)
  # A stand-in whole-clip layout: features and labels for people a, b and c only; b's
  # wash is one step framed by background (a single clip), left out.
  whole = tmp_path / "whole"
  for sub in (layout.FEATURES_DIR, layout.GROUND_TRUTH_DIR):
    (whole / sub).mkdir(parents=True)
  header = (out / layout.SCORES_FILE).read_text().splitlines()[0]
  rows = [header]
  for person, labels in (("a", [1, 1, 1, 2, 2, 2, 0]), ("b", [0, 3, 3, 3, 0]),
                         ("c", [4, 4, 5, 5, 5])):
    name = f"{person}_wash_whole"
    np.save(whole / layout.FEATURES_DIR / f"{name}.npy",
            np.full((D, len(labels)), 9.0, np.float32))
    (whole / layout.GROUND_TRUTH_DIR / f"{name}.txt").write_text(
        "\n".join(CLASS_NAMES[i] for i in labels) + "\n")
    rows.append(f"{name},1," + ",".join(["ES"] + ["NE"] * 5))
  (whole / layout.SCORES_FILE).write_text("\n".join(rows) + "\n")
  bundles, skipped = compose.add_wholeclip_bundles(out, whole, splits)
  assert list(skipped) == ["b_wash_whole"] and "1 WHO step(s)" in skipped["b_wash_whole"]
  for fold, videos in splits.items():
    people = {v.rsplit("_wash", 1)[0] for v in videos}
    want = sorted(f"{p}_wash_whole" for p in people & {"a", "c"})
    got = bundles.get("whole" + fold[len("fold"):], [])
    assert got == want
  assert not any("b_wash_whole" in line for line in
                 (out / layout.SCORES_FILE).read_text().splitlines())
  # The layout now validates with every bundle, and the whole-clip rows read back.
  summary = layout.validate_manual_dir(out, layout.list_splits(out))
  assert summary.num_frames["a_wash_whole"] == 7
  assert layout.read_scores(out / layout.SCORES_FILE)["c_wash_whole"].score == 1.0
  # A whole-clip wash without features is named.
  (whole / layout.FEATURES_DIR / "a_wash_whole.npy").unlink()
  with pytest.raises(compose.ClipsError, match="a_wash_whole.npy"):
    compose.add_wholeclip_bundles(tmp_path / "composed", whole, splits)
