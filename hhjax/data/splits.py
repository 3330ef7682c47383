"""Opening a configured split, and the input statistics that go with a training run.

* `load_split(config, split)` builds the TFDS data set if needed (`hhjax.data.hha300`,
  keyed by its inputs) and opens one split, reading each video's small fields (length,
  name, labels, scores) once, so evaluation never re-reads the features to score them.
  `config.dataset.name` picks the builder: "hha300", or "action_segmentation" for the
  public action-segmentation sets (GTEA, 50Salads, Breakfast; split names such as
  `train_split1`, see `hhjax.data.hha300.resolve_split`).
* `feature_stats(config, train, workdir)` gives the per-feature mean and deviation when
  `config.dataset.standardize` is set: computed from the training split on the first
  run and saved in the workdir (`feature_stats.npz`) with a fingerprint of what they
  were computed from; a resumed run and `hhjax.evaluate` read them back, and refuse them
  if the data or the stream selection have changed since.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from absl import logging
import jax
import numpy as np

from hhjax.data import pipeline

STATS_FILE = "feature_stats.npz"
STATS_FINGERPRINT_FILE = "feature_stats.json"


@dataclasses.dataclass
class SplitData:
  """A split's data source and, read once when it is opened, each video's length,
  name, feature size and ground truth (so evaluation never re-reads the features).

  `class_names` are the data set's classes (mapping.txt order); `background_classes`
  the labels that edit and F1 leave out (HHA300: 0; the MS-TCN sets: the class named
  "background", if any, as MS-TCN's evaluation does); `has_scores` is False for data
  without assessment labels, whose `scores` are all 0 and mean nothing.
  `build_digest` is the input fingerprint of the TFDS build it was read from (every
  file of the manual directory; `hhjax.data.hha300.input_fingerprint`).
  """

  source: Any
  lengths: np.ndarray
  names: list[str]
  raw_feature_dim: int
  labels: list[np.ndarray]
  scores: np.ndarray
  step_scores: np.ndarray
  attributes: np.ndarray
  split: str = ""
  class_names: tuple[str, ...] = ()
  background_classes: tuple[int, ...] = (0,)
  has_scores: bool = True
  build_digest: str = ""


def _known_datasets() -> str:
  """'hha300' (configs a / b), 'action_segmentation' (configs ...)."""
  from hhjax.data import hha300  # noqa: PLC0415
  return ", ".join(f"{name!r} (configs {' / '.join(c.name for c in b.BUILDER_CONFIGS)})"
                   for name, b in hha300.BUILDERS.items())


def load_split(config, split: str) -> SplitData:
  """Builds the TFDS data set if needed and opens one split.

  Raises:
    ValueError: `config.dataset.name` or `.config` is unknown, the split is not one
      of the data set's, or `config.model.num_classes` differs from the data set's
      class count (mapping.txt).
  """
  from hhjax.data import hha300   # registers the builders
  dataset = config.dataset.name
  if dataset not in hha300.BUILDERS:
    raise ValueError(f"config.dataset.name={dataset!r} is not a known data set; known: "
                     f"{_known_datasets()}")
  previous = logging.get_verbosity()
  if previous <= logging.WARNING:
    # TFDS warns about the not-yet-built version folder before every first build.
    logging.set_verbosity(logging.ERROR)
  try:
    builder = hha300.build(config.dataset.config,
                           data_dir=config.dataset.data_dir or None,
                           manual_dir=config.dataset.manual_dir or None,
                           dataset=dataset)
    source = builder.as_data_source(split=hha300.resolve_split(builder, split))
  finally:
    logging.set_verbosity(previous)
  metadata = builder.info.metadata or {}
  class_names = tuple(metadata.get("class_names", ()))
  if class_names and len(class_names) != config.model.num_classes:
    raise ValueError(
        f"config.model.num_classes={config.model.num_classes} but "
        f"{dataset}/{config.dataset.config} has {len(class_names)} classes (mapping.txt "
        f"of {config.dataset.manual_dir or 'its manual directory'}); set "
        f"--config.model.num_classes={len(class_names)}")
  # One pass, one example at a time, keeping only the small fields (not features).
  small = collections.defaultdict(list)
  dim = 0
  for i in range(len(source)):
    ex = source[i]
    dim = int(np.shape(ex["features"])[-1])
    name = ex["video"]
    small["names"].append(name.decode() if isinstance(name, bytes) else str(name))
    small["lengths"].append(int(ex["num_frames"]))
    for key in ("labels", "score", "step_scores", "attributes"):
      small[key].append(np.asarray(ex[key]))
  return SplitData(
      source=source, lengths=np.array(small["lengths"]), names=small["names"],
      raw_feature_dim=dim, labels=small["labels"], scores=np.array(small["score"]),
      step_scores=np.array(small["step_scores"]).reshape(-1, 6),
      attributes=np.array(small["attributes"]).reshape(-1, 6), split=split,
      class_names=class_names,
      background_classes=tuple(int(c) for c in metadata.get("background_classes", (0,))),
      has_scores=bool(metadata.get("has_scores", True)),
      build_digest=(hha300.read_fingerprint(builder.data_dir) or {}).get("digest", ""))


def feature_dim(config, data: SplitData) -> int:
  """Input size of the model: the raw feature size, halved for one stream.

  Raises:
    ValueError: `dataset.streams` asks for the RGB or flow half of hand-pose features
      (212 values: the left hand, then the right; they have no such halves).
  """
  from hhjax.handpose import FEATURE_DIM as HANDPOSE_DIM  # noqa: PLC0415
  if config.dataset.streams in ("rgb", "flow") and data.raw_feature_dim == HANDPOSE_DIM:
    raise ValueError(
        f"config.dataset.streams={config.dataset.streams!r} keeps one half of two-stream "
        f"(RGB | flow) features, but split {data.split!r} holds {HANDPOSE_DIM}-d hand-pose "
        "features (left hand | right hand): use --config.dataset.streams=all")
  probe = np.zeros((1, data.raw_feature_dim), np.float32)
  return pipeline.select_streams(probe, config.dataset.streams).shape[-1]


def split_fingerprint(config, data: SplitData) -> dict:
  """What a split's statistics depend on: the data set, split, streams and a digest of
  every video's name, length and labels."""
  digest = hashlib.sha256()
  for name, length, labels in zip(data.names, data.lengths, data.labels):
    digest.update(f"{name}:{int(length)}:".encode())
    digest.update(np.asarray(labels, np.int32).tobytes())
  return dict(dataset=f"{config.dataset.name}/{config.dataset.config}",
              manual_dir=str(config.dataset.manual_dir), split=data.split,
              streams=config.dataset.streams, videos=len(data.names),
              raw_feature_dim=int(data.raw_feature_dim), digest=digest.hexdigest())


def evaluation_fingerprint(config, data: SplitData) -> dict:
  """What an evaluation of a split depends on besides the model: `split_fingerprint`
  and the digest of the whole build (so re-extracted features count too)."""
  return dict(split_fingerprint(config, data), build=data.build_digest)


def same_videos(predictions: list[dict], data: SplitData) -> bool:
  """Whether saved per-video predictions (`video`, `gt_frame_labels`) cover exactly
  the split's videos with the same ground truth, in any order."""
  saved = {p["video"]: np.asarray(p["gt_frame_labels"], np.int64) for p in predictions}
  if len(saved) != len(predictions) or sorted(saved) != sorted(data.names):
    return False
  return all(np.array_equal(saved[n], np.asarray(l, np.int64))
             for n, l in zip(data.names, data.labels))


class StaleStatisticsError(ValueError):
  """The input statistics saved in a workdir were computed from other data."""


def feature_stats(config, train: SplitData, workdir: pathlib.Path
                  ) -> pipeline.FeatureStats | None:
  """The input statistics when `config.dataset.standardize` is set, else None.

  Computed from the training split on the first run and saved in the workdir beside a
  fingerprint of that split; a resumed run (and `hhjax.evaluate`) reads them back, so a
  model always sees inputs scaled as in its training.

  Raises:
    StaleStatisticsError: the saved statistics were computed from a different training
      split (other videos, labels, streams or data set), naming what differs.
  """
  if not config.dataset.standardize:
    return None
  path = workdir / STATS_FILE
  meta_path = workdir / STATS_FINGERPRINT_FILE
  now = split_fingerprint(config, train)
  if path.exists():
    saved = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if saved != now:
      changed = ("no fingerprint was saved with them" if saved is None else
                 ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items()
                           if saved.get(k) != v))
      raise StaleStatisticsError(
          f"{path} was computed from other training data ({changed}); use a new "
          "--workdir, or delete the file to recompute it (the model in this workdir "
          "was trained on the old statistics)")
    return pipeline.FeatureStats.load(path)
  stats = pipeline.feature_stats(train.source, config.dataset.streams)
  if jax.process_index() == 0:
    stats.save(path)
    meta_path.write_text(json.dumps(now, indent=2))
  return stats


def load_saved_stats(config, workdir: pathlib.Path) -> pipeline.FeatureStats | None:
  """The statistics a training run saved (None when the config does not standardise).

  Raises:
    FileNotFoundError: the config standardises but the workdir holds no statistics.
  """
  if not config.dataset.standardize:
    return None
  path = pathlib.Path(workdir) / STATS_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: config.dataset.standardize needs the "
                            "training split's statistics that training saved there")
  return pipeline.FeatureStats.load(path)
