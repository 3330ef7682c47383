r"""The paper's comparisons in one command: every row of Li et al.'s Tables VI-XIII.

  python -m hhjax.experiments 6 --dataset synthetic --seeds 3 --budget quick --out runs/tables
  python -m hhjax.experiments 7 --dataset /data/ms-tcn/gtea --budget full --out runs/table7
  python -m hhjax.experiments 7 --dataset /data/ms-tcn --budget full --out runs/table7
  python -m hhjax.experiments all --dataset handwash --seeds 3 --out runs/tables_real
  python -m hhjax.experiments 12 --dataset /path/to/manual_dir --budget full
  python -m hhjax.experiments 6 --dataset handwash --budget full --rows "Ours,BCN"
  python -m hhjax.experiments 6 --dataset handwash --budget full --rows ASFormer \
      --set num_train_steps=1800 --set eval_every_steps=1800
  python -m hhjax.experiments claims runs/tables/table6_quick.json runs/tables_real

TABLE is `6`, `7`, `8`, `9`, `10`, `11`, `12`, `13`, `joint` (what "joint" training means:
ground-truth against predicted segments, input against stage features), `merge` (every
segmentation network of Table VI evaluated again with short runs merged), `online`,
`assess`, `views` (viewpoint augmentation, tested through fixed changes of view;
hand-pose data only) or `all`. Table VII runs on a data set folder of the MS-TCN release (GTEA,
50Salads or Breakfast, recognised by the folder's name; `configs/mstcn_<name>.py`,
docs/DATASETS.md), or on the release's `data` folder, which runs each of the three it
holds: every segmentation network, cross-validated over the release's splits, beside
the paper's figures for that data set. Each row is a config of the shared trainer
(`hhjax.training.loop.train_and_evaluate`): a segmentation network by name
(`config.model.segmenter`), an assessment head and the ablation switches, on top of the
data set's base config. For every row and seed it trains, in
`<out>/runs/<dataset>/<budget>/<row key>/seed<k>/` (`fold<f>/` below that for
`handwash`, `split<k>/` for the MS-TCN data sets),
and evaluates on people not trained on:

* a row already finished (its `eval_results.json` exists) is read back, not retrained,
  once its saved `config.json` is checked to be the config asked for (a run with other
  settings is an error, never a silent stand-in); an interrupted one resumes from its
  last checkpoint. Rows shared by several tables (e.g. the joint model) are trained once;
* `--rows A,B` trains only the rows whose names contain A or B; the table still lists
  every other row already finished at that budget, with the seeds it has (named where
  they are fewer than `--seeds`);
* `--set FIELD=VALUE` changes that field in every row (e.g. a longer training); the
  table's runs and files are then named `<budget>+<settings>` (`variant_name`), apart
  from the plain table's, and its header says which settings it ran with;
* `<out>/table<k>_<budget>.md` and `.json` hold mean +- sd over the seeds for every
  metric, the paper's figures in columns beside ours, and one line per claim of the
  paper saying whether it holds here (and by how much); `.png` draws edit, F1@50,
  Segs/true and Spearman per row (mean +- sd, each seed, the paper's figure);
* `claims PATH...` reads table files already written (or the folders holding them)
  and prints every claim's verdict on each data set, budget and seed count as one
  markdown matrix (`--out FILE` also writes it).

A claim is judged on the means over seeds; with several seeds a margin within the
seeds' spread (the larger sd of the two rows) decides nothing, and a claim decided only
by such margins is "not shown" (`judge_claim`). Whole-clip washes too few to rank
(under MIN_VIDEOS_TO_RANK per fold) are not judged on Spearman or ranking accuracy.

Data sets: `synthetic` (the built-in synthetic HHA300, `configs/hha300_synthetic.py`),
`handwash` (real washes composed from the clips in ../shared/realdata, leave-people-out
folds; `configs/handwash_real.py`, the layout written by `hhjax.data.compose`, see
docs/HANDWASH.md), a manual directory in the HHA300 layout (train / test bundles), or
a data set folder of the MS-TCN release (Table VII only).

Budgets: `quick` (a few hundred steps: a table in about 15 minutes on 2 CPU cores for
one seed on the synthetic set) and `full` (the base config's own length).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import hashlib
import json
import math
import pathlib
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from hhjax import provenance

REPO = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("acc", "edit", "f1@10", "f1@25", "f1@50", "segs", "spearman", "rl2",
           "rank_acc")
LABELS = dict(acc="Acc", edit="Edit", **{"f1@10": "F1@10", "f1@25": "F1@25",
                                          "f1@50": "F1@50"}, segs="Segs/true",
              spearman="Sp.Corr", rl2="R-l2(x100)", rank_acc="RankAcc")
# Segs/true (predicted segments per true one) is read as over-segmentation: lower is
# better while it is above 1, which every row measured here is.
HIGHER_IS_BETTER = dict(acc=True, edit=True, **{"f1@10": True, "f1@25": True,
                                                 "f1@50": True}, segs=False,
                        spearman=True, rl2=False, rank_acc=True)


# Fields that change how a trained model is evaluated, not how it is trained (with
# ground-truth training segments; with predicted ones the scorer trained on unmerged
# runs, and the row reads as merging at test time only).
EVAL_TIME_FIELDS = ("model.min_segment_frames", "dataset.eval_view")


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a table: a name, the config fields it changes, the paper's figures.

  `eval_overrides` change only how the trained model is evaluated (fields of
  `EVAL_TIME_FIELDS`): such a row shares its training run with the row without them
  and re-evaluates it (`hhjax.evaluate`, files of their own)."""

  name: str
  overrides: tuple[tuple[str, Any], ...] = ()
  paper: dict | None = None
  eval_overrides: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    for field, _ in self.eval_overrides:
      if field not in EVAL_TIME_FIELDS:
        raise ValueError(f"row {self.name!r}: {field} is not an evaluation-time field "
                         f"({', '.join(EVAL_TIME_FIELDS)})")

  @property
  def key(self) -> str:
    """A name for the run, the same for equal overrides in any table."""
    if not self.overrides:
      return "base"
    text = json.dumps(sorted(self.overrides), default=str)
    slug = "-".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(self.overrides))
    slug = "".join(c if c.isalnum() or c in "=-_." else "_" for c in slug)[:80]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _paper(acc=None, edit=None, f10=None, f25=None, f50=None, sp=None, rl2=None):
  out = {"acc": acc, "edit": edit, "f1@10": f10, "f1@25": f25, "f1@50": f50,
         "spearman": sp, "rl2": rl2}
  return {k: v for k, v in out.items() if v is not None}


OURS = (("model.segmenter", "conv_transformer"), ("model.scorer", "kas"))
OURS_PAPER = _paper(89.1, 83.3, 89.7, 89.2, 83.0, 0.852, 1.07)


def _seg_mlp(segmenter: str) -> tuple[tuple[str, Any], ...]:
  return (("model.segmenter", segmenter), ("model.scorer", "mlp"))


def _video(pool: str) -> tuple[tuple[str, Any], ...]:
  return (("model.segmenter", "none"), ("model.scoring", "video"),
          ("model.video_pool", pool), ("model.pool_features", "input"))


ACTION_NET = _video("action_net")
# ACTION-NET's own recipe: SGD, momentum 0.9, weight decay 1e-4, lr 0.01 for the
# context-aware attention modules and 0.05 for the score head. Its rates are for an MSE
# on scores in [0, 1]; here the sigmoid is stretched to the data's 0-6 range, which
# makes every gradient (6 - 0)^2 = 36 times larger, so the rates are divided by 36 and
# the L2 decay (added to the gradient) multiplied by 36 to take the same steps. (At
# 0.01 / 0.05 as written, the sigmoid saturates within the first steps on the real
# washes: every video scored 6.0, gradient norm 0.)
ACTION_NET_SCORE_SCALE = 36.0
ACTION_NET_SGD = ACTION_NET + (
    ("optimizer", "sgd"), ("momentum", 0.9),
    ("weight_decay", 1e-4 * ACTION_NET_SCORE_SCALE),
    ("learning_rate", 0.01 / ACTION_NET_SCORE_SCALE),
    ("lr_multipliers", "^video_regressor/head/=5"))


def _action_net(**fields) -> tuple[tuple[str, Any], ...]:
  return ACTION_NET + tuple((f"model.action_net.{k}", v) for k, v in fields.items())


# The spatial-attention RNN as its paper trains it: ranking loss only, on batches of
# videos (pairs within a batch); hand landmarks as its locations, or, on the I3D
# stream, 16 equal chunks of each frame's vector.
SA_RNN = _video("sa_rnn") + (
    ("model.sa_rnn.tokens", "auto"), ("model.sa_rnn.grid_size", 16),
    ("loss.score_weight", 0.0), ("loss.ranking_weight", 1.0), ("batch_size", 4))


# Table "merge": the segmentation networks of Table VI (the same training runs),
# evaluated again with runs shorter than MERGE_FRAMES merged into their neighbours
# (hhjax/models/segmenters/postprocess.py): 1 s at the real washes' 10 frames/s, a
# quarter of their shortest true step (4.3 s); set by that rule, not tuned on results.
MERGE_FRAMES = 10
SEGMENTATION_ROWS = (("MS-TCN + MLP", _seg_mlp("mstcn")),
                     ("MS-TCN++ + MLP", _seg_mlp("mstcn_pp")),
                     ("ASRF + MLP", _seg_mlp("asrf")), ("BCN + MLP", _seg_mlp("bcn")),
                     ("ASFormer + MLP", _seg_mlp("asformer")),
                     ("Ours (conv-transformer + KAS)", OURS))

def _seg(segmenter: str) -> tuple[tuple[str, Any], ...]:
  return (("model.segmenter", segmenter),)


# The "views" table: each training crossed with each view of the held-out washes
# (`hhjax.data.augment`; a view is an evaluation-time field, so a training's views
# share its run).
AS_FILMED, AUGMENTED, HALF = ("trained as filmed", "augment=handpose",
                              "augment=handpose_half")
VIEW_TRAININGS = ((AS_FILMED, OURS),
                  (AUGMENTED, OURS + (("dataset.augment", "handpose"),)),
                  (HALF, OURS + (("dataset.augment", "handpose_half"),)))
