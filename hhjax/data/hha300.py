"""TFDS builders for manual directories in the MS-TCN layout, no TensorFlow.

Importing this module registers two builders that read the layout of
`hhjax.data.layout`:

* `hha300`: HHA300 (hand-hygiene step segmentation + assessment; scores required).
* `action_segmentation`: the public action-segmentation data sets of the MS-TCN
  release (GTEA, 50Salads, Breakfast; Li et al.'s Table VII), which have no scores.

```python
import tensorflow_datasets as tfds
import hhjax.data.hha300  # registers "hha300" and "action_segmentation"

builder = tfds.builder("hha300/synthetic_small", data_dir=DATA_DIR)
builder.download_and_prepare()
source = tfds.data_source("hha300/synthetic_small", data_dir=DATA_DIR)["train"]
```

works, or in one call `load_source("synthetic_small", "train", data_dir=DATA_DIR)`
(`load_source("gtea", "train_split1", DATA_DIR, MANUAL_DIR,
dataset="action_segmentation")` for the public sets). The files are ArrayRecord (the
builders' default file format), which TFDS writes and reads without TensorFlow; reading
needs neither hhjax nor this module. Both builders share one base (`LayoutBuilder`): the
feature spec, ArrayRecord writing and the input fingerprints below.

`hha300` configs:

* `features`: real data from a manual directory in the layout of `hhjax.data.layout`
  (pass it as `tfds.download.DownloadConfig(manual_dir=...)`, or `manual_dir=` to
  `build`), splits `train` and `test`.
* `handwash`: the same, for washes composed from single-step clips by
  `hhjax.data.compose`; every bundle in the folder becomes a split (`fold0`, `fold1`,
  ...), and a fold trains on a sum of the others, e.g. `"fold1+fold2+fold3"`.
* `synthetic`: HHA300-sized synthetic data (300 videos, 225 train / 75 test).
* `synthetic_small`: the small demo set.

The synthetic configs write the same manual layout with `hhjax.data.synthetic` into a
temporary folder under the download directory, read it through the same
`hhjax.data.layout.iter_examples` as real data, and delete it afterwards.

`action_segmentation` configs, each reading one data set's folder of the MS-TCN release
(`mapping.txt`, `groundTruth/`, `features/`, `splits/train.split<k>.bundle` and
`splits/test.split<k>.bundle`; no scores.csv):

| config         | classes | splits | MS-TCN sample rate |
|----------------|---------|--------|--------------------|
| `gtea`         | 11      | 4      | 1                  |
| `50salads`     | 19      | 5      | 2                  |
| `breakfast`    | 48      | 4      | 1                  |
| `mstcn_format` | any     | any    | 1                  |

The class count comes from mapping.txt (`info.metadata["class_names"]`); the table's
counts are the releases', recorded in each config but not enforced. The named configs
need every `train.split<k>` / `test.split<k>` bundle of their k; `mstcn_format` takes
whatever bundles the folder has. The sample rate is the frame stride MS-TCN trains
with (`config.dataset.frame_stride`); the builder stores every frame.

Split names: TFDS split names allow only letters, digits and `_`, so bundle
`train.split1` is split `train_split1` (every other character becomes `_`; two bundles
mapping to one name are an error). Each video is stored once: the builder stores the
smallest bundles (the test splits, which partition the videos) and serves a bundle that
is exactly a union of stored ones (MS-TCN's `train.split<k>`, the other k's test
splits) as the TFDS sum of those, e.g. `train_split1` = `test_split2+test_split3+
test_split4`. `info.metadata["split_expressions"]` maps every name to its TFDS split
(`resolve_split` reads it; `load_source` applies it), so `train_split1` is read like a
stored split. `cv_splits(config)` lists the (train, test) pairs of a config.

Examples of the public sets have the HHA300 keys, so one pipeline reads both: score 0,
attributes 0 and step scores -1 (unknown). Their (6,) shapes are HHA300's six steps and
mean nothing here; `info.metadata["has_scores"]` is False. MS-TCN's evaluation leaves
the class named "background" out of edit and F1 (only GTEA has one);
`info.metadata["background_classes"]` lists its index (or nothing).

Builds are keyed by their inputs. Every build writes `hhjax_fingerprint.json` beside its
data (`builder.data_dir`), recording what it was made from:

* manual configs (`features`, `handwash`, every `action_segmentation` config): the
  resolved manual directory, and for every file the build reads (mapping.txt,
  scores.csv, the split bundles, groundTruth/*.txt and features/*.npy of the listed
  videos) its name relative to that folder, its size, and either a SHA-256 of its
  contents (the text files) or its mtime_ns (the .npy files, which are only stat'ed).
* `synthetic*`: the preset's `SyntheticConfig` fields and
  `hhjax.data.synthetic.GENERATOR_VERSION`.
* both: the builder `VERSION`.

`build` and `load_source` fingerprint the current inputs and reuse a prepared copy only
when it matches. When it does not (or the copy has no fingerprint, having been made by
an older hhjax), they either rebuild it, printing one line to stderr that names what
changed (`on_change="rebuild"`, the default), or raise `StaleBuildError`
(`on_change="error"`). Without `manual_dir` a manual config reads TFDS's default folder,
`<data_dir>/downloads/manual`; when that folder is absent or empty, a prepared copy is
checked against the folder it was built from instead. Plain
`builder.download_and_prepare()` writes the fingerprint too, but like any TFDS builder
it reuses whatever is already prepared without looking at it.

Each example (see `hhjax.data.layout`; read back as numpy by `tfds.data_source`):

| key           | feature                             | read back as           |
|---------------|-------------------------------------|------------------------|
| `video`       | Text                                | bytes                  |
| `features`    | Tensor (None, None) float32, bytes  | (T, D) float32 array   |
| `labels`      | Tensor (None,) int32                | (T,) int32 array       |
| `score`       | Scalar float32                      | float                  |
| `attributes`  | Tensor (6,) int32 (0 NE, 1 EN, 2 ES)| (6,) int32 array       |
| `step_scores` | Tensor (6,) float32 (-1 = unknown)  | (6,) float32 array     |
| `num_frames`  | Scalar int32                        | int                    |

D is not fixed by the feature spec: `features` has two unknown dimensions, stored as raw
bytes with their shape, so one builder serves the 2048-d I3D features and small test
features alike. Every video of a build shares one D (checked before writing), recorded
in `info.metadata["feature_dim"]`. The class names (mapping.txt, index order) are in
`info.metadata["class_names"]` and the attribute codes in
`info.metadata["attribute_names"]`; TFDS keeps the metadata in `metadata.json` beside
the data, so it reads back without this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from hhjax.data import layout

_NAME = "hha300"
ACTION_SEGMENTATION = "action_segmentation"
_SOURCES = ("manual", "synthetic")
NUM_CLASSES = 1 + layout.NUM_STEPS   # background + the six WHO steps
SPLITS = layout.DEFAULT_SPLITS
# The class MS-TCN's evaluation leaves out of edit and F1 (by name).
BACKGROUND_CLASS_NAME = "background"

# Written beside a build's data: what the build was made from (see the module docstring).
FINGERPRINT_FILE = "hhjax_fingerprint.json"
# Layout of that file; a stored fingerprint of another format counts as changed.
_FINGERPRINT_FORMAT = 1
# What `build` does when a prepared copy was made from other inputs.
ON_CHANGE = ("rebuild", "error")
# How many file names one change message lists before it only counts the rest.
_MAX_NAMED = 5

_DESCRIPTION = """\
HHA300: videos of the WHO six-step hand rub/wash, annotated per frame with the step
being performed (background + steps 1-6) and per video with an assessment: for each
step whether it was not done (NE), done but not to standard (EN) or done to standard
(ES), a score per step and a video score (Li et al., "Hand Hygiene Assessment via Joint
Step Segmentation and Key Action Scorer"). Examples hold per-frame features (e.g. I3D
RGB + flow, 2048-d) rather than pixels. HHA300 itself is not public: the `features`
config reads a copy laid out by hand, the `synthetic*` configs generate a stand-in.
"""

_CITATION = """\
@article{li2022hand,
  title   = {Hand Hygiene Assessment via Joint Step Segmentation and Key Action Scorer},
  author  = {Li, Chenglong and Zhu, Qiwen and Liu, Tubiao and Tang, Jin and Su, Yu},
  journal = {arXiv preprint arXiv:2209.12221},
  year    = {2022}
}
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
HHA300 is not publicly downloadable. Place per-frame features and annotations in a
folder (the manual directory) laid out like the MS-TCN action-segmentation data sets,
plus scores:

  <manual_dir>/
    mapping.txt               "<index> <class name>" per line; 7 classes,
                              index 0 = background, 1..6 = the WHO steps
    groundTruth/<video>.txt   one class name per frame
    features/<video>.npy      (D, T) float array (one column per frame)
    splits/train.bundle       video ids, one per line (".txt" suffix optional)
    splits/test.bundle
    scores.csv                header video,score,step1,...,step6 with attributes
                              NE/EN/ES; optional step1_score,...,step6_score

