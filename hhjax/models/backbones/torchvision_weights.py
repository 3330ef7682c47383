"""torchvision checkpoints -> Flax variables for ResNet, MobileNetV2 and AlexNet.

The Flax modules (`resnet.ResNet`, `mobilenet_v2.MobileNetV2`, `alexnet.AlexNet`) have
torchvision's layers, named after torchvision's keys with "." written "_": the torch
key `layer1.0.downsample.1.running_mean` is `batch_stats/layer1_0/downsample_1/mean`.
Leaves map as:

    conv weight (O, I, kh, kw)   -> params .../kernel (kh, kw, I, O)
                                    (depthwise: (C, 1, kh, kw) -> (kh, kw, 1, C))
    linear weight (out, in)      -> params .../kernel (in, out)
    bias                         -> params .../bias
    BatchNorm weight / bias      -> params .../scale / bias
    running_mean / running_var   -> batch_stats .../mean / var
    num_batches_tracked          -> ignored

The expected keys and shapes come from the module itself (`jax.eval_shape` of its
init), so whatever a module is built with (depth, width_mult, num_classes, ...) is what
a state dict is checked against.

Classifier: a module built with `num_classes=None` has no classifier, and the state
dict's classifier entries (`fc.*` for ResNet, `classifier.*` for MobileNetV2 and
AlexNet, except AlexNet's hidden layers when `feature_layer="fc7"`) are accepted and
dropped. A module built with a `num_classes` different from the checkpoint's is an
error that says so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hhjax.models.backbones.alexnet import AlexNet
from hhjax.models.backbones.mobilenet_v2 import MobileNetV2
from hhjax.models.backbones.resnet import ResNet
from hhjax.models.backbones.torch_checkpoint import (StateDictMismatchError,
                                                     flatten_tree,
                                                     map_state_dict, read_torch_state_dict)

__all__ = [
  "MODEL_NAMES",
  "WeightMismatchError",
  "create_model",
  "expected_shapes",
  "load_file",
  "load_state_dict",
  "read_state_dict",
  "state_dict_from_variables",
]

MODEL_NAMES = (
  "alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"
)
# Prefix of the last (class-scoring) linear layer, whose rows count the classes.
_CLASSIFIER = {"alexnet": "classifier.6.", "mobilenet_v2": "classifier.1."}
# Prefix of the keys a features-only module (num_classes=None) may drop.
_HEAD = {"alexnet": "classifier.", "mobilenet_v2": "classifier."}
for _depth in (18, 34, 50, 101):
  _CLASSIFIER[f"resnet{_depth}"] = "fc."
  _HEAD[f"resnet{_depth}"] = "fc."
_IGNORED_SUFFIXES = ("num_batches_tracked",)

# (collection, Flax leaf name) -> torch leaf name.
_LEAF_TO_TORCH = {
  ("params", "kernel"): "weight",
  ("params", "bias"): "bias",
  ("params", "scale"): "weight",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}


class WeightMismatchError(StateDictMismatchError):
  """A state dict does not match a torchvision network (missing, unexpected or
  misshapen keys, by their torch names); see `StateDictMismatchError`."""


def _check_name(model_name: str) -> None:
  if model_name not in MODEL_NAMES:
    raise ValueError(f"model_name must be one of {MODEL_NAMES}, got {model_name!r}")


def create_model(model_name: str, **kwargs: Any) -> nn.Module:
  """The Flax module for a torchvision model name.

  Args:
    model_name: one of `MODEL_NAMES`.
    **kwargs: module fields (num_classes, temporal_shift, width_mult, dropout, ...).

  Returns:
    `ResNet(depth=...)`, `MobileNetV2` or `AlexNet`, built with `kwargs`.

  Raises:
    ValueError: for an unknown `model_name`.
  """
  _check_name(model_name)
  if model_name == "alexnet":
    return AlexNet(**kwargs)
  if model_name == "mobilenet_v2":
    return MobileNetV2(**kwargs)
  return ResNet(depth=int(model_name[len("resnet"):]), **kwargs)


def _check_model(model_name: str, model: nn.Module) -> None:
  expected = type(create_model(model_name))
  if not isinstance(model, expected):
    raise ValueError(
      f"model is a {type(model).__name__}, but model_name={model_name!r} needs a "
      f"{expected.__name__}"
    )
  if isinstance(model, ResNet) and model_name != f"resnet{model.depth}":
    raise ValueError(
      f"model is a ResNet of depth {model.depth}, but model_name={model_name!r}"
    )


def _torch_name(path: Sequence[str]) -> str:
  """('batch_stats', 'layer1_0', 'bn1', 'mean') -> 'layer1.0.bn1.running_mean'."""
  collection, *modules, leaf = path
  try:
    torch_leaf = _LEAF_TO_TORCH[(collection, leaf)]
  except KeyError:
    raise ValueError(f"no torchvision name for the variable {'/'.join(path)}") from None
  return ".".join([m.replace("_", ".") for m in modules] + [torch_leaf])


def _to_torch_shape(path: Sequence[str], shape: Sequence[int]) -> tuple[int, ...]:
  if path[-1] == "kernel" and len(shape) == 4:  # (kh, kw, I, O) -> (O, I, kh, kw)
    return (shape[3], shape[2], shape[0], shape[1])
  if path[-1] == "kernel" and len(shape) == 2:  # (in, out) -> (out, in)
    return (shape[1], shape[0])
  return tuple(shape)


def _torch_to_flax(path: Sequence[str], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
  elif path[-1] == "kernel" and value.ndim == 2:
    value = value.T
  return np.ascontiguousarray(value)


def _flax_to_torch(path: Sequence[str], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 4:
    value = value.transpose(3, 2, 0, 1)
  elif path[-1] == "kernel" and value.ndim == 2:
    value = value.T
  return np.ascontiguousarray(value)


def _module_key(model: nn.Module) -> tuple:
  """A hashable description of a module's configuration (its dataclass fields)."""
  fields = tuple(
    (name, getattr(model, name))
    for name in model.__dataclass_fields__
    if name not in ("parent", "name")
  )
  return (type(model), fields)


