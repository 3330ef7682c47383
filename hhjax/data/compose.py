"""Composing whole hand washes from single-step clips: from their features, or as video.

Some public hand-washing sets (e.g. the Kaggle hand-wash videos listed in a `clips.csv`)
hold one short clip per WHO step and person, not whole washes. This module cuts and
joins the clips' per-frame features into full-wash sequences and writes them in the
manual layout read by `hhjax.data.layout`, so they go through the same training and
evaluation code as HHA300 or the synthetic set. No video is decoded for this: the input
is one (D, T) feature array per clip (MS-TCN convention, a column per frame), e.g.
`features/<clip stem>.npy` written by a feature extractor.

A composed wash of one person, in the "cut" style (the default):

* the WHO steps 1..6 come mostly in order; a neighbouring pair is swapped with
  probability `swap_prob`;
* each present step is a contiguous random part (at least `min_part` of its length) of
  one of that person's clips for that step (one picked at random where the person has
  several, e.g. left and right hand);
* a step is left out with probability `skip_prob`, and always when the person has no
  clip for it;
* background (class 0) is a short random part of one of the person's wrist-rubbing clips
  (`who_step` 0); it comes before the first and after the last step and, with
  probability `gap_prob`, between two steps. A person without such clips gets none.

Scores. The clips carry no quality grades, so the scores measure completeness only: a
present step has attribute ES and counts 1, a left-out step has attribute NE and counts
0, and the video score is the number of steps done (0..6). EN never occurs.

The "real" style composes washes like recorded ones, which are several times longer: a
step is every clip the person has for it (for WHO steps 2, 4, 5 and 6 the left- and the
right-hand clip, one after the other), each played whole with probability `full_prob`
(else a part of at least `min_part`), and the opening and closing background likewise.
The "mix" style makes half of each person's washes of each kind; it is the one to train
on, so that a model sees short and real-length washes alike.

Every wash records where each of its frame ranges came from (`Segment`), so the
composition can be checked frame by frame.

Whole-clip washes (`write_wholeclip_layout`) are for evaluation: per person, all of the
person's clips played in full, in WHO order, written as ONE video (decoded with decord,
re-encoded with OpenCV) with per-frame labels from the clip boundaries, so that a feature
extractor sees one continuous recording, as it would a real wash.

Entry points: `read_clips`, `load_clip_features`, `compose_washes`,
`leave_people_out_folds`, `write_layout`, `wholeclip_order`, `write_wholeclip_layout`,
and the command

    python -m hhjax.data.compose --clips DIR/clips.csv --features OUT/features \\
        --out DIR --folds 4 --style mix

which writes the manual layout with one split bundle per fold (`fold0` ... `fold3`),
ready for the `hha300/handwash` builder config and `python -m hhjax.crossval`; with
`--videos DIR` instead of `--features` it writes the whole-clip videos, labels and
`splits/wholeclip.bundle` (then `python -m hhjax.extract --videos OUT/videos --out OUT`
adds their features).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from hhjax.data import layout
from hhjax.data.synthetic import CLASS_NAMES

NUM_STEPS = layout.NUM_STEPS
BACKGROUND = 0
CLIP_COLUMNS = ("clip", "subject", "action", "who_step")
# Attribute codes (indices into `layout.ATTRIBUTES`).
NOT_DONE = layout.ATTRIBUTES.index("NE")
DONE = layout.ATTRIBUTES.index("ES")

PathLike = str | os.PathLike
# Where `python -m hhjax.crossval` keeps the TFDS build of a composed layout, inside it,
# so that composing afresh (`--overwrite`) also discards the stale build.
TFDS_DIR = "tfds"
# Composition styles of `compose_washes`.
STYLES = ("cut", "real", "mix")
# The whole-clip layout: its videos folder and its one split bundle.
VIDEOS_DIR = "videos"
WHOLECLIP_SPLIT = "wholeclip"


class ClipsError(ValueError):
  """A clip list (or the features given for it) cannot be used."""


@dataclasses.dataclass(frozen=True)
class Clip:
  """One single-step clip.

  Attributes:
    name: the clip's file name, e.g. "HandWash_002_A_01_G01.mp4".
    subject: the person's id, e.g. "002".
    action: the data set's action number.
    who_step: WHO step 1..6, or 0 for background (e.g. wrist rubbing).
    split: the split column of the list, "" if it has none.
  """

  name: str
  subject: str
  action: int
  who_step: int
  split: str = ""

  @property
  def stem(self) -> str:
    """The file name without its suffix (the feature file is `<stem>.npy`)."""
    return pathlib.PurePath(self.name).stem


@dataclasses.dataclass(frozen=True)
class Segment:
  """A frame range of a wash and where it came from.

  Attributes:
    label: class index of these frames (0 background, 1..6 the steps).
    clip: the source clip's name.
    start: first source frame (inclusive).
    end: last source frame (exclusive).
    offset: the wash frame at which the range starts.
  """

  label: int
  clip: str
  start: int
  end: int
  offset: int

  @property
  def length(self) -> int:
    """Number of frames."""
    return self.end - self.start


@dataclasses.dataclass(frozen=True)
class Wash:
  """One composed hand wash.

  Attributes:
    name: video id, "<subject>_wash<k>".
    person: the subject id.
    labels: (T,) int32 class index per frame.
    features: (D, T) float32, the clips' parts concatenated along T.
    segments: the frame ranges in order; together they cover 0..T-1.
    step_order: the WHO steps performed, in the order done.
    attributes: (6,) int32 per step, index into `layout.ATTRIBUTES` (NE or ES).
    score: number of steps done.
    style: how it was composed, "cut" or "real" (see `compose_washes`).
  """

  name: str
  person: str
  labels: np.ndarray
  features: np.ndarray
  segments: tuple[Segment, ...]
  step_order: tuple[int, ...]
  attributes: np.ndarray
  score: float
  style: str = "cut"

  @property
  def num_frames(self) -> int:
    """T."""
    return int(self.labels.shape[0])


def read_clips(csv_path: PathLike) -> list[Clip]:
  """Reads a clip list.

  The header must hold `clip`, `subject`, `action` and `who_step` (any order); a `split`
  column and other columns are allowed. Blank lines are skipped.

  Args:
    csv_path: the CSV file.

  Returns:
    The clips in file order.

  Raises:
    ClipsError: the file is missing or unreadable, the header lacks a column, or a row is
      malformed (wrong column count, empty clip or subject, a non-integer action or
      who_step, who_step outside 0..6, a repeated clip); the message names the file and
      line.
  """
  path = pathlib.Path(csv_path)
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise ClipsError(f"{path}: cannot read the clip list ({e})") from e
  reader = csv.reader(text.splitlines())
  header = layout.first_csv_row(reader)
  if header is None:
    raise ClipsError(f"{path}: empty file; expected the header {','.join(CLIP_COLUMNS)}")
  missing = [c for c in CLIP_COLUMNS if c not in header]
  if missing:
    raise ClipsError(f"{path}:{reader.line_num}: header lacks column(s) {missing} "
                     f"(got {','.join(header)})")
  col = {name: header.index(name) for name in CLIP_COLUMNS + ("split",)
         if name in header}
  clips: list[Clip] = []
  first_line: dict[str, int] = {}
  for row in reader:
    line = reader.line_num
    if not any(cell.strip() for cell in row):
      continue
    where = f"{path}:{line}"
    if len(row) != len(header):
      raise ClipsError(f"{where}: expected {len(header)} columns ({','.join(header)}), "
                       f"got {len(row)}")
    cells = [cell.strip() for cell in row]
    name, subject = cells[col["clip"]], cells[col["subject"]]
    if not name:
      raise ClipsError(f"{where}: empty clip name")
    if "/" in subject or "\\" in subject or not subject:
      raise ClipsError(f"{where}: subject {subject!r} is not a person id")
    numbers = {}
    for key in ("action", "who_step"):
      try:
        numbers[key] = int(cells[col[key]])
      except ValueError:
        raise ClipsError(
            f"{where}: {key} {cells[col[key]]!r} is not an integer") from None
    if not 0 <= numbers["who_step"] <= NUM_STEPS:
      raise ClipsError(
          f"{where}: who_step {numbers['who_step']} is not in 0..{NUM_STEPS}")
    if name in first_line:
      raise ClipsError(f"{where}: clip {name!r} repeats (first at line "
                       f"{first_line[name]})")
    first_line[name] = line
    clips.append(Clip(name=name, subject=subject, action=numbers["action"],
                      who_step=numbers["who_step"],
                      split=cells[col["split"]] if "split" in col else ""))
  return clips


def load_clip_features(feature_dir: PathLike, clips: Sequence[Clip]
                       ) -> dict[str, np.ndarray]:
  """Loads `<feature_dir>/<clip stem>.npy` for every clip.

  Args:
    feature_dir: folder of (D, T) feature arrays.
    clips: the clips.

  Returns:
    Clip stem -> (D, T) float32 array.

  Raises:
    ClipsError: naming every missing feature file.
  """
  root = pathlib.Path(feature_dir)
  paths = [root / f"{c.stem}.npy" for c in clips]
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise ClipsError(f"{len(missing)} feature file(s) not found: "
                     + ", ".join(str(p) for p in missing))
  return {c.stem: np.asarray(np.load(p, allow_pickle=False), np.float32)
          for c, p in zip(clips, paths)}


def _clip_features(clips: Sequence[Clip], features: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
  """Clip name -> its (D, T) float32 features; checks presence, shape and D."""
  found: dict[str, np.ndarray] = {}
  problems = []
  for clip in clips:
    array = features.get(clip.stem, features.get(clip.name))
    if array is None:
      problems.append(f"no features for clip {clip.name!r} (key {clip.stem!r})")
      continue
    array = np.asarray(array, np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
      problems.append(f"features of clip {clip.name!r} have shape {array.shape}, "
                      "expected a non-empty (D, T)")
      continue
    found[clip.name] = array
  dims = collections.Counter(a.shape[0] for a in found.values())
  if len(dims) > 1:
    common = dims.most_common(1)[0][0]
    problems.append(f"feature arrays disagree on D (most have D={common}): "
                    + ", ".join(f"{n} has D={a.shape[0]}" for n, a in found.items()
                                if a.shape[0] != common))
  if problems:
    raise ClipsError("; ".join(problems))
  return found


def _random_part(rng: np.random.Generator, length: int, low: float, high: float
                 ) -> tuple[int, int]:
  """A random contiguous (start, end) of `ceil(f * length)` frames, f in [low, high]."""
  shortest = min(length, max(1, math.ceil(low * length)))
  longest = min(length, max(shortest, math.ceil(high * length)))
  size = int(rng.integers(shortest, longest + 1))
  start = int(rng.integers(0, length - size + 1))
  return start, start + size


def _step_order(rng: np.random.Generator, swap_prob: float) -> list[int]:
  """Steps 1..6 in order, each neighbouring pair swapped with `swap_prob`.

  A swapped step is not swapped again, so a step moves by one place at most.
  """
  order = list(range(1, NUM_STEPS + 1))
  i = 0
  while i < NUM_STEPS - 1:
    if rng.random() < swap_prob:
      order[i], order[i + 1] = order[i + 1], order[i]
      i += 2
    else:
      i += 1
  return order


def _piece(rng: np.random.Generator, own: Mapping[int, Sequence[Clip]], label: int,
           arrays: Mapping[str, np.ndarray], low: float, high: float
           ) -> tuple[int, Clip, int, int] | None:
  """A random part of one of the person's clips for `label`: (label, clip, start, end).

  None when the person has no clip for `label`.
  """
  candidates = own.get(label)
  if not candidates:
    return None
  clip = candidates[int(rng.integers(len(candidates)))]
  start, end = _random_part(rng, arrays[clip.name].shape[1], low, high)
  return label, clip, start, end


def _whole_or_part(rng: np.random.Generator, clip: Clip, label: int,
                   arrays: Mapping[str, np.ndarray], full_prob: float, low: float,
                   high: float) -> tuple[int, Clip, int, int]:
  """All of `clip` with probability `full_prob`, else a random part of it (`_random_part`
  with fractions in [low, high]): (label, clip, start, end)."""
  length = arrays[clip.name].shape[1]
  if rng.random() < full_prob:
    return label, clip, 0, length
  start, end = _random_part(rng, length, low, high)
  return label, clip, start, end


def _done_steps(rng: np.random.Generator, own: Mapping[int, Sequence[Clip]],
                swap_prob: float, skip_prob: float) -> list[int]:
  """The steps a wash performs, in the order done: `_step_order`, then each step the
  person has a clip for is kept with probability 1 - `skip_prob`; at least one is kept."""
  order = _step_order(rng, swap_prob)
  done = [s for s in order if own.get(s) and rng.random() >= skip_prob]
  if not done:
    available = [s for s in order if own.get(s)]
    done = [available[int(rng.integers(len(available)))]]
  return done


def _cut_pieces(rng: np.random.Generator, own: Mapping[int, Sequence[Clip]],
                done: Sequence[int], arrays: Mapping[str, np.ndarray], *, gap_prob: float,
                min_part: float, background: tuple[float, float]
                ) -> list[tuple[int, Clip, int, int] | None]:
  """The pieces of a "cut" wash: each step a part of one of its clips."""
  low, high = background
  pieces = [_piece(rng, own, BACKGROUND, arrays, low, high)]
  for i, step in enumerate(done):
    if i > 0 and rng.random() < gap_prob:
      pieces.append(_piece(rng, own, BACKGROUND, arrays, low, high))
    pieces.append(_piece(rng, own, step, arrays, min_part, 1.0))
  pieces.append(_piece(rng, own, BACKGROUND, arrays, low, high))
  return pieces


def _real_pieces(rng: np.random.Generator, own: Mapping[int, Sequence[Clip]],
                 done: Sequence[int], arrays: Mapping[str, np.ndarray], *,
                 gap_prob: float, min_part: float, background: tuple[float, float],
                 full_prob: float) -> list[tuple[int, Clip, int, int] | None]:
  """The pieces of a "real" wash: each step is every clip the person has for it (both
  hands), one after the other in random order, each whole with probability `full_prob`
  (else a part of at least `min_part`); the opening and closing background likewise."""
  low, high = background
  pieces: list[tuple[int, Clip, int, int] | None] = []

  def end_background():
    candidates = own.get(BACKGROUND)
    if not candidates:
      return None
    clip = candidates[int(rng.integers(len(candidates)))]
    return _whole_or_part(rng, clip, BACKGROUND, arrays, full_prob, low, high)

  pieces.append(end_background())
  for i, step in enumerate(done):
    if i > 0 and rng.random() < gap_prob:
      pieces.append(_piece(rng, own, BACKGROUND, arrays, low, high))
    hands = own[step]
    for j in rng.permutation(len(hands)):
      pieces.append(_whole_or_part(rng, hands[int(j)], step, arrays, full_prob,
                                   min_part, 1.0))
  pieces.append(end_background())
  return pieces


def compose_washes(clips: Sequence[Clip], features: Mapping[str, np.ndarray], *,
                   washes_per_person: int = 6, seed: int = 0, skip_prob: float = 0.15,
                   swap_prob: float = 0.2, gap_prob: float = 0.4, min_part: float = 0.5,
                   background_part: tuple[float, float] = (0.1, 0.3),
                   style: str = "cut", full_prob: float = 0.5) -> list[Wash]:
  """Composes whole washes per person from single-step clips (see the module docstring).

  Styles (`style`):

  * "cut": each step is one part (at least `min_part`) of ONE of the person's clips for
    it, picked at random; background parts are short (`background_part`). Washes are
    short: a few seconds per step.
  * "real": like a recorded wash. Each step is EVERY clip the person has for it, one
    after the other in random order, all labelled with the step: for steps 2, 4, 5 and 6
    the left- and the right-hand clip. Each step clip is played whole with probability
    `full_prob`, else a part of at least `min_part`; the opening and closing background
    are a whole wrist clip with probability `full_prob`, else a `background_part` part
    (gaps between steps stay short). From the Kaggle clips this gives washes of about
    1-3 minutes.
  * "mix": per person, washes 0, 2, 4, ... "cut" and 1, 3, 5, ... "real" (half each).

  The step order, left-out steps and gaps follow `swap_prob`, `skip_prob` and `gap_prob`
  in every style.

  Args:
    clips: the clips (`read_clips`).
    features: clip stem (or clip name) -> (D, T) features; every clip needs an entry.
    washes_per_person: washes composed for each person.
    seed: the random seed; the same inputs and seed give the same washes.
    skip_prob: probability that a step the person has a clip for is left out.
    swap_prob: probability that a neighbouring pair of steps is swapped.
    gap_prob: probability of background between two consecutive present steps.
    min_part: shortest part of a step clip used, as a fraction of its length.
    background_part: (shortest, longest) part of a background clip used, as fractions
      of its length.
    style: "cut", "real" or "mix" (`STYLES`).
    full_prob: in the "real" style, probability that a clip is played whole.

  Returns:
    The washes, person by person (sorted ids), `washes_per_person` each. People with no
    clip for any step get none. Every wash has at least one step: if all its steps came
    out left out, one of them (picked at random) is put back.

  Raises:
    ClipsError: a clip has no features, or the features are not (D, T) with a common D.
    ValueError: a probability or fraction is out of range, or the style is unknown.
  """
  if style not in STYLES:
    raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
  for name, value in (("skip_prob", skip_prob), ("swap_prob", swap_prob),
                      ("gap_prob", gap_prob), ("full_prob", full_prob)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {value}")
  if not 0.0 < min_part <= 1.0:
    raise ValueError(f"min_part must be in (0, 1], got {min_part}")
  low, high = background_part
  if not 0.0 < low <= high <= 1.0:
    raise ValueError(f"background_part must satisfy 0 < low <= high <= 1, got "
                     f"{background_part}")
  if washes_per_person < 0:
    raise ValueError(f"washes_per_person must be >= 0, got {washes_per_person}")
  arrays = _clip_features(clips, features)
  by_person = _clips_by_person(clips)

  rng = np.random.default_rng(seed)
  washes = []
  for person in sorted(by_person):
    own = by_person[person]
    if not any(own.get(step) for step in range(1, NUM_STEPS + 1)):
      continue
    for k in range(washes_per_person):
      kind = style if style != "mix" else ("cut", "real")[k % 2]
      done = _done_steps(rng, own, swap_prob, skip_prob)
      if kind == "cut":
        pieces = _cut_pieces(rng, own, done, arrays, gap_prob=gap_prob,
                             min_part=min_part, background=(low, high))
      else:
        pieces = _real_pieces(rng, own, done, arrays, gap_prob=gap_prob,
                              min_part=min_part, background=(low, high),
                              full_prob=full_prob)
      segments, offset = [], 0
      for label, clip, start, end in (p for p in pieces if p is not None):
        segments.append(Segment(label=label, clip=clip.name, start=start, end=end,
                                offset=offset))
        offset += end - start
      labels = np.concatenate([np.full(s.length, s.label, np.int32) for s in segments])
      feats = np.concatenate([arrays[s.clip][:, s.start:s.end] for s in segments],
                             axis=1)
      washes.append(Wash(name=f"{person}_wash{k}", person=person, labels=labels,
                         features=np.ascontiguousarray(feats, np.float32),
                         segments=tuple(segments), step_order=tuple(done),
                         attributes=_attributes(done), score=float(len(done)),
                         style=kind))
  return washes


def _clips_by_person(clips: Sequence[Clip]) -> dict[str, dict[int, list[Clip]]]:
  """Person -> WHO step (0 background) -> the person's clips for it, sorted by name."""
  by_person: dict[str, dict[int, list[Clip]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for clip in sorted(clips, key=lambda c: c.name):
    by_person[clip.subject][clip.who_step].append(clip)
  return by_person


def _attributes(done: Sequence[int]) -> np.ndarray:
  """(6,) int32: DONE for the steps in `done`, NOT_DONE for the others."""
  attributes = np.full(NUM_STEPS, NOT_DONE, np.int32)
  attributes[np.asarray(list(done), np.int64) - 1] = DONE
  return attributes


def leave_people_out_folds(people: Sequence[str], num_folds: int
                           ) -> list[tuple[str, ...]]:
  """Splits people into disjoint groups for leave-people-out cross-validation.

  The sorted distinct people are dealt round-robin into `num_folds` groups, so each
  person is held out in exactly one fold and group sizes differ by one at most. Fold k
  tests on group k and trains on every other group.

  Args:
    people: person ids (repeats are ignored).
    num_folds: number of folds, 2..number of people.

  Returns:
    The held-out people of each fold, each group sorted.

  Raises:
    ValueError: `num_folds` is below 2 or above the number of people.
  """
  distinct = sorted(set(people))
  if not 2 <= num_folds <= len(distinct):
    raise ValueError(f"num_folds must be in 2..{len(distinct)} (the number of people), "
                     f"got {num_folds}")
  return [tuple(distinct[k::num_folds]) for k in range(num_folds)]


def fold_split_names(num_folds: int, fold: int) -> tuple[str, str]:
  """(train, test) TFDS split expressions of one fold of a layout with fold bundles.

  Fold k tests on `fold<k>` and trains on all the other folds, e.g. for 4 folds and
  k = 1: ("fold0+fold2+fold3", "fold1"). The groups are disjoint, so no person is on
  both sides.
  """
  if not 0 <= fold < num_folds:
    raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
  train = "+".join(f"fold{j}" for j in range(num_folds) if j != fold)
  return train, f"fold{fold}"


def _split_videos(washes: Sequence[Wash], people: Sequence[str], split: str
                  ) -> list[str]:
  chosen = set(people)
  names = [w.name for w in washes if w.person in chosen]
  if not names:
    raise ValueError(f"split {split!r} would hold no washes (people {sorted(people)})")
  return names


def _write_labels_and_scores(out: pathlib.Path, washes) -> None:
  """Writes `mapping.txt`, `groundTruth/<video>.txt` and `scores.csv` of `washes` (each
  with `name`, `labels`, `score` and `attributes`) into the existing folder `out`."""
  (out / layout.MAPPING_FILE).write_text(
      "".join(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES)))
  rows = [",".join(layout.SCORE_COLUMNS)]
  for wash in washes:
    (out / layout.GROUND_TRUTH_DIR / f"{wash.name}.txt").write_text(
        "".join(CLASS_NAMES[c] + "\n" for c in wash.labels))
    rows.append(",".join([wash.name, f"{wash.score:g}"]
                         + [layout.ATTRIBUTES[a] for a in wash.attributes]))
  (out / layout.SCORES_FILE).write_text("\n".join(rows) + "\n")


def write_layout(out_dir: PathLike, washes: Sequence[Wash], folds=None, *,
                 test_people: Sequence[str] | None = None) -> dict[str, list[str]]:
  """Writes washes in the manual layout (`hhjax.data.layout`).

  Files: `mapping.txt` (`CLASS_NAMES`), `groundTruth/<video>.txt`,
  `features/<video>.npy` (D, T) float32, `scores.csv` (`video,score,step1..step6`) and
  the split bundles, split by person, in one of two ways:

  * `folds`: `splits/fold<k>.bundle`, the washes of the people held out in fold k,
    k = 0, 1, ...; the bundles are disjoint and together hold every wash. Fold k trains
    on the others (`fold_split_names`), so each wash is stored once.
  * `test_people`: `splits/test.bundle` (their washes) and `splits/train.bundle`
    (everyone else's).

  Args:
    out_dir: the folder to write (created if needed).
    washes: the washes (`compose_washes`).
    folds: a number of folds (`leave_people_out_folds` over the washes' people), or a
      sequence of disjoint groups of people, one per fold.
    test_people: the people held out for `test.bundle`.

  Returns:
    Split name -> video ids, as written.

  Raises:
    ValueError: not exactly one of `folds` and `test_people` is given, video ids
      repeat, fold groups share a person or leave one out, or a split would be empty.
  """
  if (folds is None) == (test_people is None):
    raise ValueError("give exactly one of folds and test_people to say how to split the "
                     "washes")
  names = [w.name for w in washes]
  if len(set(names)) != len(names):
    raise ValueError("wash names repeat")
  people = sorted({w.person for w in washes})
  splits: dict[str, list[str]] = {}
  if test_people is not None:
    held_out = set(test_people)
    splits["train"] = _split_videos(washes, [p for p in people if p not in held_out],
                                    "train")
    splits["test"] = _split_videos(washes, sorted(held_out), "test")
  else:
    if isinstance(folds, int):
      folds = leave_people_out_folds(people, folds)
    seen: dict[str, int] = {}
    for k, group in enumerate(folds):
      for person in group:
        if person in seen:
          raise ValueError(f"person {person!r} is in folds {seen[person]} and {k}")
        seen[person] = k
      splits[f"fold{k}"] = _split_videos(washes, group, f"fold{k}")
    left = [p for p in people if p not in seen]
    if left:
      raise ValueError(f"people {left} are in no fold")

  out = pathlib.Path(out_dir)
  for sub in (layout.GROUND_TRUTH_DIR, layout.FEATURES_DIR, layout.SPLITS_DIR):
    (out / sub).mkdir(parents=True, exist_ok=True)
  for wash in washes:
    np.save(out / layout.FEATURES_DIR / f"{wash.name}.npy",
            np.ascontiguousarray(wash.features, np.float32))
  _write_labels_and_scores(out, washes)
  for split, videos in splits.items():
    (out / layout.SPLITS_DIR / f"{split}{layout.BUNDLE_SUFFIX}").write_text(
        "".join(v + "\n" for v in videos))
  return splits


# ---------------------------------------------------------------------------------------
# Whole-clip washes: every clip of a person played in full, as one video.


@dataclasses.dataclass(frozen=True)
class WholeClipWash:
  """One person's clips joined into one video (`write_wholeclip_layout`).

  Attributes:
    name: video id, "<person>_wash_whole".
    person: the subject id.
    video: the written video file.
    labels: (T,) int32 class index per frame of the video.
    segments: the clips in order, frame ranges at the written rate; together they cover
      0..T-1.
    attributes: (6,) int32 per step, ES for the steps the person has a clip for, NE else.
    score: number of steps done.
  """

  name: str
  person: str
  video: pathlib.Path
  labels: np.ndarray
  segments: tuple[Segment, ...]
  attributes: np.ndarray
  score: float

  @property
  def num_frames(self) -> int:
    """T."""
    return int(self.labels.shape[0])


def wholeclip_order(clips: Sequence[Clip]) -> dict[str, list[Clip]]:
  """Per person, that person's clips in the order of a whole wash.

  The steps come in WHO order, the clips of one step by action number (for the Kaggle
  set: 1, 2 left, 2 right, 3, 4 left, 4 right, ..., 6 right). Background clips
  (`who_step` 0, by action number) frame them: with two or more, the first opens the wash
  and the rest close it; a single one closes it (wrist rubbing comes last in the Kaggle
  procedure). People without a clip for any step are left out.

  Returns:
    Person id -> clips, for the people in sorted order.
  """
  by_person = _clips_by_person(clips)
  order = {}
  for person in sorted(by_person):
    own = by_person[person]
    steps = [c for step in range(1, NUM_STEPS + 1)
             for c in sorted(own.get(step, []), key=lambda c: (c.action, c.name))]
    if not steps:
      continue
    background = sorted(own.get(BACKGROUND, []), key=lambda c: (c.action, c.name))
    opening = background[:1] if len(background) >= 2 else []
    order[person] = opening + steps + background[len(opening):]
  return order


def _video_writer(path: pathlib.Path, fps: float, width: int, height: int):
  """An OpenCV mp4v writer for `path`, checked to be open."""
  try:
    import cv2  # noqa: PLC0415 (optional dependency: opencv-python(-headless))
  except ImportError as e:
    raise ImportError(
        "writing whole-clip videos needs OpenCV: `pip install "
        "opencv-contrib-python-headless` (or `pip install hhjax[test]`)") from e
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                           (width, height))
  if not writer.isOpened():
    raise OSError(f"{path}: OpenCV cannot open an mp4v video writer")
  return writer, cv2


