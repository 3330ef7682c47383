"""The joint model: step segmentation + Key Action Scorer.

    features (B, T, D) -> MultiStageModel -> per-stage logits (S, B, T, C)
      -> argmax of the last stage (or ground-truth labels, when training asks for them)
      -> longest run per step -> average-pooled features -> scorer -> step scores (B, 6)
      -> video score = sum of the step scores (B,)

A step with no run scores 0. Options for the paper's ablations: which features are
pooled (`pool_features`: the input features or the last stage's), the scorer (`kas`
with learnable or fixed sigmoid, or a plain `mlp`), and `scoring='video'`, which drops
segment selection and regresses the video score from the whole video's mean feature.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.scorer import (KeyActionScorer, MLPScorer, SCORER_KINDS,
                                 longest_runs, pool_segments)
from hhjax.models.segmentation import MultiStageModel

POOL_FEATURES = ("input", "stage")
SCORING = ("steps", "video")


class JointModel(nn.Module):
  """Segmentation network + scorer; see the module docstring.

  `__call__(x, mask, gt_labels=None, train=False)` returns a dict with `logits`
  (S, B, T, C), `labels` (B, T) (the last stage's argmax, padding 0), `step_scores`
  (B, 6), `video_score` (B,), `seg_start`/`seg_length` (B, 6). If `gt_labels` is given
  the segments come from it (the "ground-truth segments" training option); evaluation
  passes none and uses the predicted segments.
  """

  num_classes: int = 7
  num_stages: int = 4
  num_layers: int = 10
  channels: int = 64
  attention: str = "linear"
  num_heads: int = 4
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.1
  scorer: str = "kas"
  learnable_sigmoid: bool = True
  num_branches: int = 2
  pool_features: str = "input"
  scoring: str = "steps"
  score_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, mask, gt_labels=None, *, train: bool = False):
    if self.scorer not in SCORER_KINDS:
      raise ValueError(f"scorer must be one of {SCORER_KINDS}, got {self.scorer!r}")
    if self.pool_features not in POOL_FEATURES:
      raise ValueError(f"pool_features must be one of {POOL_FEATURES}, got {self.pool_features!r}")
    if self.scoring not in SCORING:
      raise ValueError(f"scoring must be one of {SCORING}, got {self.scoring!r}")
    num_steps = self.num_classes - 1
    logits, stage_feats = MultiStageModel(
        self.num_classes, self.num_stages, self.num_layers, self.channels,
        self.attention, self.num_heads, self.dropout_rate, self.input_dropout_rate,
        self.attention_dropout_rate, name="segmentation")(x, mask, train=train)
    mask_i = mask.astype(jnp.int32)
    labels = jnp.argmax(logits[-1], axis=-1).astype(jnp.int32) * mask_i
    pooled_src = x if self.pool_features == "input" else stage_feats
    pooled_src = nn.Dropout(self.score_dropout_rate, deterministic=not train)(pooled_src)
    if self.scoring == "video":
      m = mask.astype(x.dtype)[..., None]
      mean = (pooled_src * m).sum(1) / jnp.maximum(m.sum(1), 1.0)          # (B, F)
      h = nn.relu(nn.Dense(64, name="video_hidden")(mean))
      video = nn.Dense(1, name="video_out")(h)[:, 0]
      zeros = jnp.zeros((x.shape[0], num_steps), jnp.int32)
      return dict(logits=logits, labels=labels, video_score=video,
                  step_scores=jnp.zeros((x.shape[0], num_steps), x.dtype),
                  seg_start=zeros, seg_length=zeros)
    seg_labels = labels if gt_labels is None else gt_labels * mask_i
    start, length = longest_runs(jax.lax.stop_gradient(seg_labels), mask, num_steps)
    pooled = pool_segments(pooled_src, start, length)                      # (B, 6, F)
    if self.scorer == "kas":
      scores = KeyActionScorer(num_steps, self.num_branches, self.learnable_sigmoid,
                               name="scorer")(pooled)
    else:
      scores = MLPScorer(num_steps, name="scorer")(pooled)
    scores = jnp.where(length > 0, scores, 0.0)                            # no run -> 0
    return dict(logits=logits, labels=labels, step_scores=scores,
                video_score=scores.sum(-1), seg_start=start, seg_length=length)
