"""ASRF: the Action Segment Refinement Framework (registered as `asrf`).

Ishikawa, Kasai, Aoki and Kataoka, "Alleviating Over-segmentation Errors by Detecting
Action Boundaries", WACV 2021. An MS-TCN whose first stage is shared by two branches:

    x (B, T, D) -> conv_in 1x1 -> L dilated residual layers       (shared backbone)
       |-> 1x1 classifier -> logits_1 -> (S_a - 1) x [softmax -> single stage -> 1x1]
       |                                                    action segmentation branch
       '-> 1x1 boundary   -> bound_1  -> (S_b - 1) x [sigmoid -> single stage -> 1x1]
                                                            boundary regression branch

Every single stage is `hhjax.models.tcn.SingleStage` (1x1 in, L dilated residual
layers of `channels`) followed by its 1x1 output conv, as in MS-TCN. Outputs:

* `logits` (S_a, B, T, C): the action segmentation branch's stages (last = prediction);
* `features` (B, T, channels): the last ASB stage's features (the shared backbone's
  when S_a = 1);
* `boundary_logits` (S_b, B, T): a boundary logit per frame for each BRB stage;
* `frame_similarity` (B, T): exp(-||x_t - x_{t-1}|| / (2 sigma^2)) on the raw input
  features, 0 at t = 0 and where either frame is padding (the GS-TMSE weights).

**Training** (`loss_terms`). Frame t is a boundary target when its label differs from
frame t-1's, and frame 0 always is (the start of the first action); the targets are not
smoothed (the authors' generate_boundary_array.py; their BoundarySmoothing transform is
unused in train.py). Every BRB stage gets a binary cross-entropy with logits whose
positive (boundary) frames are weighted by `boundary_pos_weight`; the authors set it to
1 / (share of boundary frames) counted over the training set. The default 0 estimates
that share from the batch (real frames / boundary frames), which needs no dataset pass;
set a positive value to fix it. The term is `boundary_weight` (the paper's lambda_b,
0.1 in the authors' config) x the sum over BRB stages of the mean BCE over the batch's
real frames. The authors average both the class loss and the boundary loss over stages;
`hhjax.losses` *sums* the cross-entropy over stages, so summing the BCE as well keeps
their ratio lambda_b between the two.

ASRF replaces MS-TCN's truncated-MSE smoothing by GS-TMSE: the per-frame-pair TMSE
weighted by `frame_similarity`, so neighbours whose input features differ (likely a
boundary) are not pulled together. The shared loss already adds plain TMSE
(`loss.smooth_weight` x TMSE, summed over stages), which stands in for it by default
(`gstmse_weight` 0). With `gstmse_weight` > 0 a term `gstmse` = gstmse_weight x the sum
over ASB stages of the similarity-weighted TMSE (truncated at `loss.tau`, averaged over
real neighbour pairs and classes) is added; the authors' setting corresponds to
`gstmse_weight=1.0` with `loss.smooth_weight=0`. As in their code (and unlike the shared
TMSE), neither frame of a pair is detached.

**Inference** (`predict_labels`). The last BRB stage's boundary probabilities are set to
0 below `boundary_threshold` (0.5 in the authors' configs); a frame is a boundary when
its probability is strictly greater than both neighbours' (a flat top of equal values is
no peak), frame 0 always is, and the last real frame never is (the authors' argrelmax
on the unpadded video). Each span between boundaries takes the class that most of its
frames' argmax of the last ASB stage vote for; a tie goes to the tied class with the
larger sum of softmax probabilities over the span (the authors sum the raw outputs from
a start of 0, which can leave a tie undecided when those are negative logits; the
probability sum is what their code's naming intends), then to the lower class index.
Padded frames neither vote nor split (the authors' batch-of-one code lets the last
segment run into padding) and are labelled 0. Segment ids come from a cumulative sum
and votes from `jax.ops.segment_sum`, so it is jittable and O(T C).

Defaults follow the authors' configs: 4 stages per branch (`num_stages_asb` /
`num_stages_brb` fall back to the shared `num_stages`, as their model does), 10 layers,
64 channels, dropout 0.5, lambda_b 0.1, threshold 0.5, sigma 1.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.tcn import SingleStage, masked


def boundary_targets(labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """(B, T) float: 1 where an action starts (frame 0, or the label changes), on real
  frames only."""
  change = jnp.concatenate(
      [jnp.ones_like(labels[:, :1], dtype=bool), labels[:, 1:] != labels[:, :-1]], 1)
  return change.astype(jnp.float32) * mask.astype(jnp.float32)


def boundary_bce(boundary_logits: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray,
                 pos_weight) -> jnp.ndarray:
  """(S,) binary cross-entropy with logits per stage, averaged over real frames.

  Per frame: -(pos_weight * y * log sigmoid(z) + (1 - y) * log(1 - sigmoid(z))).

  Args:
    boundary_logits: (S, B, T).
    targets: (B, T) in {0, 1}.
    mask: (B, T), 1 for real frames.
    pos_weight: scalar weight of the positive (boundary) frames.
  """
  z = boundary_logits
  y = targets[None].astype(z.dtype)
  m = mask.astype(z.dtype)
  # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z).
  bce = pos_weight * y * jax.nn.softplus(-z) + (1.0 - y) * jax.nn.softplus(z)
  return (bce * m).sum((1, 2)) / jnp.maximum(m.sum(), 1.0)


def frame_similarity(x: jnp.ndarray, mask: jnp.ndarray, sigma: float = 1.0
                     ) -> jnp.ndarray:
  """(B, T): exp(-||x_t - x_{t-1}||_2 / (2 sigma^2)) for real pairs, else 0 (t = 0 too).

  The Euclidean norm, not its square, as in the authors' GS-TMSE. The features are
  data, not learned: no gradient flows through them (the norm's gradient at a zero
  difference would be NaN).
  """
  x = jax.lax.stop_gradient(x)
  m = mask.astype(x.dtype)
  dist = jnp.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1)                  # (B, T-1)
  sim = jnp.exp(-dist / (2.0 * sigma**2)) * m[:, 1:] * m[:, :-1]
  return jnp.concatenate([jnp.zeros_like(sim[:, :1]), sim], 1)


def gaussian_similarity_tmse(logits: jnp.ndarray, similarity: jnp.ndarray,
                             mask: jnp.ndarray, tau: float = 4.0) -> jnp.ndarray:
  """(S,) GS-TMSE per stage: similarity-weighted truncated MSE of neighbouring frames'
  log-probabilities, averaged over real neighbour pairs and classes.

  Args:
    logits: (S, B, T, C).
    similarity: (B, T), entry t weighting the pair (t-1, t) (see `frame_similarity`).
    mask: (B, T), 1 for real frames (filler rows zeroed).
    tau: truncation threshold on |log p_t - log p_{t-1}|.
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  diff = logp[:, :, 1:] - logp[:, :, :-1]                                 # (S, B, T-1, C)
  tmse = jnp.minimum(diff**2, tau**2).mean(-1)                            # (S, B, T-1)
  m = mask.astype(logits.dtype)
  pair = m[:, 1:] * m[:, :-1]
  weighted = tmse * (similarity[:, 1:] * pair)
  return weighted.sum((1, 2)) / jnp.maximum(pair.sum(), 1.0)