Pass it with `tfds.download.DownloadConfig(manual_dir=DIR)`, or build with
`python -m hhjax.data.build --config features --manual_dir DIR`.
`hhjax.data.layout.validate_manual_dir(DIR)` checks a folder and lists every problem.
"""


_AS_DESCRIPTION = """\
Public action-segmentation data sets in the layout of the MS-TCN release (Abu Farha and
Gall, CVPR 2019): GTEA, 50Salads and Breakfast, each video annotated per frame with an
action class and given as per-frame I3D features (2048-d, RGB + flow). There are no
assessment labels: every example has score 0, attributes 0 and unknown (-1) step
scores, kept only so that the examples share HHA300's keys and shapes.
"""

_AS_CITATION = """\
@inproceedings{farha2019mstcn,
  title     = {{MS-TCN}: Multi-Stage Temporal Convolutional Network for Action
               Segmentation},
  author    = {Abu Farha, Yazan and Gall, Juergen},
  booktitle = {CVPR},
  year      = {2019}
}
"""

_AS_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The features and labels cannot be downloaded by the builder. Download the data folder
of the MS-TCN release (github.com/yabufarha/ms-tcn) and pass one data set's folder
(data/gtea, data/50salads or data/breakfast) as the manual directory:

  <manual_dir>/
    mapping.txt                   "<index> <class name>" per line
    groundTruth/<video>.txt       one class name per frame
    features/<video>.npy          (2048, T) I3D features (one column per frame)
    splits/train.split<k>.bundle  video file names (<video>.txt), one per line
    splits/test.split<k>.bundle

Pass it with `tfds.download.DownloadConfig(manual_dir=DIR)`, or `manual_dir=DIR` to
`hhjax.data.hha300.build(CONFIG, dataset="action_segmentation")`.
`hhjax.data.layout.validate_manual_dir(DIR, SPLITS, require_scores=False)` checks a
folder and lists every problem.
"""


@dataclasses.dataclass(eq=False)
class LayoutConfig(tfds.core.BuilderConfig):
  """Where a config's data comes from (the fields both builders share).

  Attributes:
    source: "manual" (read the manual directory) or "synthetic" (generate it).
    preset: for "synthetic", the key of `hhjax.data.synthetic.PRESETS` to generate;
      None for "manual".
    splits: the split bundles to build; None: every bundle in the folder's `splits/`.
  """

  source: str = "manual"
  preset: str | None = None
  splits: tuple[str, ...] | None = SPLITS

  def __post_init__(self):
    kind = type(self).__name__
    if self.source not in _SOURCES:
      raise ValueError(f"{kind} {self.name!r}: source must be one of {_SOURCES}, "
                       f"got {self.source!r}")
    if self.source == "synthetic":
      if not isinstance(self.preset, str) or not self.preset:
        raise ValueError(f"{kind} {self.name!r}: a synthetic config needs the "
                         f"name of a synthetic preset, got preset={self.preset!r}")
    elif self.preset is not None:
      raise ValueError(f"{kind} {self.name!r}: preset={self.preset!r} only "
                       "applies to source='synthetic'")