@functools.lru_cache(maxsize=16)
def _layout_cached(key: tuple) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  cls, fields = key
  model = cls(**dict(fields))
  # Any input size the network accepts gives the same variables; ResNet gets a whole
  # clip so a temporal shift sees a valid batch.
  batch = model.num_segments if isinstance(model, ResNet) else 1
  dummy = jax.ShapeDtypeStruct((batch, 64, 64, 3), jnp.float32)
  abstract = jax.eval_shape(
    functools.partial(model.init, train=False), jax.random.key(0), dummy
  )
  layout = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in flatten_tree(abstract.get(collection, {})).items():
      full = (collection, *path)
      layout[_torch_name(full)] = (full, tuple(leaf.shape))
  return layout


def _layout(model: nn.Module) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{torch name: ((collection, *Flax path), Flax shape)} of `model`'s variables."""
  return _layout_cached(_module_key(model))


def _default_model(model_name: str, state_dict: Mapping[str, Any]) -> nn.Module:
  """The module a state dict describes, with num_classes read off its classifier."""
  weight = state_dict.get(_CLASSIFIER[model_name] + "weight")
  num_classes = None if weight is None else int(np.shape(weight)[0])
  return create_model(model_name, num_classes=num_classes)


def expected_shapes(
  model_name: str, model: nn.Module | None = None
) -> dict[str, tuple[int, ...]]:
  """{torchvision key: torch shape} of every entry a state dict must hold.

  Args:
    model_name: one of `MODEL_NAMES`.
    model: the module to load into; default: `create_model(model_name,
      num_classes=1000)`, torchvision's ImageNet classifier.

  Returns:
    The keys in the module's order, with their torch shapes.
  """
  _check_name(model_name)
  if model is None:
    model = create_model(model_name, num_classes=1000)
  _check_model(model_name, model)
  return {
    name: _to_torch_shape(path, shape) for name, (path, shape) in _layout(model).items()
  }