FRONT, TURNED, MIRRORED, ABOVE = ("front", "turned 30 deg (rot30_yaw)",
                                  "mirrored (mirror)", "from above (rot45_pitch)")
VIEWS = ((FRONT, ""), (TURNED, "rot30_yaw"), (MIRRORED, "mirror"),
         (ABOVE, "rot45_pitch"))

# Table VII's data sets, by the names of their folders in the MS-TCN release (and of
# their `action_segmentation` builder configs and `configs/mstcn_<name>.py`).
MSTCN_DATASETS = ("gtea", "50salads", "breakfast")
OURS_VII = "Ours (conv-transformer)"

TABLES: dict[str, dict] = {
    "6": dict(
        title="Table VI: segmentation and assessment against other methods",
        rows=[
            Row("Avg-MLP (video level)", _video("mean"), _paper(sp=0.378, rl2=36.50)),
            Row("Max-MLP (video level)", _video("max"), _paper(sp=0.389, rl2=36.13)),
            Row("LSTM (video level)", _video("lstm"), _paper(sp=0.406, rl2=34.60)),
            Row("MS-TCN + MLP", _seg_mlp("mstcn"),
                _paper(88.7, 74.6, 82.0, 81.7, 75.6, 0.704, 2.52)),
            Row("MS-TCN++ + MLP", _seg_mlp("mstcn_pp"),
                _paper(89.0, 77.9, 83.3, 83.3, 75.9, 0.711, 2.01)),
            Row("ASRF + MLP", _seg_mlp("asrf"),
                _paper(89.9, 82.0, 88.2, 88.7, 82.4, 0.728, 1.80)),
            Row("BCN + MLP", _seg_mlp("bcn"),
                _paper(89.1, 81.3, 87.4, 87.1, 81.1, 0.774, 1.58)),
            Row("ASFormer + MLP", _seg_mlp("asformer")),
            Row("Ours (conv-transformer + KAS)", OURS, OURS_PAPER),
        ],
        claims=[
            ("edit", "Ours (conv-transformer + KAS)", "every segmentation network + MLP",
             "the joint model has the best edit score of the segmentation networks"),
            ("f1@50", "Ours (conv-transformer + KAS)", "every segmentation network + MLP",
             "the joint model has the best F1@50 of the segmentation networks"),
            ("segs", "Ours (conv-transformer + KAS)", "MS-TCN + MLP|MS-TCN++ + MLP",
             "the conv-transformer over-segments less than the multi-stage "
             "convolutional networks (fewer predicted segments per true one)"),
            ("spearman", "Ours (conv-transformer + KAS)", "every other row",
             "the joint model assesses best (Spearman)"),
            ("spearman", "MS-TCN + MLP", "every video-level row",
             "segment-based assessment beats every video-level regressor (Spearman)"),
            ("spearman", "LSTM (video level)", "Avg-MLP (video level)",
             "the LSTM beats average pooling + MLP (Spearman)"),
        ]),
    "7": dict(
        title="Table VII: step segmentation on public data sets (MS-TCN's protocol)",
        kind="splits",
        paper_source="Li et al., Table VII (the MS-TCN release's I3D features, mean "
                     "over its splits)",
        rows=[Row("MS-TCN", _seg("mstcn")), Row("MS-TCN++", _seg("mstcn_pp")),
              Row("ASRF", _seg("asrf")), Row("BCN", _seg("bcn")),
              Row("ASFormer", _seg("asformer")),
              Row(OURS_VII, _seg("conv_transformer"))],
        # Acc, Edit, F1@{10,25,50}. ASFormer is not in Li et al.'s table.
        paper_by_dataset={
            "50salads": {"MS-TCN": _paper(80.7, 67.9, 76.3, 74.0, 64.5),
                         "MS-TCN++": _paper(83.7, 74.3, 80.7, 78.5, 70.1),
                         "ASRF": _paper(84.5, 79.3, 84.9, 83.5, 77.3),
                         "BCN": _paper(84.4, 74.3, 82.3, 81.3, 74.0),
                         OURS_VII: _paper(85.2, 76.5, 83.7, 82.6, 76.3)},
            "gtea": {"MS-TCN": _paper(76.3, 79.0, 85.8, 83.4, 69.8),
                     "MS-TCN++": _paper(80.1, 83.5, 88.8, 85.7, 76.0),
                     "ASRF": _paper(77.3, 83.7, 89.4, 87.8, 79.8),
                     "BCN": _paper(79.8, 84.4, 88.5, 87.1, 77.3),
                     OURS_VII: _paper(81.3, 84.7, 89.0, 88.2, 78.0)},
            "breakfast": {"MS-TCN": _paper(66.3, 61.7, 52.6, 48.1, 37.9),
                          "MS-TCN++": _paper(67.6, 65.6, 64.1, 58.6, 45.9),
                          "ASRF": _paper(67.6, 72.4, 74.3, 68.9, 56.1),
                          "BCN": _paper(70.4, 66.2, 68.7, 65.5, 55.0),
                          OURS_VII: _paper(71.5, 67.7, 69.9, 67.1, 57.0)}},
        claims=[("acc", OURS_VII, "MS-TCN|MS-TCN++|ASRF|BCN",
                 "the joint model's network has the best frame accuracy"),
                ("edit", OURS_VII, "BCN", "it beats BCN in edit"),
                ("f1@50", OURS_VII, "BCN", "it beats BCN in F1@50"),
                ("edit", "ASRF", OURS_VII,
                 "ASRF's boundary refinement segments better (edit), as the paper "
                 "concedes"),
                ("f1@50", "ASRF", OURS_VII,
                 "ASRF's boundary refinement segments better (F1@50), as the paper "
                 "concedes")]),
    "8": dict(
        title="Table VIII: with and without optical flow",
        needs_flow=True,
        rows=[Row("Ours (RGB only)", OURS + (("dataset.streams", "rgb"),),
                  _paper(88.2, 81.7, 86.3, 85.4, 79.1)),
              Row("Ours (RGB + flow)", OURS, OURS_PAPER)],
        claims=[(m, "Ours (RGB + flow)", "Ours (RGB only)",
                 f"optical flow improves {LABELS[m]}") for m in
                ("acc", "edit", "f1@10", "f1@25", "f1@50")]),
    "9": dict(
        title="Table IX: with and without the linear transformer",
        rows=[Row("Ours w/o LT", OURS + (("model.attention", "none"),),
                  _paper(89.0, 80.9, 87.2, 86.1, 81.9)),
              Row("Ours", OURS, OURS_PAPER)],
        claims=[(m, "Ours", "Ours w/o LT",
                 f"the linear transformer improves {LABELS[m]}")
                for m in ("edit", "f1@10", "f1@25", "f1@50")] + [
            ("segs", "Ours", "Ours w/o LT",
             "the linear transformer reduces over-segmentation (fewer predicted "
             "segments per true one)")]),
    "10": dict(
        title="Table X: linear against softmax (traditional) attention",
        rows=[Row("Ours TraT (softmax)", OURS + (("model.attention", "softmax"),),
                  _paper(89.8, 82.7, 89.4, 89.1, 83.1)),
              Row("Ours (linear)", OURS, OURS_PAPER)],
        claims=[("edit", "Ours (linear)", "Ours TraT (softmax)",
                 "linear attention is as good as softmax attention (edit)", "par"),
                ("f1@50", "Ours (linear)", "Ours TraT (softmax)",
                 "linear attention is as good as softmax attention (F1@50)", "par")]),
    "11": dict(
        title="Table XI: step-based against whole-video assessment",
        rows=[Row("whole video + MLP", OURS + (("model.scoring", "video"),),
                  _paper(sp=0.390, rl2=35.05)),
              Row("segment + MLP", OURS[:1] + (("model.scorer", "mlp"),),
                  _paper(sp=0.852, rl2=1.07))],
        claims=[("spearman", "segment + MLP", "whole video + MLP",
                 "scoring each step's segment beats regressing the whole video (Sp.)"),
                ("rl2", "segment + MLP", "whole video + MLP",
                 "scoring each step's segment beats regressing the whole video (R-l2)")]),
    "12": dict(
        title="Table XII: the Key Action Scorer against an MLP",
        rows=[Row("segment + MLP", OURS[:1] + (("model.scorer", "mlp"),),
                  _paper(sp=0.814, rl2=1.49)),
              Row("segment + KAS", OURS, _paper(sp=0.852, rl2=1.07))],
        claims=[("spearman", "segment + KAS", "segment + MLP", "KAS beats an MLP (Sp.)"),
                ("rl2", "segment + KAS", "segment + MLP", "KAS beats an MLP (R-l2)")]),
    "13": dict(
        title="Table XIII: learnable against fixed sigmoid in the KAS",
        rows=[Row("KAS (original sigmoid)", OURS + (("model.learnable_sigmoid", False),),
                  _paper(sp=0.821, rl2=1.42)),
              Row("KAS (learnable sigmoid)", OURS, _paper(sp=0.852, rl2=1.07))],
        claims=[("spearman", "KAS (learnable sigmoid)", "KAS (original sigmoid)",
                 "the learnable sigmoid beats the fixed one (Sp.)"),
                ("rl2", "KAS (learnable sigmoid)", "KAS (original sigmoid)",
                 "the learnable sigmoid beats the fixed one (R-l2)")]),
    "joint": dict(
        claims_heading="Claims checked here (not the paper's):",
        title="What joint training means: segments and pooled features while training",
        rows=[Row("ground-truth segments, input features",
                  OURS + (("training_segments", "ground_truth"),
                          ("model.pool_features", "input"))),
              Row("predicted segments, input features",
                  OURS + (("training_segments", "predicted"),
                          ("model.pool_features", "input"))),
              Row("end to end: predicted segments, stage features",
                  OURS + (("training_segments", "predicted"),
                          ("model.pool_features", "stage")))],
        claims=[("spearman", "end to end: predicted segments, stage features",
                 "ground-truth segments, input features",
                 "end-to-end training (the score loss reaches the segmentation network) "
                 "assesses better than a scorer trained on ground-truth segments"),
                ("edit", "end to end: predicted segments, stage features",
                 "ground-truth segments, input features",
                 "end-to-end training does not hurt segmentation (edit)", "par")]),
    "merge": dict(
        claims_heading="Claims checked here (not the paper's):",
        title="Short runs merged: every segmentation network with and without "
              f"min_segment_frames={MERGE_FRAMES}",
        rows=[r for name, overrides in SEGMENTATION_ROWS for r in (
            Row(name, overrides),
            Row(f"{name}, merged", overrides,
                eval_overrides=(("model.min_segment_frames", MERGE_FRAMES),)))],
        claims=[("edit", "Ours (conv-transformer + KAS), merged",
                 "Ours (conv-transformer + KAS)",
                 "merging short runs lifts the joint model's edit score"),
                ("f1@50", "Ours (conv-transformer + KAS), merged",
                 "Ours (conv-transformer + KAS)",
                 "merging short runs lifts the joint model's F1@50"),
                ("edit", "Ours (conv-transformer + KAS), merged",
                 "|".join(f"{name}, merged" for name, _ in SEGMENTATION_ROWS[:-1]),
                 "with short runs merged, the joint model has the best edit score"),
                ("spearman", "Ours (conv-transformer + KAS), merged",
                 "Ours (conv-transformer + KAS)",
                 "merging does not hurt assessment (Spearman)", "par")]),
    "online": dict(
        claims_heading="Claims checked here (not the paper's):",
        title="Online assessment: the causal model against the offline one",
        rows=[Row("Ours, offline (sees the whole video)", OURS, OURS_PAPER),
              Row("Ours, causal (online: sees only the past)",
                  (("model.segmenter", "causal_conv_transformer"),
                   ("model.scorer", "kas")))],
        claims=[(m, "Ours, causal (online: sees only the past)",
                 "Ours, offline (sees the whole video)",
                 f"assessing online costs little: the causal model is at par in "
                 f"{LABELS[m]}", "par")
                for m in ("acc", "edit", "f1@50", "spearman")]),
    "assess": dict(
        claims_heading="Claims checked here (not the paper's):",
        title="Whole-video assessment models: ACTION-NET, the spatial-attention RNN, "
              "the video-level regressors and the joint model",
        paper_source="no paper figure is on these data (ACTION-NET and the "
                     "spatial-attention RNN report other data sets)",
        rows=[
            Row("Avg-MLP (video level)", _video("mean")),
            Row("Max-MLP (video level)", _video("max")),
            Row("LSTM (video level)", _video("lstm")),
            Row("ACTION-NET (GCN context + attention)", ACTION_NET),
            Row("ACTION-NET, average pooling", _action_net(pooling="mean")),
            Row("ACTION-NET, attention without context", _action_net(context="none")),
            Row("ACTION-NET, LSTM context", _action_net(context="lstm")),
            Row("ACTION-NET, Bi-LSTM context", _action_net(context="bilstm")),
            Row("ACTION-NET, its paper's SGD (lr 0.01, head 0.05, for 0-1 scores)",
                ACTION_NET_SGD),
            Row("Spatial-attention RNN (ranking loss)", SA_RNN),
            Row("Ours (conv-transformer + KAS)", OURS),
        ],
        claims=[
            ("spearman", "ACTION-NET (GCN context + attention)",
             "ACTION-NET, average pooling",
             "ACTION-NET's attention beats average pooling (Spearman)"),
            ("spearman", "ACTION-NET (GCN context + attention)",
             "ACTION-NET, attention without context",
             "the GCN context helps the attention (Spearman)"),
            ("spearman", "ACTION-NET (GCN context + attention)",
             "ACTION-NET, LSTM context", "the GCN beats an LSTM as context (Spearman)"),
            ("spearman", "ACTION-NET (GCN context + attention)",
             "ACTION-NET, Bi-LSTM context",
             "the GCN beats a Bi-LSTM as context (Spearman)"),
            ("rank_acc", "Ours (conv-transformer + KAS)", "every other row",
             "the joint model ranks videos best (ranking accuracy)"),
        ]),
    "views": dict(
        claims_heading="Claims checked here (not the paper's):",
        title="Other cameras: the joint model on hand pose, trained with and without "
              "viewpoint augmentation, tested from the front and through fixed "
              "changes of view",
        needs_handpose=True,
        rows=[Row(f"{training}, {view_name}", overrides,
                  eval_overrides=(("dataset.eval_view", view),) if view else ())
              for training, overrides in VIEW_TRAININGS
              for view_name, view in VIEWS],
        claims=[
            ("acc", f"{AUGMENTED}, {ABOVE}", f"{AS_FILMED}, {ABOVE}",
             "viewpoint augmentation keeps a camera looking down at 45 degrees usable "
             "(frame accuracy)"),
            ("f1@50", f"{AUGMENTED}, {ABOVE}", f"{AS_FILMED}, {ABOVE}",
             "... and its segments (F1@50)"),
            ("acc", f"{AUGMENTED}, {TURNED}", f"{AS_FILMED}, {TURNED}",
             "viewpoint augmentation helps a camera turned by 30 degrees "
             "(frame accuracy)"),
            ("acc", f"{AUGMENTED}, {FRONT}", f"{AS_FILMED}, {FRONT}",
             "viewpoint augmentation costs nothing seen from the front "
             "(frame accuracy)", "par"),
            ("acc", f"{HALF}, {FRONT}", f"{AUGMENTED}, {FRONT}",
             "augmenting half the washes wins back front-view accuracy"),
            ("acc", f"{HALF}, {ABOVE}", f"{AS_FILMED}, {ABOVE}",
             "augmenting half the washes still keeps the camera looking down usable "
             "(frame accuracy)"),
        ]),
}
TABLE_ORDER = ("6", "7", "8", "9", "10", "11", "12", "13", "joint", "merge", "online",
               "assess", "views")

