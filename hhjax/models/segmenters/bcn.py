"""BCN: the Boundary-Aware Cascade Network (registered as `bcn`).

Wang, Gao, Wang, Li and Wu, "Boundary-Aware Cascade Networks for Temporal Action
Segmentation", ECCV 2020 (authors' PyTorch code: MCG-NJU/BCN). Three pieces:

* **Stage Cascade (SC).** `num_stages - 1` cascade stages and one fusion stage. Cascade
  stage 1 reads the input features; stage s > 1 reads the features of *every* earlier
  stage concatenated with the input features (`[f_1, ..., f_{s-1}, x]`, as the authors'
  code does), each a `SingleStage` (dilated residual layers) + 1x1 classifier. Every
  stage gets a per-frame weight from the previous stage's confidence c:
  `w = exp(-c)` where `c > soft_threshold` (0.8; confident frames count less) and
  `w = exp(c)` elsewhere (unsure frames count more); stage 1 has weight 1. The weights
  (no gradient) are normalised over the stages per frame and mix the stages' softmax
  probabilities into one fused prediction, which the **fusion stage** (a `SingleStage`
  of `fusion_channels` = 64 channels on the fused probabilities) turns into the final
  logits. c is the probability of the ground-truth class in training and the largest
  class probability at inference (authors' code; the paper leaves it open). `__call__`
  uses the ground truth only when it is passed as `labels=`; called without it (as
  the joint model does) it uses the inference rule in both modes. The loss always uses
  the ground-truth rule (see Loss).
* **Barrier Generation Module (BGM).** Per-frame boundary ("barrier") logits from the
  input features: 1x1 conv to `bgm_channels` (256), `bgm_layers` (3) dilated residual
  layers with dilations 4, 8, 16, 1x1 conv to one channel (the authors' full-resolution
  BGM); the barrier is its sigmoid.
* **Local Barrier Pooling (LBP).** Smooths per-frame vectors p_t within a window of
  `window` frames with weights that decay across barriers b:
      out_t = sum_s w_ts p_s / sum_s w_ts,   w_tt = 1,
      w_ts = exp(-alpha * sum_{u = min(s,t)}^{max(s,t)} b_u)   (s != t, |s - t| <= W/2),
  so a strong barrier between t and s cuts s off, and a frame that is itself a strong
  barrier keeps its own prediction. BCN applies it (authors' code) to the fused
  probabilities before the fusion stage (`lbp_in_*`: window 7, alpha 1) and to the
  fusion stage's logits (`lbp_out_*`: window 99, alpha 0.2, once: their 50Salads
  setting), and, at inference, as post-processing on the final probabilities
  (`lbp_post_*`: window 99, alpha 2, four times) with a sparse barrier: the barrier
  kept only where it exceeds 0.8, or exceeds 0.3 and is a strict local maximum (the
  authors' "more" mode).

Loss (`loss_terms`; the shared loss in `hhjax.losses` already adds every stage's
cross-entropy and smoothing on `logits`):
* `barrier_bce` = `barrier_weight` x the class-balanced BCE of the barrier logits
  (0.5 x mean over boundary frames + 0.5 x mean over the other real frames, the
  authors' BGM loss) against targets from the labels: around every label change s a
  window |t + 0.5 - s| < h is positive, h = max(1, boundary_ratio x L / 2), L the
  longer of the two segments meeting at s (`boundary_ratio` 0.05: the authors' boundary
  regions are 5 % of a segment's length).
* `cascade_reweight` = `cascade_weight` x sum over cascade stages of
  mean_frames((w~ - 1) x CE), with w~ the ground-truth-rule weights scaled so that they
  average to 1 over each video's frames (the authors' "balance weight"). Added to the
  shared plain CE it gives the authors' adaptively weighted CE of the cascade stages
  (`cascade_weight` 0 leaves plain CE); the fusion stage keeps plain CE, as there.

Outputs: `logits` (S, B, T, C), S = `num_stages`: the cascade stages' logits, then the
fusion stage's LBP-smoothed logits (at inference: the log of the post-processed
probabilities), zero on padded frames; `features` (B, T, fusion_channels): the fusion
stage's features; `barrier_logits` (B, T); `cascade_weights` (S - 1, B, T): the
(unnormalised) weights the fusion used.

Choices and simplifications, against the authors' code:
* One BGM, at full resolution, trained jointly from the start with `barrier_bce`. The
  authors pre-train it alone (its BCE), load it, freeze it for the first 15-20 epochs
  and then fine-tune it only through the segmentation loss at a tenth of the learning
  rate; their post-processing barrier comes from a second, resized-resolution BGM
  (features resampled to 300-400 steps) saved to files. Here the post-processing
  barrier is the sparsified full-resolution one. Their BGM also scales its output by
  0.01 before the sigmoid; that only slows the last layer's learning and is left out.
* Boundary targets: the authors mark each action's start and end with a region of
  width max(1 frame, 5 % of its length) and keep anchor frames overlapping it by more
  than half, which marks nothing for segments under 20 frames; here the half-width is
  at least one frame (the two frames either side of a change are positive). Changes
  are every label change (no dataset-specific background classes) and the video's
  first and last frames are not boundaries.
* LBP ignores frames past the video's end or in padding (weight 0, and they block the
  frames beyond them); the authors pad the barrier with 20 and the input with 0, which
  lets out-of-range zeros in with a small weight.
* The balance of the cascade weights is per video (the authors use batch size 1); the
  fusion stage's final softmax is not clamped to [1e-4, 1 - 1e-4] (the shared loss
  uses a stable log-softmax); smoothing is the shared loss's (`config.loss`), not the
  authors' 0.3 x MSE clamped at 8; the authors' unused BatchNorm in each residual layer
  is left out.
* Sizes: the class defaults are the paper's (12 layers, 256 channels, 4 stages = 3
  cascade + fusion); `config.model`'s shared `num_layers` / `channels` override them
  unless `config.model.bcn` sets them back.

Every op that mixes frames reads masked inputs (convolutions as in `hhjax.models.tcn`,
LBP through its frame mask), so a padded video gives the same outputs on its valid
frames as the video unpadded.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from hhjax.models.layers import Dropout
from hhjax.models.segmenters import register
from hhjax.models.tcn import TORCH_CONV_INIT, DilatedResidualLayer, SingleStage, masked


def local_barrier_pooling(x, barrier, mask, window: int, alpha: float):
  """Local Barrier Pooling of per-frame vectors.

  Args:
    x: (B, T, C) per-frame vectors (probabilities or logits).
    barrier: (B, T) barrier strengths, >= 0.
    mask: (B, T) 1 for real frames.
    window: odd window length W; frames within W // 2 of t are pooled.
    alpha: decay per unit of accumulated barrier.

  Returns:
    (B, T, C): out_t = sum_s w_ts x_s / sum_s w_ts with w_tt = 1 and
    w_ts = exp(-alpha * sum of b over the frames from t to s, both included); frames
    out of the video or padded get weight 0 and cut off the frames beyond them.
    Padded frames are 0.
  """
  if window < 1 or window % 2 == 0:
    raise ValueError(f"LBP window must be a positive odd number, got {window}")
  m = mask.astype(x.dtype)
  x = masked(x, mask)
  b = barrier.astype(x.dtype) * m
  half = window // 2
  if half == 0:
    return x
  t = x.shape[1]
  pad = lambda a: jnp.pad(a, [(0, 0), (half, half)] + [(0, 0)] * (a.ndim - 2))
  xp, bp, mp = pad(x), pad(b), pad(m)                   # (B, T + 2h, ...)
  shift = lambda a, k: lax.dynamic_slice_in_dim(a, half + k, t, axis=1)

  def step(carry, k):
    # k-th neighbour on each side: add its barrier to the running sum from t, and
    # close the side for good once it reaches a frame that is not real.
    acc_r, acc_l, open_r, open_l, num, den = carry
    acc_r = acc_r + shift(bp, k)
    acc_l = acc_l + shift(bp, -k)
    open_r = open_r * shift(mp, k)
    open_l = open_l * shift(mp, -k)
    w_r = open_r * jnp.exp(-alpha * acc_r)              # (B, T)
    w_l = open_l * jnp.exp(-alpha * acc_l)
    num = num + w_r[..., None] * shift(xp, k) + w_l[..., None] * shift(xp, -k)
    den = den + w_r + w_l
    return (acc_r, acc_l, open_r, open_l, num, den), None

  init = (b, b, m, m, x, m)                             # the centre: weight 1
  carry, _ = lax.scan(step, init, jnp.arange(1, half + 1))
  num, den = carry[4], carry[5]
  return num / (den + (1.0 - m))[..., None]             # padded: 0 / 1


def sparse_barrier(barrier, mask, low: float = 0.3, high: float = 0.8):
  """(B, T) barrier kept where it exceeds `high`, or exceeds `low` and is a strict local
  maximum among real frames (the video's first and last frames are never maxima)."""
  m = mask.astype(barrier.dtype)
  b = barrier * m
  prev = jnp.pad(b, ((0, 0), (1, 0)))[:, :-1]
  nxt = jnp.pad(b, ((0, 0), (0, 1)))[:, 1:]
  has_prev = jnp.pad(m, ((0, 0), (1, 0)))[:, :-1] > 0
  has_next = jnp.pad(m, ((0, 0), (0, 1)))[:, 1:] > 0
  peak = has_prev & has_next & (b > prev) & (b > nxt) & (b > low)
  return jnp.where(peak | (b > high), b, 0.0) * m


def stage_confidence(logits, labels=None):
  """(S, B, T) confidence of each stage's frames: the softmax probability of `labels`
  (B, T) when given (training), else the largest class probability (inference)."""
  probs = jax.nn.softmax(logits, axis=-1)               # (S, B, T, C)
  if labels is None:
    return probs.max(-1)
  idx = jnp.broadcast_to(labels[None, ..., None], probs.shape[:-1] + (1,))
  return jnp.take_along_axis(probs, idx.astype(jnp.int32), axis=-1)[..., 0]


def cascade_weights(confidence, mask, soft_threshold: float = 0.8):
  """Stage Cascade weights.

  Args:
    confidence: (S, B, T) confidence of each cascade stage's frames.
    mask: (B, T) 1 for real frames.
    soft_threshold: confidences above it lower the next stage's weight.

  Returns:
    (S, B, T) weights, no gradient: stage 1 weighs 1; stage s + 1 weighs exp(-c) where
    stage s's confidence c > soft_threshold, else exp(c); 0 on padded frames.
  """
  c = lax.stop_gradient(confidence[:-1])
  m = mask.astype(c.dtype)
  later = jnp.where(c > soft_threshold, jnp.exp(-c), jnp.exp(c)) * m
  return jnp.concatenate([m[None], later], axis=0)


def fuse_stages(logits, weights, mask):
  """(B, T, C) the stages' softmax probabilities mixed by `weights` (S, B, T),
  normalised over the stages per frame; 0 on padded frames."""
  probs = jax.nn.softmax(logits, axis=-1)               # (S, B, T, C)
  total = weights.sum(0)                                # (B, T)
  m = mask.astype(probs.dtype)
  fused = (probs * weights[..., None]).sum(0) / (total + (1.0 - m))[..., None]
  return masked(fused, mask)


def boundary_targets(labels, mask, boundary_ratio: float = 0.05):
  """(B, T) float 0/1 BGM targets from frame labels.

  Frame t is a boundary frame if some label change s (labels[s] != labels[s-1], both
  real frames) has |t + 0.5 - s| < h_s, h_s = max(1, boundary_ratio * L_s / 2), L_s the
  length of the longer of the two segments meeting at s. O(T): the changes at or before
  t are tested through a running max of s + h_s, those after t through a running min of
  s - h_s.
  """
  valid = mask > 0
  b, t = labels.shape
  change = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
  change = jnp.pad(change, ((0, 0), (1, 0)))            # (B, T): a segment starts at s
  seg = jnp.cumsum(change, axis=1)                      # (B, T) segment index
  lengths = jax.vmap(lambda v, i: jax.ops.segment_sum(v, i, num_segments=t))(
      valid.astype(jnp.float32), seg)                   # (B, T) per segment
  frame_len = jnp.take_along_axis(lengths, seg, axis=1) # (B, T) per frame
  before = jnp.pad(frame_len, ((0, 0), (1, 0)))[:, :-1]
  half = jnp.maximum(1.0, boundary_ratio * jnp.maximum(before, frame_len) / 2)
  pos = jnp.arange(t, dtype=jnp.float32)[None]
  centre = pos + 0.5
  reach_right = lax.cummax(jnp.where(change, pos + half, -jnp.inf), axis=1)
  reach_left = lax.cummin(jnp.where(change, pos - half, jnp.inf), axis=1, reverse=True)
  reach_left = jnp.pad(reach_left, ((0, 0), (0, 1)), constant_values=jnp.inf)[:, 1:]
  hit = (centre < reach_right) | (centre > reach_left)
  return (hit & valid).astype(jnp.float32)


def balanced_bce(logits, targets, mask):
  """Class-balanced binary cross-entropy over the real frames of a batch:
  0.5 x mean over positives of -log p + 0.5 x mean over negatives of -log(1 - p);
  a class with no frames contributes 0."""
  m = mask.astype(logits.dtype)
  pos = targets * m
  neg = (1.0 - targets) * m
  loss_pos = -(jax.nn.log_sigmoid(logits) * pos).sum() / jnp.maximum(pos.sum(), 1.0)
  loss_neg = -(jax.nn.log_sigmoid(-logits) * neg).sum() / jnp.maximum(neg.sum(), 1.0)
  return 0.5 * (loss_pos + loss_neg)


class BarrierGenerationModule(nn.Module):
  """Full-resolution BGM: (B, T, D) features -> (B, T) barrier logits."""

  channels: int = 256
  num_layers: int = 3
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    conv = functools.partial(nn.Conv, kernel_size=(1,), kernel_init=TORCH_CONV_INIT)
    h = masked(conv(self.channels, name="conv_in")(x), mask)
    for i in range(self.num_layers):
      h = DilatedResidualLayer(self.channels, 2 ** (i + 2), self.dropout_rate,
                               kernel_init=TORCH_CONV_INIT,
                               name=f"layer_{i}")(h, mask, train=train)
    return masked(conv(1, name="conv_out")(h), mask)[..., 0]


@register("bcn")
class BCN(nn.Module):
  """Boundary-Aware Cascade Network (defaults: the paper's 3 cascade stages + fusion,
  12 layers x 256 channels, fusion stage 64 channels, full-resolution BGM 256 x 3).

  `__call__(x, mask, *, train=False, labels=None)` with `x` (B, T, D) returns
  `{"logits", "features", "barrier_logits", "cascade_weights"}` (see the module
  docstring).
  """

  num_classes: int = 7
  num_stages: int = 4
  num_layers: int = 12
  channels: int = 256
  dropout_rate: float = 0.5
  input_dropout_rate: float = 0.0
  fusion_channels: int = 64
  soft_threshold: float = 0.8
  bgm_channels: int = 256
  bgm_layers: int = 3
  use_lbp: bool = True
  lbp_in_window: int = 7
  lbp_in_alpha: float = 1.0
  lbp_out_window: int = 99
  lbp_out_alpha: float = 0.2
  lbp_out_repeats: int = 1
  lbp_post_window: int = 99
  lbp_post_alpha: float = 2.0
  lbp_post_repeats: int = 4
  post_barrier_low: float = 0.3
  post_barrier_high: float = 0.8
  boundary_ratio: float = 0.05
  barrier_weight: float = 1.0
  cascade_weight: float = 1.0

  def _check(self):
    if self.num_stages < 2:
      raise ValueError(f"bcn: num_stages must be >= 2 (cascade stages + the fusion "
                       f"stage), got {self.num_stages}")
    for name in ("lbp_in_window", "lbp_out_window", "lbp_post_window"):
      w = getattr(self, name)
      if w < 1 or w % 2 == 0:
        raise ValueError(f"bcn: {name} must be a positive odd number, got {w}")
    for name in ("lbp_in_alpha", "lbp_out_alpha", "lbp_post_alpha", "boundary_ratio"):
      if getattr(self, name) < 0:
        raise ValueError(f"bcn: {name} must be >= 0, got {getattr(self, name)}")
    for name in ("lbp_out_repeats", "lbp_post_repeats"):
      if getattr(self, name) < 0:
        raise ValueError(f"bcn: {name} must be >= 0, got {getattr(self, name)}")

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False, labels=None):
    self._check()
    m = mask.astype(x.dtype)
    # Channel dropout on the input features (MS-TCN's Dropout2d; 0 in BCN).
    x = Dropout(self.input_dropout_rate, broadcast_dims=(1,),
                deterministic=not train)(x)
    x = masked(x, mask)

    # Stage Cascade: stage s reads [f_1, ..., f_{s-1}, x].
    feats, stage_logits = [], []
    for s in range(self.num_stages - 1):
      inputs = x if s == 0 else masked(jnp.concatenate(feats + [x], axis=-1), mask)
      h = SingleStage(self.num_layers, self.channels, self.dropout_rate,
                      kernel_init=TORCH_CONV_INIT, name=f"stage_{s}")(inputs, mask,
                                                                      train=train)
      feats.append(h)
      stage_logits.append(masked(nn.Conv(self.num_classes, kernel_size=(1,),
                                         kernel_init=TORCH_CONV_INIT,
                                         name=f"classifier_{s}")(h), mask))
    cascade = jnp.stack(stage_logits)                   # (S-1, B, T, C)
    weights = cascade_weights(stage_confidence(cascade, labels), mask,
                              self.soft_threshold)      # (S-1, B, T)
    fused = fuse_stages(cascade, weights, mask)         # (B, T, C) probabilities

    barrier_logits = BarrierGenerationModule(self.bgm_channels, self.bgm_layers,
                                             self.dropout_rate, name="bgm")(
                                                 x, mask, train=train)
    barrier = jax.nn.sigmoid(barrier_logits) * m        # (B, T)
    if self.use_lbp:
      fused = local_barrier_pooling(fused, barrier, mask, self.lbp_in_window,
                                    self.lbp_in_alpha)

    h = SingleStage(self.num_layers, self.fusion_channels, self.dropout_rate,
                    kernel_init=TORCH_CONV_INIT, name="fusion")(fused, mask, train=train)
    out = masked(nn.Conv(self.num_classes, kernel_size=(1,), kernel_init=TORCH_CONV_INIT,
                         name="classifier_fusion")(h), mask)
    if self.use_lbp:
      for _ in range(self.lbp_out_repeats):
        out = local_barrier_pooling(out, barrier, mask, self.lbp_out_window,
                                    self.lbp_out_alpha)
      if not train and self.lbp_post_repeats:
        probs = masked(jax.nn.softmax(out, axis=-1), mask)
        sparse = sparse_barrier(barrier, mask, self.post_barrier_low,
                                self.post_barrier_high)
        for _ in range(self.lbp_post_repeats):
          probs = local_barrier_pooling(probs, sparse, mask, self.lbp_post_window,
                                        self.lbp_post_alpha)
        out = masked(jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny)), mask)
    return {"logits": jnp.concatenate([cascade, out[None]], axis=0), "features": h,
            "barrier_logits": barrier_logits, "cascade_weights": weights}

  @nn.nowrap
  def loss_terms(self, outputs, labels, mask, loss_cfg):
    """`barrier_bce` and `cascade_reweight` (module docstring), each weighted by its
    field; a term whose weight is 0 is left out."""
    del loss_cfg
    terms = {}
    if self.barrier_weight:
      targets = boundary_targets(labels, mask, self.boundary_ratio)
      terms["barrier_bce"] = self.barrier_weight * balanced_bce(
          outputs["barrier_logits"], targets, mask)
    cascade = outputs["logits"][:-1]                    # (S-1, B, T, C)
    if self.cascade_weight and cascade.shape[0] > 1:
      m = mask.astype(cascade.dtype)
      w = cascade_weights(stage_confidence(lax.stop_gradient(cascade), labels), mask,
                          self.soft_threshold)          # (S-1, B, T)
      per_video = m.sum(-1) / jnp.maximum(w.sum(-1), 1e-12)  # (S-1, B)
      w = w * per_video[..., None]                      # mean 1 over each video
      ce = optax.softmax_cross_entropy_with_integer_labels(cascade, labels[None])
      extra = ((w - 1.0) * ce * m).sum((1, 2)) / jnp.maximum(m.sum(), 1.0)
      terms["cascade_reweight"] = self.cascade_weight * extra.sum()
    return terms
