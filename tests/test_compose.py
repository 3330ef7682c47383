"""Tests for `hhjax.data.compose`: composed washes are traceable frame by frame to the
clips they were cut from, splits keep people apart, and the written folder reads back.

Clip features are synthetic: value [0, t] of clip i is i, value [1, t] is t, so every
composed frame tells which clip and frame it came from.
"""

import pathlib

import numpy as np
import pytest

from hhjax.data import compose
from hhjax.data import layout

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


def test_frames_come_from_the_claimed_clips(fake):
  clips, features, washes = fake
  by_name = {c.name: c for c in clips}
  index = {c.name: i for i, c in enumerate(clips)}
  assert len(washes) == 3 * 8
  for wash in washes:
    offset = 0
    for seg in wash.segments:
      clip = by_name[seg.clip]
      assert clip.subject == wash.person
      assert seg.offset == offset and seg.label == clip.who_step
      length = features[clip.stem].shape[1]
      assert 0 <= seg.start < seg.end <= length
      if seg.label != compose.BACKGROUND:
        assert seg.length >= np.ceil(0.5 * length)
      part = wash.features[:, offset:offset + seg.length]
      np.testing.assert_array_equal(part[0], index[seg.clip])
      np.testing.assert_array_equal(part[1], np.arange(seg.start, seg.end))
      np.testing.assert_array_equal(wash.labels[offset:offset + seg.length], seg.label)
      offset += seg.length
    assert offset == wash.num_frames == wash.features.shape[1]
    assert wash.features.dtype == np.float32 and wash.features.shape[0] == D


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