BUDGETS = {
    # Every row the same: a few hundred steps, one evaluation at the end.
    "quick": dict(num_train_steps=200, eval_every_steps=10**9, checkpoint_every_steps=100,
                  log_every_steps=50),
    "full": {},
}


# ------------------------------------------------------------------------ configs

def load_config_file(path: str | pathlib.Path):
  from hhjax import config as config_lib  # noqa: PLC0415
  return config_lib.from_file(path)


def base_config(dataset: str, data_dir: str | None = None):
  """(config, kind) for a data set name or a manual directory.

  kind: "split" (one train/test split), "folds" (`handwash`'s leave-people-out folds)
  or "splits" (a data set of the MS-TCN release: GTEA, 50Salads or Breakfast, by its
  folder's name, with its cross-validation splits; Table VII)."""
  if dataset == "synthetic":
    config, kind = load_config_file(REPO / "configs" / "hha300_synthetic.py"), "split"
  elif dataset == "handwash":
    config, kind = load_config_file(REPO / "configs" / "handwash_real.py"), "folds"
  else:
    folder = pathlib.Path(dataset)
    if not folder.is_dir():
      raise ValueError(f"--dataset {dataset!r} is neither 'synthetic', 'handwash' nor a "
                       "manual directory")
    if is_mstcn_release_folder(folder):
      config, kind = mstcn_base_config(folder), "splits"
    else:
      config, kind = load_config_file(REPO / "configs" / "hha300.py"), "split"
    config.dataset.manual_dir = str(folder.resolve())
    config.dataset.data_dir = str(folder.resolve() / "tfds")
  config.report_baselines = False
  config.progress_bar = False
  if data_dir:
    config.dataset.data_dir = data_dir
  return config, kind


def is_mstcn_release_folder(folder: pathlib.Path) -> bool:
  """Whether a manual directory is in the MS-TCN release's layout (cross-validation
  bundles `train.split<k>` / `test.split<k>`, no scores) rather than HHA300's."""
  splits = folder / "splits"
  return (not (folder / "scores.csv").exists() and splits.is_dir()
          and any(splits.glob("train.split*.bundle")))


def release_subfolders(dataset: str) -> list[str]:
  """For `--dataset` naming the MS-TCN release's `data` folder: its data set folders
  that Table VII knows (gtea/, 50salads/, breakfast/, in that order), so that one
  command runs all three; [] for any other `--dataset`."""
  folder = pathlib.Path(dataset)
  if not folder.is_dir() or (folder / "splits").exists():
    return []
  found = {p.name.lower(): p for p in folder.iterdir()
           if p.is_dir() and is_mstcn_release_folder(p)}
  return [str(found[name]) for name in MSTCN_DATASETS if name in found]


def mstcn_base_config(folder: pathlib.Path):
  """`configs/mstcn_<name>.py` for a data set folder of the MS-TCN release, chosen by
  the folder's name (gtea, 50salads, breakfast, as in the release)."""
  name = folder.resolve().name.lower()
  if name not in MSTCN_DATASETS:
    raise ValueError(
        f"--dataset {str(folder)!r} is in the MS-TCN layout (train.split<k> bundles) "
        f"but its name is not one of {', '.join(MSTCN_DATASETS)}: Table VII knows "
        "those three by the names of their folders in the MS-TCN release")
  return load_config_file(REPO / "configs" / f"mstcn_{name}.py")


