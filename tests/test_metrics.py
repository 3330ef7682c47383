"""Tests for hhjax.metrics against hand-worked examples.

Expected values are worked out by hand in the comments, never by calling the
code under test.
"""

import math

import numpy as np
import pytest

from hhjax import metrics

# A 10-frame video.
#   frame: 0 1 2 3 4 5 6 7 8 9
#   gt   : 0 0 1 1 1 2 2 2 0 0   segments (0,0,2) (1,2,5) (2,5,8) (0,8,10)
#   pred : 0 1 1 1 1 2 2 0 0 0   segments (0,0,1) (1,1,5) (2,5,7) (0,7,10)
GT10 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0, 0])
PRED10 = np.array([0, 1, 1, 1, 1, 2, 2, 0, 0, 0])


class TestFrameAccuracy:

  def test_ten_frames(self):
    # Wrong frames: 1 (pred 1, gt 0) and 7 (pred 0, gt 2). 8 / 10 right -> 80 %.
    assert metrics.frame_accuracy(PRED10, GT10) == pytest.approx(80.0)

  def test_perfect_and_all_wrong(self):
    assert metrics.frame_accuracy(GT10, GT10) == pytest.approx(100.0)
    assert metrics.frame_accuracy(np.full(10, 5), GT10) == pytest.approx(0.0)

  def test_returns_python_float(self):
    assert type(metrics.frame_accuracy(PRED10, GT10)) is float

  def test_length_mismatch_names_both_lengths(self):
    with pytest.raises(ValueError, match=r"pred has 3.*gt has 4"):
      metrics.frame_accuracy([1, 2, 3], [1, 2, 3, 4])

  def test_rejects_2d_and_float_labels(self):
    with pytest.raises(ValueError, match="1-D"):
      metrics.frame_accuracy(np.zeros((2, 5), int), np.zeros((2, 5), int))
    with pytest.raises(ValueError, match="integer"):
      metrics.frame_accuracy(np.zeros(4), np.zeros(4, int))

  def test_empty_video_raises(self):
    with pytest.raises(ValueError, match="no frames"):
      metrics.frame_accuracy(np.zeros(0, int), np.zeros(0, int))


class TestSegments:

  def test_ten_frames(self):
    assert metrics.segments(GT10) == [(0, 0, 2), (1, 2, 5), (2, 5, 8), (0, 8, 10)]
    assert metrics.segments(PRED10) == [(0, 0, 1), (1, 1, 5), (2, 5, 7), (0, 7, 10)]

  def test_single_run_single_frame_and_empty(self):
    assert metrics.segments([3, 3, 3]) == [(3, 0, 3)]
    assert metrics.segments([4]) == [(4, 0, 1)]
    assert metrics.segments([]) == []

  def test_ends_exclusive_and_cover_everything(self):
    labels = np.array([2, 2, 0, 5, 5, 5, 2])
    segs = metrics.segments(labels)
    # (2,0,2) (0,2,3) (5,3,6) (2,6,7): consecutive, start of one = end of previous.
    assert segs == [(2, 0, 2), (0, 2, 3), (5, 3, 6), (2, 6, 7)]
    for label, start, end in segs:
      assert np.all(labels[start:end] == label)

  def test_plain_ints(self):
    for seg in metrics.segments(np.array([1, 1, 2], dtype=np.int32)):
      assert all(type(v) is int for v in seg)


