"""Input pipeline: grain over a random-access data source.

Deterministic given a seed, checkpointable, length-bucketed, sharded over processes:

* **Plan.** For every epoch the example indices are shuffled (seed + epoch), cut into
  windows of `window_batches` batches, sorted by length inside each window (so a batch
  holds videos of similar length), batched, and the batches shuffled again. The plan is
  a pure function of (seed, epoch, lengths): every process computes the same one.
* **Padding.** A batch is padded to its longest video rounded up to a bucket, so only a
  few shapes are ever compiled; `mask` marks real frames. `bucket_policy` says which
  lengths are buckets: "multiple" (every multiple of `bucket_size`: little padding,
  but one shape per `bucket_size` frames of the longest video) or "pow2"
  (`bucket_size` times a power of two: at most log2(longest / bucket_size) + 1 shapes,
  under half of each batch padding). `BatchPlan.padding` measures the trade-off. An
  incomplete last batch (evaluation) is filled with empty rows of `weight` 0.
* **Frame stride.** With `frame_stride` k > 1 every k-th frame is kept (MS-TCN's
  sample rate): k times less compute; evaluation maps predictions back to every frame.
* **Sharding.** Each process loads only its rows of the global batch (rows
  `[p * b / P, (p + 1) * b / P)`); `hhjax.train` assembles the global array with
  `jax.make_array_from_process_local_data`.
* **Checkpointing.** The loader is a grain `MapDataset` turned into an iterator whose
  `get_state()` / `set_state()` hold the position; training saves it with the model.
* **Transform** (optional). A `transform(features, index, epoch) -> features` hook (e.g.
  `hhjax.data.augment`'s viewpoint augmentation) changes each video's (T, D) features
  after the stream selection and before the frame stride and standardising; it gets the
  example's index in the split and the plan's epoch, so a random draw seeded by those
  (and a seed) is the same in every run and after a resume.
* **Standardising** (optional). With `FeatureStats` (each feature's mean and standard
  deviation over the training frames, `feature_stats`) every real frame becomes
  (x - mean) / std; padding stays zero.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import grain
import numpy as np

STREAMS = ("rgb+flow", "rgb", "flow", "all")
BUCKET_POLICIES = ("multiple", "pow2")


def check_bucket_policy(policy: str, bucket_size: int) -> None:
  """Raises a ValueError naming the config field unless both are valid."""
  if policy not in BUCKET_POLICIES:
    raise ValueError(f"config.dataset.bucket_policy={policy!r}; expected one of "
                     f"{BUCKET_POLICIES}")
  if bucket_size < 1:
    raise ValueError(f"config.dataset.bucket_size must be >= 1, got {bucket_size}")


def bucket_length(n: int, bucket_size: int, policy: str = "multiple") -> int:
  """The padded length of a batch whose longest video has `n` frames.

  "multiple": `n` rounded up to a multiple of `bucket_size`; "pow2": the smallest
  `bucket_size * 2^k` (k >= 0) that holds `n`. Never less than one bucket.
  """
  check_bucket_policy(policy, bucket_size)
  if policy == "multiple":
    return max(bucket_size, -(-n // bucket_size) * bucket_size)
  length = bucket_size
  while length < n:
    length *= 2
  return length


def max_shapes(longest: int, bucket_size: int, policy: str = "multiple") -> int:
  """How many padded lengths videos of up to `longest` frames can produce: the bound
  on distinct compiled shapes (per batch size)."""
  top = bucket_length(longest, bucket_size, policy)
  if policy == "multiple":
    return top // bucket_size
  return (top // bucket_size).bit_length()   # bucket_size * 2^k, k = 0 .. log2


@dataclasses.dataclass(frozen=True)
class Padding:
  """What a plan's padding costs over some epochs.

  Attributes:
    real_frames: frames of real videos in the batches.
    padded_frames: frames computed: every row (filler rows too) x the padded length.
    waste: the share of computed frames that are padding, 1 - real / padded.
    shapes: the distinct padded lengths, ascending.
  """

  real_frames: int
  padded_frames: int
  shapes: tuple[int, ...]

  @property
  def waste(self) -> float:
    return 1.0 - self.real_frames / self.padded_frames if self.padded_frames else 0.0


def select_streams(features: np.ndarray, streams: str) -> np.ndarray:
  """Keeps the RGB half, the flow half, or both, of (T, D) two-stream features.

  "all" (a synonym of "rgb+flow") keeps every row, for features that are not two
  halves (e.g. the hand-pose stream).
  """
  if streams not in STREAMS:
    raise ValueError(f"streams must be one of {STREAMS}, got {streams!r}")
  if streams in ("rgb+flow", "all"):
    return features
  half = features.shape[-1] // 2
  return features[..., :half] if streams == "rgb" else features[..., half:]


def strided_length(num_frames, frame_stride: int):
  """Frames left after keeping every `frame_stride`-th one (works on arrays too)."""
  return -(-num_frames // frame_stride)


def upsample(labels: np.ndarray, frame_stride: int, num_frames: int) -> np.ndarray:
  """Per-frame labels back at the full frame rate (each kept frame stands for the
  `frame_stride` frames from it on)."""
  return np.repeat(labels, frame_stride)[:num_frames]


@dataclasses.dataclass(frozen=True)
class BatchPlan(Sequence):
  """The global batches of `num_epochs` epochs: item i -> (indices, padded length)."""

  lengths: tuple[int, ...]
  batch_size: int
  seed: int = 0
  shuffle: bool = True
  drop_remainder: bool = True
  bucket_size: int = 256
  window_batches: int = 8
  num_epochs: int = 1
  bucket_policy: str = "multiple"

  def __post_init__(self):
    check_bucket_policy(self.bucket_policy, self.bucket_size)
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.drop_remainder and len(self.lengths) < self.batch_size:
      raise ValueError(f"{len(self.lengths)} examples cannot fill one batch of "
                       f"{self.batch_size}")

  @property
  def batches_per_epoch(self) -> int:
    n = len(self.lengths)
    return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

  def __len__(self) -> int:
    return self.num_epochs * self.batches_per_epoch

  @functools.lru_cache(maxsize=4)
  def epoch(self, epoch: int) -> list[tuple[int, ...]]:
    n = len(self.lengths)
    lengths = np.asarray(self.lengths)
    if not self.shuffle:
      order = np.argsort(lengths, kind="stable")
      return [tuple(order[i:i + self.batch_size].tolist())
              for i in range(0, n, self.batch_size)][:self.batches_per_epoch]
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(n)
    if self.drop_remainder:
      order = order[:self.batches_per_epoch * self.batch_size]
    window = self.batch_size * self.window_batches
    batches = []
    for w in range(0, len(order), window):
      chunk = order[w:w + window]
      chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
      batches += [tuple(chunk[i:i + self.batch_size].tolist())
                  for i in range(0, len(chunk), self.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]

  def __getitem__(self, i: int):
    if not 0 <= i < len(self):
      raise IndexError(i)
    epoch, j = divmod(i, self.batches_per_epoch)
    indices = self.epoch(epoch)[j]
    return indices, self.padded_length(indices)

  def padded_length(self, indices: Sequence[int]) -> int:
    """The length a batch of these examples is padded to."""
    return bucket_length(max(self.lengths[k] for k in indices), self.bucket_size,
                         self.bucket_policy)

  def padding(self, epochs: Sequence[int] | None = None) -> Padding:
    """Real vs computed frames and the distinct shapes over `epochs` (default: every
    epoch of the plan). Every batch counts `batch_size` rows, as the device computes
    them, filler rows of an incomplete batch included."""
    epochs = range(self.num_epochs) if epochs is None else epochs
    real = padded = 0
    shapes = set()
    for e in epochs:
      for indices in self.epoch(e):
        length = self.padded_length(indices)
        shapes.add(length)
        real += sum(self.lengths[k] for k in indices)
        padded += self.batch_size * length
    return Padding(real_frames=real, padded_frames=padded, shapes=tuple(sorted(shapes)))


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Per-feature mean and standard deviation, for standardising inputs.

  Attributes:
    mean: (D,) float32.
    std: (D,) float32, all positive.
  """

  mean: np.ndarray
  std: np.ndarray

  def apply(self, features: np.ndarray) -> np.ndarray:
    """(..., D) features -> (features - mean) / std."""
    if features.shape[-1] != self.mean.shape[0]:
      raise ValueError(f"features have D={features.shape[-1]}, the statistics "
                       f"D={self.mean.shape[0]}")
    return ((features - self.mean) / self.std).astype(np.float32)

  def save(self, path) -> None:
    """Writes `mean` and `std` to an .npz file."""
    np.savez(path, mean=self.mean, std=self.std)

  @classmethod
  def load(cls, path) -> "FeatureStats":
    """Reads what `save` wrote."""
    with np.load(path) as f:
      return cls(mean=np.asarray(f["mean"], np.float32), std=np.asarray(f["std"],
                                                                        np.float32))