def _get(config, dotted: str):
  """The value of a dotted config field; ValueError naming it when there is none."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise ValueError(f"config has no field {dotted!r}")
    node = node[part]
  return node


def _set(config, dotted: str, value) -> None:
  parent, _, leaf = dotted.rpartition(".")
  node = _get(config, parent) if parent else config
  if leaf not in node:
    raise ValueError(f"config has no field {dotted!r}")
  node[leaf] = value


def parse_settings(base, items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
  """`FIELD=VALUE` strings (`--set`) as (field, value) pairs, each value read as the
  type of the field in `base` (bool, int, float, str; a tuple or list as a Python
  literal). Raises ValueError naming the field for an unknown field or a bad value."""
  pairs = []
  for item in items:
    field, sep, text = item.partition("=")
    field = field.strip()
    if not sep or not field:
      raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. num_train_steps=1800")
    try:
      current = _get(base, field)
    except ValueError as e:
      raise ValueError(f"--set {item!r}: the {e}") from None
    try:
      if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
          raise ValueError("expected true or false")
        value = text.lower() in ("true", "1")
      elif isinstance(current, int):
        value = int(text)
      elif isinstance(current, float):
        value = float(text)
      elif isinstance(current, str):
        value = text
      elif isinstance(current, (tuple, list)):
        value = type(current)(ast.literal_eval(text))
      else:
        raise ValueError(f"fields of type {type(current).__name__} cannot be set here")
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--set {item!r}: {field} is {current!r} "
                       f"({type(current).__name__}); {text!r} is not one: {e}") from None
    pairs.append((field, value))
  fields = [f for f, _ in pairs]
  if len(set(fields)) != len(fields):
    raise ValueError(f"--set names a field twice: {fields}")
  return tuple(pairs)


def check_settings(settings: Sequence[tuple[str, Any]], budget: str,
                   rows: Sequence[Row]) -> None:
  """ValueError when a field of the table-wide `settings` (`--set`) is one the budget or
  one of the rows sets itself: the table would not say what ran."""
  for field, _ in settings:
    if field in BUDGETS[budget]:
      raise ValueError(f"--set {field}: the {budget} budget sets this field itself "
                       f"({field}={BUDGETS[budget][field]}); use --budget full")
    for row in rows:
      if field in dict(row.overrides) or field in dict(row.eval_overrides):
        raise ValueError(f"--set {field}: row {row.name!r} sets this field itself")


def apply_settings(base, settings: Sequence[tuple[str, Any]], budget: str,
                   rows: Sequence[Row]):
  """A copy of `base` with the table-wide `settings` applied, once `check_settings`
  has passed them."""
  check_settings(settings, budget, rows)
  base = copy.deepcopy(base)
  for field, value in settings:
    _set(base, field, value)
  return base


def variant_name(budget: str, settings: Sequence[tuple[str, Any]]) -> str:
  """The budget, and the `--set` fields where there are any: the name of the table's
  files and of its run folder, so that runs with other settings never mix."""
  return budget if not settings else f"{budget}+{Row('', tuple(settings)).key}"


def eval_config(config, row: Row):
  """`config` with the row's evaluation-time fields set (itself when it has none)."""
  if not row.eval_overrides:
    return config
  config = copy.deepcopy(config)
  for dotted, value in row.eval_overrides:
    _set(config, dotted, value)
  return config


def row_config(base, row: Row, seed: int, budget: str):
  config = copy.deepcopy(base)
  for k, v in BUDGETS[budget].items():
    config[k] = v
  for dotted, value in row.overrides:
    _set(config, dotted, value)
  config.seed = seed
  return config


def dataset_slug(dataset: str) -> str:
  if dataset in ("synthetic", "handwash"):
    return dataset
  return "dir-" + hashlib.sha256(str(pathlib.Path(dataset).resolve()).encode()
                                 ).hexdigest()[:8]


# ------------------------------------------------------------------------- running

def _read_results(workdir: pathlib.Path) -> dict[str, float] | None:
  path = workdir / "eval_results.json"
  if not path.exists():
    return None
  rows = json.loads(path.read_text())
  result = list(rows.values())[-1]   # the model's row (baselines, if any, come first)
  return _with_segment_ratio(result, workdir / "predictions.jsonl")


def _with_segment_ratio(result: dict, predictions: pathlib.Path) -> dict:
  """Adds `segs` to results saved before it was measured, from the run's saved
  predictions (background = class 0, as in every data set these tables run on)."""
  if "segs" in result or "edit" not in result or not predictions.exists():
    return result
  from hhjax import crossval, metrics  # noqa: PLC0415
  rows = crossval.read_predictions(predictions)
  report = metrics.segmentation_report([r["frame_labels"] for r in rows],
                                       [r["gt_frame_labels"] for r in rows])
  return dict(result, segs=report["segs"])


class NotRun(Exception):
  """A row is not finished and training was switched off (`--report-only`).

  `missing`: the folds (or splits, `word`) of the seed that are not finished (None
  for a data set with a train/test split), `all_missing`: True when none of its runs
  is finished."""

  def __init__(self, message: str, missing: tuple[int, ...] | None = None,
               all_missing: bool = True, word: str = "fold"):
    super().__init__(message)
    self.missing, self.all_missing, self.word = missing, all_missing, word


def _unfinished_text(reasons: dict[int, NotRun]) -> str:
  """What `run_row` says of the seeds it could not read back: "nothing run yet", or
  the folds each seed lacks, seeds that lack the same folds named together."""
  if all(e.all_missing for e in reasons.values()):
    return "nothing run yet"
  by_folds: dict[tuple[int, ...] | None, list[int]] = {}
  for seed, e in reasons.items():
    by_folds.setdefault(e.missing, []).append(seed)
  parts = []
  for missing, seeds in by_folds.items():
    who = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    word = reasons[seeds[0]].word
    what = ("not finished" if missing is None else
            f"{word}{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
            "not finished")
    parts.append(f"{who}: {what}")
  return "; ".join(parts)


class StaleRun(ValueError):
  """A finished run's saved config is not the config its row asks for."""


REPORT_ONLY = False   # set by --report-only: tabulate finished rows, train nothing


def check_finished_config(config, workdir: pathlib.Path) -> None:
  """Raises StaleRun when `workdir`'s saved config differs from `config` in any field
  that changes results (the training length included), naming the fields."""
  from hhjax import config as config_lib  # noqa: PLC0415
  conflicts = config_lib.saved_config_conflicts(config, workdir, finished=True)
  if conflicts is None:
    raise StaleRun(f"{workdir} holds results but no config.json: cannot tell which "
                   "settings made them; move it away to retrain")
  if conflicts:
    raise StaleRun(f"{workdir} holds a finished run with other settings than this row "
                   "asks for:\n  " + "\n  ".join(conflicts) + "\nUse another --out, or "
                   "move that folder away to retrain it.")


def check_finished_data(config, workdir: pathlib.Path) -> None:
  """Raises StaleRun when the training split `config` names no longer holds the data
  the finished run in `workdir` was trained on (`train_data.json`: other videos,
  lengths or labels, e.g. washes composed afresh), naming what differs. Runs of an
  older hhjax recorded nothing and pass."""
  from hhjax.data import splits  # noqa: PLC0415
  from hhjax.training import loop  # noqa: PLC0415
  if not (workdir / loop.TRAIN_DATA_FILE).exists():
    return
  d = config.dataset
  key = json.dumps([d.name, d.config, d.data_dir, d.manual_dir, d.streams, d.train_split])
  if key not in _TRAIN_SPLITS:
    _TRAIN_SPLITS[key] = splits.load_split(config, config.dataset.train_split)
  changed = loop.training_data_changes(workdir, config, _TRAIN_SPLITS[key])
  if changed:
    raise StaleRun(f"{workdir} holds a finished run trained on other data than "
                   f"split {config.dataset.train_split!r} now holds:\n  "
                   + "\n  ".join(changed) + "\nUse another --out, or move that folder "
                   "away to retrain it.")


# Training splits read by check_finished_data in this process, by the dataset fields
# that choose them (evaluation-time fields such as `eval_view` share one read).
_TRAIN_SPLITS: dict[str, Any] = {}


def run_one(config, workdir: pathlib.Path, log=print,
            may_train: bool = True) -> tuple[dict, float, bool]:
  """(metrics, seconds, reused) of one training run; a finished run is read back.

  Raises NotRun when the run is not finished and `may_train` is False."""
  done = _read_results(workdir)
  if done is not None:
    check_finished_config(config, workdir)
    check_finished_data(config, workdir)
    timing = workdir / "experiment_time.json"
    seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else math.nan
    return done, seconds, True
  if not may_train:
    raise NotRun(str(workdir))
  from hhjax.training.loop import train_and_evaluate  # noqa: PLC0415
  t0 = time.time()
  metrics = train_and_evaluate(config, workdir)
  seconds = time.time() - t0
  (workdir / "experiment_time.json").write_text(json.dumps({"seconds": seconds}))
  log(f"    finished in {seconds:.0f} s")
  return metrics, seconds, False


def effective(base, row: Row) -> Row:
  """The row with only the overrides that change the base config, so that rows equal
  in effect (e.g. the joint model named in several tables) share one run."""
  changed = []
  for dotted, value in row.overrides:
    if _get(base, dotted) != value:
      changed.append((dotted, value))
  return dataclasses.replace(row, overrides=tuple(changed))


class Progress:
  """The training runs a table has still to make. As each starts, `note` says which
  one it is and about how long the rest will take (the mean time of the runs made so
  far, so rows of slower networks later on make it an underestimate)."""

  def __init__(self, pending: Sequence[pathlib.Path]):
    self.pending = {str(p) for p in pending}
    self.total = len(self.pending)
    self.times: list[float] = []

  def note(self, workdir: pathlib.Path) -> str:
    """" (run k of N; ...)" for a run about to be trained, "" for one read back."""
    if str(workdir) not in self.pending:
      return ""
    k = len(self.times) + 1
    text = f" (run {k} of {self.total}"
    if self.times:
      mean = sum(self.times) / len(self.times)
      text += (f"; {len(self.times)} made in {sum(self.times) / 60:.0f} min, about "
               f"{mean * (self.total - k + 1) / 60:.0f} min left")
    return text + ")"

  def finished(self, workdir: pathlib.Path, seconds: float, reused: bool) -> None:
    if not reused and str(workdir) in self.pending:
      self.pending.discard(str(workdir))
      self.times.append(seconds)


# What one of the several runs of a seed is called, for the data set kinds that have
# them: the leave-people-out folds of `handwash` (numbered from 0, each trained on the
# other folds) and the cross-validation splits of the MS-TCN release (numbered from 1,
# `train.split<k>` / `test.split<k>`).
PART_WORD = {"folds": "fold", "splits": "split"}


def part_dir(seed_dir: pathlib.Path, kind: str, part: int) -> pathlib.Path:
  """The run folder of fold (or split) `part` of one seed: `fold<f>/` or `split<k>/`."""
  return seed_dir / f"{PART_WORD[kind]}{part}"


def available_parts(config, kind: str) -> list[int]:
  """Every fold (or split) number of the data set; [] for one with a train/test split."""
  if kind == "folds":
    from hhjax import crossval  # noqa: PLC0415
    return crossval.fold_indices(config.dataset.manual_dir)
  if kind == "splits":
    from hhjax.data import hha300  # noqa: PLC0415
    pairs = hha300.cv_splits(config.dataset.config, config.dataset.manual_dir)
    return list(range(1, len(pairs) + 1))
  return []


