"""Non-temporal baselines that show what the temporal model adds.

* **Per-frame linear classifier:** multinomial logistic regression on single frames'
  features (standardised; trained on every `frame_stride`-th training frame). It sees no
  context, so frames whose key action is shared by two steps stay ambiguous.
* **Whole-video score regressor:** an MLP on the mean of a video's features, regressing
  the video score. It never localises steps, so it cannot tell which step a key action
  belongs to, nor how long each step lasted.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from hhjax import metrics
from hhjax.data import pipeline


def _videos(data, streams):
  for i in range(len(data.lengths)):
    ex = data.source[i]
    yield (pipeline.select_streams(np.asarray(ex["features"], np.float32), streams),
           np.asarray(ex["labels"]), float(ex["score"]))


def fit_per_frame(train, streams: str = "rgb+flow", *, frame_stride: int = 8,
                  seed: int = 0):
  """Fits the per-frame logistic regression on every `frame_stride`-th training frame.

  Returns:
    `predict(data)`: one (T,) label array per video of a split.
  """
  xs, ys = [], []
  for feats, labels, _ in _videos(train, streams):
    xs.append(feats[::frame_stride])
    ys.append(labels[::frame_stride])
  scaler = StandardScaler().fit(np.concatenate(xs))
  clf = LogisticRegression(C=0.1, max_iter=1000, random_state=seed)
  clf.fit(scaler.transform(np.concatenate(xs)), np.concatenate(ys))

  def predict(data) -> list[np.ndarray]:
    return [clf.predict(scaler.transform(feats)) for feats, _, _ in _videos(data, streams)]

  return predict


def per_frame_classifier(train, test, streams: str = "rgb+flow", *, frame_stride: int = 8,
                         seed: int = 0) -> dict[str, float]:
  """Segmentation metrics of a per-frame logistic regression."""
  predict = fit_per_frame(train, streams, frame_stride=frame_stride, seed=seed)
  return metrics.segmentation_report(predict(test), test.labels)


def whole_video_regressor(train, test, streams: str = "rgb+flow", *, seed: int = 0,
                          score_range=(0.0, 6.0)) -> dict[str, float]:
  """Spearman, relative L2 (x100) and ranking accuracy (%) of an MLP on mean-pooled
  video features."""
  def pooled(data):
    x, y = zip(*[(f.mean(0), s) for f, _, s in _videos(data, streams)])
    return np.stack(x), np.asarray(y)
  x_train, y_train = pooled(train)
  x_test, y_test = pooled(test)
  scaler = StandardScaler().fit(x_train)
  reg = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=2000,
                     random_state=seed)
  reg.fit(scaler.transform(x_train), y_train)
  pred = reg.predict(scaler.transform(x_test))
  from hhjax import ranking  # noqa: PLC0415
  return dict(spearman=metrics.spearman(pred, y_test),
              rl2=metrics.relative_l2(pred, y_test, *score_range) * 100,
              rank_acc=ranking.ranking_accuracy(pred, y_test) * 100)


def run_all(train, test, streams: str = "rgb+flow", seed: int = 0,
            score_range=(0.0, 6.0)):
  """Rows for the results table: `[(name, metrics), ...]`."""
  return [("per-frame linear classifier", per_frame_classifier(train, test, streams,
                                                               seed=seed)),
          ("whole-video regressor (mean-pooled MLP)",
           whole_video_regressor(train, test, streams, seed=seed,
                                 score_range=score_range))]