@dataclasses.dataclass(eq=False)
class Hha300Config(LayoutConfig):
  """A HHA300 config. With `splits=None` every bundle becomes a split; they must then
  be disjoint (e.g. the `fold<k>` bundles of `hhjax.data.compose`)."""


def mstcn_bundles(num_splits: int) -> tuple[str, ...]:
  """The bundle names of MS-TCN's k-fold splits: `train.split1`, `test.split1`, ..."""
  return tuple(f"{part}.split{k}" for k in range(1, num_splits + 1)
               for part in ("train", "test"))


@dataclasses.dataclass(eq=False)
class ActionSegmentationConfig(LayoutConfig):
  """An `action_segmentation` config: always a manual directory, never scores.

  Attributes:
    num_classes: the release's class count (documentation; mapping.txt decides).
    num_splits: the release's number of cross-validation splits; None for a folder of
      any bundles (`mstcn_format`).
    sample_rate: MS-TCN's frame stride for this data set (`config.dataset.frame_stride`).
  """

  num_classes: int | None = None
  num_splits: int | None = None
  sample_rate: int = 1

  def __post_init__(self):
    super().__post_init__()
    if self.source != "manual":
      raise ValueError(f"ActionSegmentationConfig {self.name!r}: source must be "
                       f"'manual', got {self.source!r}")
    if self.num_splits is not None and self.splits != mstcn_bundles(self.num_splits):
      raise ValueError(f"ActionSegmentationConfig {self.name!r}: splits must be "
                       f"mstcn_bundles({self.num_splits}), got {self.splits!r}")
    if self.sample_rate < 1:
      raise ValueError(f"ActionSegmentationConfig {self.name!r}: sample_rate must be "
                       f">= 1, got {self.sample_rate}")


class LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What `Hha300` and `ActionSegmentation` share: one feature spec, ArrayRecord files,
  the input fingerprint written beside every build, and the manual directory reader.

  A subclass sets the TFDS attributes (`name`, `VERSION`, `BUILDER_CONFIGS`, ...),
  `_info` (with `_features()`), `validate_layout` and `_split_generators`.
  """

  # Nothing is downloaded, so there are no URL checksums. Saying so also keeps TFDS
  # from looking for a checksums file beside the code, which for a builder inside a
  # package needs the `importlib_resources` backport (absent on Python >= 3.9).
  url_infos = None

  def __init__(self, *, file_format=None, **kwargs):
    """Same arguments as `tfds.core.GeneratorBasedBuilder`.

    Args:
      file_format: record file format; defaults to ArrayRecord (TFRecord, TFDS's own
        default, would need TensorFlow to write). A prepared copy keeps the format it
        was written in.
      **kwargs: passed on (`data_dir`, `config`, `version`).
    """
    super().__init__(file_format=file_format, **kwargs)
    self._generated_dirs: list[pathlib.Path] = []
    if file_format is None and not self.is_prepared():
      self.info.set_file_format(tfds.core.FileFormat.ARRAY_RECORD, override=True)

  @staticmethod
  def _features() -> tfds.features.FeaturesDict:
    """The example spec (see the module docstring)."""
    return tfds.features.FeaturesDict({
        "video": tfds.features.Text(),
        # Two unknown dimensions need an explicit encoding; raw bytes keep the
        # float32 values exact and cost nothing to decode.
        "features": tfds.features.Tensor(shape=(None, None), dtype=np.float32,
                                         encoding="bytes"),
        "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "score": tfds.features.Scalar(dtype=np.float32),
        "attributes": tfds.features.Tensor(shape=(layout.NUM_STEPS,), dtype=np.int32),
        "step_scores": tfds.features.Tensor(shape=(layout.NUM_STEPS,),
                                            dtype=np.float32),
        "num_frames": tfds.features.Scalar(dtype=np.int32),
    })

  @classmethod
  def validate_layout(cls, root: pathlib.Path, splits: Sequence[str], *,
                      check_values: bool = True) -> layout.LayoutSummary:
    """Checks a manual directory as this builder reads it (raises `LayoutError`)."""
    raise NotImplementedError

  def download_and_prepare(self, **kwargs) -> None:
    """Builds the data set (see `tfds.core.DatasetBuilder.download_and_prepare`).

    Folders generated for the synthetic configs are removed afterwards, also when the
    build fails.

    Args:
      **kwargs: as for `tfds.core.DatasetBuilder.download_and_prepare`.
    """
    try:
      super().download_and_prepare(**kwargs)
    finally:
      while self._generated_dirs:
        shutil.rmtree(self._generated_dirs.pop(), ignore_errors=True)

  def _download_and_prepare(self, dl_manager, download_config=None) -> None:
    """Generates the splits, then records the inputs' fingerprint beside them.

    TFDS calls this with `self.data_dir` pointing at its temporary folder, which it
    renames into place only when everything succeeded, so a finished build always has
    its fingerprint. The inputs are fingerprinted before they are read: a file edited
    while the build runs then shows up as a change the next time.
    """
    config = self.builder_config
    manual = _manual_root(dl_manager) if config.source == "manual" else None
    fingerprint = input_fingerprint(config, manual, version=self.version)
    super()._download_and_prepare(dl_manager, download_config)
    _write_fingerprint(pathlib.Path(os.fspath(self.data_dir)), fingerprint)

  def _layout_dir(self, dl_manager) -> pathlib.Path:
    """The manual directory to read."""
    return _manual_root(dl_manager)


class Hha300(LayoutBuilder):
  """HHA300 features, frame labels and assessment scores (ArrayRecord, no TensorFlow)."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: features, handwash, synthetic and synthetic_small "
               "configs.",
  }
  BUILDER_CONFIGS = [
      Hha300Config(
          name="features",
          description="Real data: per-frame features read from the manual directory.",
          source="manual"),
      Hha300Config(
          name="handwash",
          description="Whole washes composed from single-step clips by "
                      "hhjax.data.compose, read from the manual directory; one split per "
                      "bundle found (fold0, fold1, ... for cross-validation).",
          source="manual", splits=None),
      Hha300Config(
          name="synthetic",
          description="Synthetic stand-in of HHA300's size (225 train / 75 test).",
          source="synthetic", preset="synthetic"),
      Hha300Config(
          name="synthetic_small",
          description="Small synthetic set for demos and quick runs.",
          source="synthetic", preset="synthetic_small"),
  ]
  DEFAULT_CONFIG_NAME = "features"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=self._features(),
        # Filled in `_split_generators` once the layout has been read.
        metadata=tfds.core.MetadataDict(),
        homepage="https://arxiv.org/abs/2209.12221",
        citation=_CITATION,
    )

  @classmethod
  def validate_layout(cls, root: pathlib.Path, splits: Sequence[str], *,
                      check_values: bool = True) -> layout.LayoutSummary:
    """Checks a HHA300 folder: scores.csv and seven classes required."""
    return layout.validate_manual_dir(root, splits, num_classes=NUM_CLASSES,
                                      check_values=check_values)

  def _layout_dir(self, dl_manager) -> pathlib.Path:
    """The manual directory to read: the user's, or a freshly generated one."""
    config = self.builder_config
    if config.source == "manual":
      return _manual_root(dl_manager)
    # Imported here: the generator is needed only to build the synthetic configs.
    from hhjax.data import synthetic   # pylint: disable=g-import-not-at-top
    preset = _synthetic_preset(config)
    parent = pathlib.Path(dl_manager.download_dir)
    parent.mkdir(parents=True, exist_ok=True)
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{_NAME}_{config.name}_",
                                            dir=parent))
    self._generated_dirs.append(out_dir)
    synthetic.write_layout(out_dir, preset)
    return out_dir

  def _split_generators(self, dl_manager):
    root = self._layout_dir(dl_manager)
    # Check everything (values included) before writing anything, so one run lists
    # every problem of the folder.
    splits = self.builder_config.splits or layout.list_splits(root)
    summary = self.validate_layout(root, splits)
    self.info.metadata["class_names"] = list(summary.class_names)
    self.info.metadata["attribute_names"] = list(layout.ATTRIBUTES)
    self.info.metadata["feature_dim"] = summary.feature_dim
    return {split: self._generate_examples(root, split) for split in splits}

  def _generate_examples(self, root: pathlib.Path, split: str):
    yield from layout.iter_examples(root, split, num_classes=NUM_CLASSES)