def boundary_peaks(boundary_prob: jnp.ndarray, mask: jnp.ndarray, threshold: float
                   ) -> jnp.ndarray:
  """(B, T) bool: the frames that start a segment.

  Frame 0, and every real frame t that is not the last real frame and whose probability,
  after zeroing those below `threshold`, is strictly above both neighbours'.
  """
  m = mask.astype(bool)
  p = jnp.where((boundary_prob >= threshold) & m, boundary_prob, 0.0)
  prev = jnp.pad(p[:, :-1], ((0, 0), (1, 0)))
  nxt = jnp.pad(p[:, 1:], ((0, 0), (0, 1)))
  next_real = jnp.pad(m[:, 1:], ((0, 0), (0, 1)))
  peak = (p > prev) & (p > nxt) & m & next_real
  return peak.at[:, 0].set(True)


def refine_with_boundaries(logits: jnp.ndarray, boundary_prob: jnp.ndarray,
                           mask: jnp.ndarray, threshold: float) -> jnp.ndarray:
  """ASRF's boundary-based refinement: a majority vote of frame labels per segment.

  Args:
    logits: (B, T, C) the last action-segmentation stage.
    boundary_prob: (B, T) the last boundary stage's probabilities.
    mask: (B, T), 1 for real frames.
    threshold: boundary probabilities below it are ignored.

  Returns:
    (B, T) int32 labels; padded frames 0.
  """
  t, c = logits.shape[1], logits.shape[2]
  m = mask.astype(logits.dtype)
  seg = jnp.cumsum(boundary_peaks(boundary_prob, mask, threshold), axis=1) - 1  # (B, T)
  votes = jax.nn.one_hot(jnp.argmax(logits, -1), c, dtype=logits.dtype) * m[..., None]
  probs = jax.nn.softmax(logits, -1) * m[..., None]
  per_segment = jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_segments=t))
  counts = per_segment(votes, seg)                                        # (B, T, C)
  prob_sum = per_segment(probs, seg)                                      # (B, T, C)
  top = counts == counts.max(-1, keepdims=True)
  seg_label = jnp.argmax(jnp.where(top, prob_sum, -jnp.inf), -1)          # (B, T)
  labels = jnp.take_along_axis(seg_label, seg, axis=1)
  return labels.astype(jnp.int32) * mask.astype(jnp.int32)