class TestEditScore:

  def test_same_order_is_100_despite_timing(self):
    # Non-bg labels: pred [1, 2], gt [1, 2] -> distance 0 -> 100.
    assert metrics.edit_score(PRED10, GT10) == pytest.approx(100.0)

  def test_one_substitution(self):
    # gt [1, 2, 3], pred [1, 4, 3]: one substitution, max len 3 -> (1 - 1/3) * 100.
    gt = np.array([1, 1, 2, 2, 3, 3])
    pred = np.array([1, 1, 4, 4, 3, 3])
    assert metrics.edit_score(pred, gt) == pytest.approx(200.0 / 3.0)

  def test_one_insertion(self):
    # gt [1, 2, 3], pred [1, 2, 5, 3]: one insertion, max len 4 -> (1 - 1/4) * 100 = 75.
    gt = np.array([1, 1, 2, 2, 2, 3, 3, 3])
    pred = np.array([1, 1, 2, 2, 5, 3, 3, 3])
    assert metrics.edit_score(pred, gt) == pytest.approx(75.0)

  def test_background_split_keeps_two_segments(self):
    # pred 1 1 0 1 -> non-bg segments [1, 1]; gt 1 1 1 1 -> [1].
    # One deletion, max len 2 -> 50.
    assert metrics.edit_score([1, 1, 0, 1], [1, 1, 1, 1]) == pytest.approx(50.0)

  def test_needs_full_dynamic_programme(self):
    # gt [1, 2, 3, 4], pred [2, 3, 4, 1]: delete the leading 1 and append a 1 -> 2
    # (a position-wise comparison would give 4). (1 - 2/4) * 100 = 50.
    assert metrics.edit_score([2, 3, 4, 1], [1, 2, 3, 4]) == pytest.approx(50.0)

  def test_all_background_prediction(self):
    # pred has no segments, gt has [1, 2]: distance 2, max len 2 -> 0.
    assert metrics.edit_score(np.zeros(10, int), GT10) == pytest.approx(0.0)

  def test_all_background_both(self):
    assert metrics.edit_score(np.zeros(7, int), np.zeros(7, int)) == pytest.approx(100.0)

  def test_bg_classes_honoured(self):
    gt = np.array([0, 7, 1, 1, 7, 0])
    pred = np.array([7, 7, 1, 1, 0, 0])
    # bg {0}: gt [7, 1, 7], pred [7, 1] -> one deletion, max 3 -> 66.67.
    assert metrics.edit_score(pred, gt) == pytest.approx(200.0 / 3.0)
    # bg {0, 7}: gt [1], pred [1] -> 100.
    assert metrics.edit_score(pred, gt, bg_classes=(0, 7)) == pytest.approx(100.0)
    # no bg: gt [0, 7, 1, 7, 0], pred [7, 1, 0]: delete gt's first 0 and its
    # second 7 -> 2 (length gap is 2, so no fewer) -> (1 - 2/5) * 100 = 60.
    assert metrics.edit_score(pred, gt, bg_classes=()) == pytest.approx(60.0)
    assert metrics.edit_score(pred, gt, bg_classes=None) == pytest.approx(60.0)

  def test_length_mismatch(self):
    with pytest.raises(ValueError, match=r"5.*4"):
      metrics.edit_score([1] * 5, [1] * 4)


# 34 frames with three gt steps separated by background, and predictions that
# cover 2, 4 and 6 of each step's 10 frames (and nothing outside them).
#   gt  : 1 x10 [0,10)  0 x2  2 x10 [12,22)  0 x2  3 x10 [24,34)
#   pred: 1 x2  [0,2)   0 x10 2 x4  [12,16)  0 x8  3 x6  [24,30)  0 x4
# IoUs: 2/10 = 0.2, 4/10 = 0.4, 6/10 = 0.6.
GT34 = np.array([1] * 10 + [0] * 2 + [2] * 10 + [0] * 2 + [3] * 10)
PRED34 = np.array([1] * 2 + [0] * 10 + [2] * 4 + [0] * 8 + [3] * 6 + [0] * 4)


