"""Temporal action-segmentation networks, one module each, chosen by name in a config.

    config.model.segmenter = "conv_transformer" | "mstcn" | "mstcn_pp" | "asrf" | "bcn"
                             | "asformer"

Every network is a Flax Linen module registered here with `@register(name)`, and keeps
one small contract, so that the joint model, the train step, evaluation and the reports
serve all of them without special cases:

* **Call.** `module(x, mask, *, train=False)` with features `x` (B, T, D) and the frame
  mask (B, T) (1 = real frame) returns a dict with at least
  - `logits`: (S, B, T, C) frame logits of each of its S stages (or decoders), the last
    one being the prediction; zero on padded frames;
  - `features`: (B, T, F) the last stage's frame features (what `pool_features="stage"`
    pools for the scorer);
  and any outputs of its own (e.g. ASRF's `boundary_logits`). A padded video gives the
  same outputs on its valid frames as the same video unpadded.
* **Loss terms** (optional). A method `loss_terms(self, outputs, labels, mask, loss_cfg)`
  decorated with `@nn.nowrap` (it reads the module's fields, never its parameters)
  returns `{name: scalar}` of weighted terms that the network adds to the shared loss
  (per-stage cross-entropy + smoothing on `logits`, in `hhjax.losses`); e.g. ASRF's
  boundary loss. `mask` has filler rows zeroed. Every term is logged as `train/<name>`.
* **Labels** (optional). A `@nn.nowrap` method `predict_labels(self, outputs, mask)`
  returns the (B, T) int32 frame labels at inference; the default is the argmax of the
  last stage. ASRF overrides it with its boundary-based refinement. It must be
  jittable: segment selection and scoring run on device.

Padding and speed: keep padded frames zero with `hhjax.models.tcn.masked` on what a
layer reads, and add residual branches with `hhjax.models.tcn.residual` (x +
masked(h)), not `masked(x + h, mask)`: with the mask an input of the jitted step, XLA's
CPU fusion recomputes a stream of masked sums in every layer's backward pass (about 2x
slower training; docs/BENCHMARKS.md, "The mask multiply").

Construction: `build(name, model_config)` passes the network the fields of
`config.model` that it declares (the shared ones: `num_classes`, `num_stages`,
`num_layers`, `channels`, `dropout_rate`, `input_dropout_rate`, ...), then the fields of
its own section `config.model.<name>` if the config has one (e.g. `config.model.asformer`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

# name -> module holding it (imported on first use, so that importing one network does
# not import them all).
_MODULES = {
    "conv_transformer": "hhjax.models.segmenters.conv_transformer",
    "mstcn": "hhjax.models.segmenters.mstcn",
    "mstcn_pp": "hhjax.models.segmenters.mstcn_pp",
    "asrf": "hhjax.models.segmenters.asrf",
    "bcn": "hhjax.models.segmenters.bcn",
    "asformer": "hhjax.models.segmenters.asformer",
    "causal_conv_transformer": "hhjax.models.segmenters.causal",
}
_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
  """Class decorator: makes a segmentation module available as `name` in configs."""
  def wrap(cls):
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f"segmenter {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls
  return wrap


def names() -> tuple[str, ...]:
  """Every known segmenter name."""
  return tuple(sorted(set(_MODULES) | set(_REGISTRY)))


def get(name: str) -> type[nn.Module]:
  """The module class registered as `name`.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  if name not in _REGISTRY and name in _MODULES:
    importlib.import_module(_MODULES[name])
  if name not in _REGISTRY:
    raise ValueError(f"config.model.segmenter={name!r}; expected one of {names()}")
  return _REGISTRY[name]


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}


def build(name: str, model_config: Any) -> nn.Module:
  """An unbound instance of segmenter `name` configured from `config.model`."""
  cls = get(name)
  fields = _fields(cls)
  config = dict(model_config)
  kwargs = {k: v for k, v in config.items() if k in fields}
  own = config.get(name)
  if own is not None:
    own = dict(own)
    unknown = sorted(set(own) - fields)
    if unknown:
      raise ValueError(f"config.model.{name} has fields {unknown} that the {name} "
                       f"network does not take; it takes {sorted(fields)}")
    kwargs.update(own)
  return cls(**kwargs)


def loss_terms(segmenter: nn.Module | None, outputs: dict, labels, mask, loss_cfg
               ) -> dict[str, jnp.ndarray]:
  """The network's own weighted loss terms ({} when it has none)."""
  fn = getattr(segmenter, "loss_terms", None) if segmenter is not None else None
  return {} if fn is None else dict(fn(outputs, labels, mask, loss_cfg))


def predict_labels(segmenter: nn.Module, outputs: dict, mask,
                   min_segment_frames: int = 0) -> jnp.ndarray:
  """(B, T) int32 frame labels: the network's own rule, else the last stage's argmax,
  then runs shorter than `min_segment_frames` merged into their neighbours
  (`postprocess.merge_short_runs`; 0: none); padded frames are 0."""
  fn = getattr(segmenter, "predict_labels", None)
  if fn is not None:
    labels = fn(outputs, mask)
  else:
    labels = jnp.argmax(outputs["logits"][-1], axis=-1)
  if min_segment_frames > 1:
    from hhjax.models.segmenters import postprocess  # noqa: PLC0415
    return postprocess.merge_short_runs(labels, mask, min_segment_frames)
  return labels.astype(jnp.int32) * mask.astype(jnp.int32)