class ActionSegmentation(LayoutBuilder):
  """GTEA, 50Salads and Breakfast in the MS-TCN layout: features and frame labels."""

  name = ACTION_SEGMENTATION
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: gtea, 50salads, breakfast and mstcn_format configs.",
  }
  BUILDER_CONFIGS = [
      ActionSegmentationConfig(
          name="gtea",
          description="GTEA (MS-TCN release): 28 videos, 11 classes, 4 splits.",
          splits=mstcn_bundles(4), num_classes=11, num_splits=4, sample_rate=1),
      ActionSegmentationConfig(
          name="50salads",
          description="50Salads (MS-TCN release): 50 videos, 19 classes, 5 splits; "
                      "MS-TCN trains on every 2nd frame.",
          splits=mstcn_bundles(5), num_classes=19, num_splits=5, sample_rate=2),
      ActionSegmentationConfig(
          name="breakfast",
          description="Breakfast (MS-TCN release): 1712 videos, 48 classes, 4 splits.",
          splits=mstcn_bundles(4), num_classes=48, num_splits=4, sample_rate=1),
      ActionSegmentationConfig(
          name="mstcn_format",
          description="Any folder in the MS-TCN layout; every bundle found is a split.",
          splits=None),
  ]
  DEFAULT_CONFIG_NAME = "mstcn_format"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _AS_MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_AS_DESCRIPTION,
        features=self._features(),
        # Filled in `_split_generators` once the layout has been read.
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/yabufarha/ms-tcn",
        citation=_AS_CITATION,
    )

  @classmethod
  def validate_layout(cls, root: pathlib.Path, splits: Sequence[str], *,
                      check_values: bool = True) -> layout.LayoutSummary:
    """Checks a folder of the MS-TCN release: no scores.csv needed, any class count;
    `train.split<k>` and `test.split<k>` must not share a video."""
    return layout.validate_manual_dir(root, splits, check_values=check_values,
                                      require_scores=False)

  def _split_generators(self, dl_manager):
    root = self._layout_dir(dl_manager)
    config = self.builder_config
    bundles = config.splits or layout.list_splits(root)
    # Everything (values included) is checked before anything is written.
    summary = self.validate_layout(root, bundles)
    plan = plan_splits(summary.splits, root)
    class_names = list(summary.class_names)
    metadata = self.info.metadata
    metadata["class_names"] = class_names
    metadata["attribute_names"] = list(layout.ATTRIBUTES)
    metadata["feature_dim"] = summary.feature_dim
    metadata["has_scores"] = summary.has_scores
    metadata["background_classes"] = [i for i, n in enumerate(class_names)
                                      if n == BACKGROUND_CLASS_NAME]
    metadata["sample_rate"] = config.sample_rate
    metadata["bundles"] = dict(plan.names)
    metadata["split_expressions"] = dict(plan.expressions)
    return {name: self._generate_examples(root, bundle)
            for name, bundle in plan.stored.items()}

  def _generate_examples(self, root: pathlib.Path, bundle: str):
    yield from layout.iter_examples(root, bundle, require_scores=False)


# Every builder of this module by its TFDS name.
BUILDERS: dict[str, type[LayoutBuilder]] = {
    b.name: b for b in (Hha300, ActionSegmentation)}


def _builder_class(dataset: str) -> type[LayoutBuilder]:
  """The builder called `dataset`; ValueError naming the known ones otherwise."""
  if dataset not in BUILDERS:
    raise ValueError(f"unknown data set {dataset!r}; known: {sorted(BUILDERS)}")
  return BUILDERS[dataset]


