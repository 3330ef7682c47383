"""A synthetic stand-in for HHA300, written in the real data's manual layout.

HHA300 (Li et al.) is not public, so hhjax ships a seeded generator whose output goes
through exactly the same reading code as real data (`hhjax.data.layout`). What it models:

* **Classes.** 7 classes: 0 background, 1-6 the WHO steps (`CLASS_NAMES`).
* **Lengths.** Video lengths are drawn like HHA300's Table III (training videos 373-1579
  frames, mean about 1048).
* **Procedure.** The six steps come mostly in order, separated by background gaps; a step
  is sometimes left out (NE), occasionally repeated later, and neighbours are sometimes
  swapped. Each step's attribute is NE / EN / ES at rates set in `SyntheticConfig`.
* **Key actions.** Each present step performs its two key actions (DESIGN.md's table),
  alternating in short bouts. Several key actions are shared between steps (e.g. "fingers
  interlaced" in steps 2 and 3, "fingers together" in steps 1 and 6), so a single frame is
  often ambiguous and only its temporal context tells the step: this is what makes
  temporal modelling matter. Each key action has a quality q in [0, 1]: ES steps have both
  high, EN steps at least one low. Step score = mean of its two qualities; video score =
  sum of the six step scores (NE steps score 0).
* **Features.** Per frame a small latent vector (class appearance, key-action activity
  scaled by quality, nuisance factors) is projected to `feature_dim` dimensions (2048 by
  default: the first half plays "RGB", mostly appearance, the second half "flow", mostly
  key-action motion). On top come a per-person style offset, temporally correlated (AR(1))
  latent noise, white noise, and soft cross-fades at step boundaries.

The split is by person: no test person appears in training.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

CLASS_NAMES = (
    "background",
    "step1_palm_to_palm",
    "step2_palm_over_dorsum",
    "step3_fingers_interlaced",
    "step4_backs_of_fingers",
    "step5_thumbs",
    "step6_fingertips",
)
NUM_STEPS = 6

# Key-action primitives and which two each step performs (DESIGN.md's table). Shared
# primitives make single frames ambiguous between steps.
KEY_ACTIONS = (
    "palms_facing",        # step 1 (palms facing), step 3 (palm to palm)
    "fingers_together",    # step 1, step 6
    "palm_over_dorsum",    # step 2
    "fingers_interlaced",  # step 2, step 3
    "flex_fingers",        # step 4
    "rub_in_palm",         # step 4, step 6 (fingertips rubbed in the palm)
    "hold_thumb",          # step 5
    "rotary_rub",          # step 5
)
STEP_KEY_ACTIONS = ((0, 1), (2, 3), (0, 3), (4, 5), (6, 7), (1, 5))

ATTRIBUTES = ("NE", "EN", "ES")

# Version of the generator's code. The `hha300` builder keys its synthetic builds by this
# and by the preset's `SyntheticConfig` fields, so a prepared copy is regenerated when
# either changes. Bump it whenever a change to this module alters what `write_layout`
# writes for an unchanged `SyntheticConfig`.
GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes and difficulty of the synthetic data set.

  Attributes:
    num_train: training videos.
    num_test: test videos.
    num_people: people; each video belongs to one, and train and test people differ.
    feature_dim: per-frame feature size (even; first half "RGB", second half "flow").
    seed: everything is determined by it.
    min_len, max_len, mean_len, std_len: video length distribution (frames).
    ne_rates: per step, probability the step is not done (NE).
    en_rates: per step, probability a done step is not to standard (EN).
    swap_prob: probability that two neighbouring steps are swapped (per video).
    repeat_prob: probability that a step is repeated later (per video).
    class_amp: amplitude of the class appearance pattern (latent units).
    action_amp: amplitude of a key action at quality 1 (at quality 0 it is
      `action_floor * action_amp`).
    action_floor: share of a key action's amplitude left at quality 0.
    thoroughness_amp: amplitude, at quality 1, of the thoroughness factor that all key
      actions share.
    noise_std: std of the AR(1) latent noise.
    noise_corr: AR(1) coefficient of the latent noise (per frame).
    person_std: std of the per-person latent style offset.
    white_std: std of the white noise added to each feature dimension.
    nuisance_std: std of the slowly drifting nuisance factors (camera, light).
    bout_min, bout_max: length range (frames) of one key-action bout.
    crossfade: frames over which neighbouring segments blend.
  """

  num_train: int = 225
  num_test: int = 75
  num_people: int = 40
  feature_dim: int = 2048
  seed: int = 0
  min_len: int = 373
  max_len: int = 1579
  mean_len: float = 1048.0
  std_len: float = 250.0
  ne_rates: tuple[float, ...] = (0.04, 0.06, 0.08, 0.10, 0.15, 0.15)
  en_rates: tuple[float, ...] = (0.25, 0.30, 0.35, 0.40, 0.40, 0.40)
  swap_prob: float = 0.15
  repeat_prob: float = 0.10
  class_amp: float = 0.5
  action_amp: float = 1.0
  action_floor: float = 0.1
  thoroughness_amp: float = 2.0
  noise_std: float = 0.3
  noise_corr: float = 0.6
  person_std: float = 0.15
  white_std: float = 0.5
  nuisance_std: float = 0.1
  bout_min: int = 6
  bout_max: int = 30
  crossfade: int = 8

  def __post_init__(self):
    if self.feature_dim % 2:
      raise ValueError(f"feature_dim must be even, got {self.feature_dim}")
    if not 0 < self.min_len <= self.mean_len <= self.max_len:
      raise ValueError(
          f"need 0 < min_len <= mean_len <= max_len, got {self.min_len}, "
          f"{self.mean_len}, {self.max_len}")
    for name in ("ne_rates", "en_rates"):
      rates = getattr(self, name)
      if len(rates) != NUM_STEPS or not all(0 <= r <= 1 for r in rates):
        raise ValueError(f"{name} needs {NUM_STEPS} probabilities, got {rates}")
    if self.num_people < 2:
      raise ValueError("num_people must be at least 2 (train and test people differ)")


