"""Evaluation metrics for step segmentation and action scoring.

Segmentation metrics follow the conventions of MS-TCN (Farha & Gall, CVPR 2019)
and the temporal action segmentation literature that reports them:

* frame-wise accuracy,
* the segmental edit score (normalised Levenshtein distance between the ordered
  sequences of segment labels, background segments removed),
* segmental F1 at IoU thresholds 0.10, 0.25 and 0.50,
* the segment ratio: predicted segments per true segment (background left out),
  a direct reading of over-segmentation (above 1) and under-segmentation (below 1).

Scoring metrics are the ones used in action quality assessment (AQA):

* Spearman's rank correlation between predicted and true scores,
* the relative L2 distance (RL2).

Everything here is plain NumPy and works on one video's 1-D integer label array
at a time (``segmentation_report`` aggregates over a list of videos). Labels may
come from any array-like, e.g. ``jnp.argmax(logits, -1)``; they are converted
with ``np.asarray``.

All segmentation metrics but the segment ratio are returned in percent (0-100) as
Python floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_OVERLAPS = (0.10, 0.25, 0.50)


def _labels_1d(labels, name: str) -> np.ndarray:
  """Returns `labels` as a 1-D integer NumPy array, or raises ValueError."""
  arr = np.asarray(labels)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of frame labels, got shape {arr.shape}")
  if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
    raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
  return arr


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
  """Converts a (pred, gt) pair of frame labels and checks their lengths agree."""
  pred = _labels_1d(pred, "pred")
  gt = _labels_1d(gt, "gt")
  if pred.shape[0] != gt.shape[0]:
    raise ValueError(
        f"pred and gt must have the same number of frames: "
        f"pred has {pred.shape[0]}, gt has {gt.shape[0]}")
  return pred, gt


def _bg_set(bg_classes: Iterable[int] | None) -> frozenset[int]:
  return frozenset() if bg_classes is None else frozenset(int(c) for c in bg_classes)


def frame_accuracy(pred, gt) -> float:
  """Frame-wise accuracy of one video.

  Args:
    pred: 1-D integer array of predicted per-frame labels.
    gt: 1-D integer array of ground-truth per-frame labels, same length.

  Returns:
    Percentage (0-100) of frames whose predicted label equals the true one.

  Raises:
    ValueError: if the arrays are not 1-D, their lengths differ (the message
      gives both lengths), or they are empty.
  """
  pred, gt = _check_pair(pred, gt)
  if gt.shape[0] == 0:
    raise ValueError("frame accuracy is undefined for a video with no frames")
  return float(np.mean(pred == gt) * 100.0)


def segments(labels) -> list[tuple[int, int, int]]:
  """Splits a label sequence into maximal runs of a constant label.

  Args:
    labels: 1-D integer array of per-frame labels.

  Returns:
    A list of ``(label, start, end)`` tuples in temporal order, with ``end``
    exclusive, so ``labels[start:end]`` is the run. Background classes are not
    treated specially here. An empty input gives an empty list.

  Example:
    >>> segments([0, 0, 1, 1, 1, 0])
    [(0, 0, 2), (1, 2, 5), (0, 5, 6)]
  """
  arr = _labels_1d(labels, "labels")
  if arr.shape[0] == 0:
    return []
  change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
  starts = np.concatenate(([0], change))
  ends = np.concatenate((change, [arr.shape[0]]))
  return [(int(arr[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def _fg_segments(labels: np.ndarray, bg: frozenset[int]) -> list[tuple[int, int, int]]:
  """Segments of `labels` whose label is not a background class.

  Runs are found on the full sequence first, so two runs of one class that are
  separated by background stay two segments.
  """
  return [seg for seg in segments(labels) if seg[0] not in bg]


def _levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
  """Edit distance (unit-cost insert, delete, substitute) between two sequences."""
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, start=1):
    cur = [i] + [0] * len(b)
    for j, y in enumerate(b, start=1):
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
    prev = cur
  return prev[-1]


def edit_score(pred, gt, bg_classes: Iterable[int] | None = (0,)) -> float:
  """Segmental edit score of one video, as reported by MS-TCN.

  Both label arrays are reduced to the ordered sequence of labels of their
  non-background segments, and the score is
  ``(1 - levenshtein(p, g) / max(len(p), len(g))) * 100``. Segment boundaries
  (timing) do not matter, only the order of segment labels: over-segmentation
  and missing or extra steps are penalised.

  Args:
    pred: 1-D integer array of predicted per-frame labels.
    gt: 1-D integer array of ground-truth per-frame labels, same length.
    bg_classes: labels whose segments are dropped before comparison. ``()`` or
      ``None`` keeps every segment.

  Returns:
    The edit score in [0, 100]; 100 when neither side has a non-background
    segment, 0 when exactly one side has none.

  Raises:
    ValueError: if the arrays are not 1-D or their lengths differ.
  """
  pred, gt = _check_pair(pred, gt)
  bg = _bg_set(bg_classes)
  p = [seg[0] for seg in _fg_segments(pred, bg)]
  g = [seg[0] for seg in _fg_segments(gt, bg)]
  longest = max(len(p), len(g))
  if longest == 0:
    return 100.0
  return float((1.0 - _levenshtein(p, g) / longest) * 100.0)


def f1_counts(pred, gt, overlap: float,
              bg_classes: Iterable[int] | None = (0,)) -> tuple[int, int, int]:
  """Segment-level true/false positives and false negatives of one video.

  Matching follows MS-TCN. Non-background predicted segments are visited in
  temporal order. For each, the IoU with every ground-truth segment of the
  same label is computed and the best one is taken (the earliest on a tie).
  If that IoU is at least `overlap` and that ground-truth segment has not been
  matched yet, the prediction is a true positive and the ground-truth segment
  becomes matched; otherwise it is a false positive. Note that the second-best
  ground-truth segment is never tried, even if the best one is already taken.
  A predicted segment whose label has no ground-truth segment is a false
  positive. Unmatched non-background ground-truth segments are false negatives.

  Args:
    pred: 1-D integer array of predicted per-frame labels.
    gt: 1-D integer array of ground-truth per-frame labels, same length.
    overlap: IoU threshold in [0, 1], e.g. 0.1, 0.25 or 0.5.
    bg_classes: labels whose segments are ignored on both sides.

  Returns:
    ``(tp, fp, fn)`` as Python ints; ``tp + fp`` is the number of
    non-background predicted segments and ``tp + fn`` the number of
    non-background ground-truth segments.

  Raises:
    ValueError: if the arrays are not 1-D, their lengths differ, or
      `overlap` is outside [0, 1].
  """
  if not 0.0 <= overlap <= 1.0:
    raise ValueError(f"overlap must be in [0, 1], got {overlap}")
  pred, gt = _check_pair(pred, gt)
  bg = _bg_set(bg_classes)
  p_segs = _fg_segments(pred, bg)
  g_segs = _fg_segments(gt, bg)
  matched = [False] * len(g_segs)
  tp = fp = 0
  for label, ps, pe in p_segs:
    best_iou, best_idx = -1.0, -1
    for idx, (g_label, gs, ge) in enumerate(g_segs):
      if g_label != label:
        continue
      inter = max(0, min(pe, ge) - max(ps, gs))
      union = (pe - ps) + (ge - gs) - inter
      iou = inter / union
      if iou > best_iou:
        best_iou, best_idx = iou, idx
    if best_idx >= 0 and best_iou >= overlap and not matched[best_idx]:
      tp += 1
      matched[best_idx] = True
    else:
      fp += 1
  fn = len(g_segs) - sum(matched)
  return tp, fp, fn


def f1_score(tp: int, fp: int, fn: int) -> float:
  """F1 from segment counts, in percent.

  Args:
    tp: true positives.
    fp: false positives.
    fn: false negatives.

  Returns:
    ``2 * P * R / (P + R) * 100`` with ``P = tp / (tp + fp)`` and
    ``R = tp / (tp + fn)``, which equals ``200 * tp / (2 * tp + fp + fn)``.
    0.0 when it is undefined (no true positives, including all counts zero).
  """
  if tp < 0 or fp < 0 or fn < 0:
    raise ValueError(f"counts must be non-negative, got tp={tp}, fp={fp}, fn={fn}")
  if tp == 0:
    return 0.0
  return float(200.0 * tp / (2 * tp + fp + fn))


def _overlap_key(overlap: float) -> str:
  return f"f1@{round(overlap * 100):d}"


def segmentation_report(preds: Sequence, gts: Sequence,
                        bg_classes: Iterable[int] | None = (0,),
                        overlaps: Sequence[float] = DEFAULT_OVERLAPS) -> dict[str, float]:
  """Segmentation metrics over a set of videos, aggregated as MS-TCN reports them.

  * ``acc``: frame accuracy over all frames of all videos pooled together
    (long videos weigh more), not the mean of per-video accuracies.
  * ``edit``: mean over videos of the per-video edit score.
  * ``f1@10``, ``f1@25``, ``f1@50`` (one key per entry of `overlaps`, the
    threshold in percent): F1 from tp/fp/fn summed over all videos.
  * ``segs``: predicted segments per true segment, both summed over all videos
    (background segments left out; NaN when no video has a true segment).

  Args:
    preds: sequence of 1-D integer arrays of predicted per-frame labels.
    gts: sequence of 1-D integer arrays of true per-frame labels, in the same
      video order and with the same length per video.
    bg_classes: labels ignored by the edit and F1 metrics (they still count
      for accuracy).
    overlaps: IoU thresholds for the F1 keys.

  Returns:
    A dict of Python floats, in percent but for ``segs`` (a ratio).

  Raises:
    ValueError: if the lists are empty or differ in length, if a video's pred
      and gt lengths differ (the message names the video index and both
      lengths), or if there are no frames at all.
  """
  preds, gts = list(preds), list(gts)
  if len(preds) != len(gts):
    raise ValueError(
        f"preds and gts must list the same videos: got {len(preds)} predictions "
        f"and {len(gts)} ground truths")
  if not preds:
    raise ValueError("segmentation_report needs at least one video, got empty lists")
  bg_set = _bg_set(bg_classes)
  bg = tuple(bg_set)
  correct = total = n_pred = n_true = 0
  edits = []
  counts = {o: np.zeros(3, dtype=np.int64) for o in overlaps}
  for i, (pred, gt) in enumerate(zip(preds, gts)):
    try:
      pred, gt = _check_pair(pred, gt)
    except ValueError as err:
      raise ValueError(f"video {i}: {err}") from None
    correct += int(np.sum(pred == gt))
    total += gt.shape[0]
    edits.append(edit_score(pred, gt, bg))
    n_pred += len(_fg_segments(pred, bg_set))
    n_true += len(_fg_segments(gt, bg_set))
    for o in overlaps:
      counts[o] += f1_counts(pred, gt, o, bg)
  if total == 0:
    raise ValueError("segmentation_report got videos with no frames at all")
  report = {"acc": 100.0 * correct / total, "edit": float(np.mean(edits))}
  for o in overlaps:
    tp, fp, fn = (int(c) for c in counts[o])
    report[_overlap_key(o)] = f1_score(tp, fp, fn)
  report["segs"] = n_pred / n_true if n_true else float("nan")
  return report


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of `x`, tied values getting the mean of their positions."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  # Values sorted ascending; group k occupies positions start_k+1 .. start_k+counts_k.
  starts = np.cumsum(counts) - counts
  group_rank = starts + (counts + 1) / 2.0
  return group_rank[inverse.reshape(-1)]


def _scores_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  if pred.ndim != 1 or gt.ndim != 1:
    raise ValueError(f"scores must be 1-D, got shapes {pred.shape} and {gt.shape}")
  if pred.shape[0] != gt.shape[0]:
    raise ValueError(
        f"pred and gt must have the same number of scores: "
        f"pred has {pred.shape[0]}, gt has {gt.shape[0]}")
  if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
    raise ValueError("scores must be finite (no nan or inf)")
  return pred, gt


def spearman(pred, gt) -> float:
  """Spearman's rank correlation between predicted and true scores.

  The Pearson correlation of the ranks, with tied values given the average of
  the ranks they span (the same definition as ``scipy.stats.spearmanr``).

  Args:
    pred: 1-D array of predicted scores (one per video).
    gt: 1-D array of true scores, same length.

  Returns:
    Correlation in [-1, 1]. ``nan`` when either input is constant (including
    fewer than two samples), where the correlation is undefined.

  Raises:
    ValueError: if the inputs are not 1-D, differ in length, or hold
      non-finite values.
  """
  pred, gt = _scores_pair(pred, gt)
  if pred.shape[0] < 2:
    return float("nan")
  rp = _average_ranks(pred)
  rg = _average_ranks(gt)
  dp = rp - rp.mean()
  dg = rg - rg.mean()
  ssp = float(np.dot(dp, dp))
  ssg = float(np.dot(dg, dg))
  if ssp == 0.0 or ssg == 0.0:
    return float("nan")
  rho = float(np.dot(dp, dg)) / np.sqrt(ssp * ssg)
  return float(np.clip(rho, -1.0, 1.0))


def relative_l2(pred, gt, s_min: float, s_max: float) -> float:
  """Relative L2 distance between predicted and true scores.

  ``RL2 = (1 / N) * sum_i (|s_i - s_hat_i| / (s_max - s_min)) ** 2``, eq. 16 of
  Li et al., "Hand Hygiene Assessment via Joint Step Segmentation and Key
  Action Scorer", as used across the AQA literature. `s_min` and `s_max` are
  the bounds of the score range of the data set (not of this batch), so the
  value does not depend on the score scale.

  Papers print this value multiplied by 100; this function returns the raw
  value (multiply by 100 yourself for a report).

  Args:
    pred: 1-D array of predicted scores.
    gt: 1-D array of true scores, same length.
    s_min: lowest possible score.
    s_max: highest possible score; must exceed `s_min`.

  Returns:
    The raw (not x100) relative L2 distance, >= 0.

  Raises:
    ValueError: if the inputs are not 1-D, differ in length, are empty, hold
      non-finite values, or ``s_max <= s_min``.
  """
  pred, gt = _scores_pair(pred, gt)
  if pred.shape[0] == 0:
    raise ValueError("relative_l2 needs at least one score, got none")
  if not s_max > s_min:
    raise ValueError(f"s_max must be greater than s_min, got s_min={s_min}, s_max={s_max}")
  rel = np.abs(pred - gt) / (float(s_max) - float(s_min))
  return float(np.mean(rel ** 2))


def missing_steps_exact(pred_done, gt_done) -> float:
  """Share of videos (percent) whose set of steps left out is named exactly.

  Args:
    pred_done: (N, S) bool, step s predicted as done in video n.
    gt_done: (N, S) bool, step s actually done.

  Returns:
    100 x the fraction of videos where the two rows agree on every step.

  Raises:
    ValueError: the shapes differ, are not 2-D, or there are no videos.
  """
  pred = np.asarray(pred_done, dtype=bool)
  gt = np.asarray(gt_done, dtype=bool)
  if pred.shape != gt.shape or pred.ndim != 2:
    raise ValueError(f"expected two (videos, steps) arrays of one shape, got {pred.shape} "
                     f"and {gt.shape}")
  if pred.shape[0] == 0:
    raise ValueError("missing_steps_exact needs at least one video")
  return float(100.0 * np.mean(np.all(pred == gt, axis=1)))