def make_builder(config_name: str, data_dir: str | None = None,
                 dataset: str = _NAME) -> LayoutBuilder:
  """Returns the `<dataset>/<config_name>` builder (nothing is built yet).

  Args:
    config_name: a config of `dataset`: for "hha300" "features", "handwash",
      "synthetic" or "synthetic_small"; for "action_segmentation" "gtea", "50salads",
      "breakfast" or "mstcn_format".
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, if None).
    dataset: "hha300" or "action_segmentation".

  Raises:
    ValueError: unknown data set or config name.
  """
  builder_config(config_name, dataset)   # a clear error for an unknown name
  return _builder_class(dataset)(config=config_name, data_dir=data_dir)


def builder_config(config_name: str, dataset: str = _NAME) -> LayoutConfig:
  """The config called `config_name`; ValueError naming the known ones otherwise."""
  configs = {c.name: c for c in _builder_class(dataset).BUILDER_CONFIGS}
  if config_name not in configs:
    raise ValueError(f"unknown {dataset} config {config_name!r}; known: {list(configs)}")
  return configs[config_name]


# --- split names -----------------------------------------------------------------------

def tfds_split_name(bundle: str) -> str:
  """The TFDS split name of a bundle: every character but letters, digits and `_`
  becomes `_` (`train.split1` -> `train_split1`)."""
  return re.sub(r"[^A-Za-z0-9_]", "_", bundle)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """How `ActionSegmentation` stores a folder's bundles.

  Attributes:
    names: bundle -> TFDS split name, for every bundle.
    stored: TFDS split name -> bundle, for the splits written to disk.
    expressions: TFDS split name -> the TFDS split that reads it: the name itself for
      a stored split, a sum of stored ones (`a+b+c`) for the others.
  """

  names: Mapping[str, str]
  stored: Mapping[str, str]
  expressions: Mapping[str, str]


def plan_splits(bundles: Mapping[str, Sequence[str]],
                root: str | os.PathLike | None = None) -> SplitPlan:
  """Decides which bundles to store and which to serve as sums of stored ones.

  Bundles are visited from the smallest; one that is exactly the union of stored
  bundles that do not overlap (MS-TCN's `train.split<k>`: the other test splits) is
  served as their sum, any other is stored. So the MS-TCN releases keep each video once,
  and any other set of bundles is still served whole.

  Args:
    bundles: bundle name -> its video ids (`LayoutSummary.splits`).
    root: the manual directory, to name bundle files in errors.

  Returns:
    A `SplitPlan`.

  Raises:
    hhjax.data.layout.LayoutError: two bundles map to one TFDS split name.
  """
  names = {b: tfds_split_name(b) for b in bundles}
  by_name: dict[str, list[str]] = {}
  for bundle, name in names.items():
    by_name.setdefault(name, []).append(bundle)
  clashes = {n: bs for n, bs in by_name.items() if len(bs) > 1}
  if clashes:
    folder = pathlib.Path(root or ".") / layout.SPLITS_DIR
    raise layout.LayoutError([
        f"{', '.join(str(folder / (b + layout.BUNDLE_SUFFIX)) for b in bs)}: these "
        f"bundles would all be TFDS split {n!r} (only letters, digits and '_' are "
        "kept); rename one" for n, bs in clashes.items()])
  order = sorted(bundles, key=lambda b: (len(bundles[b]), list(bundles).index(b)))
  stored: dict[str, str] = {}
  expressions: dict[str, str] = {}
  for bundle in order:
    wanted = set(bundles[bundle])
    parts = [n for n, b in stored.items() if set(bundles[b]) <= wanted]
    covered = [v for n in parts for v in bundles[stored[n]]]
    if parts and len(covered) == len(set(covered)) and set(covered) == wanted:
      expressions[names[bundle]] = "+".join(parts)
    else:
      stored[names[bundle]] = bundle
      expressions[names[bundle]] = names[bundle]
  # Keep the folder's order for the names (metadata, listings).
  ordered = {names[b]: expressions[names[b]] for b in bundles}
  return SplitPlan(names=names, stored={n: stored[n] for n in ordered if n in stored},
                   expressions=ordered)


def resolve_split(builder: tfds.core.DatasetBuilder, split: str) -> str:
  """The TFDS split to read for `split` of a prepared builder.

  A name of `info.metadata["split_expressions"]` (or a bundle name such as
  `train.split1`) becomes its stored split or sum of stored splits; anything else
  (a stored split, a TFDS expression such as `"train[:10]"` or `"fold1+fold2"`) is
  returned as it is.

  Raises:
    ValueError: `split` names none of the builder's splits (listing them).
  """
  metadata = builder.info.metadata or {}
  expressions = metadata.get("split_expressions") or {}
  bundles = metadata.get("bundles") or {}
  name = bundles.get(split, split)
  if name in expressions:
    return expressions[name]
  known = list(expressions) or list(builder.info.splits)
  plain = re.fullmatch(r"[\w-]+", split) is not None
  if plain and split not in builder.info.splits:
    raise ValueError(f"{builder.name}/{builder.builder_config.name} has no split "
                     f"{split!r}; known: {known}")
  return split


def _natural_key(text: str):
  """Sort key reading digit runs as numbers (`split10` after `split9`)."""
  return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def cv_splits(config_name: str, manual_dir: str | os.PathLike | None = None
              ) -> list[tuple[str, str]]:
  """The cross-validation splits of an `action_segmentation` config.

  Args:
    config_name: "gtea" (4 splits), "50salads" (5), "breakfast" (4) or
      "mstcn_format" (the folder's `train.<x>` / `test.<x>` bundle pairs).
    manual_dir: the folder; needed (only) for "mstcn_format".

  Returns:
    `[(train split, test split), ...]` as TFDS split names, in split order, e.g.
    `[("train_split1", "test_split1"), ...]`: the values for
    `config.dataset.train_split` and `config.dataset.eval_split`.

  Raises:
    ValueError: unknown config, or "mstcn_format" without `manual_dir`.
    hhjax.data.layout.LayoutError: the folder has no bundles, or no train/test pair.
  """
  config = builder_config(config_name, ACTION_SEGMENTATION)
  if config.num_splits is not None:
    return [(f"train_split{k}", f"test_split{k}")
            for k in range(1, config.num_splits + 1)]
  if manual_dir is None:
    raise ValueError(f"{ACTION_SEGMENTATION}/{config_name}: listing its splits needs "
                     "the manual directory")
  bundles = layout.list_splits(manual_dir)
  suffixes = sorted({b[len("train."):] for b in bundles if b.startswith("train.")}
                    & {b[len("test."):] for b in bundles if b.startswith("test.")},
                    key=_natural_key)
  if not suffixes:
    raise layout.LayoutError(
        f"{pathlib.Path(manual_dir) / layout.SPLITS_DIR}: no train.<x> / test.<x> "
        f"bundle pair (found {', '.join(bundles)})")
  return [(tfds_split_name(f"train.{s}"), tfds_split_name(f"test.{s}"))
          for s in suffixes]


