"""The joint model: a segmentation network + an assessment head, and its loss.

    features (B, T, D) -> segmenter (config.model.segmenter) -> per-stage logits (S, B, T, C)
      -> frame labels (the network's rule, argmax of the last stage by default, with
         runs shorter than `min_segment_frames` merged into a neighbour; or the
         ground-truth labels, when training asks for them)
      -> longest run per step -> average-pooled features -> scorer -> step scores (B, 6)
      -> video score = sum of the step scores (B,)

Step scores are in the data set's units (`score_range`, a sixth of the video range each,
`hhjax.models.heads.scorers.to_score_range`); a step with no run scores the bottom of
its range (0 for the default range 0-6).

Options for the paper's ablations and baselines: which features are pooled
(`pool_features`: the input features, or the segmenter's last-stage features, which
sends the score loss's gradient into the segmentation network), the scorer (`kas` with
learnable or fixed sigmoid, or a per-step `mlp`), and `scoring='video'`, which drops
segment selection and regresses the video score from the whole video (`video_pool`: mean
or max pooling + MLP, or an LSTM; see `hhjax.models.heads.video`). With
`segmenter="none"` (only with `scoring='video'`) the model is a pure video-level
regressor and has no segmentation outputs.

`create_model(config)` builds it from `config.model`; every segmentation network of
`hhjax.models.segmenters` plugs in by name, and `JointModel.loss` adds the network's own
loss terms, so the train step never needs to know which network it trains.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax import losses
from hhjax.models import layers, segmenters
from hhjax.models.heads.scorers import (KeyActionScorer, MLPScorer, SCORER_KINDS,
                                        longest_runs, pool_segments, to_score_range)
from hhjax.models.heads.video import BOUNDED_HEADS, build_video_head

POOL_FEATURES = ("input", "stage")
SCORING = ("steps", "video")
NO_SEGMENTER = "none"


class JointModel(nn.Module):
  """Segmentation network + scorer; see the module docstring.

  `__call__(x, mask, gt_labels=None, train=False)` returns a dict with `video_score`
  (B,), `step_scores` (B, 6), `seg_start`/`seg_length` (B, 6) and, with a segmenter,
  `logits` (S, B, T, C), `labels` (B, T) (padding 0) and the segmenter's other
  outputs. If `gt_labels` is given the segments come from it (the "ground-truth
  segments" training option); evaluation passes none and uses the predicted segments.
  """

  segmenter: nn.Module | None = None
  num_classes: int = 7
  scorer: str = "kas"
  learnable_sigmoid: bool = True
  num_branches: int = 2
  pool_features: str = "input"
  scoring: str = "steps"
  video_pool: str = "mean"
  # The video-level head's own fields (config.model.action_net / .sa_rnn), as items.
  video_head_fields: tuple[tuple[str, Any], ...] = ()
  score_dropout_rate: float = 0.0
  # The video score's (lo, hi): step scores are mapped into (lo/S, hi/S) each
  # (`to_score_range`). The video-level regressors are not bounded and not rescaled.
  score_range: tuple[float, float] = (0.0, 6.0)
  # Predicted runs shorter than this are merged into a neighbour before the scorer
  # picks each step's run (`segmenters.postprocess`); 0: off.
  min_segment_frames: int = 0

  @nn.compact
  def __call__(self, x, mask, gt_labels=None, *, train: bool = False):
    if self.scorer not in SCORER_KINDS:
      raise ValueError(f"config.model.scorer={self.scorer!r}; expected one of "
                       f"{SCORER_KINDS}")
    if self.pool_features not in POOL_FEATURES:
      raise ValueError(f"config.model.pool_features={self.pool_features!r}; expected "
                       f"one of {POOL_FEATURES}")
    if self.scoring not in SCORING:
      raise ValueError(f"config.model.scoring={self.scoring!r}; expected one of "
                       f"{SCORING}")
    num_steps = self.num_classes - 1
    batch = x.shape[0]
    out: dict[str, Any] = {}
    if self.segmenter is not None:
      out.update(self.segmenter(x, mask, train=train))
      out["labels"] = segmenters.predict_labels(self.segmenter, out, mask,
                                                self.min_segment_frames)
    elif self.scoring != "video" or self.pool_features != "input":
      raise ValueError("config.model.segmenter='none' needs scoring='video' and "
                       "pool_features='input' (there are no segments or stage features)")
    pooled_src = x if self.pool_features == "input" else out["features"]
    pooled_src = layers.Dropout(self.score_dropout_rate,
                                deterministic=not train)(pooled_src)
    zeros = jnp.zeros((batch, num_steps), jnp.int32)
    if self.scoring == "video":
      head = build_video_head(self.video_pool, dict(self.video_head_fields),
                              name="video_regressor")
      video = head(pooled_src, mask, train=train)
      if self.video_pool in BOUNDED_HEADS:          # (0, 1) -> the data set's range
        lo, hi = self.score_range
        video = lo + (hi - lo) * video
      return dict(out, video_score=video, step_scores=jnp.zeros((batch, num_steps),
                                                                x.dtype),
                  seg_start=zeros, seg_length=zeros)
    mask_i = mask.astype(jnp.int32)
    seg_labels = out["labels"] if gt_labels is None else gt_labels * mask_i
    start, length = longest_runs(jax.lax.stop_gradient(seg_labels), mask, num_steps)
    pooled = pool_segments(pooled_src, start, length)                      # (B, 6, F)
    if self.scorer == "kas":
      scores = KeyActionScorer(num_steps, self.num_branches, self.learnable_sigmoid,
                               name="scorer")(pooled)
    else:
      scores = MLPScorer(num_steps, name="scorer")(pooled)
    scores = to_score_range(scores, length, self.score_range, num_steps)
    return dict(out, step_scores=scores, video_score=scores.sum(-1), seg_start=start,
                seg_length=length)

  @nn.nowrap
  def loss(self, outputs: dict, batch: dict, loss_cfg) -> tuple[jnp.ndarray, dict]:
    """The training loss and its logged parts: `hhjax.losses.joint_loss` plus the
    segmenter's own terms (e.g. ASRF's boundary loss)."""
    loss, parts = losses.joint_loss(
        outputs, batch, smooth_weight=loss_cfg.smooth_weight, tau=loss_cfg.tau,
        score_weight=loss_cfg.score_weight,
        step_score_weight=loss_cfg.get("step_score_weight", 0.0),
        ranking_weight=loss_cfg.get("ranking_weight", 0.0),
        ranking_margin=loss_cfg.get("ranking_margin", 1.0),
        ranking_tie_tolerance=loss_cfg.get("ranking_tie_tolerance", 0.0),
        ranking_tie_weight=loss_cfg.get("ranking_tie_weight", 0.0))
    if self.segmenter is not None:
      mask = losses.example_mask(batch)
      extra = segmenters.loss_terms(self.segmenter, outputs, batch["labels"], mask,
                                    loss_cfg)
      for name, value in extra.items():
        loss = loss + value
        parts[name] = value
    return loss, parts


def _head_fields(model_cfg) -> tuple[tuple[str, Any], ...]:
  """The chosen video-level head's own fields (`config.model.<video_pool>`), as items;
  unset placeholders (None) are left to the module's defaults."""
  name = model_cfg.get("video_pool", "mean")
  section = model_cfg.get(name) if model_cfg.get("scoring") == "video" else None
  if section is None or not hasattr(section, "items"):
    return ()
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                      for k, v in section.items() if v is not None))


def create_model(config) -> JointModel:
  """The model `config.model` describes (segmenter by name, then the head)."""
  m = config.model
  name = m.get("segmenter", "conv_transformer")
  segmenter = None if name == NO_SEGMENTER else segmenters.build(name, m)
  return JointModel(segmenter=segmenter, num_classes=m.num_classes, scorer=m.scorer,
                    learnable_sigmoid=m.learnable_sigmoid, num_branches=m.num_branches,
                    pool_features=m.pool_features, scoring=m.scoring,
                    video_pool=m.get("video_pool", "mean"),
                    video_head_fields=_head_fields(m),
                    score_dropout_rate=m.score_dropout_rate,
                    score_range=tuple(float(v) for v in config.dataset.get(
                        "score_range", (0.0, 6.0))),
                    min_segment_frames=int(m.get("min_segment_frames", 0)))
