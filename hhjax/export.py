r"""A trained model as one self-describing folder, and loading it back.

    python -m hhjax.export --workdir runs/handwash --out models/handwash \
        [--extract-manifest data/handwash_clips/extract_manifest.json] [--fps 30]

A model folder holds everything needed to assess a new video with the model (see
`hhjax.assess`), and nothing of the training run's state:

    params.msgpack       the parameters (flax.serialization's msgpack of the param tree)
    config.json          the full training config (as the workdir's config.json)
    feature_stats.npz    the inputs' mean and deviation (only when the config
                         standardises inputs, `dataset.standardize`)
    manifest.json        what the files are and how to recompute the model's inputs

`manifest.json` records the format version, the hhjax version that wrote it, the class
names, the video- and step-score ranges, the thresholds `hhjax.assess` applies to step
scores, the feature settings (`features`: the stream - "handpose", "i3d", or
"synthetic"/"unknown" for features no video can reproduce -, the frame rate the
features were sampled at (None: each video's own), `frame_stride`, the stream
selection `streams`, the model's input size, whether inputs are standardised, and the
extraction's provenance, i.e. `hhjax.extract.provenance` of the training features,
read from their `extract_manifest.json` when one is found, else the extractor's
defaults, marked as assumed), a summary of the training data with the code its
training ran (`training.code`, `hhjax.provenance`), the training step, and the SHA-256
and size of every other file.

`load(model_dir)` checks every file against its recorded hash and the parameters
against the config's model before returning a `LoadedModel`; a missing or altered file
raises `ExportError` naming each bad file. Training (`hhjax.training.loop`) writes the
folder at the end of every run into `<workdir>/export/`; `export_run(workdir, out_dir)`
writes it from a workdir's latest checkpoint.

Step-score thresholds. A step counts as done (not NE) when the model found a segment
for it and its score is at least `thresholds["done"]`; it is ES when the score is at
least `thresholds["es"]`, else EN. They are chosen from the training data when it is
known: for completeness-only scores (every step done is ES and scores the step
maximum, every step left out NE and 0, as in `hhjax.data.compose`'s washes) both sit
at half the step maximum, the midpoint between the two targets; for graded scores
(HHA300-style: ES when both key actions are done well, each key action's quality
>= 0.7; EN when at least one is poor) `done` is a quarter and `es` 0.7 of the step
maximum. `hhjax.assess` can override both.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from hhjax import provenance
from hhjax.data import pipeline

__all__ = [
  "ExportError",
  "FORMAT",
  "LoadedModel",
  "export_run",
  "input_dim",
  "load",
  "main",
  "save",
  "save_training_run",
]

FORMAT = 1
KIND = "hhjax-model"
PARAMS_FILE = "params.msgpack"
CONFIG_FILE = "config.json"
STATS_FILE = "feature_stats.npz"
MANIFEST_FILE = "manifest.json"
EXPORT_DIR = "export"          # inside a training workdir
NUM_STEPS = 6
ATTRIBUTES = ("NE", "EN", "ES")
# Fractions of the step maximum (see the module docstring).
COMPLETENESS_THRESHOLDS = dict(done=0.5, es=0.5)
GRADED_THRESHOLDS = dict(done=0.25, es=0.7)
STREAMS = ("handpose", "i3d", "synthetic", "unknown")
_PROBE_DIMS = (7, 11)          # input sizes used to find the model's input size


class ExportError(Exception):
  """A model folder cannot be written or loaded; the message names the file(s)."""


@dataclasses.dataclass
class LoadedModel:
  """A loaded model folder.

  Attributes:
    model: the `JointModel` that `config` describes.
    params: its parameter tree (NumPy arrays).
    config: the training config (`ml_collections.ConfigDict`).
    stats: the input statistics, or None when inputs are not standardised.
    manifest: `manifest.json` as a dict.
    path: the folder it was loaded from.
  """

  model: Any
  params: Any
  config: ml_collections.ConfigDict
  stats: pipeline.FeatureStats | None
  manifest: dict
  path: pathlib.Path | None = None

  @property
  def features(self) -> dict:
    """The manifest's feature settings (stream, fps, frame_stride, streams, ...)."""
    return self.manifest["features"]

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.manifest["class_names"])