PRESETS = {
    # HHA300's size: 300 videos, 225 train / 75 test.
    "synthetic": SyntheticConfig(),
    # The demo: small enough to generate and train on 2 CPU cores in minutes.
    "synthetic_small": SyntheticConfig(num_train=80, num_test=30, num_people=16),
}

# Latent layout: [classes | key actions | thoroughness | nuisance].
_NUM_NUISANCE = 12
_THOROUGHNESS = len(CLASS_NAMES) + len(KEY_ACTIONS)
_LATENT = _THOROUGHNESS + 1 + _NUM_NUISANCE


@dataclasses.dataclass
class Video:
  """One generated video (frame-major features)."""

  name: str
  person: int
  features: np.ndarray      # (T, D) float32
  labels: np.ndarray        # (T,) int32
  attributes: np.ndarray    # (6,) int32, index into ATTRIBUTES
  step_scores: np.ndarray   # (6,) float32
  score: float


def _projection(rng: np.random.Generator, feature_dim: int) -> np.ndarray:
  """(latent, D) projection: RGB half mostly appearance, flow half mostly motion."""
  half = feature_dim // 2
  proj = rng.normal(size=(_LATENT, feature_dim)) / np.sqrt(_LATENT)
  n_cls, n_act = len(CLASS_NAMES), len(KEY_ACTIONS)
  weight = np.ones((_LATENT, 2))
  weight[:n_cls] = (1.0, 0.5)               # appearance: RGB strong, flow weak
  weight[n_cls:n_cls + n_act] = (0.6, 1.0)  # key-action motion: flow strong
  proj[:, :half] *= weight[:, :1]
  proj[:, half:] *= weight[:, 1:]
  return proj.astype(np.float32)


def _qualities(rng, attribute: int) -> np.ndarray:
  if attribute == 0:   # NE
    return np.zeros(2)
  if attribute == 2:   # ES: both key actions well done
    return rng.uniform(0.7, 1.0, size=2)
  q = rng.uniform(0.45, 1.0, size=2)   # EN: at least one key action poorly done
  low = [int(rng.integers(2))] if rng.random() < 0.7 else [0, 1]
  q[low] = rng.uniform(0.0, 0.4, size=len(low))
  return q


