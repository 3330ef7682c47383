"""TFDS builder for HHA300 (hand-hygiene step segmentation + assessment), no TensorFlow.

Importing this module registers the builder `hha300`, so afterwards

```python
import tensorflow_datasets as tfds
import hhjax.data.hha300  # registers "hha300"

builder = tfds.builder("hha300/synthetic_small", data_dir=DATA_DIR)
builder.download_and_prepare()
source = tfds.data_source("hha300/synthetic_small", data_dir=DATA_DIR)["train"]
```

works, or in one call `load_source("synthetic_small", "train", data_dir=DATA_DIR)`.
The files are ArrayRecord (this builder's default file format), which TFDS writes and
reads without TensorFlow; reading needs neither hhjax nor this module.

Configs:

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
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from hhjax.data import layout

_NAME = "hha300"
_SOURCES = ("manual", "synthetic")
NUM_CLASSES = 1 + layout.NUM_STEPS   # background + the six WHO steps
SPLITS = layout.DEFAULT_SPLITS

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


@dataclasses.dataclass(eq=False)
class Hha300Config(tfds.core.BuilderConfig):
  """Where a HHA300 config's data comes from.

  Attributes:
    source: "manual" (read the manual directory) or "synthetic" (generate it).
    preset: for "synthetic", the key of `hhjax.data.synthetic.PRESETS` to generate;
      None for "manual".
    splits: the split bundles to build; None: every bundle in the folder's `splits/`
      (they must be disjoint, e.g. the `fold<k>` bundles of `hhjax.data.compose`).
  """

  source: str = "manual"
  preset: str | None = None
  splits: tuple[str, ...] | None = SPLITS

  def __post_init__(self):
    if self.source not in _SOURCES:
      raise ValueError(f"Hha300Config {self.name!r}: source must be one of {_SOURCES}, "
                       f"got {self.source!r}")
    if self.source == "synthetic":
      if not isinstance(self.preset, str) or not self.preset:
        raise ValueError(f"Hha300Config {self.name!r}: a synthetic config needs the "
                         f"name of a synthetic preset, got preset={self.preset!r}")
    elif self.preset is not None:
      raise ValueError(f"Hha300Config {self.name!r}: preset={self.preset!r} only "
                       "applies to source='synthetic'")


class Hha300(tfds.core.GeneratorBasedBuilder):
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

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Text(),
            # Two unknown dimensions need an explicit encoding; raw bytes keep the
            # float32 values exact and cost nothing to decode.
            "features": tfds.features.Tensor(shape=(None, None), dtype=np.float32,
                                             encoding="bytes"),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "score": tfds.features.Scalar(dtype=np.float32),
            "attributes": tfds.features.Tensor(shape=(layout.NUM_STEPS,),
                                               dtype=np.int32),
            "step_scores": tfds.features.Tensor(shape=(layout.NUM_STEPS,),
                                                dtype=np.float32),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
        }),
        # Filled in `_split_generators` once the layout has been read.
        metadata=tfds.core.MetadataDict(),
        homepage="https://arxiv.org/abs/2209.12221",
        citation=_CITATION,
    )

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

  def _layout_dir(self, dl_manager) -> pathlib.Path:
    """The manual directory to read: the user's, or a freshly generated one."""
    config = self.builder_config
    if config.source == "manual":
      try:
        return pathlib.Path(dl_manager.manual_dir)
      except AssertionError as e:   # TFDS's way of saying the folder is absent/empty
        raise layout.LayoutError(str(e)) from e
    # Imported here: the generator is needed only to build the synthetic configs.
    from hhjax.data import synthetic   # pylint: disable=g-import-not-at-top
    if config.preset not in synthetic.PRESETS:
      raise ValueError(f"hha300/{config.name}: no synthetic preset {config.preset!r}; "
                       f"known: {sorted(synthetic.PRESETS)}")
    parent = pathlib.Path(dl_manager.download_dir)
    parent.mkdir(parents=True, exist_ok=True)
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{_NAME}_{config.name}_",
                                            dir=parent))
    self._generated_dirs.append(out_dir)
    synthetic.write_layout(out_dir, synthetic.PRESETS[config.preset])
    return out_dir

  def _split_generators(self, dl_manager):
    root = self._layout_dir(dl_manager)
    # Check everything (values included) before writing anything, so one run lists
    # every problem of the folder.
    splits = self.builder_config.splits or layout.list_splits(root)
    summary = layout.validate_manual_dir(root, splits, num_classes=NUM_CLASSES)
    self.info.metadata["class_names"] = list(summary.class_names)
    self.info.metadata["attribute_names"] = list(layout.ATTRIBUTES)
    self.info.metadata["feature_dim"] = summary.feature_dim
    return {split: self._generate_examples(root, split) for split in splits}

  def _generate_examples(self, root: pathlib.Path, split: str):
    yield from layout.iter_examples(root, split, num_classes=NUM_CLASSES)


def make_builder(config_name: str, data_dir: str | None = None) -> Hha300:
  """Returns the `hha300/<config_name>` builder (nothing is built yet).

  Args:
    config_name: "features", "handwash", "synthetic" or "synthetic_small".
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, if None).

  Raises:
    ValueError: unknown config name.
  """
  known = [c.name for c in Hha300.BUILDER_CONFIGS]
  if config_name not in known:
    raise ValueError(f"unknown hha300 config {config_name!r}; known: {known}")
  return Hha300(config=config_name, data_dir=data_dir)


def build(config_name: str, data_dir: str | None = None,
          manual_dir: str | None = None) -> Hha300:
  """Builds `hha300/<config_name>` unless it is already there; returns its builder.

  Args:
    config_name: "features", "handwash", "synthetic" or "synthetic_small".
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, if None).
    manual_dir: the manual directory; only for (and needed by) "features" and "handwash".

  Returns:
    The prepared builder; `builder.data_dir` is where the files are.

  Raises:
    ValueError: unknown config, or `manual_dir` given for a synthetic config.
    hhjax.data.layout.LayoutError: the manual directory is absent or invalid.
  """
  builder = make_builder(config_name, data_dir)
  if manual_dir is not None and builder.builder_config.source != "manual":
    raise ValueError(f"manual_dir applies only to the manual configs (features, "
                     f"handwash), not to hha300/{config_name}")
  if not builder.is_prepared():
    if manual_dir is not None and not pathlib.Path(manual_dir).is_dir():
      raise layout.LayoutError(f"manual directory {manual_dir} does not exist "
                               "(or is not a directory)")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def load_source(config_name: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None):
  """Random-access source for one split, building the data set first if needed.

  Args:
    config_name: "features", "handwash", "synthetic" or "synthetic_small".
    split: "train" or "test" (or any TFDS split expression, e.g. "train[:10]" or
      "fold1+fold2").
    data_dir: TFDS data directory (TFDS's default if None).
    manual_dir: the manual directory, for "features".

  Returns:
    A `tfds.data_source`-style source: `len(source)`, `source[i]` -> example dict of
    numpy values (see the module docstring).
  """
  return build(config_name, data_dir, manual_dir).as_data_source(split=split)