# ---------------------------------------------------------------------------------------
# Helpers.


def _host(x) -> np.ndarray:
  """A NumPy copy of one leaf; a replicated array spanning several hosts gives this
  host's copy (a replicated array is the same everywhere)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(x)


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _hhjax_version() -> str:
  from hhjax import extract  # noqa: PLC0415
  return extract.hhjax_version()


def config_from_json(data: dict) -> ml_collections.ConfigDict:
  """A ConfigDict from a saved config's JSON (tuples come back as lists)."""
  return ml_collections.ConfigDict(data)


def input_dim(config, params) -> int:
  """The input size (D of (B, T, D) features) the parameters were built for.

  Found without knowing the segmenter: the model's abstract parameters are built for two
  probe sizes, a parameter axis that follows the probe gives D in `params`, and the
  whole tree is then checked at that D.

  Raises:
    ValueError: no parameter depends on the input size, or the parameters do not fit
      the config's model at any size (naming the first parameter that differs).
  """
  from hhjax.models.joint import create_model  # noqa: PLC0415
  model = create_model(config)
  flat = {jax.tree_util.keystr(p): np.shape(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  length = _init_length(config)
  probes = [_abstract_shapes(model, d, length) for d in _PROBE_DIMS]
  found = None
  for name, shape in probes[0].items():
    other = probes[1].get(name)
    if other is None or name not in flat or len(flat[name]) != len(shape):
      continue
    for axis, (a, b) in enumerate(zip(shape, other)):
      if (a, b) == _PROBE_DIMS:
        found = int(flat[name][axis])
        break
    if found is not None:
      break
  if found is None:
    raise ValueError("no parameter of the config's model depends on the input size")
  check_params(model, params, found, length)
  return found


def _init_length(config) -> int:
  """The sequence length training initialises the model with (its bucket size)."""
  return int(config.dataset.get("bucket_size", 256))


def _abstract_shapes(model, dim: int, length: int) -> dict[str, tuple[int, ...]]:
  x = jnp.zeros((1, length, dim), jnp.float32)
  mask = jnp.ones((1, length), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x, mask)["params"]
  return {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}


def check_params(model, params, dim: int, length: int = 256) -> None:
  """Raises ValueError naming the first parameter whose shape (or presence) differs
  from `model`'s at input size `dim` (initialised on `length` frames)."""
  want = _abstract_shapes(model, dim, length)
  have = {jax.tree_util.keystr(p): tuple(np.shape(v))
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  for name in sorted(set(want) | set(have)):
    if want.get(name) != have.get(name):
      raise ValueError(f"parameter {name}: the config's model at input size {dim} has "
                       f"shape {want.get(name, '(absent)')}, the parameters "
                       f"{have.get(name, '(absent)')}")


def _class_names(config, train) -> list[str]:
  """Class names: the training data's, else mapping.txt of the manual directory, else
  the HHA300 names for 7 classes, else "class k"."""
  num = int(config.model.num_classes)
  if train is not None and len(getattr(train, "class_names", ())) == num:
    return list(train.class_names)
  manual = config.dataset.get("manual_dir", "")
  if manual and (pathlib.Path(manual) / "mapping.txt").is_file():
    from hhjax.data import layout  # noqa: PLC0415
    try:
      names = list(layout.read_mapping(pathlib.Path(manual) / "mapping.txt"))
      if len(names) == num:
        return names
    except layout.LayoutError:
      pass
  from hhjax.data.synthetic import CLASS_NAMES  # noqa: PLC0415
  if num == len(CLASS_NAMES):
    return list(CLASS_NAMES)
  return ["background"] + [f"class {k}" for k in range(1, num)]


def _find_extract_manifest(config) -> pathlib.Path | None:
  """`<manual_dir>/extract_manifest.json` (written by `hhjax.extract --out manual_dir`)."""
  manual = config.dataset.get("manual_dir", "")
  if not manual:
    return None
  from hhjax import extract  # noqa: PLC0415
  path = pathlib.Path(manual) / extract.MANIFEST_FILE
  return path if path.is_file() else None


def _default_provenance(stream: str) -> dict | None:
  """The extractor's default settings for `stream` (weights unknown for I3D)."""
  from hhjax import extract  # noqa: PLC0415
  if stream == "handpose":
    args = extract.build_parser().parse_args(["--videos", ".", "--out", ".",
                                              "--stream", "handpose"])
    return extract.provenance(args)
  if stream == "i3d":
    args = extract.build_parser().parse_args(["--videos", ".", "--out", ".",
                                              "--random-weights"])
    settings = extract.provenance(args)
    settings["rgb_weights"] = settings["flow_weights"] = None   # not known
    return settings
  return None


def _raw_dim(config, dim: int) -> int:
  """Size of the stored features before the stream selection."""
  return 2 * dim if config.dataset.streams in ("rgb", "flow") else dim


def _infer_stream(config, raw_dim: int) -> str:
  from hhjax import handpose  # noqa: PLC0415
  from hhjax.models.backbones import i3d  # noqa: PLC0415
  if str(config.dataset.get("config", "")).startswith("synthetic"):
    return "synthetic"
  if raw_dim == handpose.FEATURE_DIM and config.dataset.streams == "all":
    return "handpose"
  if raw_dim == 2 * i3d.FEATURE_DIM and config.dataset.get("name") == "hha300":
    return "i3d"
  return "unknown"


def _training_summary(config, train, workdir: pathlib.Path | None, step: int | None
                      ) -> dict:
  """What the model was trained on: data set, split, sizes and score distribution, and
  the code its training ran (`hhjax.provenance.trained_with`, with a workdir)."""
  from hhjax.data import splits  # noqa: PLC0415
  out: dict[str, Any] = dict(
      dataset=f"{config.dataset.get('name', '')}/{config.dataset.get('config', '')}",
      manual_dir=str(config.dataset.get("manual_dir", "")),
      train_split=str(config.dataset.train_split),
      eval_split=str(config.dataset.eval_split), step=step)
  if workdir is not None:
    out["code"] = provenance.trained_with(workdir)
  if train is not None:
    attrs = np.asarray(train.attributes).reshape(-1)
    scores = np.asarray(train.scores, np.float64)
    out.update(videos=len(train.names), frames=int(np.sum(train.lengths)),
               has_scores=bool(getattr(train, "has_scores", True)),
               attributes={a: int(np.sum(attrs == i)) for i, a in enumerate(ATTRIBUTES)})
    if scores.size:
      out["video_score"] = dict(min=float(scores.min()), mean=round(float(scores.mean()), 4),
                                max=float(scores.max()))
  elif workdir is not None and (workdir / splits.STATS_FINGERPRINT_FILE).is_file():
    try:
      saved = json.loads((workdir / splits.STATS_FINGERPRINT_FILE).read_text())
      out.update(videos=saved.get("videos"), digest=saved.get("digest"))
    except (OSError, ValueError):
      pass
  return out


def _thresholds(config, train) -> dict:
  """Step-score thresholds (module docstring), absolute, with the reason."""
  lo, hi = config.dataset.get("score_range", (0.0, 6.0))
  # A step's score lies in [lo / 6, hi / 6] (hhjax.models.heads.scorers.to_score_range).
  step_lo, step_width = float(lo) / NUM_STEPS, (float(hi) - float(lo)) / NUM_STEPS
  basis, fractions = "graded", GRADED_THRESHOLDS
  if train is not None and getattr(train, "has_scores", True) and len(train.names):
    attrs = np.asarray(train.attributes).reshape(-1)
    step_scores = np.asarray(train.step_scores, np.float64).reshape(-1)
    known = step_scores >= 0          # missing per-step scores are stored negative
    done = attrs > 0
    completeness = (not np.any(attrs == 1) and
                    np.allclose(step_scores[known & done], step_lo + step_width) and
                    np.allclose(step_scores[known & ~done], step_lo))
    if completeness:
      basis, fractions = "completeness", COMPLETENESS_THRESHOLDS
  why = ("training scores are completeness only (done = step maximum, left out = 0): "
         "both thresholds at the midpoint" if basis == "completeness" else
         "graded scores: done from a quarter of the step maximum, ES from 0.7 of it "
         "(both key actions done well)")
  return dict(done=round(step_lo + fractions["done"] * step_width, 6),
              es=round(step_lo + fractions["es"] * step_width, 6), basis=basis,
              reason=why)


def _write_json(path: pathlib.Path, data) -> None:
  path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# Writing.


def save(out_dir: str | os.PathLike, params, config, *,
         stats: pipeline.FeatureStats | None = None, step=None, train=None,
         workdir: str | os.PathLike | None = None,
         extract_manifest: str | os.PathLike | None = None, stream: str | None = None,
         fps: float | None = None) -> pathlib.Path:
  """Writes a model folder (see the module docstring); replaces one already there.

  Args:
    out_dir: the folder to write.
    params: the model's parameter tree (device or NumPy arrays).
    config: the training config.
    stats: the input statistics (required when `config.dataset.standardize`).
    step: the training step of `params`.
    train: the training split (`hhjax.data.splits.SplitData`), for the class names, the
      training summary and the thresholds; optional.
    workdir: the training workdir (for the statistics' fingerprint when `train` is not
      given); optional.
    extract_manifest: the training features' `extract_manifest.json` (default:
      `<config.dataset.manual_dir>/extract_manifest.json` if it exists).
    stream: the feature stream, when neither the extraction manifest nor the config
      tells it.
    fps: the frame rate the training features were sampled at, when the extraction
      manifest does not record one (it records None for "the video's own").

  Returns:
    The folder.

  Raises:
    ExportError: standardised inputs without `stats`, an unreadable extraction
      manifest, or a stream that disagrees with it.
  """
  out_dir = pathlib.Path(out_dir)
  params = jax.tree.map(_host, serialization.to_state_dict(params))
  step = None if step is None else int(_host(step))
  if config.dataset.standardize and stats is None:
    raise ExportError(f"{out_dir}: config.dataset.standardize is set but no input "
                      "statistics were given (feature_stats.npz of the workdir)")
  try:
    dim = input_dim(config, params)
  except ValueError as e:
    raise ExportError(f"{out_dir}: the parameters do not fit the config's model: {e}"
                      ) from e
  if stats is not None and stats.mean.shape[0] != dim:
    raise ExportError(f"{out_dir}: the input statistics have D={stats.mean.shape[0]}, "
                      f"the model's input D={dim}")
  raw_dim = int(getattr(train, "raw_feature_dim", 0) or _raw_dim(config, dim))

  # Where the features came from.
  manifest_path = (pathlib.Path(extract_manifest) if extract_manifest is not None
                   else _find_extract_manifest(config))
  extraction, source = None, None
  if manifest_path is not None:
    from hhjax import extract  # noqa: PLC0415
    try:
      recorded = extract.read_manifest(manifest_path)
    except extract.RefusedError as e:
      raise ExportError(str(e)) from e
    if recorded is None:
      raise ExportError(f"{manifest_path}: no such extraction manifest")
    extraction, source = recorded["settings"], str(manifest_path)
  found_stream = (extraction or {}).get("stream")
  if stream is not None and found_stream is not None and stream != found_stream:
    raise ExportError(f"stream {stream!r} was given but {manifest_path} records "
                      f"{found_stream!r}")
  stream = stream or found_stream or _infer_stream(config, raw_dim)
  if stream not in STREAMS:
    raise ExportError(f"stream {stream!r}; expected one of {STREAMS}")
  if extraction is None:
    extraction = _default_provenance(stream)
    if extraction is not None:
      source = ("assumed: hhjax.extract's defaults (no extract_manifest.json was found "
                "beside the training features)")
  feature_fps = (extraction or {}).get("fps")
  if fps is not None:
    if feature_fps is not None and abs(float(fps) - float(feature_fps)) > 1e-6:
      raise ExportError(f"fps {fps} was given but the extraction sampled at "
                        f"{feature_fps} fps")
    feature_fps = float(fps)

  lo, hi = (float(v) for v in config.dataset.get("score_range", (0.0, 6.0)))
  manifest = dict(
      format=FORMAT, kind=KIND, hhjax=_hhjax_version(),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      model=_model_name(config), segmenter=str(config.model.get("segmenter",
                                                                "conv_transformer")),
      class_names=_class_names(config, train),
      score_range=[lo, hi], step_score_range=[lo / NUM_STEPS, hi / NUM_STEPS],
      thresholds=_thresholds(config, train),
      features=dict(stream=stream, fps=feature_fps,
                    frame_stride=int(config.dataset.frame_stride),
                    streams=str(config.dataset.streams), feature_dim=dim,
                    raw_feature_dim=raw_dim,
                    standardize=bool(config.dataset.standardize),
                    extraction=extraction, extraction_source=source),
      training=_training_summary(config, train,
                                 None if workdir is None else pathlib.Path(workdir), step),
      step=step, files={})

  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    (tmp / PARAMS_FILE).write_bytes(serialization.msgpack_serialize(params))
    _write_json(tmp / CONFIG_FILE, json.loads(config.to_json_best_effort()))
    names = [PARAMS_FILE, CONFIG_FILE]
    if config.dataset.standardize:
      stats.save(tmp / STATS_FILE)
      names.append(STATS_FILE)
    for name in names:
      manifest["files"][name] = dict(sha256=_sha256(tmp / name),
                                     bytes=(tmp / name).stat().st_size)
    _write_json(tmp / MANIFEST_FILE, manifest)
    old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    if out_dir.exists():
      os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def save_training_run(workdir: str | os.PathLike, params, config, *, stats=None,
                      step=None, train=None) -> pathlib.Path | None:
  """`save` into `<workdir>/export` at the end of a training run.

  A model folder that cannot be written must not undo a finished run: the reason is
  printed (with the command that writes the folder later) and None returned.
  """
  workdir = pathlib.Path(workdir)
  try:
    return save(workdir / EXPORT_DIR, params, config, stats=stats, step=step,
                train=train, workdir=workdir)
  except (ExportError, OSError) as e:
    print(f"warning: the model folder {workdir / EXPORT_DIR} was not written ({e}); "
          f"write it with `python -m hhjax.export --workdir {workdir}`",
          file=sys.stderr)
    return None


def _model_name(config) -> str:
  from hhjax import reporting  # noqa: PLC0415
  name = reporting.model_name(config)
  segmenter = config.model.get("segmenter", "conv_transformer")
  return name if segmenter == "conv_transformer" else f"{name}, segmenter {segmenter}"


def export_run(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               **kwargs) -> pathlib.Path:
  """Writes the model folder of a training workdir's latest checkpoint.

  Args:
    workdir: the training workdir (config.json, checkpoints/, feature_stats.npz).
    out_dir: the folder to write (default `<workdir>/export`).
    **kwargs: `extract_manifest`, `stream`, `fps` of `save`.

  Raises:
    ExportError: the workdir lacks its config, a checkpoint or its statistics.
  """
  from hhjax.data import splits  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  from hhjax.training import checkpointing, loop, state as state_lib  # noqa: PLC0415
  workdir = pathlib.Path(workdir)
  out_dir = workdir / EXPORT_DIR if out_dir is None else pathlib.Path(out_dir)
  config_path = workdir / loop.CONFIG_FILE
  if not config_path.is_file():
    raise ExportError(f"{config_path} is missing: {workdir} is not a training workdir")
  try:
    config = config_from_json(json.loads(config_path.read_text()))
  except ValueError as e:
    raise ExportError(f"{config_path}: cannot be read as a config ({e})") from e
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise ExportError(f"{ckpt_dir} is missing: no checkpoint to export")
  try:
    stats = splits.load_saved_stats(config, workdir)
  except FileNotFoundError as e:
    raise ExportError(str(e)) from e
  train = _open_training_split(config)
  dim = _workdir_input_dim(config, workdir, stats, train, kwargs.get("extract_manifest"))
  model = create_model(config)
  mesh = state_lib.make_mesh()
  template = state_lib.create_train_state(config, model, dim, mesh)
  ckpt = checkpointing.Checkpointer(ckpt_dir, every_steps=1)
  try:
    if ckpt.latest_step() is None:
      raise ExportError(f"{ckpt_dir} holds no checkpoint")
    try:
      state, _ = ckpt.restore(checkpointing.abstract_like(template))
    except ValueError as e:
      raise ExportError(f"{ckpt_dir}: the latest checkpoint does not fit the model of "
                        f"{config_path} at input size {dim} ({e})") from e
  finally:
    ckpt.close()
  return save(out_dir, state.params, config, stats=stats, step=state.step, train=train,
              workdir=workdir, **kwargs)


def _open_training_split(config):
  """The run's training split (its class names, summary and score kind set the
  manifest's thresholds), or None with a warning when it cannot be opened."""
  from hhjax.data import splits  # noqa: PLC0415
  try:
    return splits.load_split(config, config.dataset.train_split)
  except Exception as e:  # the data may be gone; the model can still be exported
    print(f"warning: the training split {config.dataset.train_split!r} of "
          f"{config.dataset.get('name', '')}/{config.dataset.get('config', '')} cannot be "
          f"opened ({type(e).__name__}: {e}); the manifest gets no training summary and "
          "the graded-score thresholds", file=sys.stderr)
    return None


def _workdir_input_dim(config, workdir: pathlib.Path, stats, train,
                       extract_manifest) -> int:
  """The model's input size in a training workdir: from its input statistics, the
  training split, the statistics' fingerprint or the extraction manifest.

  Raises:
    ExportError: none of them is available.
  """
  from hhjax import extract  # noqa: PLC0415
  from hhjax.data import splits  # noqa: PLC0415
  if stats is not None:
    return int(stats.mean.shape[0])
  if train is not None:
    return splits.feature_dim(config, train)

  def probe(raw: int) -> int:
    zeros = np.zeros((1, raw), np.float32)
    return int(pipeline.select_streams(zeros, config.dataset.streams).shape[-1])

  fingerprint = workdir / splits.STATS_FINGERPRINT_FILE
  if fingerprint.is_file():
    try:
      return probe(int(json.loads(fingerprint.read_text())["raw_feature_dim"]))
    except (OSError, ValueError, KeyError, TypeError):
      pass
  path = (pathlib.Path(extract_manifest) if extract_manifest is not None
          else _find_extract_manifest(config))
  if path is not None:
    try:
      recorded = extract.read_manifest(path)
      if recorded is not None and recorded["settings"].get("feature_dim"):
        return probe(int(recorded["settings"]["feature_dim"]))
    except extract.RefusedError:
      pass
  raise ExportError(f"{workdir}: the model's input size is unknown (no input statistics, "
                    "training data or extraction manifest); pass --extract-manifest")


# ---------------------------------------------------------------------------------------
# Loading.


def _read_manifest(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise ExportError(f"{path} is missing: {path.parent} is not a model folder "
                      "(write one with `python -m hhjax.export`)")
  try:
    manifest = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ExportError(f"{path}: corrupt, not JSON ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
    raise ExportError(f"{path}: not a model manifest (no \"kind\": \"{KIND}\")")
  if manifest.get("format") != FORMAT:
    raise ExportError(f"{path}: format {manifest.get('format')!r}; this hhjax "
                      f"({_hhjax_version()}) reads format {FORMAT}")
  for key in ("files", "features", "class_names", "thresholds", "score_range"):
    if key not in manifest:
      raise ExportError(f"{path}: corrupt, no {key!r} field")
  return manifest


def load(model_dir: str | os.PathLike) -> LoadedModel:
  """Loads a model folder, checking every file first.

  Raises:
    ExportError: the folder or its manifest is missing or unreadable, or files are
      missing or do not match their recorded SHA-256 (each such file named), or the
      parameters, config and statistics do not fit together.
  """
  from hhjax.models.joint import create_model  # noqa: PLC0415
  model_dir = pathlib.Path(model_dir)
  if not model_dir.is_dir():
    raise ExportError(f"{model_dir}: no such model folder")
  manifest = _read_manifest(model_dir / MANIFEST_FILE)
  required = [PARAMS_FILE, CONFIG_FILE]
  if manifest["features"].get("standardize"):
    required.append(STATS_FILE)
  problems = []
  for name in dict.fromkeys(required + list(manifest["files"])):
    path = model_dir / name
    entry = manifest["files"].get(name)
    if not path.is_file():
      problems.append(f"{path} is missing")
    elif entry is None:
      problems.append(f"{path} is not listed in {MANIFEST_FILE}")
    elif _sha256(path) != entry.get("sha256"):
      problems.append(f"{path} is corrupt: its SHA-256 differs from the one recorded in "
                      f"{MANIFEST_FILE}")
  if problems:
    raise ExportError(f"model folder {model_dir}: " + "; ".join(problems))

  try:
    config = config_from_json(json.loads((model_dir / CONFIG_FILE).read_text()))
    model = create_model(config)
  except Exception as e:
    raise ExportError(f"{model_dir / CONFIG_FILE}: not a usable config ({e})") from e
  try:
    params = serialization.msgpack_restore((model_dir / PARAMS_FILE).read_bytes())
  except Exception as e:
    raise ExportError(f"{model_dir / PARAMS_FILE}: cannot be read ({e})") from e
  dim = int(manifest["features"]["feature_dim"])
  try:
    check_params(model, params, dim, _init_length(config))
  except ValueError as e:
    raise ExportError(f"{model_dir / PARAMS_FILE} does not fit {CONFIG_FILE}: {e}"
                      ) from e
  stats = None
  if manifest["features"].get("standardize"):
    try:
      stats = pipeline.FeatureStats.load(model_dir / STATS_FILE)
    except Exception as e:
      raise ExportError(f"{model_dir / STATS_FILE}: cannot be read ({e})") from e
    if stats.mean.shape != (dim,) or stats.std.shape != (dim,):
      raise ExportError(f"{model_dir / STATS_FILE}: statistics of shape "
                        f"{stats.mean.shape}, the model's input has D={dim}")
  return LoadedModel(model=model, params=params, config=config, stats=stats,
                     manifest=manifest, path=model_dir)


# ---------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m hhjax.export",
      description="Writes a self-describing model folder from a training workdir's "
                  "latest checkpoint (for python -m hhjax.assess --model DIR).")
  p.add_argument("--workdir", required=True, help="the training workdir")
  p.add_argument("--out", help="the model folder to write (default <workdir>/export)")
  p.add_argument("--extract-manifest",
                 help="extract_manifest.json of the training features (default: the "
                      "one in config.dataset.manual_dir, if any)")
  p.add_argument("--stream", choices=STREAMS,
                 help="the feature stream, when neither the extraction manifest nor "
                      "the config tells it")
  p.add_argument("--fps", type=float,
                 help="frame rate the training features were sampled at, when the "
                      "extraction manifest records the videos' own")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (1 on an error)."""
  args = build_parser().parse_args(argv)
  try:
    out = export_run(args.workdir, args.out, extract_manifest=args.extract_manifest,
                     stream=args.stream, fps=args.fps)
  except ExportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  manifest = json.loads((out / MANIFEST_FILE).read_text())
  feats = manifest["features"]
  print(f"wrote {out}: {manifest['model']}, step {manifest['step']}, stream "
        f"{feats['stream']}, {feats['feature_dim']} inputs, frame stride "
        f"{feats['frame_stride']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