def write_wholeclip_layout(clips: Sequence[Clip], video_dir: PathLike, out_dir: PathLike,
                           *, fps: float = 30.0, max_frames: int | None = None,
                           people: Sequence[str] | None = None) -> list[WholeClipWash]:
  """Writes one whole wash per person as VIDEO, for evaluation on real-length washes.

  Each person's clips are decoded (decord, at `fps`) and written one after the other, in
  `wholeclip_order`, into `<out_dir>/videos/<person>_wash_whole.mp4` (OpenCV, mp4v codec,
  `fps`, the clips' frame size). Beside it go the manual-layout files: `mapping.txt`,
  `groundTruth/<video>.txt` (each frame labelled with its clip's step, 0 background),
  `scores.csv` (completeness scores, as for composed washes) and
  `splits/wholeclip.bundle` listing every video. The features are not written: run
  `python -m hhjax.extract --videos <out_dir>/videos --out <out_dir>` to add them.

  A video is written under a temporary name and moved into place only once its frame
  count has been read back and checked, so an interrupted run leaves no partial video.

  Args:
    clips: the clips (`read_clips`).
    video_dir: folder holding the clip files named in `clips`.
    out_dir: the folder to write (created if needed).
    fps: frame rate of the written videos; clips at another rate are resampled to it.
    max_frames: use only the first `max_frames` frames of each clip (quick checks).
    people: write only these people (default: everyone with a step clip).

  Returns:
    The washes written, by person.

  Raises:
    ClipsError: a clip file is missing, a person's clips differ in frame size, a clip
      yields another number of frames than its header promises, or the written video
      reads back with a wrong frame count; the message names the file.
    ValueError: `people` names someone without clips, or nobody is left.
    hhjax.video.VideoError: a clip cannot be decoded.
    OSError: OpenCV cannot open a video writer.
    ImportError: decord or OpenCV is not installed.
  """
  from hhjax import video as video_io  # noqa: PLC0415 (needs decord only here)
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  if max_frames is not None and max_frames < 1:
    raise ValueError(f"max_frames must be >= 1, got {max_frames}")
  order = wholeclip_order(clips)
  if people is not None:
    unknown = sorted(set(people) - set(order))
    if unknown:
      raise ValueError(f"people {unknown} have no step clips (known: {sorted(order)})")
    order = {p: order[p] for p in sorted(set(people))}
  if not order:
    raise ValueError("no person has a clip for any step")
  source = pathlib.Path(video_dir)
  missing = [str(source / c.name) for cs in order.values() for c in cs
             if not (source / c.name).is_file()]
  if missing:
    raise ClipsError(f"{len(missing)} clip video(s) not found: " + ", ".join(missing))

  out = pathlib.Path(out_dir)
  videos_dir = out / VIDEOS_DIR
  partial = videos_dir / ".partial"
  for sub in (layout.GROUND_TRUTH_DIR, layout.SPLITS_DIR):
    (out / sub).mkdir(parents=True, exist_ok=True)
  partial.mkdir(parents=True, exist_ok=True)
  washes = []
  for person, own in order.items():
    infos = {c.name: video_io.video_info(source / c.name) for c in own}
    sizes = {(i.width, i.height) for i in infos.values()}
    if len(sizes) > 1:
      raise ClipsError(f"person {person}: clips differ in frame size: " + ", ".join(
          f"{source / n} is {i.width}x{i.height}" for n, i in infos.items()))
    width, height = sizes.pop()
    name = f"{person}_wash_whole"
    temp = partial / f"{name}.mp4"
    writer, cv2 = _video_writer(temp, fps, width, height)
    segments, offset = [], 0
    try:
      for clip in own:
        path = source / clip.name
        info = infos[clip.name]
        expected = int(video_io.sample_indices(info.frames, info.fps, fps,
                                               max_frames).size)
        count = 0
        for chunk in video_io.iter_frames(path, fps=fps, short_side=None, crop=None,
                                          max_frames=max_frames):
          for frame in chunk:  # (H, W, 3) uint8 RGB
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
          count += chunk.shape[0]
        if count != expected:
          raise ClipsError(f"{path}: decoded {count} frames, expected {expected}")
        segments.append(Segment(label=clip.who_step, clip=clip.name, start=0, end=count,
                                offset=offset))
        offset += count
    except BaseException:
      writer.release()
      temp.unlink(missing_ok=True)
      raise
    writer.release()
    written = video_io.video_info(temp).frames
    if written != offset:
      raise ClipsError(f"{temp}: the written video holds {written} frames, "
                       f"expected {offset}")
    target = videos_dir / f"{name}.mp4"
    os.replace(temp, target)
    labels = np.concatenate([np.full(s.length, s.label, np.int32) for s in segments])
    done = sorted({c.who_step for c in own} - {BACKGROUND})
    washes.append(WholeClipWash(name=name, person=person, video=target, labels=labels,
                                segments=tuple(segments), attributes=_attributes(done),
                                score=float(len(done))))
  partial.rmdir()

  _write_labels_and_scores(out, washes)
  (out / layout.SPLITS_DIR / f"{WHOLECLIP_SPLIT}{layout.BUNDLE_SUFFIX}").write_text(
      "".join(w.name + "\n" for w in washes))
  return washes