def load_state_dict(
  model_name: str, state_dict: Mapping[str, Any], *, model: nn.Module | None = None
) -> dict[str, dict]:
  """Maps a torchvision state dict to Flax variables {"params", "batch_stats"}.

  Args:
    model_name: one of `MODEL_NAMES`; the state dict's architecture.
    state_dict: {torchvision key: array}, NumPy arrays or torch tensors.
      `num_batches_tracked` entries are ignored.
    model: the module the variables are for (e.g. `ResNet(50, temporal_shift=0.25)`,
      `MobileNetV2(num_classes=None)`). Default: `create_model(model_name)` with
      num_classes read off the state dict's classifier (None without one).

  Returns:
    {"params": ..., "batch_stats": ...} of float32 NumPy arrays for `model.apply`
    (AlexNet has no "batch_stats": an empty dict). With `num_classes=None` the state
    dict's classifier entries are dropped.

  Raises:
    WeightMismatchError (a KeyError and a ValueError): naming every missing,
      unexpected and misshapen key at once, with the expected and found shapes, and
      saying when the classifier's class count differs from `model.num_classes`.
    ValueError: for an unknown `model_name`, or a `model` of another architecture.
  """
  _check_name(model_name)
  if model is None:
    model = _default_model(model_name, state_dict)
  _check_model(model_name, model)
  layout = _layout(model)
  given = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
  if model.num_classes is None:
    # A features-only module drops the checkpoint's classifier.
    head = _HEAD[model_name]
    given = {k: v for k, v in given.items() if k in layout or not k.startswith(head)}
  variables, missing, unexpected, mismatched = map_state_dict(
      layout, given, _to_torch_shape, _torch_to_flax)
  if missing or unexpected or mismatched:
    raise WeightMismatchError(
      model_name, missing, unexpected, mismatched, _hint(model_name, model, state_dict)
    )
  return variables


def _hint(model_name: str, model: nn.Module, state_dict: Mapping[str, Any]) -> str:
  """Says when the classifier's class count is what differs."""
  weight = state_dict.get(_CLASSIFIER[model_name] + "weight")
  if weight is None or model.num_classes is None:
    return ""
  found = int(np.shape(weight)[0])
  if found == model.num_classes:
    return ""
  return (
    f"the state dict's classifier has {found} classes but the module was built with "
    f"num_classes={model.num_classes}: build it with num_classes={found}, or "
    "num_classes=None to drop the classifier (then train a new one on its features)"
  )


def state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The inverse of `load_state_dict`: Flax variables -> {torchvision key: array}.

  Args:
    variables: {"params": ..., "batch_stats": ...} of one of these modules.

  Returns:
    float32 NumPy arrays in torch layout, without `num_batches_tracked`.
  """
  out = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in flatten_tree(variables.get(collection, {})).items():
      full = (collection, *path)
      out[_torch_name(full)] = _flax_to_torch(full, np.asarray(leaf, dtype=np.float32))
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torchvision checkpoint file into {key: float32 NumPy array}.

  Args:
    path: a .pth / .pt file (needs torch) or an .npz of the same keys. A
      {"state_dict": ...} wrapper and DataParallel's `module.` prefixes are removed.

  Returns:
    The state dict as NumPy arrays.

  Raises:
    ImportError: for a .pth / .pt file when torch is not installed.
    ValueError: for another suffix, or a file that holds no state dict.
  """
  suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
  if suffix == "npz":
    with np.load(path, allow_pickle=False) as data:
      return {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
  if suffix not in ("pth", "pt"):
    raise ValueError(f"{path}: expected a .pth / .pt (PyTorch) or .npz checkpoint")
  return read_torch_state_dict(
      path, "convert it where torch is available to an .npz of the same keys "
      "(np.savez(out, **read_state_dict(path))) and load that instead")


def load_file(
  model_name: str, path: str | os.PathLike, *, model: nn.Module | None = None
) -> dict[str, dict]:
  """Loads a .pth / .pt (needs torch) or .npz torchvision checkpoint as Flax variables.

  Args:
    model_name: one of `MODEL_NAMES`.
    path: the checkpoint (see `read_state_dict`).
    model: as in `load_state_dict`.

  Returns:
    {"params": ..., "batch_stats": ...} for `model.apply`.

  Raises:
    As `read_state_dict` and `load_state_dict`.
  """
  _check_name(model_name)
  return load_state_dict(model_name, read_state_dict(path), model=model)