@register("asrf")
class ASRF(nn.Module):
  """Action Segment Refinement Framework (defaults: 4 + 4 stages x 10 layers x 64).

  `__call__(x, mask)` with `x` (B, T, D) returns `logits` (S_a, B, T, num_classes),
  `features` (B, T, channels), `boundary_logits` (S_b, B, T) and `frame_similarity`
  (B, T); see the module docstring.
  """

  num_classes: int = 7
  num_stages: int = 4
  num_layers: int = 10
  channels: int = 64
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0
  num_stages_asb: int | None = None     # None: num_stages
  num_stages_brb: int | None = None     # None: num_stages
  boundary_weight: float = 0.1          # lambda_b
  boundary_pos_weight: float = 0.0      # 0: real frames / boundary frames of the batch
  boundary_threshold: float = 0.5
  gstmse_weight: float = 0.0            # 0: the shared TMSE stands in
  gstmse_sigma: float = 1.0

  def _stage_counts(self) -> tuple[int, int]:
    asb = self.num_stages if self.num_stages_asb is None else self.num_stages_asb
    brb = self.num_stages if self.num_stages_brb is None else self.num_stages_brb
    for field, value in (("num_stages_asb", asb), ("num_stages_brb", brb)):
      if value < 1:
        raise ValueError(f"config.model.asrf.{field} (or config.model.num_stages) must "
                         f"be >= 1, got {value}")
    return asb, brb

  def _check_fields(self) -> None:
    if not 0.0 <= self.boundary_threshold <= 1.0:
      raise ValueError("config.model.asrf.boundary_threshold must be in [0, 1], got "
                       f"{self.boundary_threshold}")
    for field in ("boundary_weight", "boundary_pos_weight", "gstmse_weight"):
      if getattr(self, field) < 0:
        raise ValueError(f"config.model.asrf.{field} must be >= 0, got "
                         f"{getattr(self, field)}")
    if self.gstmse_sigma <= 0:
      raise ValueError(f"config.model.asrf.gstmse_sigma must be > 0, got "
                       f"{self.gstmse_sigma}")

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    num_asb, num_brb = self._stage_counts()
    self._check_fields()
    similarity = frame_similarity(masked(x, mask), mask, self.gstmse_sigma)  # (B, T)
    # Channel dropout on the input (whole feature dimensions, as MS-TCN's Dropout2d).
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    stage = lambda name: SingleStage(self.num_layers, self.channels, self.dropout_rate,
                                     name=name)
    head = lambda n, name: nn.Conv(n, kernel_size=(1,), name=name)

    shared = stage("shared")(masked(x, mask), mask, train=train)           # (B, T, F)
    logits = masked(head(self.num_classes, "classifier_0")(shared), mask)  # (B, T, C)
    bound = masked(head(1, "boundary_0")(shared), mask)                    # (B, T, 1)

    all_logits, features = [logits], shared
    for s in range(1, num_asb):
      features = stage(f"asb_stage_{s}")(masked(jax.nn.softmax(logits, -1), mask), mask,
                                         train=train)
      logits = masked(head(self.num_classes, f"classifier_{s}")(features), mask)
      all_logits.append(logits)

    all_bounds = [bound]
    for s in range(1, num_brb):
      h = stage(f"brb_stage_{s}")(masked(jax.nn.sigmoid(bound), mask), mask, train=train)
      bound = masked(head(1, f"boundary_{s}")(h), mask)
      all_bounds.append(bound)

    return {"logits": jnp.stack(all_logits), "features": features,
            "boundary_logits": jnp.stack(all_bounds)[..., 0],
            "frame_similarity": similarity}

  @nn.nowrap
  def loss_terms(self, outputs: dict, labels, mask, loss_cfg: Any = None
                 ) -> dict[str, jnp.ndarray]:
    """`boundary`: lambda_b x the BCE summed over BRB stages; `gstmse` when its weight
    is positive (see the module docstring). `mask` has filler rows zeroed."""
    self._check_fields()
    targets = boundary_targets(labels, mask)                               # (B, T)
    if self.boundary_pos_weight > 0:
      pos_weight = self.boundary_pos_weight
    else:
      m = mask.astype(jnp.float32)
      pos_weight = m.sum() / jnp.maximum(targets.sum(), 1.0)
    bce = boundary_bce(outputs["boundary_logits"], targets, mask, pos_weight)
    terms = {"boundary": self.boundary_weight * bce.sum()}
    if self.gstmse_weight > 0:
      tau = 4.0 if loss_cfg is None else float(loss_cfg.get("tau", 4.0))
      gs = gaussian_similarity_tmse(outputs["logits"], outputs["frame_similarity"], mask,
                                    tau)
      terms["gstmse"] = self.gstmse_weight * gs.sum()
    return terms

  @nn.nowrap
  def predict_labels(self, outputs: dict, mask) -> jnp.ndarray:
    """(B, T) int32: the last ASB stage refined by the last BRB stage's boundaries."""
    self._check_fields()
    prob = jax.nn.sigmoid(outputs["boundary_logits"][-1])                 # (B, T)
    return refine_with_boundaries(outputs["logits"][-1], prob, mask,
                                  self.boundary_threshold)