# ---------------------------------------------------------------------------------------
# Command line.


def _parser():
  import argparse  # noqa: PLC0415
  p = argparse.ArgumentParser(
      prog="python -m hhjax.data.compose",
      description="Compose whole hand washes from single-step clips' per-frame features "
                  "and write them in the manual layout, split by person (--features); or "
                  "write each person's clips played in full as one video per person, "
                  "for evaluation (--videos).")
  p.add_argument("--clips", required=True, help="clip list (clips.csv)")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--features",
                      help="compose washes from this folder of <clip stem>.npy (D, T) "
                           "arrays, e.g. the features/ folder written by python -m "
                           "hhjax.extract")
  source.add_argument("--videos",
                      help="write whole-clip washes instead: the folder of the clip "
                           "videos; writes <out>/videos/<person>_wash_whole.mp4, their "
                           "labels, scores.csv and splits/wholeclip.bundle")
  p.add_argument("--out", required=True, help="the manual directory to write")
  p.add_argument("--folds", type=int, default=4,
                 help="leave-people-out folds: splits/fold<k>.bundle per fold (default 4)")
  p.add_argument("--test-people", help="comma-separated ids: write train/test bundles "
                                       "instead of folds")
  p.add_argument("--style", choices=STYLES, default="cut",
                 help="cut: each step a part of one hand's clip; real: every clip of "
                      "the step (both hands), whole or cut; mix: half of each person's "
                      "washes of each (recommended for training). Default cut")
  p.add_argument("--washes-per-person", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--skip-prob", type=float, default=0.15)
  p.add_argument("--swap-prob", type=float, default=0.2)
  p.add_argument("--gap-prob", type=float, default=0.4)
  p.add_argument("--min-part", type=float, default=0.5,
                 help="shortest part of a step clip used, as a fraction (default 0.5)")
  p.add_argument("--full-prob", type=float, default=0.5,
                 help="real style: probability that a clip is played whole (default 0.5)")
  p.add_argument("--people", help="--videos: comma-separated ids to write (default all)")
  p.add_argument("--max-frames", type=int,
                 help="--videos: use only the first N frames of each clip (quick checks)")
  p.add_argument("--wholeclip",
                 help="--features with --folds: also add the whole-clip washes of this "
                      "folder (written with --videos, features extracted into it) as "
                      "bundles whole<k>, each holding fold k's people, for evaluation")
  p.add_argument("--wholeclip-min-steps", type=int, default=MIN_WHOLECLIP_STEPS,
                 help="--wholeclip: leave out whole-clip washes of fewer WHO steps "
                      f"(default {MIN_WHOLECLIP_STEPS}: a one-step video has no "
                      "boundary to find)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the layout files already in --out (and its tfds/ build)")
  return p


WHOLECLIP_PREFIX = "whole"


# A whole-clip wash is evaluated only when it holds at least this many WHO steps: one of
# a single step (a person with one clip, such as 001 and 017 of the Kaggle set) has no
# boundary to find, and its edit score can only be 0 or 100.
MIN_WHOLECLIP_STEPS = 2


def add_wholeclip_bundles(composed_dir: PathLike, wholeclip_dir: PathLike,
                          fold_videos: Mapping[str, Sequence[str]], *,
                          min_steps: int = MIN_WHOLECLIP_STEPS
                          ) -> tuple[dict[str, list[str]], dict[str, str]]:
  """Copies whole-clip washes into a composed layout, one bundle per fold.

  `whole<k>` holds the whole-clip washes of the people of `fold<k>`, so a model trained
  without fold k can be tested on those people's real-length washes too
  (`--config.dataset.eval_split=whole<k>`, or `hhjax.evaluate --split whole<k>`).
  A wash whose labels hold fewer than `min_steps` WHO steps is left out (see
  `MIN_WHOLECLIP_STEPS`); a fold left with none gets no bundle.

  Args:
    composed_dir: the layout written by `write_layout` (fold bundles).
    wholeclip_dir: the layout written by `write_wholeclip_layout`, with `features/`
      added by the extractor.
    fold_videos: fold split name -> its composed washes (what `write_layout` returned).
    min_steps: the fewest WHO steps a wash needs to be evaluated.

  Returns:
    (bundle name -> whole-clip wash names, wash left out -> why).

  Raises:
    ClipsError: a whole-clip wash lacks its features or labels, or the two layouts
      disagree on the feature size or the scores header.
  """
  import shutil  # noqa: PLC0415
  out, src = pathlib.Path(composed_dir), pathlib.Path(wholeclip_dir)
  rows = (src / layout.SCORES_FILE).read_text().splitlines()
  ours = (out / layout.SCORES_FILE).read_text().splitlines()
  if not rows or rows[0].strip() != ours[0].strip():
    raise ClipsError(f"{src / layout.SCORES_FILE}: header differs from "
                     f"{out / layout.SCORES_FILE}")
  by_name = {line.split(",")[0]: line for line in rows[1:] if line.strip()}
  background = {n for n, i in layout.read_mapping(out / layout.MAPPING_FILE).items()
                if i == BACKGROUND}
  bundles: dict[str, list[str]] = {}
  skipped: dict[str, str] = {}
  for split, videos in fold_videos.items():
    if not split.startswith("fold"):
      continue
    people = sorted({v.rsplit("_wash", 1)[0] for v in videos})
    names = []
    for name in (f"{p}_wash_whole" for p in people if f"{p}_wash_whole" in by_name):
      feats = src / layout.FEATURES_DIR / f"{name}.npy"
      truth = src / layout.GROUND_TRUTH_DIR / f"{name}.txt"
      for path in (feats, truth):
        if not path.is_file():
          raise ClipsError(f"{path}: missing (extract the whole-clip videos' features "
                           f"into {src} first)")
      steps = {line.strip() for line in truth.read_text().splitlines()
               if line.strip()} - background
      if len(steps) < min_steps:
        skipped[name] = (f"{len(steps)} WHO step(s), fewer than {min_steps}: no step "
                         "boundary to find")
        continue
      names.append(name)
      d = np.load(feats, mmap_mode="r").shape[0]
      ref = np.load(next((out / layout.FEATURES_DIR).glob("*.npy")), mmap_mode="r").shape[0]
      if d != ref:
        raise ClipsError(f"{feats}: D={d}, but the composed washes have D={ref}")
      shutil.copyfile(feats, out / layout.FEATURES_DIR / feats.name)
      shutil.copyfile(truth, out / layout.GROUND_TRUTH_DIR / truth.name)
    bundle = WHOLECLIP_PREFIX + split[len("fold"):]
    if names:
      (out / layout.SPLITS_DIR / f"{bundle}{layout.BUNDLE_SUFFIX}").write_text(
          "".join(n + "\n" for n in names))
      bundles[bundle] = names
  with (out / layout.SCORES_FILE).open("a") as f:
    for names in bundles.values():
      for name in names:
        f.write(by_name[name] + "\n")
  return bundles, skipped


def _seconds(frames: Sequence[int], fps: float = 30.0) -> str:
  """'min / median / max s' of frame counts at `fps`."""
  t = np.asarray(frames, np.float64) / fps
  return f"{t.min():.0f} / {np.median(t):.0f} / {t.max():.0f} s"


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  import shutil  # noqa: PLC0415
  import sys  # noqa: PLC0415
  parser = _parser()
  args = parser.parse_args(argv)
  if args.videos is None and (args.people is not None or args.max_frames is not None):
    parser.error("--people and --max-frames apply to --videos only")
  if args.wholeclip and args.features is None:
    parser.error("--wholeclip goes with --features")
  if args.wholeclip_min_steps < 1:
    parser.error(f"--wholeclip-min-steps must be >= 1, got {args.wholeclip_min_steps}")
  out = pathlib.Path(args.out)
  written = [out / name for name in (layout.GROUND_TRUTH_DIR, layout.FEATURES_DIR,
                                     layout.SPLITS_DIR, layout.MAPPING_FILE,
                                     layout.SCORES_FILE, TFDS_DIR, VIDEOS_DIR)]
  if any(p.exists() for p in written) and not args.overwrite:
    print(f"error: {out} already holds a layout; pass --overwrite to replace it",
          file=sys.stderr)
    return 1

  def clear():
    for path in written:
      if path.is_dir():
        shutil.rmtree(path)
      elif path.exists():
        path.unlink()

  try:
    clips = read_clips(args.clips)
    if args.videos is not None:
      return _main_wholeclip(args, clips, out, clear)
    features = load_clip_features(args.features, clips)
    washes = compose_washes(clips, features, washes_per_person=args.washes_per_person,
                            seed=args.seed, skip_prob=args.skip_prob,
                            swap_prob=args.swap_prob, gap_prob=args.gap_prob,
                            min_part=args.min_part, style=args.style,
                            full_prob=args.full_prob)
    clear()
    if args.test_people:
      splits = write_layout(out, washes, test_people=args.test_people.split(","))
    else:
      splits = write_layout(out, washes, folds=args.folds)
    whole, skipped = {}, {}
    if args.wholeclip:
      if args.test_people:
        raise ClipsError("--wholeclip goes with --folds, not --test-people")
      whole, skipped = add_wholeclip_bundles(out, args.wholeclip, splits,
                                             min_steps=args.wholeclip_min_steps)
  except (ClipsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  person = {w.name: w.person for w in washes}
  frames = sum(w.num_frames for w in washes)
  left_out = float(np.mean([a == NOT_DONE for w in washes for a in w.attributes]))
  print(f"{len(washes)} washes of {len({w.person for w in washes})} people from "
        f"{len(clips)} clips: {frames} frames (D={washes[0].features.shape[0]}), "
        f"{left_out:.0%} of steps left out; written to {out}")
  for kind in STYLES:
    lengths = [w.num_frames for w in washes if w.style == kind]
    if lengths:
      print(f"  {kind} style: {len(lengths)} washes, length min / median / max "
            f"{_seconds(lengths)} at 30 fps")
  for split, videos in splits.items():
    people = sorted({person[v] for v in videos})
    print(f"  {split}: {len(videos)} washes of people {', '.join(people)}")
  for bundle, names in whole.items():
    print(f"  {bundle}: whole-clip washes {', '.join(names)}")
  for name, why in skipped.items():
    print(f"  {name} left out of the whole-clip bundles: {why}")
  return 0


def _main_wholeclip(args, clips: Sequence[Clip], out: pathlib.Path, clear) -> int:
  """`main` with --videos: writes the whole-clip layout and prints what it holds."""
  from hhjax import video as video_io  # noqa: PLC0415
  import sys  # noqa: PLC0415
  people = args.people.split(",") if args.people else None
  clear()
  try:
    washes = write_wholeclip_layout(clips, args.videos, out, max_frames=args.max_frames,
                                    people=people)
  except video_io.VideoError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{len(washes)} whole-clip washes ({sum(w.num_frames for w in washes)} frames, "
        f"length min / median / max {_seconds([w.num_frames for w in washes])}) "
        f"written to {out / VIDEOS_DIR}; add their features with python -m "
        f"hhjax.extract --videos {out / VIDEOS_DIR} --out {out}")
  for wash in washes:
    print(f"  {wash.name}: {wash.num_frames} frames, {len(wash.segments)} clips, "
          f"steps done {wash.score:g}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