class TestF1:

  @pytest.mark.parametrize("overlap, expected", [
      # All three IoUs >= 0.1.
      (0.10, (3, 0, 0)),
      # 0.2 < 0.25 -> fp, and its gt step is never matched -> fn.
      (0.25, (2, 1, 1)),
      # Only 0.6 >= 0.5.
      (0.50, (1, 2, 2)),
  ])
  def test_counts_differ_by_overlap(self, overlap, expected):
    assert metrics.f1_counts(PRED34, GT34, overlap) == expected

  def test_scores_for_those_counts(self):
    # (3,0,0): P = R = 1 -> 100.
    assert metrics.f1_score(3, 0, 0) == pytest.approx(100.0)
    # (2,1,1): P = R = 2/3 -> F1 = 2/3 -> 66.67.
    assert metrics.f1_score(2, 1, 1) == pytest.approx(200.0 / 3.0)
    # (1,2,2): P = R = 1/3 -> 33.33.
    assert metrics.f1_score(1, 2, 2) == pytest.approx(100.0 / 3.0)
    # (2,0,1): P = 1, R = 2/3 -> 2 * (2/3) / (5/3) = 0.8 -> 80.
    assert metrics.f1_score(2, 0, 1) == pytest.approx(80.0)

  def test_f1_undefined_is_zero(self):
    assert metrics.f1_score(0, 0, 0) == 0.0
    assert metrics.f1_score(0, 0, 4) == 0.0
    assert metrics.f1_score(0, 3, 0) == 0.0

  def test_ten_frames(self):
    # pred (1,1,5) vs gt (1,2,5): inter 3, union 4 -> 0.75.
    # pred (2,5,7) vs gt (2,5,8): inter 2, union 3 -> 0.667. Both pass 0.5.
    assert metrics.f1_counts(PRED10, GT10, 0.5) == (2, 0, 0)

  def test_iou_equal_to_threshold_counts(self):
    # gt 1 x10; pred 1 x5 then 0 x5: IoU 5/10 = 0.5 exactly -> tp at 0.5 (>=).
    gt = np.ones(10, int)
    pred = np.array([1] * 5 + [0] * 5)
    assert metrics.f1_counts(pred, gt, 0.5) == (1, 0, 0)
    assert metrics.f1_counts(pred, gt, 0.51) == (0, 1, 1)

  def test_gt_segment_matched_only_once(self):
    # gt 1 x10 = (1,0,10); pred 1 1 1 1 1 0 1 1 1 1 = (1,0,5), (1,6,10).
    # First: IoU 5/10 -> tp. Second: IoU 4/10, best gt already matched -> fp.
    gt = np.ones(10, int)
    pred = np.array([1] * 5 + [0] + [1] * 4)
    assert metrics.f1_counts(pred, gt, 0.25) == (1, 1, 0)

  def test_only_best_gt_is_tried(self):
    # gt  : 1 x8 (1,0,8), 0, 1 x3 (1,9,12)
    # pred: 1 x3 (1,0,3), 0, 1 x7 (1,4,11), 0
    # pred A (0,3) vs gt (0,8): inter 3, union 8 -> 0.375 -> tp, gt (0,8) taken.
    # pred B (4,11) vs gt (0,8): inter 4, union 8 + 7 - 4 = 11 -> 0.364 (best)
    #               vs gt (9,12): inter 2, union 7 + 3 - 2 = 8 -> 0.25
    # The best gt is taken -> fp, although (9,12) would pass 0.25 -> it is a fn.
    gt = np.array([1] * 8 + [0] + [1] * 3)
    pred = np.array([1, 1, 1, 0] + [1] * 7 + [0])
    assert metrics.f1_counts(pred, gt, 0.25) == (1, 1, 1)

  def test_tie_goes_to_earliest_gt(self):
    # gt  : 1 1 1 1 0 0 1 1 1 1  -> (1,0,4), (1,6,10)
    # pred: 1 1 0 1 1 1 1 0 0 0  -> A (1,0,2), B (1,3,7)
    # A vs (0,4): inter 2, union 4 -> 0.5 -> tp, (0,4) taken.
    # B vs (0,4): inter 1, union 4 + 4 - 1 = 7 -> 1/7; vs (6,10): also 1/7.
    # Tie -> the earlier gt (0,4), already taken -> fp; (6,10) stays a fn.
    gt = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1])
    pred = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 0])
    assert metrics.f1_counts(pred, gt, 0.1) == (1, 1, 1)

  def test_label_must_match(self):
    # pred 2 over gt 1's frames exactly: no gt segment labelled 2 -> fp; gt -> fn.
    assert metrics.f1_counts([0, 2, 2, 0], [0, 1, 1, 0], 0.1) == (0, 1, 1)

  def test_all_background_prediction(self):
    # No predicted segments: tp = fp = 0, fn = the 2 gt steps of GT10.
    for overlap in (0.1, 0.25, 0.5):
      assert metrics.f1_counts(np.zeros(10, int), GT10, overlap) == (0, 0, 2)

  def test_all_background_both(self):
    assert metrics.f1_counts(np.zeros(6, int), np.zeros(6, int), 0.1) == (0, 0, 0)

  def test_bg_classes_honoured(self):
    gt = np.array([0, 7, 1, 1, 7, 0])
    pred = np.array([7, 7, 1, 1, 0, 0])
    # bg {0}: pred (7,0,2) vs gt (7,1,2): IoU 1/2 -> tp; vs gt (7,4,5): 0.
    # pred (1,2,4) = gt (1,2,4) -> tp. gt (7,4,5) unmatched -> fn.
    assert metrics.f1_counts(pred, gt, 0.5) == (2, 0, 1)
    # bg {0, 7}: only the 1-segments, identical -> (1, 0, 0).
    assert metrics.f1_counts(pred, gt, 0.5, bg_classes=(0, 7)) == (1, 0, 0)
    # no bg: pred (0,4,6) vs gt (0,0,1): IoU 0; vs gt (0,5,6): inter 1, union 2
    # -> 0.5 -> tp at 0.5. So pred: 7 tp, 1 tp, 0 tp; gt (0,0,1) and (7,4,5) fn.
    assert metrics.f1_counts(pred, gt, 0.5, bg_classes=()) == (3, 0, 2)

  def test_bad_overlap_and_lengths(self):
    with pytest.raises(ValueError, match="overlap"):
      metrics.f1_counts(GT10, GT10, 1.5)
    with pytest.raises(ValueError, match=r"10.*9"):
      metrics.f1_counts(GT10, GT10[:9], 0.5)


