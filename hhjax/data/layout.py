"""Reading and checking a manual directory in the MS-TCN layout (plus HHA300's scores).

The MS-TCN action-segmentation releases (GTEA, 50Salads, Breakfast) and HHA300 share one
folder layout; HHA300, which is not public, adds a file for its assessment labels:

```
<manual_dir>/
  mapping.txt                 "<index> <class name>" per line, indices 0..K-1
  groundTruth/<video>.txt     one class name per frame
  features/<video>.npy        (D, T) float array, MS-TCN convention (a column per frame)
  splits/<split>.bundle       video ids, one per line (a ".txt" suffix is dropped)
  scores.csv                  header `video,score,step1,...,step6` (NE/EN/ES), optional
                              `step1_score,...,step6_score` (floats; empty cell = unknown)
```

HHA300 requires scores.csv and seven classes (index 0 = background, 1..6 = the WHO
steps). The public data sets have no scores.csv (`require_scores=False`): their
examples get score 0, attributes 0 and step scores `MISSING_STEP_SCORE`, and any class
count. A bundle name may hold dots, as MS-TCN's `train.split1` / `test.split1`; the
bundles of one cross-validation split must not share a video (see `split_groups`).

The synthetic generator (`hhjax.data.synthetic`) writes the same layout, so synthetic and
real data go through this one module.

Real inputs fail loudly and specifically: every problem raises `LayoutError`, whose
message names the file (and line, frame or field) at fault. Checks collect every problem
they can find before raising, so one run shows all that is wrong with a folder.

Entry points:

* `validate_manual_dir`: checks a whole folder up front and summarises it.
* `iter_examples`: yields `(video_id, example)` for one split, in bundle order.
* `read_mapping`, `read_scores`, `read_split`, `load_video`: the single-file readers.
* `list_splits`, `split_groups`: the bundles of a folder, and which must be disjoint.

An example is a dict of numpy values:

| key           | shape / type | meaning                                             |
|---------------|--------------|-----------------------------------------------------|
| `video`       | str          | video id                                            |
| `features`    | (T, D) f32   | per-frame features (the file's (D, T) transposed)   |
| `labels`      | (T,) i32     | per-frame class index (mapping.txt)                 |
| `score`       | () f32       | video score                                         |
| `attributes`  | (6,) i32     | per step: 0 NE (not done), 1 EN (not to standard), 2 ES |
| `step_scores` | (6,) f32     | per step score, -1 where unknown                    |
| `num_frames`  | () i32       | T                                                   |

The six of `attributes` and `step_scores` are HHA300's six WHO steps. Without a
scores.csv, examples keep those shapes so one pipeline reads both kinds of folder:
score 0, attributes 0 and step scores -1 (unknown).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import pathlib
from typing import Iterator, Mapping, Sequence

import numpy as np

MAPPING_FILE = "mapping.txt"
SCORES_FILE = "scores.csv"
GROUND_TRUTH_DIR = "groundTruth"
FEATURES_DIR = "features"
SPLITS_DIR = "splits"
BUNDLE_SUFFIX = ".bundle"
DEFAULT_SPLITS = ("train", "test")

NUM_STEPS = 6
# Per-step attribute codes, in the order of their integer encoding.
ATTRIBUTES = ("NE", "EN", "ES")
STEP_COLUMNS = tuple(f"step{i}" for i in range(1, NUM_STEPS + 1))
STEP_SCORE_COLUMNS = tuple(f"step{i}_score" for i in range(1, NUM_STEPS + 1))
SCORE_COLUMNS = ("video", "score") + STEP_COLUMNS
# Stored in `step_scores` where scores.csv gives no per-step score.
MISSING_STEP_SCORE = -1.0

# How many line numbers one message lists before it only counts the rest.
_MAX_LISTED = 5

PathLike = str | os.PathLike


class LayoutError(ValueError):
  """A manual directory (or one of its files) does not follow the layout.

  Attributes:
    problems: every problem found, each naming the file and line/frame/field.
  """

  def __init__(self, problems: str | Sequence[str], where: PathLike | None = None):
    if isinstance(problems, str):
      problems = [problems]
    self.problems = tuple(problems)
    if len(self.problems) == 1 and where is None:
      message = self.problems[0]
    else:
      place = f" in {os.fspath(where)}" if where is not None else ""
      count = len(self.problems)
      message = f"{count} problem{'s' if count != 1 else ''}{place}:\n" + "\n".join(
          f"  - {p}" for p in self.problems)
    super().__init__(message)


@dataclasses.dataclass(frozen=True)
class VideoScores:
  """One row of scores.csv.

  Attributes:
    video: video id.
    score: video score.
    attributes: (6,) int32, index into `ATTRIBUTES`.
    step_scores: (6,) float32, `MISSING_STEP_SCORE` where unknown.
    line: line number in scores.csv (for messages).
  """

  video: str
  score: float
  attributes: np.ndarray
  step_scores: np.ndarray
  line: int


@dataclasses.dataclass(frozen=True)
class LayoutSummary:
  """What `validate_manual_dir` found in a valid folder.

  Attributes:
    root: the manual directory.
    class_names: class names in index order (mapping.txt).
    splits: split name -> video ids, in bundle order.
    feature_dim: D, shared by every feature file of the checked splits.
    num_frames: video id -> T, for every video of the checked splits.
    has_scores: whether the folder has a scores.csv (with a row for every video of the
      checked splits).
  """

  root: pathlib.Path
  class_names: tuple[str, ...]
  splits: Mapping[str, tuple[str, ...]]
  feature_dim: int
  num_frames: Mapping[str, int]
  has_scores: bool = True


def _lines_text(lines: Sequence[int]) -> str:
  """'line 3' / 'lines 3, 4, 9 (+2 more)'."""
  shown = ", ".join(str(n) for n in lines[:_MAX_LISTED])
  more = f" (+{len(lines) - _MAX_LISTED} more)" if len(lines) > _MAX_LISTED else ""
  return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _read_text(path: pathlib.Path) -> str:
  """Reads a UTF-8 text file, turning failures into `LayoutError`."""
  if not path.is_file():
    raise LayoutError(f"{path}: file not found")
  try:
    return path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise LayoutError(f"{path}: cannot be read as UTF-8 text ({e})") from e


def read_mapping(path: PathLike) -> dict[str, int]:
  """Reads mapping.txt.

  Args:
    path: the mapping file; each non-empty line is "<index> <class name>".

  Returns:
    Class name -> index, ordered by index (so `list(mapping)` are the class names).

  Raises:
    LayoutError: the file is missing or unreadable, a line is malformed, an index or
      name repeats, or the indices do not run 0..K-1.
  """
  path = pathlib.Path(path)
  text = _read_text(path)
  problems = []
  by_index: dict[int, str] = {}
  first_line_of_name: dict[str, int] = {}
  first_line_of_index: dict[int, int] = {}
  for line_no, raw in enumerate(text.splitlines(), start=1):
    line = raw.strip()
    if not line:
      continue
    parts = line.split(maxsplit=1)
    if len(parts) != 2:
      problems.append(f"{path}:{line_no}: expected '<index> <class name>', got {raw!r}")
      continue
    index_text, name = parts[0], parts[1].strip()
    try:
      index = int(index_text)
    except ValueError:
      problems.append(f"{path}:{line_no}: class index {index_text!r} is not an integer")
      continue
    if index < 0:
      problems.append(f"{path}:{line_no}: class index {index} is negative")
      continue
    if index in first_line_of_index:
      problems.append(f"{path}:{line_no}: class index {index} repeats "
                      f"(first at line {first_line_of_index[index]})")
      continue
    if name in first_line_of_name:
      problems.append(f"{path}:{line_no}: class name {name!r} repeats "
                      f"(first at line {first_line_of_name[name]})")
      continue
    first_line_of_index[index] = line_no
    first_line_of_name[name] = line_no
    by_index[index] = name
  if not by_index and not problems:
    problems.append(f"{path}: no classes listed")
  if by_index:
    missing = sorted(set(range(max(by_index) + 1)) - set(by_index))
    if missing:
      problems.append(f"{path}: class indices must run 0..{max(by_index)} without gaps; "
                      f"missing {missing}")
  if problems:
    raise LayoutError(problems)
  return {by_index[i]: i for i in sorted(by_index)}


def _parse_float(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def read_scores(path: PathLike, *, score_range: Sequence[float] | None = None
                ) -> dict[str, VideoScores]:
  """Reads scores.csv.

  The header must hold `video`, `score` and `step1..step6` (any order); it may also hold
  all six `step1_score..step6_score`. Per-step attributes are NE, EN or ES. An empty step
  score cell means unknown (`MISSING_STEP_SCORE`). A ".txt" suffix on a video id is
  dropped, as in the bundles.

  Args:
    path: the scores file.
    score_range: the data set's video score range `(lo, hi)`
      (`config.dataset.score_range`); a video score outside it is a bad row. Each
      known step score must then lie in `[lo / 6, hi / 6]`. None: no range check.

  Returns:
    Video id -> its scores, in file order.

  Raises:
    LayoutError: listing every bad header column and every bad row (line number, video
      and what is wrong: column count, non-numeric or non-finite score, a score outside
      `score_range`, unknown attribute, repeated video).
  """
  rows, _, problems = _parse_scores(pathlib.Path(path), score_range)
  if problems:
    raise LayoutError(problems)
  return rows


def first_csv_row(reader) -> list[str] | None:
  """The first non-blank row of a `csv.reader`, cells stripped; None if there is none.

  The reader is left just after that row (`reader.line_num` is its line number).
  """
  for row in reader:
    if any(cell.strip() for cell in row):
      return [cell.strip() for cell in row]
  return None


def _parse_scores(path: pathlib.Path, score_range: Sequence[float] | None = None
                  ) -> tuple[dict[str, VideoScores], set[str] | None, list[str]]:
  """Parses scores.csv, collecting problems instead of raising (`read_scores`).

  Returns:
    (valid rows, every video id named by any row or None if the header is unusable,
    problems).
  """
  text = _read_text(path)
  reader = csv.reader(text.splitlines())
  header = first_csv_row(reader)
  if header is None:
    return {}, None, [f"{path}: empty file; expected the header "
                       f"{','.join(SCORE_COLUMNS)}"]
  header_line = reader.line_num
  problems = []
  counts = collections.Counter(header)
  repeated = sorted(c for c, n in counts.items() if n > 1)
  if repeated:
    problems.append(f"{path}:{header_line}: header repeats column(s) {repeated}")
  missing = [c for c in SCORE_COLUMNS if c not in counts]
  if missing:
    problems.append(f"{path}:{header_line}: header lacks column(s) {missing} "
                    f"(expected {','.join(SCORE_COLUMNS)})")
  unknown = [c for c in header if c not in SCORE_COLUMNS + STEP_SCORE_COLUMNS]
  if unknown:
    problems.append(f"{path}:{header_line}: unknown column(s) {unknown}; allowed: "
                    f"{','.join(SCORE_COLUMNS + STEP_SCORE_COLUMNS)}")
  present_step_scores = [c for c in STEP_SCORE_COLUMNS if c in counts]
  if present_step_scores and len(present_step_scores) != NUM_STEPS:
    absent = [c for c in STEP_SCORE_COLUMNS if c not in counts]
    problems.append(f"{path}:{header_line}: step score columns must be all six or "
                    f"none; lacks {absent}")
  if problems:   # rows cannot be read against a broken header
    return {}, None, problems
  col = {name: i for i, name in enumerate(header)}
  has_step_scores = bool(present_step_scores)
  if score_range is not None:
    lo, hi = (float(v) for v in score_range)

  rows: dict[str, VideoScores] = {}
  named: set[str] = set()
  for row in reader:
    line = reader.line_num
    if not any(cell.strip() for cell in row):
      continue
    cells = [cell.strip() for cell in row]
    video = cells[col["video"]] if len(cells) > col["video"] else ""
    if video.endswith(".txt"):
      video = video[:-len(".txt")]
    if video:
      named.add(video)
    if len(row) != len(header):
      problems.append(f"{path}:{line}: expected {len(header)} columns "
                      f"({','.join(header)}), got {len(row)}")
      continue
    row_problems = []
    if not video:
      row_problems.append("empty video id")
    score = _parse_float(cells[col["score"]])
    if score is None:
      row_problems.append(f"score {cells[col['score']]!r} is not a number")
    elif not np.isfinite(score):
      row_problems.append(f"score {cells[col['score']]!r} is not finite")
    elif score_range is not None and not lo <= score <= hi:
      row_problems.append(f"video {video!r} has score {score:g}, outside the score "
                          f"range [{lo:g}, {hi:g}]")
    attributes = np.zeros(NUM_STEPS, np.int32)
    for k, name in enumerate(STEP_COLUMNS):
      value = cells[col[name]]
      if value in ATTRIBUTES:
        attributes[k] = ATTRIBUTES.index(value)
      else:
        row_problems.append(f"{name} is {value!r}, expected one of "
                            f"{', '.join(ATTRIBUTES)}")
    step_scores = np.full(NUM_STEPS, MISSING_STEP_SCORE, np.float32)
    if has_step_scores:
      for k, name in enumerate(STEP_SCORE_COLUMNS):
        value = cells[col[name]]
        if not value:
          continue
        number = _parse_float(value)
        if number is None:
          row_problems.append(f"{name} {value!r} is not a number")
        elif not np.isfinite(number):
          row_problems.append(f"{name} {value!r} is not finite")
        elif score_range is not None and not (lo / NUM_STEPS <= number
                                              <= hi / NUM_STEPS):
          row_problems.append(f"video {video!r} has {name} {number:g}, outside the "
                              f"step score range [{lo / NUM_STEPS:g}, "
                              f"{hi / NUM_STEPS:g}]")
        else:
          step_scores[k] = number
    if video and video in rows:
      row_problems.append(f"video {video!r} repeats (first at line {rows[video].line})")
    if row_problems:
      problems.append(f"{path}:{line}: " + "; ".join(row_problems))
      continue
    rows[video] = VideoScores(video=video, score=float(score), attributes=attributes,
                              step_scores=step_scores, line=line)
  return rows, named, problems


def _split_path(root: pathlib.Path, split: str) -> pathlib.Path:
  return root / SPLITS_DIR / f"{split}{BUNDLE_SUFFIX}"


def read_split(manual_dir: PathLike, split: str) -> list[str]:
  """Reads `splits/<split>.bundle`.

  Args:
    manual_dir: the manual directory.
    split: split name, e.g. "train".

  Returns:
    Video ids in file order; a ".txt" suffix (as in MS-TCN bundles) is dropped.

  Raises:
    LayoutError: the file is missing or empty, or lists a video twice (or a path).
  """
  videos, problems = _parse_split(_split_path(pathlib.Path(manual_dir), split))
  if problems:
    raise LayoutError(problems)
  return videos


def _parse_split(path: pathlib.Path) -> tuple[list[str], list[str]]:
  """Parses a bundle, collecting problems; returns (unique video ids, problems)."""
  text = _read_text(path)
  videos: list[str] = []
  first_line: dict[str, int] = {}
  problems = []
  for line_no, raw in enumerate(text.splitlines(), start=1):
    video = raw.strip()
    if not video:
      continue
    if video.endswith(".txt"):
      video = video[:-len(".txt")]
    if "/" in video or "\\" in video or not video:
      problems.append(f"{path}:{line_no}: {raw.strip()!r} is not a video id")
      continue
    if video in first_line:
      problems.append(f"{path}:{line_no}: video {video!r} repeats "
                      f"(first at line {first_line[video]})")
      continue
    first_line[video] = line_no
    videos.append(video)
  if not videos and not problems:
    problems.append(f"{path}: lists no videos")
  return videos, problems


def _feature_path(root: pathlib.Path, video: str) -> pathlib.Path:
  return root / FEATURES_DIR / f"{video}.npy"


def _ground_truth_path(root: pathlib.Path, video: str) -> pathlib.Path:
  return root / GROUND_TRUTH_DIR / f"{video}.txt"


def _open_features(path: pathlib.Path, load_values: bool, problems: list[str]):
  """Opens a (D, T) feature file; header only unless `load_values`.

  Returns:
    The array (memory-mapped when only the header is wanted), or None after appending
    a problem.
  """
  try:
    array = np.load(path, mmap_mode=None if load_values else "r", allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    problems.append(f"{path}: cannot be read as a .npy array ({e})")
    return None
  if not isinstance(array, np.ndarray):
    problems.append(f"{path}: holds {type(array).__name__}, not a single array")
    return None
  if array.ndim != 2:
    problems.append(f"{path}: expected a 2-D (D, T) array, got shape {array.shape} "
                    f"(ndim {array.ndim})")
    return None
  if array.dtype.kind not in "fiu":
    problems.append(f"{path}: dtype {array.dtype} is not a real number type")
    return None
  if array.shape[0] == 0 or array.shape[1] == 0:
    problems.append(f"{path}: empty array of shape {array.shape}")
    return None
  return array


def _read_labels(path: pathlib.Path, class_index: Mapping[str, int],
                 problems: list[str]) -> np.ndarray | None:
  """Reads a groundTruth file into class indices; None after appending problems."""
  try:
    text = _read_text(path)
  except LayoutError as e:
    problems.extend(e.problems)
    return None
  lines = text.splitlines()
  while lines and not lines[-1].strip():   # trailing newlines are not frames
    lines.pop()
  labels = np.zeros(len(lines), np.int32)
  unknown: dict[str, list[int]] = collections.defaultdict(list)
  for t, raw in enumerate(lines):
    name = raw.strip()
    index = class_index.get(name)
    if index is None:
      unknown[name].append(t + 1)
    else:
      labels[t] = index
  if not lines:
    problems.append(f"{path}: no frames")
    return None
  for name, line_nos in unknown.items():
    if name:
      problems.append(f"{path}: unknown class {name!r} at {_lines_text(line_nos)} "
                      f"(mapping.txt has {', '.join(class_index)})")
    else:
      problems.append(f"{path}: empty {_lines_text(line_nos)} inside the file")
  return None if unknown else labels


def _check_finite(path: pathlib.Path, features_dt: np.ndarray, problems: list[str]):
  """Appends a problem naming the first frame (column) holding NaN or inf."""
  bad_frames = np.flatnonzero(~np.isfinite(features_dt).all(axis=0))
  if bad_frames.size:
    first = int(bad_frames[0])
    row = int(np.flatnonzero(~np.isfinite(features_dt[:, first]))[0])
    problems.append(
        f"{path}: NaN or inf in {bad_frames.size} frame(s); first at frame {first} "
        f"(value [{row}, {first}] of the (D, T) array is {features_dt[row, first]})")


def _inspect_video(root: pathlib.Path, video: str, class_index: Mapping[str, int],
                   load_values: bool, problems: list[str]) -> dict | None:
  """Checks one video's two files; returns its arrays (or header facts) when valid.

  With `load_values` the features are loaded, cast to float32 and checked for NaN/inf
  and the result holds `features` (T, D); otherwise only the .npy header is read and the
  result holds `feature_dim`. Both hold `labels` and `num_frames`.
  """
  feature_path = _feature_path(root, video)
  truth_path = _ground_truth_path(root, video)
  missing = [p for p in (feature_path, truth_path) if not p.is_file()]
  if missing:
    problems.extend(f"{p}: file not found (video {video!r})" for p in missing)
    return None
  count = len(problems)
  array = _open_features(feature_path, load_values, problems)
  labels = _read_labels(truth_path, class_index, problems)
  if array is not None and labels is not None and array.shape[1] != labels.shape[0]:
    problems.append(
        f"video {video!r}: {GROUND_TRUTH_DIR}/{video}.txt has {labels.shape[0]} frames "
        f"but {FEATURES_DIR}/{video}.npy has {array.shape[1]} (shape {array.shape} is "
        "(D, T))")
  if array is not None and load_values:
    # Cast first: a float64 value beyond float32's range becomes inf, which is as bad.
    with np.errstate(over="ignore"):
      array = np.asarray(array, np.float32)
    _check_finite(feature_path, array, problems)
  if len(problems) > count:
    return None
  result = {"labels": labels, "num_frames": int(labels.shape[0]),
            "feature_dim": int(array.shape[0])}
  if load_values:
    result["features"] = np.ascontiguousarray(array.T)   # (T, D)
  return result


def load_video(manual_dir: PathLike, video: str,
               class_index: Mapping[str, int]) -> dict:
  """Loads and checks one video's features and frame labels.

  Args:
    manual_dir: the manual directory.
    video: video id (no suffix).
    class_index: class name -> index (`read_mapping`).

  Returns:
    {"video": str, "features": (T, D) float32, "labels": (T,) int32,
     "num_frames": int32}.

  Raises:
    LayoutError: listing every problem with the video's two files (missing file, bad
      array shape or dtype, NaN/inf, unknown class, length mismatch).
  """
  root = pathlib.Path(manual_dir)
  problems: list[str] = []
  found = _inspect_video(root, video, class_index, True, problems)
  if problems:
    raise LayoutError(problems)
  return {"video": video, "features": found["features"], "labels": found["labels"],
          "num_frames": np.int32(found["num_frames"])}


@dataclasses.dataclass
class _Scan:
  """What `_scan` read (parts may be missing when there were problems)."""

  root: pathlib.Path
  class_index: dict[str, int] | None = None
  scores: dict[str, VideoScores] | None = None
  splits: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  feature_dims: dict[str, int] = dataclasses.field(default_factory=dict)
  num_frames: dict[str, int] = dataclasses.field(default_factory=dict)


def split_groups(splits: Sequence[str]) -> list[tuple[str, ...]]:
  """Groups bundle names into the sets whose videos must not overlap.

  A name with a dot belongs to the group of what follows its first dot, as MS-TCN's
  `train.split1` and `test.split1` (group `split1`): a video may sit in
  `train.split1` and `test.split2`, not in both halves of split 1. Names without a
  dot (`train`, `test`, `fold0`, ...) form one group.

  Returns:
    The groups, each in the given order, groups ordered by their first member.
  """
  groups: dict[str, list[str]] = {}
  for name in splits:
    key = name.split(".", 1)[1] if "." in name else ""
    groups.setdefault(key, []).append(name)
  return [tuple(g) for g in groups.values()]


def _scan(manual_dir: PathLike, splits: Sequence[str], num_classes: int | None,
          check_values: bool, require_scores: bool = True,
          score_range: Sequence[float] | None = None) -> tuple[_Scan, list[str]]:
  """Reads and checks a manual directory, collecting every problem it can find.

  scores.csv is read when present; `require_scores` makes its absence a problem.
  Bundles of one `split_groups` group must not share a video.
  """
  root = pathlib.Path(manual_dir)
  if not root.is_dir():
    raise LayoutError(f"manual directory {root} does not exist (or is not a directory)")
  scan = _Scan(root=root)
  problems: list[str] = []

  # Files that every layout has: report all that are missing at once.
  needed = [root / MAPPING_FILE] + ([root / SCORES_FILE] if require_scores else [])
  needed += [_split_path(root, s) for s in splits]
  problems.extend(f"{p}: file not found" for p in needed if not p.is_file())
  for sub in (FEATURES_DIR, GROUND_TRUTH_DIR):
    if not (root / sub).is_dir():
      problems.append(f"{root / sub}: directory not found")

  def read(fn, *args):
    try:
      return fn(*args)
    except LayoutError as e:
      problems.extend(e.problems)
      return None

  if (root / MAPPING_FILE).is_file():
    scan.class_index = read(read_mapping, root / MAPPING_FILE)
  if scan.class_index is not None and num_classes is not None:
    if len(scan.class_index) != num_classes:
      problems.append(f"{root / MAPPING_FILE}: lists {len(scan.class_index)} classes, "
                      f"expected {num_classes} (background + {num_classes - 1} steps)")
  scored: set[str] | None = None   # every video named in scores.csv, even by bad rows
  if (root / SCORES_FILE).is_file():
    parsed = read(_parse_scores, root / SCORES_FILE, score_range)
    if parsed is not None:
      rows, named, score_problems = parsed
      problems.extend(score_problems)
      if not score_problems:
        scan.scores = rows
      scored = named
  for split in splits:
    if _split_path(root, split).is_file():
      parsed = read(_parse_split, _split_path(root, split))
      if parsed is not None:
        scan.splits[split], split_problems = parsed
        problems.extend(split_problems)

  # Within a group a video belongs to one split only, and every listed video needs
  # scores when there are scores.
  for group in split_groups([s for s in splits if s in scan.splits]):
    owner: dict[str, str] = {}
    for split in group:
      for video in scan.splits[split]:
        if video in owner:
          problems.append(f"video {video!r} is in both "
                          f"{_split_path(root, owner[video])} and "
                          f"{_split_path(root, split)}")
        else:
          owner[video] = split
  listed = dict.fromkeys(v for videos in scan.splits.values() for v in videos)
  if scored is not None:
    for split, videos in scan.splits.items():
      unscored = [v for v in videos if v not in scored]
      if unscored:
        problems.append(f"{root / SCORES_FILE}: no row for {len(unscored)} video(s) of "
                        f"{_split_path(root, split)}: {', '.join(unscored)}")

  # Per-video files. A missing directory was reported once above, not per video.
  dirs_present = all((root / sub).is_dir() for sub in (FEATURES_DIR, GROUND_TRUTH_DIR))
  if dirs_present:
    for video in listed:
      if scan.class_index is None:
        # Without a mapping the labels cannot be checked; still list missing files.
        problems.extend(f"{p}: file not found (video {video!r})"
                        for p in (_feature_path(root, video),
                                  _ground_truth_path(root, video)) if not p.is_file())
        continue
      found = _inspect_video(root, video, scan.class_index, check_values, problems)
      if found is not None:
        scan.feature_dims[video] = found["feature_dim"]
        scan.num_frames[video] = found["num_frames"]

  # All feature files must share D.
  if scan.feature_dims:
    dims = collections.Counter(scan.feature_dims.values())
    if len(dims) > 1:
      common = dims.most_common(1)[0][0]
      odd = sorted(v for v, d in scan.feature_dims.items() if d != common)
      problems.append(
          f"feature files disagree on D: most have D={common}, but "
          + ", ".join(f"{FEATURES_DIR}/{v}.npy has D={scan.feature_dims[v]}"
                      for v in odd))
  return scan, problems


def list_splits(manual_dir: PathLike) -> tuple[str, ...]:
  """Names of the split bundles in `<manual_dir>/splits/`, sorted.

  Raises:
    LayoutError: the folder has no `splits/` or no bundle in it.
  """
  folder = pathlib.Path(manual_dir) / SPLITS_DIR
  names = sorted(p.name[:-len(BUNDLE_SUFFIX)] for p in folder.glob(f"*{BUNDLE_SUFFIX}")
                 if p.is_file()) if folder.is_dir() else []
  if not names:
    raise LayoutError(f"no split bundles (*{BUNDLE_SUFFIX}) in {folder}")
  return tuple(names)


def validate_manual_dir(manual_dir: PathLike, splits: Sequence[str] = DEFAULT_SPLITS,
                        *, num_classes: int | None = None,
                        check_values: bool = True,
                        require_scores: bool = True,
                        score_range: Sequence[float] | None = None) -> LayoutSummary:
  """Checks a whole manual directory up front.

  Reads mapping.txt, scores.csv, the split bundles and every listed video's two files,
  and reports all problems together.

  Args:
    manual_dir: the manual directory.
    splits: the splits whose bundles (and videos) to check. Bundles of one
      `split_groups` group (all names without a dot; `train.splitK` with
      `test.splitK`) must not share a video.
    num_classes: if set, mapping.txt must list exactly this many classes.
    check_values: also load every feature file to look for NaN/inf (otherwise only the
      .npy headers are read, which is much faster).
    require_scores: scores.csv must exist (HHA300). Either way a scores.csv that is
      there is checked and must have a row for every listed video.
    score_range: if set, the video score range `(lo, hi)`: scores.csv rows outside it
      (or step scores outside a sixth of it) are problems (`read_scores`).

  Returns:
    A `LayoutSummary` of the folder.

  Raises:
    LayoutError: listing every problem found.
  """
  scan, problems = _scan(manual_dir, splits, num_classes, check_values, require_scores,
                         score_range)
  if problems:
    raise LayoutError(problems, where=scan.root)
  return LayoutSummary(
      root=scan.root,
      class_names=tuple(scan.class_index),
      splits={s: tuple(v) for s, v in scan.splits.items()},
      feature_dim=next(iter(scan.feature_dims.values())),
      num_frames=dict(scan.num_frames),
      has_scores=scan.scores is not None)


def iter_examples(manual_dir: PathLike, split: str, *,
                  num_classes: int | None = None,
                  require_scores: bool = True) -> Iterator[tuple[str, dict]]:
  """Yields the examples of one split.

  Everything but the feature values is checked before the first example (mapping,
  scores, bundle, file presence, .npy headers, frame labels, lengths), so a structural
  problem anywhere in the split fails at once. NaN/inf are found as each video is
  loaded; call `validate_manual_dir` first to check values up front as well.

  Args:
    manual_dir: the manual directory.
    split: split name (`splits/<split>.bundle`).
    num_classes: if set, mapping.txt must list exactly this many classes.
    require_scores: scores.csv must exist. Without one (allowed when False) every
      example gets score 0, attributes 0 and step scores `MISSING_STEP_SCORE`.

  Yields:
    `(video_id, example)` in bundle order; see the module docstring for the example.

  Raises:
    LayoutError: naming every problem found.
  """
  scan, problems = _scan(manual_dir, (split,), num_classes, check_values=False,
                         require_scores=require_scores)
  if problems:
    raise LayoutError(problems, where=scan.root)
  for video in scan.splits[split]:
    example = load_video(scan.root, video, scan.class_index)
    if scan.scores is None:   # no scores.csv (allowed only without require_scores)
      example["score"] = np.float32(0.0)
      example["attributes"] = np.zeros(NUM_STEPS, np.int32)
      example["step_scores"] = np.full(NUM_STEPS, MISSING_STEP_SCORE, np.float32)
    else:
      row = scan.scores[video]
      example["score"] = np.float32(row.score)
      example["attributes"] = row.attributes.copy()
      example["step_scores"] = row.step_scores.copy()
    yield video, example