# --- input fingerprints ----------------------------------------------------------------

class StaleBuildError(ValueError):
  """A prepared build was made from other inputs than the current ones.

  Raised by `build` and `load_source` with `on_change="error"` instead of rebuilding.

  Attributes:
    config_name: the config (of `dataset`).
    data_dir: the prepared copy's folder (`builder.data_dir`).
    changes: what differs, one phrase each, e.g. "manual directory changed
      (groundTruth/v3.txt modified)".
    dataset: the builder, "hha300" or "action_segmentation".
  """

  def __init__(self, config_name: str, data_dir: str, changes: Sequence[str],
               dataset: str = _NAME):
    self.config_name = config_name
    self.data_dir = data_dir
    self.changes = tuple(changes)
    self.dataset = dataset
    command = (" (`python -m hhjax.data.build --on-change rebuild`)"
               if dataset == _NAME else "")
    super().__init__(
        f"{dataset}/{config_name} in {data_dir} was built from other inputs: "
        + "; ".join(self.changes) + f". Rebuild it with on_change='rebuild'{command} "
        "or delete that folder.")


def _manual_root(dl_manager) -> pathlib.Path:
  """The manual directory TFDS hands the builder, resolved."""
  try:
    return pathlib.Path(os.fspath(dl_manager.manual_dir)).resolve()
  except AssertionError as e:   # TFDS's way of saying the folder is absent/empty
    raise layout.LayoutError(str(e)) from e


def _synthetic_preset(config: LayoutConfig):
  """The `hhjax.data.synthetic.SyntheticConfig` a synthetic config generates."""
  # Imported here: the generator is needed only for the synthetic configs.
  from hhjax.data import synthetic   # pylint: disable=g-import-not-at-top
  if config.preset not in synthetic.PRESETS:
    raise ValueError(f"hha300/{config.name}: no synthetic preset {config.preset!r}; "
                     f"known: {sorted(synthetic.PRESETS)}")
  return synthetic.PRESETS[config.preset]