def feature_stats(source, streams: str = "rgb+flow", min_std: float = 1e-3
                  ) -> FeatureStats:
  """Mean and standard deviation of each feature over every frame of `source`.

  Accumulated in float64, one video at a time. A feature whose deviation is below
  `min_std` (e.g. constant) gets `min_std`, so it is centred but not blown up.
  """
  total = total_sq = None
  count = 0
  for i in range(len(source)):
    x = select_streams(np.asarray(source[i]["features"], np.float64), streams)
    if total is None:
      total, total_sq = np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
    total += x.sum(0)
    total_sq += (x * x).sum(0)
    count += x.shape[0]
  if not count:
    raise ValueError("feature_stats needs at least one frame")
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
  return FeatureStats(mean=mean.astype(np.float32),
                      std=np.maximum(std, min_std).astype(np.float32))


def load_batch(source, item, *, batch_size: int, streams: str = "rgb+flow",
               frame_stride: int = 1, process_index: int = 0,
               process_count: int = 1, stats: FeatureStats | None = None,
               transform=None, epoch: int = 0) -> dict:
  """Reads and pads this process's rows of one global batch (standardised with
  `stats` when given; each video's features first go through
  `transform(features, index, epoch)` when given).

  Returns NumPy arrays: `features` (b, L, D) float32, `labels` (b, L) int32, `mask`
  (b, L) float32, `score` (b,), `step_scores` (b, 6), `attributes` (b, 6), `weight` (b,)
  (0 for filler rows), `num_frames` (b,) (after the stride), `index` (b,) (-1 for
  filler rows).
  """
  indices, length = item
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes")
  per = batch_size // process_count
  rows = list(indices) + [-1] * (batch_size - len(indices))
  rows = rows[process_index * per:(process_index + 1) * per]
  examples = [source[i] if i >= 0 else None for i in rows]
  first = next((e for e in examples if e is not None), None)
  if first is None:   # this process's rows are all filler
    first = source[indices[0]]
  dim = select_streams(np.asarray(first["features"]), streams).shape[-1]
  out = dict(
      features=np.zeros((per, length, dim), np.float32),
      labels=np.zeros((per, length), np.int32),
      mask=np.zeros((per, length), np.float32),
      score=np.zeros((per,), np.float32),
      step_scores=np.zeros((per, 6), np.float32),
      attributes=np.zeros((per, 6), np.int32),
      weight=np.zeros((per,), np.float32),
      num_frames=np.zeros((per,), np.int32),
      index=np.full((per,), -1, np.int32),
  )
  for r, (i, ex) in enumerate(zip(rows, examples)):
    if ex is None:
      continue
    feats = select_streams(np.asarray(ex["features"], np.float32), streams)
    if transform is not None:
      feats = np.asarray(transform(feats, i, epoch), np.float32)
    feats = feats[::frame_stride]
    if stats is not None:
      feats = stats.apply(feats)
    t = feats.shape[0]
    out["features"][r, :t] = feats
    out["labels"][r, :t] = np.asarray(ex["labels"])[::frame_stride]
    out["mask"][r, :t] = 1.0
    out["score"][r] = ex["score"]
    out["step_scores"][r] = ex["step_scores"]
    out["attributes"][r] = ex["attributes"]
    out["weight"][r] = 1.0
    out["num_frames"][r] = t
    out["index"][r] = i
  return out


def make_loader(source, plan: BatchPlan, *, streams: str = "rgb+flow",
                frame_stride: int = 1, process_index: int = 0, process_count: int = 1,
                num_threads: int = 2, prefetch: int = 2,
                stats: FeatureStats | None = None, transform=None) -> grain.IterDataset:
  """A grain dataset of padded local batches following `plan` (`transform`: see
  `load_batch`; it is told the epoch of each batch in the plan).

  Iterate it with `iter(...)`; the iterator's `get_state()`/`set_state()` save and
  restore the position (training stores it in its checkpoints).
  """
  load = functools.partial(load_batch, source, batch_size=plan.batch_size,
                           streams=streams, frame_stride=frame_stride,
                           process_index=process_index,
                           process_count=process_count, stats=stats)
  if transform is None:
    dataset = grain.MapDataset.source(plan).map(load)
  else:   # batch i of the plan belongs to epoch i // batches_per_epoch
    dataset = grain.MapDataset.source(range(len(plan))).map(lambda i: load(
        plan[i], transform=transform, epoch=i // plan.batches_per_epoch))
  return dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