def part_config(config, kind: str, part: int, available: Sequence[int]):
  """The config of fold (or split) `part`: trained on the other folds and tested on
  it, or trained on `train_split<k>` and tested on `test_split<k>`."""
  if kind == "folds":
    from hhjax import crossval  # noqa: PLC0415
    return crossval.fold_config(config, len(available), part)
  from hhjax.data import hha300  # noqa: PLC0415
  train, test = hha300.cv_splits(config.dataset.config,
                                 config.dataset.manual_dir)[part - 1]
  config = copy.deepcopy(config)
  config.dataset.train_split, config.dataset.eval_split = train, test
  return config


def pending_runs(base, kind: str, rows: Sequence[Row], seeds: Sequence[int],
                 root: pathlib.Path, folds: Sequence[int] | None) -> list[pathlib.Path]:
  """The run folders of `rows` x `seeds` (x folds or splits) with no finished result
  yet, each once (rows equal in effect share their runs)."""
  if kind in PART_WORD:
    folds = folds if folds is not None else available_parts(base, kind)
  pending = {}
  for row in rows:
    for seed in seeds:
      workdir = root / effective(base, row).key / f"seed{seed}"
      for run in ([part_dir(workdir, kind, f) for f in folds]
                  if kind in PART_WORD else [workdir]):
        if _read_results(run) is None:
          pending[str(run)] = run
  return list(pending.values())


def run_row(base, kind: str, row: Row, seeds: Sequence[int], budget: str,
            root: pathlib.Path, folds: Sequence[int] | None = None, log=print,
            may_train: bool = True, progress: Progress | None = None) -> dict:
  """Trains (or reads back) every seed (and fold) of a row; returns its record.

  With `may_train` False the record holds the seeds whose runs (every fold of them)
  are finished, named in its `seeds`; NotRun is raised when none is."""
  row = effective(base, row)
  done_seeds, per_seed, per_seed_whole, per_seed_person = [], [], [], []
  seconds, unfinished, code = 0.0, {}, {}
  for seed in seeds:
    try:
      metrics, whole, persons, s, codes = _run_seed(base, kind, row, seed, budget, root,
                                                    folds, log, may_train, progress)
    except NotRun as e:
      if may_train:
        raise
      unfinished[seed] = e
      continue
    done_seeds.append(seed)
    per_seed.append(metrics)
    code.update(codes)
    if whole is not None:
      per_seed_whole.append(whole)
    if persons:
      per_seed_person.append(persons)
    seconds += s
  if not done_seeds:
    raise NotRun(f"{root / row.key}: no seed of {list(seeds)} finished "
                 f"({_unfinished_text(unfinished)})")
  record = dict(name=row.name, key=row.key, overrides=[list(o) for o in row.overrides],
                eval_overrides=[list(o) for o in row.eval_overrides],
                seeds=done_seeds, per_seed=per_seed, mean_sd=mean_sd(per_seed),
                paper=row.paper or {},
                # a row evaluated again shares the training time of its run
                train_seconds=0.0 if row.eval_overrides else seconds,
                code=code)
  if per_seed_whole:
    record.update(per_seed_whole=per_seed_whole, mean_sd_whole=mean_sd(per_seed_whole),
                  whole_videos=min(w[WHOLE_VIDEOS] for w in per_seed_whole))
  if per_seed_person:
    people = sorted({p for persons in per_seed_person for p in persons})
    record["per_person"] = {p: mean_sd([persons[p] for persons in per_seed_person
                                        if p in persons]) for p in people}
  return record


def _run_seed(base, kind: str, row: Row, seed: int, budget: str, root: pathlib.Path,
              folds: Sequence[int] | None, log, may_train: bool,
              progress: Progress | None = None
              ) -> tuple[dict, dict | None, dict, float, dict[str, str]]:
  """(metrics, whole-clip metrics or None, per-person metrics, training seconds, code)
  of one seed of a row, the metrics averaged over the folds where the data set has them;
  the per-person ones (`per_person`, folds only) are those of each held-out person's
  composed washes, {} for a row without frame predictions; `code` maps each training
  run (its folder below `root`) to the code that trained it
  (`hhjax.provenance.trained_with`, joined)."""
  config = row_config(base, row, seed, budget)
  workdir = root / row.key / f"seed{seed}"
  seconds, whole, persons = 0.0, None, {}
  if kind in PART_WORD:
    word = PART_WORD[kind]
    available = available_parts(config, kind)
    bundles = set(layout_splits(config.dataset.manual_dir)) if kind == "folds" else set()
    runs, missing = [], []
    wanted = folds if folds is not None else available
    for fold in wanted:
      run = part_dir(workdir, kind, fold)
      if may_train:
        log(f"  {row.name}: seed {seed}, {word} {fold}"
            + (progress.note(run) if progress else ""))
      cfg = part_config(config, kind, fold, available)
      try:
        m, s, reused = run_one(cfg, run, log, may_train)
      except NotRun:
        missing.append(fold)
        continue
      if progress:
        progress.finished(run, s, reused)
      seconds += 0 if math.isnan(s) else s
      runs.append((fold, run, eval_config(cfg, row), m))
    if missing:   # only without training: run_one trains every other fold
      raise NotRun(f"seed {seed}: {word}s {missing} not finished", tuple(missing),
                   all_missing=len(missing) == len(wanted), word=word)
    # Evaluated again only once every fold of the seed is finished (an unfinished
    # fold raises NotRun above, and the seed is left out whole).
    fold_metrics, whole_metrics, whole_counts = [], [], []
    for fold, run, cfg, m in runs:
      predictions = run / PREDICTIONS_FILE
      if row.eval_overrides:
        m, predictions = evaluate_split(cfg, run, cfg.dataset.eval_split,
                                        with_predictions=True)
      fold_metrics.append(m)
      if kind == "folds":   # videos named <person>_wash<k>
        persons.update(per_person(predictions))
      if f"{WHOLE}{fold}" in bundles:
        whole_metrics.append(evaluate_split(cfg, run, f"{WHOLE}{fold}"))
        whole_counts.append(len(_split_videos(cfg.dataset.manual_dir,
                                              f"{WHOLE}{fold}")))
    metrics = _fold_mean(fold_metrics)
    codes = {str(run.relative_to(root)): " then ".join(provenance.trained_with(run))
             for _, run, _, _ in runs}
    if whole_metrics:
      # The fewest whole-clip washes of any fold: ranking them needs enough of them.
      whole = dict(_fold_mean(whole_metrics), **{WHOLE_VIDEOS: min(whole_counts)})
  else:
    if may_train:
      log(f"  {row.name}: seed {seed}" + (progress.note(workdir) if progress else ""))
    try:
      metrics, s, reused = run_one(config, workdir, log, may_train)
    except NotRun:
      raise NotRun(f"seed {seed} not finished") from None
    if progress:
      progress.finished(workdir, s, reused)
    if row.eval_overrides:
      config = eval_config(config, row)
      metrics = evaluate_split(config, workdir, config.dataset.eval_split)
    seconds += 0 if math.isnan(s) else s
    codes = {str(workdir.relative_to(root)):
             " then ".join(provenance.trained_with(workdir))}
  return {k: float(v) for k, v in metrics.items()}, whole, persons, seconds, codes


PREDICTIONS_FILE = "predictions.jsonl"   # a training run's predictions on its eval split
PERSON_METRICS = ("acc", "edit", "f1@50")


def per_person(predictions: pathlib.Path) -> dict[str, dict[str, float]]:
  """Segmentation metrics (`PERSON_METRICS`) of each person's washes in a predictions
  file (`<person>_wash<k>` names, background = class 0); {} when the file is absent or
  its rows have no frame predictions (video-level rows)."""
  from hhjax import metrics as metrics_lib  # noqa: PLC0415
  from hhjax.crossval import person_of  # noqa: PLC0415
  if not predictions.is_file():
    return {}
  by_person: dict[str, list[dict]] = {}
  with predictions.open() as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        if r.get("frame_labels") is None:
          return {}
        by_person.setdefault(person_of(r["video"]), []).append(r)
  out = {}
  for person, rows in sorted(by_person.items()):
    report = metrics_lib.segmentation_report(
        [np.asarray(r["frame_labels"]) for r in rows],
        [np.asarray(r["gt_frame_labels"]) for r in rows])
    out[person] = {m: float(report[m]) for m in PERSON_METRICS}
  return out


WHOLE = "whole"   # bundles whole<k>: fold k's people's whole-clip washes (compose.py)
WHOLE_VIDEOS = "videos"   # key of the fewest whole-clip washes in a fold
# Score-ranking metrics mean little over a handful of videos (two videos give a
# Spearman of +-1): claims on them are not judged on fewer videos per fold than this.
RANKING_METRICS = ("spearman", "rank_acc")
MIN_VIDEOS_TO_RANK = 5


def layout_splits(manual_dir) -> tuple[str, ...]:
  from hhjax.data import layout  # noqa: PLC0415
  return layout.list_splits(manual_dir)


def _split_videos(manual_dir, split: str) -> list[str]:
  from hhjax.data import layout  # noqa: PLC0415
  return layout.read_split(manual_dir, split)


def _fold_mean(fold_metrics: list[dict]) -> dict[str, float]:
  """Per metric, the mean over the folds that measured it (NaN where none did, such
  as Spearman over one whole-clip wash)."""
  out = {}
  for k in METRICS:
    if any(k in m for m in fold_metrics):
      values = np.array([m.get(k, math.nan) for m in fold_metrics], float)
      values = values[np.isfinite(values)]
      out[k] = float(values.mean()) if values.size else math.nan
  return out


def evaluate_split(config, workdir: pathlib.Path, split: str, *,
                   with_predictions: bool = False):
  """A run's model evaluated on `split` with `config`'s evaluation settings (the
  whole-clip washes, or a row's `eval_overrides`); read back if done on the split's
  data as it is now (`hhjax.evaluate.saved_evaluation`), else evaluated afresh.
  `with_predictions`: (metrics, the predictions file) instead."""
  from hhjax import evaluate  # noqa: PLC0415
  from hhjax.data import splits  # noqa: PLC0415
  data = splits.load_split(config, split)
  done = evaluate.saved_evaluation(config, workdir, split, data)
  if done:
    metrics = _with_segment_ratio(json.loads(done[0].read_text())["metrics"], done[1])
  else:
    metrics, _ = evaluate.evaluate_checkpoint(config, workdir, split, data=data)
    done = evaluate.saved_evaluation(config, workdir, split)
  return (metrics, done[1]) if with_predictions else metrics