class TestSegmentationReport:
  # Video 0: 2 frames, gt 1 1, pred 1 1 -> 2/2 right, edit 100, tp 1 at every overlap.
  # Video 1: 8 frames, gt 2 2 2 2 3 3 3 3, pred 2 0 0 0 0 0 0 0.
  #   1/8 right (12.5 %). Edit: [2] vs [2, 3] -> 1 - 1/2 -> 50.
  #   pred (2,0,1) vs gt (2,0,4): IoU 1/4 = 0.25 -> tp at 0.10 and 0.25, fp at 0.50.
  #   gt (3,4,8) never matched -> fn.
  PREDS = [np.array([1, 1]), np.array([2, 0, 0, 0, 0, 0, 0, 0])]
  GTS = [np.array([1, 1]), np.array([2, 2, 2, 2, 3, 3, 3, 3])]

  def test_aggregation(self):
    report = metrics.segmentation_report(self.PREDS, self.GTS)
    assert set(report) == {"acc", "edit", "f1@10", "f1@25", "f1@50", "segs"}
    # Pooled: (2 + 1) / 10 = 30 %, not the mean of per-video (100 + 12.5) / 2 = 56.25.
    assert report["acc"] == pytest.approx(30.0)
    # Mean of per-video edit: (100 + 50) / 2 = 75.
    assert report["edit"] == pytest.approx(75.0)
    # At 0.10 / 0.25, summed tp=2, fp=0, fn=1 -> 80 (the mean of per-video F1s,
    # (100 + 66.67) / 2 = 83.33, would differ).
    assert report["f1@10"] == pytest.approx(80.0)
    assert report["f1@25"] == pytest.approx(80.0)
    # At 0.50, summed tp=1, fp=1, fn=2 -> P 1/2, R 1/3 -> 2 * (1/6) / (5/6) = 40.
    assert report["f1@50"] == pytest.approx(40.0)
    # Segments, background left out: predicted [1] + [2] = 2, true [1] + [2, 3] = 3.
    assert report["segs"] == pytest.approx(2 / 3)

  def test_segment_ratio_counts_over_segmentation(self):
    # One true step cut in three by two one-frame flickers of another step: five
    # predicted segments (1, 2, 1, 2, 1) against one true.
    gt = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 2, 1, 1, 2, 1, 0])
    assert metrics.segmentation_report([pred], [gt])["segs"] == pytest.approx(5.0)
    # Background splits a step without adding a counted segment of its own.
    pred_bg = np.array([0, 1, 1, 0, 1, 1, 1, 1, 0])
    assert metrics.segmentation_report([pred_bg], [gt])["segs"] == pytest.approx(2.0)
    # With no background class, every run counts: 0 1 0 1 0 against 0 1 0.
    assert metrics.segmentation_report([pred_bg], [gt], bg_classes=())["segs"] == \
        pytest.approx(5 / 3)
    # No true step at all: undefined, not 0 or infinite.
    assert np.isnan(metrics.segmentation_report([pred], [np.zeros(9, int)])["segs"])

  def test_values_are_python_floats(self):
    report = metrics.segmentation_report(self.PREDS, self.GTS)
    assert all(type(v) is float for v in report.values())

  def test_bg_classes_passed_through(self):
    # With no background, video 1's pred has (2,0,1) and (0,1,8): the 0 segment
    # has no gt counterpart. Edit: [2, 0] vs [2, 3] -> 1 substitution -> 50 (same),
    # but frame accuracy is unaffected (still 30 %).
    report = metrics.segmentation_report(self.PREDS, self.GTS, bg_classes=())
    assert report["acc"] == pytest.approx(30.0)
    # At 0.10: v0 tp 1; v1 tp 1, fp 1 (the 0 segment), fn 1 -> tp 2, fp 1, fn 1
    # -> P = R = 2/3 -> 66.67.
    assert report["f1@10"] == pytest.approx(200.0 / 3.0)

  def test_single_video_equals_per_video_metrics(self):
    report = metrics.segmentation_report([PRED34], [GT34])
    # Hand counts from TestF1: 100, 66.67, 33.33. Edit: [1, 2, 3] both -> 100.
    assert report["f1@10"] == pytest.approx(100.0)
    assert report["f1@25"] == pytest.approx(200.0 / 3.0)
    assert report["f1@50"] == pytest.approx(100.0 / 3.0)
    assert report["edit"] == pytest.approx(100.0)

  def test_list_length_mismatch(self):
    with pytest.raises(ValueError, match=r"2 predictions and 1 ground truths"):
      metrics.segmentation_report(self.PREDS, self.GTS[:1])

  def test_empty_lists(self):
    with pytest.raises(ValueError, match="at least one video"):
      metrics.segmentation_report([], [])

  def test_video_length_mismatch_names_video(self):
    preds = [self.PREDS[0], self.PREDS[1][:7]]
    with pytest.raises(ValueError, match=r"video 1: .*pred has 7, gt has 8"):
      metrics.segmentation_report(preds, self.GTS)