def _plan(rng, cfg: SyntheticConfig, length: int):
  """Returns the segment list [(class, start, end)] and per-step attributes/qualities."""
  attributes = np.where(
      rng.random(NUM_STEPS) < cfg.ne_rates, 0,
      np.where(rng.random(NUM_STEPS) < cfg.en_rates, 1, 2))
  qualities = np.stack([_qualities(rng, a) for a in attributes])   # (6, 2)
  order = [s for s in range(1, NUM_STEPS + 1) if attributes[s - 1] > 0]
  if len(order) >= 2 and rng.random() < cfg.swap_prob:
    i = rng.integers(len(order) - 1)
    order[i], order[i + 1] = order[i + 1], order[i]
  if order and rng.random() < cfg.repeat_prob:
    order.append(order[rng.integers(len(order))])
  # Durations: background head/tail, gaps, and steps sharing the rest.
  head, tail = rng.uniform(0.02, 0.08, size=2) * length
  gaps = np.where(rng.random(len(order)) < 0.5,
                  rng.uniform(0.005, 0.04, size=len(order)) * length, 0.0)
  if len(order):
    gaps[0] = 0.0   # the head background already precedes the first step
  weights = rng.lognormal(0.0, 0.35, size=len(order))
  if len(set(order)) < len(order):
    weights[-1] *= 0.5   # a repeat is shorter
  rest = max(length - head - tail - gaps.sum(), 0.0)
  durations = weights / max(weights.sum(), 1e-9) * rest
  segments = []
  bounds = [(0, head)]
  for step, gap, dur in zip(order, gaps, durations):
    if gap > 0:
      bounds.append((0, gap))
    bounds.append((step, dur))
  bounds.append((0, tail))
  edges = np.round(np.cumsum([0.0] + [d for _, d in bounds])).astype(int)
  edges[-1] = length
  edges = np.clip(edges, 0, length)
  for (cls, _), start, end in zip(bounds, edges[:-1], edges[1:]):
    if end > start:
      if segments and segments[-1][0] == cls:
        segments[-1] = (cls, segments[-1][1], end)
      else:
        segments.append((cls, start, end))
  return segments, attributes, qualities