def mean_sd(per_seed: list[dict]) -> dict[str, tuple[float, float]]:
  """(mean, sample sd) per metric over seeds; NaN values skipped; sd NaN for one."""
  out = {}
  for k in METRICS:
    values = np.array([m[k] for m in per_seed if k in m], float)
    values = values[np.isfinite(values)]
    if not values.size:
      continue
    out[k] = (float(values.mean()),
              float(values.std(ddof=1)) if values.size > 1 else math.nan)
  return out


# -------------------------------------------------------------------------- claims

def _resolve(target: str, rows: list[dict], subject: str) -> list[dict]:
  by_name = {r["name"]: r for r in rows}
  if target == "every segmentation network + MLP":
    return [r for r in rows if r["name"].endswith("+ MLP") and r["name"] != subject]
  if target == "every video-level row":
    return [r for r in rows if "(video level)" in r["name"]]
  if target == "every other row":
    return [r for r in rows if r["name"] != subject]
  if "|" in target:                     # several rows by name
    return [by_name[t] for t in target.split("|") if t in by_name]
  return [by_name[target]] if target in by_name else []


def judge_claim(claim: tuple, rows: list[dict]) -> dict:
  """Whether a claim of the paper holds here.

  A claim `(metric, subject, other(s), text[, "par"])` says the subject's mean is
  better than each other row's ("par": as good as, i.e. not worse by more than two
  points, or 0.02 for Spearman, or one sd). With one seed the verdict reads the means
  alone: "holds", "does not hold", or "not shown" when the subject ties a row and
  loses to none (every network scoring 100 on one video). With several seeds a margin
  no larger than the
  seeds' spread (the larger sd of the two rows) decides nothing, so a "better than"
  claim
    holds          when the subject is better than every other row beyond the spread,
    does not hold  when it is worse than some row beyond the spread,
    is not shown   otherwise (some margin within the spread, none clearly against it).
  Each margin is reported, marked where it is within the spread.
  """
  metric, subject, target, text, *mode = claim
  by_name = {r["name"]: r for r in rows}
  if subject not in by_name or metric not in by_name[subject]["mean_sd"]:
    return dict(text=text, verdict="not measured", detail="row missing")
  others = [r for r in _resolve(target, rows, subject) if metric in r["mean_sd"]]
  if not others:
    return dict(text=text, verdict="not measured", detail="nothing to compare with")
  mean, sd = by_name[subject]["mean_sd"][metric]
  sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
  par = bool(mode) and mode[0] == "par"
  details, margins, spreads, seeded = [], [], [], False
  for other in others:
    o_mean, o_sd = other["mean_sd"][metric]
    margin = sign * (mean - o_mean)
    spread = float(np.nanmax([sd, o_sd, 0.0]))
    margins.append(margin)
    spreads.append(spread)
    fmt = "{:+.3f}" if metric == "spearman" else "{:+.2f}"
    if not (math.isfinite(sd) or math.isfinite(o_sd)):
      noise = " (one seed: no spread to judge it by)"
    else:
      seeded = True
      noise = " (within the seeds' spread)" if abs(margin) <= spread else ""
    details.append(f"{'vs ' + other['name']}: {fmt.format(margin)}{noise}")
  margins, spreads = np.array(margins), np.array(spreads)
  if par:
    floor = np.maximum(0.02 if metric == "spearman" else 2.0, spreads)
    verdict = "holds" if (margins >= -floor).all() else "does not hold"
  elif not seeded:
    verdict = ("holds" if (margins > 0).all() else
               "does not hold" if (margins < 0).any() else "not shown")   # a tie
  elif (margins > spreads).all():
    verdict = "holds"
  elif (margins < -spreads).any():
    verdict = "does not hold"
  else:
    verdict = "not shown"
  return dict(text=text, verdict=verdict, detail="; ".join(details))


def judge_whole_clip(specs: Sequence[tuple], claims: list[dict], rows: list[dict],
                     meta: dict) -> None:
  """Adds to each judged claim its verdict on the whole-clip washes, where the rows
  have them (`mean_sd_whole`).

  With fewer than MIN_VIDEOS_TO_RANK whole-clip washes in some fold (`whole_videos`)
  a ranking metric means nothing: its claims are "not measured", its means are taken
  out of the rows' `mean_sd_whole` (so neither the table nor the figure shows them;
  `per_seed_whole` keeps the values) and `meta["whole_videos"]` records the count.
  """
  if not any("mean_sd_whole" in r for r in rows):
    return
  videos = min(r.get("whole_videos", math.inf) for r in rows)
  few = videos < MIN_VIDEOS_TO_RANK
  if few:
    meta["whole_videos"] = videos
    for r in rows:
      for m in RANKING_METRICS:
        r.get("mean_sd_whole", {}).pop(m, None)
  whole_rows = [dict(r, mean_sd=r.get("mean_sd_whole", {})) for r in rows]
  for spec, judged in zip(specs, claims):
    if few and spec[0] in RANKING_METRICS:
      judged["whole"] = dict(text=spec[3], verdict="not measured",
                             detail=f"{_washes(videos)} per fold: too few to rank")
    else:
      judged["whole"] = judge_claim(spec, whole_rows)


def _washes(count: int, kind: str = "whole-clip ") -> str:
  """'1 whole-clip wash', '2 whole-clip washes' (`kind` '' drops the adjective)."""
  return f"{count} {kind}wash{'' if count == 1 else 'es'}"


# ------------------------------------------------------------------------- reports

def _fmt(metric: str, value) -> str:
  from hhjax import reporting  # noqa: PLC0415
  return reporting.cell(metric, value, decimals=1)


def _row_label(row: dict, meta: dict) -> str:
  """The row's name, with the seeds it has where that is fewer than the table's."""
  seeds = row.get("seeds", meta["seeds"])
  if list(seeds) == list(meta["seeds"]):
    return row["name"]
  return f"{row['name']} (seed{'s' if len(seeds) > 1 else ''} " \
         f"{', '.join(map(str, seeds))} only)"


