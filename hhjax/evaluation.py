"""Predicting a whole split and scoring the predictions (shared by training, `hhjax.evaluate`,
cross-validation and the experiment runner).

* `predict` runs a jitted eval step over a split and returns one dict per video: the
  predicted frame labels at the full frame rate (when the model segments), step scores
  and video score, beside the ground truth.
* `summarize` turns them into the Table VI metrics: frame accuracy, edit, F1@{10,25,50}
  (percent; only for models that segment) and Spearman's correlation and relative L2
  (x100, normalised by the data set's score range) for the scores.
"""

from __future__ import annotations

import jax
import numpy as np

from hhjax import metrics
from hhjax.data import augment, pipeline, splits
from hhjax.training import steps

DEFAULT_SCORE_RANGE = (0.0, 6.0)   # a video score is the sum of six step scores in [0, 1]


def score_range(config) -> tuple[float, float]:
  """The data set's video score range (config.dataset.score_range)."""
  lo, hi = config.dataset.get("score_range", DEFAULT_SCORE_RANGE)
  return float(lo), float(hi)


def predict(config, params, p_eval_step, data, mesh,
            stats: pipeline.FeatureStats | None = None) -> list[dict]:
  """Runs the model over a whole split (seen through `config.dataset.eval_view` if
  set, then standardised with `stats` if given); returns one prediction dict per video
  (`labels` is None for a model that does not segment)."""
  stride = config.dataset.frame_stride
  plan = pipeline.BatchPlan(
      tuple(pipeline.strided_length(data.lengths, stride).tolist()), config.batch_size,
      shuffle=False, drop_remainder=False, bucket_size=config.dataset.bucket_size,
      bucket_policy=config.dataset.get("bucket_policy", "multiple"))
  loader = pipeline.make_loader(data.source, plan, streams=config.dataset.streams,
                                frame_stride=stride, process_index=jax.process_index(),
                                process_count=jax.process_count(),
                                num_threads=config.dataset.num_threads, stats=stats,
                                transform=augment.evaluation_transform(
                                    config, splits.feature_dim(config, data)))
  results = []
  for batch in loader:
    out = steps.to_host(p_eval_step(params, steps.to_device(batch, mesh)))
    host = steps.to_host({k: batch[k] for k in ("index", "num_frames")}) \
        if jax.process_count() > 1 else batch
    for r, index in enumerate(np.asarray(host["index"])):
      if index < 0:
        continue
      t = int(host["num_frames"][r])
      labels = None
      if "labels" in out:
        labels = pipeline.upsample(np.asarray(out["labels"][r, :t]), stride,
                                   int(data.lengths[index]))
      results.append(dict(
          index=int(index), video=data.names[index], labels=labels,
          step_scores=np.asarray(out["step_scores"][r]),
          video_score=float(out["video_score"][r])))
  results.sort(key=lambda r: r["index"])
  for r in results:
    i = r["index"]
    r["gt_labels"] = data.labels[i]
    r["gt_score"] = float(data.scores[i])
    r["gt_step_scores"] = data.step_scores[i]
    r["gt_attributes"] = data.attributes[i]
  return results


def summarize(results: list[dict], score_range: tuple[float, float] = DEFAULT_SCORE_RANGE,
              *, bg_classes=(0,), has_scores: bool = True) -> dict[str, float]:
  """Segmentation (where predicted) and assessment metrics over per-video predictions.

  `bg_classes` are left out of edit and F1 (MS-TCN leaves out the class named
  "background"); without scores in the data (`has_scores` False) the assessment
  metrics are NaN, printed as '-'."""
  out: dict[str, float] = {}
  if results and results[0]["labels"] is not None:
    out.update(metrics.segmentation_report([r["labels"] for r in results],
                                           [r["gt_labels"] for r in results],
                                           bg_classes=tuple(bg_classes)))
  pred = np.array([r["video_score"] for r in results])
  gt = np.array([r["gt_score"] for r in results])
  if has_scores:
    from hhjax import ranking  # noqa: PLC0415
    out["spearman"] = metrics.spearman(pred, gt)
    out["rl2"] = metrics.relative_l2(pred, gt, *score_range) * 100
    out["rank_acc"] = ranking.ranking_accuracy(pred, gt) * 100
  else:
    out["spearman"] = out["rl2"] = out["rank_acc"] = float("nan")
  return out


def summarize_split(results: list[dict], config, data) -> dict[str, float]:
  """`summarize` with the split's background classes and score availability."""
  return summarize(results, score_range(config),
                   bg_classes=getattr(data, "background_classes", (0,)),
                   has_scores=getattr(data, "has_scores", True))