def _file_entry(path: pathlib.Path, hash_contents: bool) -> dict | None:
  """Size and either a SHA-256 of the contents or mtime_ns; None if there is no file.

  The big .npy feature files are only stat'ed (cheap even for thousands of 2048-d
  videos); text files are small, and hashing them also catches an edit that keeps the
  size and the timestamp (e.g. a copy with preserved times).
  """
  if not path.is_file():
    return None
  stat = path.stat()
  if hash_contents:
    return {"size": stat.st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
  return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _manual_inputs(root: pathlib.Path, splits: Sequence[str] | None) -> dict:
  """The files a manual config reads from `root`, by name relative to it.

  A file that is missing, or a bundle that cannot be parsed, is simply left out (or
  recorded as it is): the fingerprint only has to differ when the inputs differ, and
  the build itself reports what is wrong with the folder.
  """
  files: dict[str, dict] = {}

  def add(relative: str, hash_contents: bool):
    entry = _file_entry(root / relative, hash_contents)
    if entry is not None:
      files[relative] = entry

  add(layout.MAPPING_FILE, True)
  add(layout.SCORES_FILE, True)
  if splits is None:
    try:
      splits = layout.list_splits(root)
    except layout.LayoutError:
      splits = ()
  videos: dict[str, None] = {}   # an ordered set
  for split in splits:
    add(f"{layout.SPLITS_DIR}/{split}{layout.BUNDLE_SUFFIX}", True)
    try:
      videos.update(dict.fromkeys(layout.read_split(root, split)))
    except layout.LayoutError:
      pass
  for video in videos:
    add(f"{layout.GROUND_TRUTH_DIR}/{video}.txt", True)
    add(f"{layout.FEATURES_DIR}/{video}.npy", False)
  return {"manual_dir": str(root), "files": files}


def _canonical(value) -> str:
  return json.dumps(value, sort_keys=True, separators=(",", ":"))


def input_fingerprint(config: LayoutConfig | str, manual_dir: str | os.PathLike | None
                      = None, *, version: tfds.core.Version | str | None = None,
                      dataset: str | None = None) -> dict:
  """Fingerprints what building `config` would read now.

  Args:
    config: a config of `dataset`, or its name.
    manual_dir: the manual directory (needed by the manual configs, ignored otherwise);
      recorded resolved, so the same folder named two ways fingerprints alike.
    version: builder version (default: the `dataset` builder's `VERSION`).
    dataset: "hha300" or "action_segmentation"; default: the builder of a config
      object's class, "hha300" for a name.

  Returns:
    A JSON-ready dict: `format`, `config`, `version`, `source`, `inputs` (manual: the
    resolved `manual_dir` and `files`, name -> size plus sha256 or mtime_ns; synthetic:
    `preset`, `generator_version` and the preset's `fields`), `digest` (SHA-256 of the
    canonical JSON of all those) and `summary` (a short human-readable account, not
    part of the digest).

  Raises:
    ValueError: unknown config or preset, or a manual config without `manual_dir`.
  """
  if dataset is None:
    dataset = (ACTION_SEGMENTATION if isinstance(config, ActionSegmentationConfig)
               else _NAME)
  if isinstance(config, str):
    config = builder_config(config, dataset)
  if config.source == "manual":
    if manual_dir is None:
      raise ValueError(f"{dataset}/{config.name}: fingerprinting needs the manual "
                       "directory")
    root = pathlib.Path(manual_dir).expanduser().resolve()
    inputs = _manual_inputs(root, config.splits)
    summary = {"manual_dir": str(root), "files": len(inputs["files"])}
  else:
    from hhjax.data import synthetic   # pylint: disable=g-import-not-at-top
    preset = _synthetic_preset(config)
    inputs = {"preset": config.preset, "generator_version": synthetic.GENERATOR_VERSION,
              "fields": dataclasses.asdict(preset)}
    summary = {"preset": config.preset, "generator_version": synthetic.GENERATOR_VERSION,
               "videos": preset.num_train + preset.num_test}
  body = {"format": _FINGERPRINT_FORMAT, "config": config.name,
          "version": str(version or _builder_class(dataset).VERSION),
          "source": config.source,
          "inputs": inputs}
  body = json.loads(_canonical(body))   # tuples -> lists, as a stored copy reads back
  digest = hashlib.sha256(_canonical(body).encode()).hexdigest()
  return {**body, "digest": digest, "summary": summary}


def _write_fingerprint(build_dir: pathlib.Path, fingerprint: dict) -> None:
  (build_dir / FINGERPRINT_FILE).write_text(
      json.dumps(fingerprint, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def read_fingerprint(build_dir: str | os.PathLike) -> dict | None:
  """The fingerprint stored with a prepared build, or None if it has none.

  Raises:
    ValueError: the file exists but is not a JSON object (names the file).
  """
  path = pathlib.Path(os.fspath(build_dir)) / FINGERPRINT_FILE
  if not path.is_file():
    return None
  try:
    stored = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: unreadable input fingerprint ({e})") from e
  if not isinstance(stored, dict):
    raise ValueError(f"{path}: unreadable input fingerprint (not a JSON object)")
  return stored


def _named(names: Sequence[str], what: str) -> str:
  """One phrase for files changed alike, naming at most `_MAX_NAMED` of them.

  E.g. `a.txt modified`, or `3 files added: a.txt, b.txt, c.txt`.
  """
  names = sorted(names)
  if len(names) == 1:
    return f"{names[0]} {what}"
  shown = ", ".join(names[:_MAX_NAMED])
  more = f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
  return f"{len(names)} files {what}: {shown}{more}"


def _manual_changes(old: dict, new: dict) -> list[str]:
  old_files = old.get("files") if isinstance(old.get("files"), dict) else {}
  new_files = new["files"]
  parts = []
  for names, what in (
      ([n for n in new_files if n not in old_files], "added"),
      ([n for n in old_files if n not in new_files], "removed"),
      ([n for n in new_files if n in old_files and old_files[n] != new_files[n]],
       "modified")):
    if names:
      parts.append(_named(names, what))
  detail = f" ({'; '.join(parts)})" if parts else ""
  if old.get("manual_dir") != new["manual_dir"]:
    return [f"manual directory changed from {old.get('manual_dir')} to "
            f"{new['manual_dir']}{detail}"]
  return [f"manual directory changed{detail}"] if parts else []


def _synthetic_changes(old: dict, new: dict) -> list[str]:
  changes = []
  if old.get("preset") != new["preset"]:
    changes.append(f"synthetic preset changed from {old.get('preset')!r} to "
                   f"{new['preset']!r}")
  if old.get("generator_version") != new["generator_version"]:
    changes.append(f"synthetic generator version changed from "
                   f"{old.get('generator_version')} to {new['generator_version']}")
  old_fields = old.get("fields") if isinstance(old.get("fields"), dict) else {}
  new_fields = new["fields"]
  fields = [f"{k}: {old_fields.get(k)} -> {new_fields.get(k)}"
            for k in sorted(set(old_fields) | set(new_fields))
            if old_fields.get(k) != new_fields.get(k)]
  if fields:
    changes.append(f"synthetic preset {new['preset']!r} changed ({'; '.join(fields)})")
  return changes


def describe_changes(stored: dict | None, current: dict) -> list[str]:
  """What differs between a stored fingerprint and the current one; [] if nothing.

  Args:
    stored: `read_fingerprint`'s result for a prepared build (None: it has none).
    current: `input_fingerprint` of the inputs now.

  Returns:
    One phrase per difference, naming the files added, removed or modified, a moved
    manual directory, changed synthetic fields or versions.
  """
  if stored is None:
    return [f"no input fingerprint ({FINGERPRINT_FILE}; built by an older hhjax)"]
  if stored.get("format") != current["format"]:
    return [f"input fingerprint format changed from {stored.get('format')} to "
            f"{current['format']}"]
  if stored.get("digest") == current["digest"]:
    return []
  changes = []
  if stored.get("version") != current["version"]:
    changes.append(f"builder version changed from {stored.get('version')} to "
                   f"{current['version']}")
  old = stored.get("inputs") if isinstance(stored.get("inputs"), dict) else {}
  if stored.get("source") != current["source"]:
    changes.append(f"data source changed from {stored.get('source')} to "
                   f"{current['source']}")
  elif current["source"] == "manual":
    changes += _manual_changes(old, current["inputs"])
  else:
    changes += _synthetic_changes(old, current["inputs"])
  return changes or ["input fingerprint differs"]


# --- building --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What `ensure_built` did.

  Attributes:
    builder: the prepared builder; `builder.data_dir` is where the files are.
    action: "reused" (a prepared copy matched the inputs), "built" (nothing was
      prepared yet) or "rebuilt" (a copy made from other inputs was replaced).
    changes: for "rebuilt", what differed (as printed to stderr); empty otherwise.
  """

  builder: LayoutBuilder
  action: str
  changes: tuple[str, ...] = ()


def _resolve_manual_dir(builder: LayoutBuilder, manual_dir: str | None,
                        stored: dict | None) -> pathlib.Path:
  """The folder a manual config reads: `manual_dir`, or else TFDS's default.

  TFDS's default is `<data_dir>/downloads/manual`. When that folder is absent or empty
  and a prepared copy records the folder it was built from, that folder is checked
  instead, so a copy built with an explicit `manual_dir` can be opened without
  repeating it (and is still rebuilt when that folder changed).
  """
  if manual_dir is not None:
    return pathlib.Path(manual_dir).expanduser().resolve()
  default = pathlib.Path(os.fspath(builder.data_dir_root)) / "downloads" / "manual"
  inputs = (stored or {}).get("inputs")
  recorded = inputs.get("manual_dir") if isinstance(inputs, dict) else None
  if (default.is_dir() and any(default.iterdir())) or not isinstance(recorded, str):
    return default.resolve()
  return pathlib.Path(recorded)


def _check_manual_dir(root: pathlib.Path, builder: LayoutBuilder,
                      structure: bool) -> None:
  """Fails early on a manual directory that cannot be built from.

  Args:
    root: the folder.
    builder: the builder of a manual config.
    structure: also check the layout (headers only, not the values), as done before
      a prepared copy is deleted, so unusable new inputs leave the old copy in place.

  Raises:
    hhjax.data.layout.LayoutError: naming the problems.
  """
  if not root.is_dir():
    raise layout.LayoutError(f"manual directory {root} does not exist (or is not a "
                             "directory)")
  if structure:
    splits = builder.builder_config.splits or layout.list_splits(root)
    builder.validate_layout(root, splits, check_values=False)


def ensure_built(config_name: str, data_dir: str | None = None,
                 manual_dir: str | None = None, *,
                 on_change: str = "rebuild", dataset: str = _NAME) -> BuildResult:
  """Makes sure `<dataset>/<config_name>` is built from the current inputs.

  A prepared copy is reused only if its stored fingerprint matches the inputs now (see
  the module docstring); otherwise it is rebuilt, or `StaleBuildError` is raised.

  Args:
    config_name: a config of `dataset` (see `make_builder`).
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, if None).
    manual_dir: the manual directory; only for the manual configs (all but hha300's
      synthetic ones; default: TFDS's `<data_dir>/downloads/manual`, or, when that is
      absent or empty, the folder a prepared copy was built from).
    on_change: for a prepared copy made from other inputs: "rebuild" (delete it and
      build again, printing one line to stderr naming what changed) or "error".
    dataset: "hha300" (default) or "action_segmentation".

  Returns:
    A `BuildResult`: the prepared builder and whether it was reused, built or rebuilt.

  Raises:
    ValueError: unknown data set, config or `on_change`, or `manual_dir` given for a
      synthetic config.
    StaleBuildError: `on_change="error"` and the prepared copy is stale.
    hhjax.data.layout.LayoutError: the manual directory is absent or invalid (a
      prepared copy is then kept as it was).
  """
  if on_change not in ON_CHANGE:
    raise ValueError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
  builder = make_builder(config_name, data_dir, dataset)
  config = builder.builder_config
  manual = config.source == "manual"
  if manual_dir is not None and not manual:
    manual_names = [c.name for c in type(builder).BUILDER_CONFIGS if c.source == "manual"]
    raise ValueError(f"manual_dir applies only to the manual configs "
                     f"({', '.join(manual_names)}), not to {dataset}/{config_name}")
  prepared = builder.is_prepared()
  stored, unreadable = None, None
  if prepared:
    try:
      stored = read_fingerprint(builder.data_dir)
    except ValueError as e:
      unreadable = str(e)
  root = _resolve_manual_dir(builder, manual_dir, stored) if manual else None
  changes: tuple[str, ...] = ()
  if prepared:
    current = input_fingerprint(config, root, version=builder.version, dataset=dataset)
    changes = (unreadable,) if unreadable else tuple(describe_changes(stored, current))
    if not changes:
      return BuildResult(builder, "reused")
    if on_change == "error":
      raise StaleBuildError(config_name, str(builder.data_dir), changes, dataset)
    print(f"{dataset}/{config_name}: {'; '.join(changes)} - rebuilding", file=sys.stderr)
  if manual:
    _check_manual_dir(root, builder, structure=prepared)
  if prepared:
    shutil.rmtree(os.fspath(builder.data_dir))
    # Forget the deleted copy's info.
    builder = make_builder(config_name, data_dir, dataset)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(root) if root is not None else None))
  return BuildResult(builder, "rebuilt" if prepared else "built", changes)


def build(config_name: str, data_dir: str | None = None,
          manual_dir: str | None = None, *, on_change: str = "rebuild",
          dataset: str = _NAME) -> LayoutBuilder:
  """Builds `<dataset>/<config_name>` unless a copy of the current inputs is there.

  See `ensure_built`, which also says whether the copy was reused, built or rebuilt.

  Args:
    config_name: a config of `dataset` (see `make_builder`).
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, if None).
    manual_dir: the manual directory; only for the manual configs.
    on_change: "rebuild" (default) or "error" (raise `StaleBuildError`) when the
      prepared copy was made from other inputs.
    dataset: "hha300" (default) or "action_segmentation".

  Returns:
    The prepared builder; `builder.data_dir` is where the files are.

  Raises:
    ValueError: unknown config, or `manual_dir` given for a synthetic config.
    StaleBuildError: `on_change="error"` and the prepared copy is stale.
    hhjax.data.layout.LayoutError: the manual directory is absent or invalid.
  """
  return ensure_built(config_name, data_dir, manual_dir, on_change=on_change,
                      dataset=dataset).builder


def load_source(config_name: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None, *, on_change: str = "rebuild",
                dataset: str = _NAME):
  """Random-access source for one split, building the data set first if needed.

  Args:
    config_name: a config of `dataset` (see `make_builder`).
    split: "train" or "test" (or any TFDS split expression, e.g. "train[:10]" or
      "fold1+fold2"); for "action_segmentation" a split name such as
      "train_split1" (or its bundle name, "train.split1"), see `resolve_split`.
    data_dir: TFDS data directory (TFDS's default if None).
    manual_dir: the manual directory, for the manual configs.
    on_change: as for `build`: "rebuild" (default) or "error" when the prepared copy
      was made from other inputs.
    dataset: "hha300" (default) or "action_segmentation".

  Returns:
    A `tfds.data_source`-style source: `len(source)`, `source[i]` -> example dict of
    numpy values (see the module docstring).
  """
  builder = build(config_name, data_dir, manual_dir, on_change=on_change,
                  dataset=dataset)
  return builder.as_data_source(split=resolve_split(builder, split))