class TestSpearman:

  def test_hand_example_with_tie(self):
    # x = 1 2 3 4 5 -> ranks 1 2 3 4 5, mean 3, deviations -2 -1 0 1 2.
    # y = 5 6 7 8 7 -> the two 7s share ranks 3 and 4 -> 3.5; ranks 1 2 3.5 5 3.5,
    #   mean 3, deviations -2 -1 0.5 2 0.5.
    # sum(dx*dy) = 4 + 1 + 0 + 2 + 1 = 8; sum dx^2 = 10; sum dy^2 = 9.5.
    # rho = 8 / sqrt(95) = 0.820782...
    rho = metrics.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert rho == pytest.approx(8.0 / math.sqrt(95.0))

  def test_monotone_transform_and_reversal(self):
    x = np.array([0.3, 1.7, -2.0, 5.5, 4.0])
    assert metrics.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert metrics.spearman(x, -x ** 3) == pytest.approx(-1.0)

  def test_symmetric(self):
    a, b = [1, 3, 2, 2, 5], [2, 2, 1, 4, 3]
    assert metrics.spearman(a, b) == pytest.approx(metrics.spearman(b, a))

  def test_matches_scipy_with_ties(self):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
      # Few distinct values -> many ties on both sides.
      a = rng.integers(0, 5, size=30).astype(float)
      b = rng.integers(0, 4, size=30) + 0.5 * a
      expected = stats.spearmanr(a, b).statistic
      assert metrics.spearman(a, b) == pytest.approx(expected, abs=1e-12)

  def test_constant_input_is_nan(self):
    assert math.isnan(metrics.spearman([3, 3, 3], [1, 2, 3]))
    assert math.isnan(metrics.spearman([1, 2, 3], [0.5, 0.5, 0.5]))
    assert math.isnan(metrics.spearman([1.0], [2.0]))

  def test_length_mismatch(self):
    with pytest.raises(ValueError, match=r"pred has 3, gt has 2"):
      metrics.spearman([1, 2, 3], [1, 2])


class TestRelativeL2:

  def test_hand_example(self):
    # Errors 10, 0, 10 over a range of 100 -> 0.1, 0, 0.1 -> squares 0.01, 0, 0.01.
    # Mean = 0.02 / 3 = 0.006667 (a report prints 0.667).
    value = metrics.relative_l2([80, 60, 90], [70, 60, 100], s_min=0, s_max=100)
    assert value == pytest.approx(0.02 / 3.0)

  def test_range_not_zero_based(self):
    # Range 20 - 10 = 10; errors 5 and 0 -> 0.5, 0 -> squares 0.25, 0 -> mean 0.125.
    assert metrics.relative_l2([15, 12], [20, 12], 10, 20) == pytest.approx(0.125)

  def test_sign_of_error_does_not_matter(self):
    # Errors +2 and -2 over range 4 -> 0.5^2 each -> 0.25 (not cancelling to 0).
    assert metrics.relative_l2([3, 1], [1, 3], 0, 4) == pytest.approx(0.25)

  def test_perfect_is_zero(self):
    assert metrics.relative_l2([1.5, 2.5], [1.5, 2.5], 0, 10) == 0.0

  def test_errors(self):
    with pytest.raises(ValueError, match="s_max"):
      metrics.relative_l2([1], [1], 5, 5)
    with pytest.raises(ValueError, match=r"pred has 2, gt has 1"):
      metrics.relative_l2([1, 2], [1], 0, 10)
    with pytest.raises(ValueError, match="at least one"):
      metrics.relative_l2([], [], 0, 10)