def _ar1(rng, shape, corr: float, std: float) -> np.ndarray:
  """AR(1) noise along axis 0 with stationary std `std`."""
  innov = rng.normal(size=shape) * std * np.sqrt(1 - corr**2)
  out = np.empty(shape)
  out[0] = rng.normal(size=shape[1:]) * std
  for t in range(1, shape[0]):
    out[t] = corr * out[t - 1] + innov[t]
  return out


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
  """Moving average along time (cross-fades at segment boundaries)."""
  if width <= 1:
    return x
  kernel = np.ones(width) / width
  pad = np.pad(x, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
  return np.stack([np.convolve(pad[:, j], kernel, mode="valid")
                   for j in range(x.shape[1])], axis=1)


def generate_video(rng, cfg: SyntheticConfig, proj: np.ndarray, person_offset,
                   person_feat_offset, name: str, person: int) -> Video:
  """Generates one video of a given person."""
  length = int(np.clip(round(rng.normal(cfg.mean_len, cfg.std_len)),
                       cfg.min_len, cfg.max_len))
  segments, attributes, qualities = _plan(rng, cfg, length)
  n_cls = len(CLASS_NAMES)
  labels = np.zeros(length, np.int32)
  clean = np.zeros((length, _LATENT))
  for cls, start, end in segments:
    labels[start:end] = cls
    clean[start:end, cls] = cfg.class_amp
    if cls == 0:
      continue
    kas, q = STEP_KEY_ACTIONS[cls - 1], qualities[cls - 1]
    t, which = start, int(rng.integers(2))
    while t < end:   # alternating bouts of the two key actions, with idle moments
      bout = int(rng.integers(cfg.bout_min, cfg.bout_max + 1))
      if rng.random() < 0.85:
        amp = cfg.action_amp * (cfg.action_floor + (1 - cfg.action_floor) * q[which])
        clean[t:t + bout, n_cls + kas[which]] = amp
        # How thoroughly the action is done shows the same way in every step
        # (pressure, coverage, vigour): one shared direction, scaled by quality.
        clean[t:t + bout, _THOROUGHNESS] = cfg.thoroughness_amp * q[which]
      t += bout
      which = 1 - which
  clean = _smooth(clean, cfg.crossfade)
  nuisance = slice(_THOROUGHNESS + 1, _LATENT)
  clean[:, nuisance] = _ar1(rng, (length, _NUM_NUISANCE), 0.98,
                                 cfg.nuisance_std)
  latent = clean + person_offset + _ar1(rng, (length, _LATENT), cfg.noise_corr,
                                        cfg.noise_std)
  feats = latent.astype(np.float32) @ proj + person_feat_offset
  feats += rng.normal(size=feats.shape).astype(np.float32) * cfg.white_std
  step_scores = qualities.mean(axis=1).astype(np.float32)
  return Video(name=name, person=person, features=feats.astype(np.float32),
               labels=labels, attributes=attributes.astype(np.int32),
               step_scores=step_scores, score=float(step_scores.sum()))


def generate(cfg: SyntheticConfig):
  """Yields `(split, Video)` for every video, deterministically for `cfg.seed`."""
  rng = np.random.default_rng(cfg.seed)
  proj = _projection(rng, cfg.feature_dim)
  num_videos = cfg.num_train + cfg.num_test
  n_test_people = max(1, round(cfg.num_people * cfg.num_test / num_videos))
  people = rng.permutation(cfg.num_people)
  test_people = set(people[:n_test_people].tolist())
  train_people = people[n_test_people:]
  test_people_arr = people[:n_test_people]
  offsets = rng.normal(size=(cfg.num_people, _LATENT)) * cfg.person_std
  # Style shifts appearance (class dims and feature space), not key-action quality.
  offsets[:, len(CLASS_NAMES):] = 0.0
  feat_offsets = (rng.normal(size=(cfg.num_people, cfg.feature_dim)) * cfg.person_std
                  ).astype(np.float32)
  assignments = ([("train", int(train_people[i % len(train_people)]))
                  for i in range(cfg.num_train)]
                 + [("test", int(test_people_arr[i % len(test_people_arr)]))
                    for i in range(cfg.num_test)])
  for index, (split, person) in enumerate(assignments):
    assert (person in test_people) == (split == "test")
    video_rng = np.random.default_rng([cfg.seed, index])
    name = f"P{person:02d}_V{index:03d}"
    yield split, generate_video(video_rng, cfg, proj, offsets[person],
                                feat_offsets[person], name, person)


def write_layout(out_dir: str | pathlib.Path, config: SyntheticConfig) -> None:
  """Writes the synthetic data set in the manual layout (see DESIGN.md).

  Files: `mapping.txt`, `groundTruth/<video>.txt`, `features/<video>.npy` of shape
  (D, T), `splits/{train,test}.bundle`, and `scores.csv` with columns `video, score,
  step1..step6` (NE/EN/ES) and `step1_score..step6_score`.
  """
  out = pathlib.Path(out_dir)
  for sub in ("groundTruth", "features", "splits"):
    (out / sub).mkdir(parents=True, exist_ok=True)
  (out / "mapping.txt").write_text(
      "".join(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES)))
  splits = {"train": [], "test": []}
  rows = ["video,score," + ",".join(f"step{i}" for i in range(1, 7)) + ","
          + ",".join(f"step{i}_score" for i in range(1, 7))]
  for split, video in generate(config):
    splits[split].append(video.name)
    np.save(out / "features" / f"{video.name}.npy",
            np.ascontiguousarray(video.features.T))
    (out / "groundTruth" / f"{video.name}.txt").write_text(
        "".join(CLASS_NAMES[c] + "\n" for c in video.labels))
    rows.append(",".join(
        [video.name, f"{video.score:.6f}"]
        + [ATTRIBUTES[a] for a in video.attributes]
        + [f"{s:.6f}" for s in video.step_scores]))
  for split, names in splits.items():
    (out / "splits" / f"{split}.bundle").write_text("".join(n + "\n" for n in names))
  (out / "scores.csv").write_text("\n".join(rows) + "\n")