def format_table(table: str, spec: dict, rows: list[dict], meta: dict,
                 claims: list[dict]) -> str:
  """Markdown: ours (mean +- sd) and the paper's figure per metric, then the claims."""
  metrics = [m for m in METRICS if any(m in r["mean_sd"] or m in r["paper"]
                                       for r in rows)]
  head = ["Method"] + [f"{LABELS[m]} ours" for m in metrics] + \
         [f"{LABELS[m]} paper" for m in metrics]
  lines = [f"# {spec['title']}", "",
           f"Data: {meta['dataset']}{_folds_text(meta)}; "
           f"{len(meta['seeds'])} seed(s) {meta['seeds']}; "
           f"budget {meta['budget']}{_settings_suffix(meta)}; mean ± sd over seeds"
           + (f" (each seed: mean over the {_part_word(meta)}s)"
              if meta["kind"] in PART_WORD else "")
           + ". Paper: " + spec.get("paper_source", "Li et al., HHA300 (I3D RGB + flow)")
           + ".", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [_row_label(r, meta)]
    for m in metrics:
      if m in r["mean_sd"]:
        mean, sd = r["mean_sd"][m]
        cells.append(_fmt(m, mean) + ("" if not math.isfinite(sd) else
                                      f" ± {_fmt(m, sd)}"))
      else:
        cells.append("-")
    cells += [_fmt(m, r["paper"].get(m)) for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  if any("mean_sd_whole" in r for r in rows):
    few = meta.get("whole_videos")
    lines += ["", "Whole-clip washes (each held-out person's clips played in full, in "
              "WHO order, as one video; the same models"
              + ("" if few is None else
                 f"; {_washes(few, '')} per fold, too few to rank: "
                 + " and ".join(LABELS[m] for m in RANKING_METRICS) + " left out")
              + "):", "",
              "| Method | " + " | ".join(LABELS[m] for m in metrics) + " |",
              "|" + "---|" * (len(metrics) + 1)]
    for r in rows:
      cells = [_row_label(r, meta)]
      for m in metrics:
        mean, sd = r.get("mean_sd_whole", {}).get(m, (math.nan, math.nan))
        cells.append(_fmt(m, mean) + ("" if not math.isfinite(sd) else
                                      f" ± {_fmt(m, sd)}"))
      lines.append("| " + " | ".join(cells) + " |")
  lines += _person_lines(rows, meta)
  lines += ["", spec.get("claims_heading", "Claims of the paper, checked here:"), ""]
  for c in claims:
    lines.append(f"- **{c['verdict']}**: {c['text']} ({c['detail']})")
    if "whole" in c:
      w = c["whole"]
      lines.append(f"  - on whole-clip washes: **{w['verdict']}** ({w['detail']})")
  total = sum(r["train_seconds"] for r in rows)
  lines += ["", f"Training time of the table's rows: {total / 60:.1f} min (every run of "
                "each row; a row that another table shares, such as the full model, is "
                "counted in both)."]
  lines += ["", code_text(meta.get("code"))]
  return "\n".join(lines) + "\n"


def table_code(rows: Sequence[dict]) -> dict[str, int]:
  """{code label: training runs} over the table's rows (`hhjax.provenance`); a run
  that two rows share (one evaluated again) counts once."""
  runs: dict[str, str] = {}
  for r in rows:
    runs.update(r.get("code", {}))
  out: dict[str, int] = {}
  for label in runs.values():
    out[label] = out.get(label, 0) + 1
  return out


def code_text(code: Mapping[str, int] | None) -> str:
  """The table's line on the code that trained its runs: one version, several (a
  warning naming each with its number of runs), or none recorded."""
  if not code or set(code) == {provenance.UNRECORDED}:
    return "Code: not recorded (runs trained before runs recorded their code)."
  if len(code) == 1:
    (label, n), = code.items()
    return f"Code: every training run ({n}) by {label}."
  parts = "; ".join(f"{label} ({n} run{'s' * (n != 1)})" for label, n in code.items())
  return (f"**Warning: the runs were trained by {len(code)} versions of the code:** "
          f"{parts}.")


def _person_lines(rows: list[dict], meta: dict) -> list[str]:
  """Markdown lines of the per-person table (rows with `per_person`), or []."""
  people = sorted({p for r in rows for p in r.get("per_person", {})})
  if not people:
    return []
  lines = ["", "Each held-out person's composed washes ("
           + " / ".join(LABELS[m] for m in PERSON_METRICS) + f"; mean over "
           f"{'seeds' if len(meta['seeds']) > 1 else 'the one seed'}): a fold's figure is "
           "the mean over its people's washes, so one person's failure shows here first.",
           "", "| Method | " + " | ".join(people) + " |", "|" + "---|" * (len(people) + 1)]
  for r in rows:
    if "per_person" not in r:
      continue
    cells = [_row_label(r, meta)]
    for p in people:
      ms = r["per_person"].get(p, {})
      cells.append(" / ".join(_fmt(m, ms[m][0]) if m in ms else "-"
                              for m in PERSON_METRICS))
    lines.append("| " + " | ".join(cells) + " |")
  return lines


PLOT_METRICS = ("edit", "f1@50", "segs", "spearman")


def plot_table(path: pathlib.Path, spec: dict, rows: list[dict], meta: dict) -> dict:
  """Draws a table's headline metrics (edit, F1@50, Segs/true, Spearman: those any row
  has) as horizontal bars, one panel each: the mean over seeds with its sd as an error
  bar, every seed as a dot, whole-clip washes as a second bar where measured, and the
  paper's figure as a diamond. Writes a PNG; returns what was drawn,
  `{metric: [(row name, kind, mean, sd, seed values), ...]}` (kind "composed"/"whole").
  """
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  panels = [m for m in PLOT_METRICS if any(m in r["mean_sd"] for r in rows)]
  if not panels:
    return {}
  whole = any("mean_sd_whole" in r for r in rows)
  drawn: dict = {}
  labelled: set[str] = set()

  def label(name: str) -> str | None:   # each legend entry once in the figure
    if name in labelled:
      return None
    labelled.add(name)
    return name

  # (kind, legend entry, mean_sd key, per-seed key, colour)
  kinds = [("composed", "composed washes" if whole else "ours", "mean_sd", "per_seed",
            "#4c72b0")]
  if whole:
    kinds.append(("whole", "whole-clip washes", "mean_sd_whole", "per_seed_whole",
                  "#dd8452"))
  height = 0.8 / len(kinds)
  fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False,
                           figsize=(3.2 * len(panels) + 2.5, 1.2 + 0.45 * len(rows)))
  for ax, metric in zip(axes[0], panels):
    drawn[metric] = []
    for i, r in enumerate(rows):
      y0 = len(rows) - 1 - i
      for k, (kind, legend, key, seeds_key, colour) in enumerate(kinds):
        if metric not in r.get(key, {}):
          continue
        y = y0 + 0.4 - height * (k + 0.5)
        mean, sd = r[key][metric]
        values = [s[metric] for s in r.get(seeds_key, []) if metric in s]
        ax.barh(y, mean, height, color=colour, alpha=0.75, label=label(legend),
                xerr=sd if math.isfinite(sd) else None, capsize=2)
        ax.plot(values, [y] * len(values), "k.", markersize=3,
                label=label("one seed"))
        drawn[metric].append((r["name"], kind, mean, sd, values))
      if r["paper"].get(metric) is not None:
        ax.plot(r["paper"][metric], y0, "D", color="#c44e52", markersize=5,
                label=label("paper"))
    ax.set_title(LABELS[metric] + ("" if HIGHER_IS_BETTER[metric]
                                   else " (lower is better)"), fontsize=9)
    if metric == "segs":    # the right count: as many segments as true steps
      ax.axvline(1.0, color="k", linewidth=0.8, linestyle="--")
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(range(len(rows)))
  axes[0][0].set_yticklabels([_row_label(r, meta) for r in rows][::-1], fontsize=8)
  handles, labels = [], []
  for ax in axes[0]:
    h, l = ax.get_legend_handles_labels()
    handles += h
    labels += l
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
             frameon=False)
  fig.suptitle(f"{spec['title']} ({meta['dataset']}{_folds_text(meta)}, "
               f"{meta['budget']} budget"
               f"{_settings_suffix(meta)}, "
               f"seeds {meta['seeds']}; bars: mean ± sd, dots: seeds)", fontsize=9)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return drawn


def _settings_text(settings) -> str:
  return ", ".join(f"{field}={value}" for field, value in settings)


def _folds_text(meta: dict) -> str:
  """", folds 1, 2 of 4" where a table covers some of a data set's folds, else ""
  (all folds, a train/test split, or a table written before folds were recorded)."""
  folds, total = meta.get("folds"), meta.get("num_folds")
  if not folds or len(folds) == total:
    return ""
  return f", {_part_word(meta)}s {', '.join(map(str, folds))} of {total}"


def _part_word(meta: dict) -> str:
  return PART_WORD.get(meta.get("kind"), "fold")


def table_stem(table: str, variant: str, meta: dict) -> str:
  """The table's file name without suffix: `table<k>_<variant>`, then the data set's
  name for Table VII (`table7_full_gtea`), and `_folds<a>-<b>...` (`_splits...`) when
  the table holds some of the data set's folds (splits) only, so that the tables of
  several sets of folds live side by side in one `--out` (their runs already do)."""
  folds, total = meta.get("folds"), meta.get("num_folds")
  stem = f"table{table}_{variant}"
  if meta.get("dataset_name"):   # Table VII: one table per data set
    stem += f"_{meta['dataset_name']}"
  if folds and len(folds) != total:
    stem += f"_{_part_word(meta)}s" + "-".join(map(str, folds))
  return stem


def _warn_replaced(path: pathlib.Path, meta: dict, log) -> None:
  """Says so when the table about to be written replaces one of other folds (its runs
  stay: rerunning with those folds writes it again from them). Tables of some folds
  have names of their own (`table_stem`); this catches files written before that."""
  try:
    old = json.loads(path.read_text())["meta"]
  except (OSError, ValueError, KeyError):
    return
  if old.get("folds") is not None and old.get("folds") != meta.get("folds"):
    log(f"  {path.name} held folds {old['folds']} and now holds folds {meta['folds']}; "
        f"the runs of both stay (--folds {','.join(map(str, old['folds']))} writes the "
        "other table again, training nothing, under a name of its own: tables of "
        "some folds are now named after them, e.g. table6_full_folds1-2.md)")


def _settings_suffix(meta: dict) -> str:
  """" with num_train_steps=1800" for a table made with `--set`; "" otherwise (and for
  tables written before `--set` existed)."""
  settings = meta.get("settings") or ()
  return f" with {_settings_text(settings)}" if settings else ""


def _source(meta: dict) -> str:
  seeds = len(meta["seeds"])
  return (f"{meta['dataset']}{_folds_text(meta)}, {meta['budget']}"
          f"{_settings_suffix(meta)}, "
          f"{seeds} seed{'s' if seeds > 1 else ''}")


def claims_matrix(results: Sequence[dict]) -> str:
  """Markdown: every claim of the given tables against every data set / budget.

  `results` are the `table<k>_<budget>.json` contents written by `run_table`. One row
  per (table, claim), in the order of TABLE_ORDER; one column per data set, budget and
  seed count (and its whole-clip washes where the table has them); a cell is the
  verdict, "-" where that table was not run on those data. Columns are grouped by
  data set (in the order first met), then the full budget before the quick one and
  more seeds before fewer. The margins behind each verdict are in the table's own file.
  """
  if not results:
    raise ValueError("no table results to summarise")
  columns: dict[str, tuple] = {}   # column -> its sort key
  datasets: list[str] = []
  cells: dict[tuple[str, str], dict[str, str]] = {}
  titles: dict[str, str] = {}
  for result in results:
    meta = result["meta"]
    source = _source(meta)
    if meta["dataset"] not in datasets:
      datasets.append(meta["dataset"])
    order = (datasets.index(meta["dataset"]), meta["budget"] != "full",
             -len(meta["seeds"]), meta["budget"], _settings_suffix(meta),
             _folds_text(meta))
    titles[meta["table"]] = result["title"]
    for claim in result["claims"]:
      row = cells.setdefault((meta["table"], claim["text"]), {})
      for column, verdict, whole in ((source, claim["verdict"], False),
                                     (f"{source}, whole-clip",
                                      claim.get("whole", {}).get("verdict"), True)):
        if verdict is None:
          continue
        if column in row and row[column] != verdict:
          raise ValueError(f"two results for table {meta['table']} on {column} disagree "
                           f"on '{claim['text']}': pass one file per table and data set")
        row[column] = verdict
        columns[column] = order + (whole,)
  columns = sorted(columns, key=columns.get)
  rank = {t: i for i, t in enumerate(TABLE_ORDER)}
  keys = sorted(cells, key=lambda k: rank.get(k[0], len(rank)))    # stable: claim order
  lines = ["| Table | Claim | " + " | ".join(columns) + " |",
           "|" + "---|" * (len(columns) + 2)]
  for table, text in keys:
    short = titles[table].split(":")[0]
    lines.append(f"| {short} | {text} | " + " | ".join(
        cells[(table, text)].get(c, "-") for c in columns) + " |")
  return "\n".join(lines) + "\n"


def claims_main(argv: Sequence[str]) -> int:
  """`python -m hhjax.experiments claims PATH...`: the claims of every table file found
  (files, or folders holding `table*.json`) as one markdown matrix."""
  parser = argparse.ArgumentParser(
      prog="python -m hhjax.experiments claims",
      description="Every claim of the tables already written, one verdict per data set.")
  parser.add_argument("paths", nargs="+", help="table<k>_<budget>.json files or folders")
  parser.add_argument("--out", default=None, help="also write the markdown here")
  args = parser.parse_args(argv)
  files = []
  for path in map(pathlib.Path, args.paths):
    if path.is_dir():
      files += sorted(path.glob("table*.json"))
    elif path.is_file():
      files.append(path)
    else:
      parser.error(f"{path}: no such file or folder")
  if not files:
    parser.error(f"no table*.json in {', '.join(args.paths)}")
  results = []
  for f in files:
    try:
      result = json.loads(f.read_text())
      result["meta"]["table"], result["claims"]  # noqa: B018  (the fields needed)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      parser.error(f"{f}: not a table written by hhjax.experiments ({e!r})")
    results.append(result)
  try:
    text = claims_matrix(results)
  except ValueError as e:
    parser.error(str(e))
  print(text, end="")
  if args.out:
    pathlib.Path(args.out).write_text(text)
  return 0


