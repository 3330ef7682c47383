r"""Leave-people-out cross-validation of the joint model beside a per-frame classifier.

  python -m hhjax.crossval --config configs/handwash_real.py --workdir runs/handwash_cv

The config's manual directory must hold one split bundle per fold, `fold0`, `fold1`, ...
(disjoint groups of people, as `python -m hhjax.data.compose` writes them). Fold k trains
the joint model on every other fold with `hhjax.train.train_and_evaluate` (in
`<workdir>/fold<k>`; a rerun resumes unfinished folds and re-evaluates finished ones)
and tests it on fold k, so nobody is tested on a model that saw them. On the same split
a per-frame logistic regression on the same features (`hhjax.baselines`) is fitted and
tested, to show what temporal modelling adds.

Per fold and as mean ± sd over the folds it prints and writes (`crossval.json`):

* segmentation: frame accuracy, edit, F1@{10,25,50} (percent);
* completeness: Spearman's correlation between the predicted and true number of steps
  done, and the share of washes whose left-out steps are named exactly (percent).
  The joint model calls a step done when its step score is at least 0.5; the per-frame
  classifier when it labels at least m frames with the step, m chosen on the training
  washes (the value that names their left-out steps best).

A second table gives frame accuracy, edit and F1@50 per held-out person (their washes
pooled), since people differ a lot. It also draws `timeline.png`: for the held-out wash of fold `--timeline_fold` with the
median frame accuracy (a typical wash, not the best one), the ground-truth step timeline
above the joint model's and the per-frame classifier's.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import re

from absl import app, flags, logging
import numpy as np
from ml_collections import config_flags

from hhjax import baselines, cli, metrics, provenance, reporting
from hhjax import config as config_lib
from hhjax.data import compose, layout, splits
from hhjax.training.loop import train_and_evaluate
from hhjax.data.synthetic import CLASS_NAMES

NUM_STEPS = layout.NUM_STEPS
DONE_THRESHOLD = 0.5
MIN_FRAMES_CANDIDATES = (1, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180)
COLUMNS = (("acc", "Acc"), ("edit", "Edit"), ("f1@10", "F1@10"), ("f1@25", "F1@25"),
           ("f1@50", "F1@50"), ("segs", "Segs/true"), ("spearman", "Sp.Corr"),
           ("missing_exact", "Missing="))
METHODS = (("joint", "joint model"), ("per_frame", "per-frame classifier"))


def fold_indices(manual_dir: str | pathlib.Path) -> list[int]:
  """k of every `fold<k>` bundle in the manual directory, which must run 0..K-1.

  Raises:
    LayoutError: there are fewer than two fold bundles, or their numbers skip one.
  """
  if not pathlib.Path(manual_dir).is_dir():
    raise layout.LayoutError(
        f"manual directory {manual_dir} does not exist; write it with python -m "
        "hhjax.data.compose --folds K ... --out DIR (docs/HANDWASH.md)")
  found = sorted(int(m.group(1)) for name in layout.list_splits(manual_dir)
                 if (m := re.fullmatch(r"fold(\d+)", name)))
  if len(found) < 2 or found != list(range(len(found))):
    raise layout.LayoutError(
        f"cross-validation needs split bundles fold0 .. fold<K-1> (K >= 2) in "
        f"{pathlib.Path(manual_dir) / layout.SPLITS_DIR}, found folds {found}; write them "
        "with python -m hhjax.data.compose --folds K")
  return found


def person_of(video: str) -> str:
  """The person id of a composed wash name, `<person>_wash<k>`."""
  return video.rsplit("_wash", 1)[0]


def steps_done_by_frames(labels: np.ndarray, min_frames: int) -> np.ndarray:
  """(6,) bool: steps labelled on at least `min_frames` frames."""
  counts = np.bincount(np.asarray(labels), minlength=NUM_STEPS + 1)[1:NUM_STEPS + 1]
  return counts >= min_frames


def choose_min_frames(preds, gt_done: np.ndarray,
                      candidates=MIN_FRAMES_CANDIDATES) -> int:
  """The smallest m that names the left-out steps of the most videos exactly."""
  shares = [metrics.missing_steps_exact(
      np.stack([steps_done_by_frames(p, m) for p in preds]), gt_done) for m in candidates]
  return int(candidates[int(np.argmax(shares))])


def completeness(pred_done: np.ndarray, pred_score: np.ndarray, gt_done: np.ndarray
                 ) -> dict[str, float]:
  """Spearman between predicted and true scores (true score = steps done), and the
  share of videos whose left-out steps are named exactly."""
  return dict(spearman=metrics.spearman(pred_score, gt_done.sum(1).astype(float)),
              missing_exact=metrics.missing_steps_exact(pred_done, gt_done))


def read_predictions(path: pathlib.Path) -> list[dict]:
  """The per-video objects of a `predictions.jsonl`."""
  with path.open() as f:
    return [json.loads(line) for line in f if line.strip()]


def joint_metrics(predictions: list[dict]) -> tuple[dict[str, float], np.ndarray]:
  """Metrics of the joint model from its predictions; also its (N, 6) steps done."""
  seg = metrics.segmentation_report([np.asarray(p["frame_labels"]) for p in predictions],
                                    [np.asarray(p["gt_frame_labels"]) for p in predictions])
  done = np.array([np.asarray(p["step_scores"]) >= DONE_THRESHOLD for p in predictions])
  gt_done = np.array([[a != "NE" for a in p["gt_attributes"]] for p in predictions])
  seg.update(completeness(done, np.array([p["video_score"] for p in predictions]),
                          gt_done))
  return seg, done


def check_folds(manual_dir: str | pathlib.Path, folds: list[int]) -> list[int]:
  """The data set's folds (`fold_indices`), after checking that each of `folds` is one.

  Raises:
    ValueError: naming the folds that are not among the data set's, and the directory.
    LayoutError: from `fold_indices`.
  """
  available = fold_indices(manual_dir)
  unknown = sorted(set(folds) - set(available))
  if unknown:
    raise ValueError(f"folds {unknown} are not among the data set's folds {available} "
                     f"({manual_dir})")
  return available


def fold_config(config, num_folds: int, fold: int):
  """The config of one fold: its train/test splits; no per-run baselines."""
  cfg = copy.deepcopy(config)
  cfg.dataset.train_split, cfg.dataset.eval_split = compose.fold_split_names(num_folds,
                                                                            fold)
  cfg.report_baselines = False
  return cfg


def run_fold(config, workdir: pathlib.Path, num_folds: int, fold: int) -> dict:
  """Trains and tests the joint model and the per-frame classifier on one fold."""
  cfg = fold_config(config, num_folds, fold)
  fold_dir = workdir / f"fold{fold}"
  print(f"=== fold {fold}: train {cfg.dataset.train_split}, test "
        f"{cfg.dataset.eval_split} ===", flush=True)
  train_and_evaluate(cfg, fold_dir)
  predictions = read_predictions(fold_dir / "predictions.jsonl")
  joint, _ = joint_metrics(predictions)

  train = splits.load_split(cfg, cfg.dataset.train_split)
  test = splits.load_split(cfg, cfg.dataset.eval_split)
  predict = baselines.fit_per_frame(train, cfg.dataset.streams, frame_stride=4,
                                    seed=cfg.seed)
  train_preds, test_preds = predict(train), predict(test)

  def gt_done(data):
    return data.attributes != layout.ATTRIBUTES.index("NE")

  min_frames = choose_min_frames(train_preds, gt_done(train))
  done = np.stack([steps_done_by_frames(p, min_frames) for p in test_preds])
  per_frame = metrics.segmentation_report(test_preds, test.labels)
  per_frame.update(completeness(done, done.sum(1).astype(float), gt_done(test)))
  people = sorted({person_of(n) for n in test.names})
  by_person = {}
  for person in people:
    rows = [i for i, n in enumerate(test.names) if person_of(n) == person]
    joint_rows = [p for p in predictions if person_of(p["video"]) == person]
    by_person[person] = dict(
        washes=len(rows),
        joint=metrics.segmentation_report(
            [np.asarray(p["frame_labels"]) for p in joint_rows],
            [np.asarray(p["gt_frame_labels"]) for p in joint_rows]),
        per_frame=metrics.segmentation_report([test_preds[i] for i in rows],
                                              [test.labels[i] for i in rows]))
  return dict(fold=fold, people=people, washes=len(test.names),
              train_washes=len(train.names), min_frames=min_frames, joint=joint,
              code=provenance.trained_with(fold_dir),
              per_frame=per_frame, by_person=by_person, videos=list(test.names),
              per_frame_labels=test_preds, predictions=predictions)


def mean_sd(folds: list[dict], method: str) -> dict[str, tuple[float, float, int]]:
  """(mean, sample sd, number of folds with a value) per metric; NaNs are skipped."""
  out = {}
  for key, _ in COLUMNS:
    values = np.array([f[method][key] for f in folds], dtype=float)
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if values.size else math.nan
    sd = float(values.std(ddof=1)) if values.size > 1 else math.nan
    out[key] = (mean, sd, int(values.size))
  return out


def _cell(key: str, value: float) -> str:
  return reporting.cell(key, value, decimals=1)


def format_report(folds: list[dict]) -> str:
  """The per-fold table, then mean ± sd per method."""
  width = 16
  head = f"{'fold':<6}{'people':<12}{'method':<22}" + "".join(
      f"{label:>{width // 2 + 2}}" for _, label in COLUMNS)
  lines = [head, "-" * len(head)]
  for f in folds:
    for i, (method, name) in enumerate(METHODS):
      lead = (f"{f['fold']:<6}{','.join(f['people']):<12}" if i == 0 else " " * 18)
      lines.append(lead + f"{name:<22}" + "".join(
          f"{_cell(key, f[method][key]):>{width // 2 + 2}}" for key, _ in COLUMNS))
  lines.append("-" * len(head))
  lines.append(f"mean ± sd over {len(folds)} folds (Missing= : share of washes whose "
               "left-out steps are named exactly)")
  for method, name in METHODS:
    stats = mean_sd(folds, method)
    cells = []
    for key, label in COLUMNS:
      mean, sd, n = stats[key]
      note = "" if n == len(folds) else f" ({n} folds)"
      cells.append(f"{label} {_cell(key, mean)} ± {_cell(key, sd)}{note}")
    lines.append(f"  {name:<22}" + "  ".join(cells))
  return "\n".join(lines)


PERSON_COLUMNS = (("acc", "Acc"), ("edit", "Edit"), ("f1@50", "F1@50"))


def code_line(folds: list[dict]) -> str:
  """`code: <label>` when every fold was trained by the same code (`hhjax.provenance`),
  else a line naming which folds ran which code (a fold trained earlier and read back
  may come from other code)."""
  note = provenance.mixed_note({f"fold {f['fold']}": f["code"] for f in folds})
  if note is not None:
    return "WARNING " + note
  if not folds:
    return "code: -"
  return "code: " + " then ".join(folds[0]["code"])


def format_people(folds: list[dict]) -> str:
  """Segmentation per held-out person (their washes pooled), both methods."""
  head = f"{'person':<8}{'fold':<6}{'washes':>7}   " + "  ".join(
      f"{'joint ' + label:>11}" for _, label in PERSON_COLUMNS) + "   " + "  ".join(
      f"{'frame ' + label:>11}" for _, label in PERSON_COLUMNS)
  lines = ["per held-out person (joint model | per-frame classifier)", head,
           "-" * len(head)]
  for f in folds:
    for person, r in f["by_person"].items():
      lines.append(f"{person:<8}{f['fold']:<6}{r['washes']:>7}   " + "  ".join(
          f"{_cell(k, r['joint'][k]):>11}" for k, _ in PERSON_COLUMNS) + "   " + "  ".join(
          f"{_cell(k, r['per_frame'][k]):>11}" for k, _ in PERSON_COLUMNS))
  return "\n".join(lines)


def draw_timeline(folds: list[dict], fold: int, path: pathlib.Path, fps: float = 30.0
                  ) -> str:
  """Draws the median-accuracy held-out wash of `fold`; returns its name."""
  f = next(x for x in folds if x["fold"] == fold)
  preds = f["predictions"]
  accs = [metrics.frame_accuracy(np.asarray(p["frame_labels"]),
                                 np.asarray(p["gt_frame_labels"])) for p in preds]
  i = int(np.argsort(accs)[len(accs) // 2])
  p = preds[i]
  per_frame = f["per_frame_labels"][f["videos"].index(p["video"])]
  rows = [("ground truth", np.asarray(p["gt_frame_labels"])),
          (f"joint model ({accs[i]:.1f}%)", np.asarray(p["frame_labels"])),
          (f"per-frame classifier "
           f"({metrics.frame_accuracy(per_frame, p['gt_frame_labels']):.1f}%)",
           np.asarray(per_frame))]
  reporting.plot_timelines(path, rows, CLASS_NAMES, fps=fps,
                           title=f"held-out wash {p['video']} (fold {fold})")
  return p["video"]


def cross_validate(config, workdir: str | pathlib.Path, folds: list[int] | None = None,
                   timeline_fold: int = 0, fps: float = 30.0) -> list[dict]:
  """Runs the folds (all by default), prints the report, writes crossval.json and
  timeline.png in `workdir`; returns the per-fold results."""
  config_lib.check_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if not config.dataset.manual_dir:
    raise layout.LayoutError("set the manual directory of the composed washes with "
                             "--config.dataset.manual_dir")
  available = check_folds(config.dataset.manual_dir, folds or [])
  folds = available if folds is None else folds
  results = [run_fold(config, workdir, len(available), k) for k in folds]
  report = (format_report(results) + "\n" + code_line(results) + "\n\n"
            + format_people(results))
  print(report)
  (workdir / "crossval.txt").write_text(report + "\n")
  keys = ("fold", "people", "washes", "train_washes", "min_frames", "joint", "per_frame",
          "by_person", "code")
  (workdir / "crossval.json").write_text(json.dumps(dict(
      folds=[{k: r[k] for k in keys} for r in results],
      mean_sd={m: mean_sd(results, m) for m, _ in METHODS}), indent=2))
  if timeline_fold in folds:
    name = draw_timeline(results, timeline_fold, workdir / "timeline.png", fps)
    print(f"timeline of {name}: {workdir / 'timeline.png'}")
  return results


FLAGS = flags.FLAGS


def define_flags():
  cli.define_config_flags("Where each fold's run and the report go.")
  flags.DEFINE_list("folds", None, "Only these folds (default: every fold bundle).")
  flags.DEFINE_integer("timeline_fold", 0, "Fold whose median wash timeline.png shows.")
  flags.DEFINE_float("fps", 30.0, "Frame rate of the features, for timeline.png's axis.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  folds = None if FLAGS.folds is None else [int(k) for k in FLAGS.folds]
  with cli.user_errors():
    cross_validate(FLAGS.config, FLAGS.workdir, folds, FLAGS.timeline_fold, FLAGS.fps)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