def select_rows(rows: Sequence[Row], patterns: Sequence[str] | None) -> set[str]:
  """Names of the rows whose names contain one of `patterns` (case-insensitive); all
  rows when `patterns` is None."""
  if patterns is None:
    return {r.name for r in rows}
  return {r.name for r in rows if any(p.lower() in r.name.lower() for p in patterns)}


def run_table(table: str, dataset: str, seeds: Sequence[int], budget: str,
              out: pathlib.Path, data_dir: str | None = None,
              folds: Sequence[int] | None = None, log=print, base=None,
              rows_wanted: Sequence[str] | None = None,
              settings: Sequence[tuple[str, Any]] = ()) -> dict:
  """Trains what is missing of one table and writes `<out>/table<k>_<budget>.{md,json}`.

  `rows_wanted` (substrings of row names) limits training to those rows; the others
  are tabulated only if already finished. `base` = (config, "split" | "folds"), the
  data set's base config when the caller has it already (`base_config`; it is only
  read). `settings` ((field, value) pairs,
  `--set`) change every row; the table's files and runs are then named
  `<budget>+<settings>` (`variant_name`)."""
  if table not in TABLES:
    raise ValueError(f"unknown table {table!r}; expected one of {TABLE_ORDER} or 'all'")
  spec = TABLES[table]
  base, kind = base if base is not None else base_config(dataset, data_dir)
  if spec.get("kind") == "splits" and kind != "splits":
    log(f"table {table}: skipped on {dataset}: it runs on GTEA, 50Salads or Breakfast "
        "(a data set folder of the MS-TCN release, docs/DATASETS.md)")
    return {}
  if kind == "splits" and spec.get("kind") != "splits":
    log(f"table {table}: skipped on {dataset}: an action-segmentation data set has no "
        "assessment scores (Table VII is its table)")
    return {}
  if kind == "splits":   # the paper's figures on this data set
    paper = spec["paper_by_dataset"].get(base.dataset.config, {})
    spec = dict(spec, rows=[dataclasses.replace(r, paper=paper.get(r.name))
                            for r in spec["rows"]])
  if spec.get("needs_flow") and base.dataset.streams == "all":
    log(f"table {table}: skipped on {dataset}: its features have no flow half")
    return {}
  if spec.get("needs_handpose") and base.dataset.streams != "all":
    log(f"table {table}: skipped on {dataset}: its views transform the 212 hand-pose "
        "values per frame (hhjax.handpose; --dataset handwash), and this data set's "
        "features are split into streams (I3D)")
    return {}
  settings = tuple(settings)
  base = apply_settings(base, settings, budget, spec["rows"]) if settings else base
  variant = variant_name(budget, settings)
  root = out / "runs" / dataset_slug(dataset) / variant
  log(f"table {table}: {spec['title']}"
      + (f" (with {_settings_text(settings)})" if settings else ""))
  chosen = select_rows(spec["rows"], rows_wanted)
  progress = None
  if not REPORT_ONLY:
    progress = Progress(pending_runs(base, kind, [r for r in spec["rows"]
                                                  if r.name in chosen],
                                     seeds, root, folds))
    if progress.total:
      log(f"  {progress.total} training run(s) to make")
  rows = []
  for row in spec["rows"]:
    may_train = not REPORT_ONLY and row.name in chosen
    try:
      rows.append(run_row(base, kind, row, seeds, budget, root, folds, log, may_train,
                          progress))
      if rows[-1]["seeds"] != list(seeds):
        log(f"  {row.name}: listed with seed(s) {rows[-1]['seeds']} only, the others "
            "not finished")
    except NotRun as e:
      why = "--report-only" if REPORT_ONLY else "not among --rows"
      log(f"  {row.name}: not finished ({e}); left out ({why})")
  if not rows:
    return {}
  meta = dict(table=table, dataset=dataset, seeds=list(seeds), budget=budget, kind=kind,
              settings=[list(s) for s in settings], code=table_code(rows))
  if kind in PART_WORD:
    available = available_parts(base, kind)
    meta.update(folds=list(available if folds is None else folds),
                num_folds=len(available))
  if kind == "splits":
    meta["dataset_name"] = base.dataset.config
  stem = table_stem(table, variant, meta)
  _warn_replaced(out / f"{stem}.json", meta, log)
  claims = [judge_claim(c, rows) for c in spec["claims"]]
  judge_whole_clip(spec["claims"], claims, rows, meta)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{stem}.json").write_text(json.dumps(
      dict(meta=meta, title=spec["title"], rows=rows, claims=claims), indent=2))
  text = format_table(table, spec, rows, meta, claims)
  (out / f"{stem}.md").write_text(text)
  plot_table(out / f"{stem}.png", spec, rows, meta)
  log(text)
  log(f"table {table} written to {out / stem}.md (and .json, .png)")
  return dict(meta=meta, rows=rows, claims=claims)


def parse_folds(parser: argparse.ArgumentParser, args, base, kind: str,
                dataset: str | None = None) -> list[int]:
  """`--folds` as a list of fold numbers, each checked against the folds of the data
  set whose base config is `base` (`base_config`: config, kind); parser.error names the
  bad ones: not a number, named twice, not a fold, a data set without folds."""
  try:
    folds = [int(f) for f in args.folds.split(",")]
  except ValueError:
    parser.error(f"--folds {args.folds!r}: expected comma-separated fold numbers, "
                 "e.g. --folds 0,3")
  if len(set(folds)) != len(folds):
    parser.error(f"--folds {args.folds!r} names a fold twice")
  if kind not in PART_WORD:
    parser.error(f"--folds: data set {dataset or args.dataset!r} has a train/test "
                 "split, not folds (--folds is for --dataset handwash, or the splits "
                 "of GTEA, 50Salads or Breakfast)")
  if kind == "splits":
    available = available_parts(base, kind)
    unknown = sorted(set(folds) - set(available))
    if unknown:
      parser.error(f"--folds: splits {unknown} are not among {base.dataset.config}'s "
                   f"splits {available} (numbered from 1, as in the MS-TCN release)")
    return folds
  from hhjax import crossval  # noqa: PLC0415
  from hhjax.data import layout  # noqa: PLC0415
  try:
    crossval.check_folds(base.dataset.manual_dir, folds)
  except (layout.LayoutError, ValueError) as e:
    parser.error(f"--folds: {e}")
  return folds


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["claims"]:
    return claims_main(argv[1:])
  parser = argparse.ArgumentParser(
      prog="python -m hhjax.experiments",
      description="Train and tabulate the paper's comparisons (Tables VI-XIII).")
  parser.add_argument("table", help=f"one of {', '.join(TABLE_ORDER)}, or all ('claims "
                                    "PATH...' instead summarises tables already written)")
  parser.add_argument("--dataset", default="synthetic",
                      help="synthetic | handwash | a manual directory: HHA300's layout, "
                           "or for table 7 a data set folder of the MS-TCN release "
                           "(gtea, 50salads, breakfast) or its data folder holding "
                           "them (default synthetic)")
  parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
  parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
  parser.add_argument("--out", default="runs/experiments", help="output folder")
  parser.add_argument("--data-dir", default=None, help="TFDS data directory override")
  parser.add_argument("--folds", default=None,
                      help="comma-separated folds of handwash, or splits (from 1) of "
                           "a GTEA / 50Salads / Breakfast folder (default: all)")
  parser.add_argument("--report-only", action="store_true",
                      help="train nothing: tabulate the rows already finished")
  parser.add_argument("--rows", default=None,
                      help="comma-separated parts of row names: train only those rows "
                           "(the table also lists other rows already finished)")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="change a config field in every row, e.g. --set "
                           "num_train_steps=1800 (repeatable; full budget for the "
                           "training length). The table's files and runs are named "
                           "after the settings, apart from the plain table's")
  args = parser.parse_args(argv)
  global REPORT_ONLY
  REPORT_ONLY = args.report_only
  tables = list(TABLE_ORDER) if args.table == "all" else [args.table]
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  rows_wanted = None
  if args.rows is not None:
    rows_wanted = [p.strip() for p in args.rows.split(",") if p.strip()]
    known = [r.name for t in tables if t in TABLES for r in TABLES[t]["rows"]]
    for p in rows_wanted or [""]:
      if not p or not select_rows([Row(n) for n in known], [p]):
        parser.error(f"--rows {p!r} matches no row of table(s) {', '.join(tables)}; "
                     "rows: " + "; ".join(dict.fromkeys(known)))
  # Every data set's config, folds and settings are checked before anything trains.
  jobs = []
  for dataset in release_subfolders(args.dataset) or [args.dataset]:
    try:
      base, kind = base_config(dataset, args.data_dir)
    except ValueError as e:
      parser.error(str(e))
    folds = None if args.folds is None else parse_folds(parser, args, base, kind,
                                                         dataset)
    settings = ()
    if args.set:
      try:
        settings = parse_settings(base, args.set)
        for table in tables:
          if table in TABLES:
            check_settings(settings, args.budget, TABLES[table]["rows"])
      except ValueError as e:
        parser.error(str(e))
    jobs.append((dataset, base, kind, folds, settings))
  from absl import logging  # noqa: PLC0415
  logging.set_verbosity(logging.WARNING)
  from hhjax import cli  # noqa: PLC0415
  with cli.user_errors():
    for dataset, base, kind, folds, settings in jobs:
      for table in tables:
        run_table(table, dataset, range(args.seeds), args.budget,
                  pathlib.Path(args.out), args.data_dir, folds, base=(base, kind),
                  rows_wanted=rows_wanted, settings=settings)
  return 0


if __name__ == "__main__":
  sys.exit(main())
