"""The pure train and eval steps, jitted over the `data` mesh, and host <-> device.

The state is replicated, batches are split along their first axis, and XLA inserts
the gradient all-reduce. Dropout keys are `fold_in(key, step)`, so a resumed run draws
the same masks as an uninterrupted one. The steps know nothing of the network they
train: the model computes its outputs and `model.loss` its loss terms.

Compute precision (`config.compute_dtype`): "float32", or "bfloat16" for mixed
precision. With bfloat16 the steps cast the parameters and the input features to
bfloat16 for the network's forward (and so backward) pass, cast its outputs back to
float32 before the loss, and keep the parameters, their gradients and the optimiser
state in float32: the usual recipe on GPUs and TPUs, whose matrix units run bfloat16
several times faster. LayerNorm's statistics stay in float32 (Flax computes them so).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

DEVICE_KEYS = ("features", "labels", "mask", "score", "step_scores", "weight")
# What evaluation reads back from a batch's outputs (those the model has).
EVAL_KEYS = ("labels", "video_score", "step_scores")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
  """The dtype `config.compute_dtype` names; a clear error for any other name."""
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={name!r}; expected one of "
                     f"{tuple(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def cast_floating(tree, dtype):
  """`tree` with its floating-point leaves cast to `dtype` (others untouched)."""
  return jax.tree.map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
      else a, tree)


def _apply(model, params, batch, dtype, **kwargs):
  """The model's outputs on `batch`, computed in `dtype`, returned in float32."""
  if dtype == jnp.float32:
    return model.apply({"params": params}, batch["features"], batch["mask"], **kwargs)
  outputs = model.apply({"params": cast_floating(params, dtype)},
                        batch["features"].astype(dtype), batch["mask"], **kwargs)
  return cast_floating(outputs, jnp.float32)


def train_step(state, batch: dict, key, *, model, loss_cfg, ground_truth_segments: bool,
               dtype=jnp.float32):
  """One optimisation step, the network run in `dtype` (module docstring); pure."""
  rng = jax.random.fold_in(key, state.step)

  def loss_fn(params):
    outputs = _apply(model, params, batch, dtype,
                     gt_labels=batch["labels"] if ground_truth_segments else None,
                     train=True, rngs={"dropout": rng})
    return model.loss(outputs, batch, loss_cfg)

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  out = dict(loss=loss, **parts, grad_norm=optax.tree.norm(grads),
             param_norm=optax.tree.norm(new_state.params))
  return new_state, out


def eval_step(params, batch: dict, *, model, dtype=jnp.float32):
  """Predictions for one batch (segments always come from the prediction)."""
  out = _apply(model, params, batch, dtype, train=False)
  return {k: out[k] for k in EVAL_KEYS if k in out}


def donate_state(mesh) -> bool:
  """Whether the train step donates the old state's buffers to the new one.

  On accelerators donation halves the state's memory. On CPU it is off: there the
  donated step was measured slower, and the state (a few MB) is not memory worth
  saving. Measured (2-core CPU, batch 1, one process, 15
  interleaved steps, `python -m hhjax.bench versus`-sized models): joint model without
  attention, T = 1024: 345 ms donated against 267 ms not; joint model T = 4096: 1293 ms
  against 1134 ms; MS-TCN T = 1024: 235 ms against 208 ms.
  """
  return any(d.platform != "cpu" for d in mesh.devices.flat)


def compile_steps(config, model, mesh):
  """Jitted, data-parallel train and eval steps for `mesh`, computing in
  `config.compute_dtype` (the state is donated on accelerators only: `donate_state`)."""
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  dtype = compute_dtype(config)
  p_train_step = jax.jit(
      functools.partial(train_step, model=model, loss_cfg=config.loss,
                        ground_truth_segments=config.training_segments == "ground_truth",
                        dtype=dtype),
      in_shardings=(replicated, data, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,) if donate_state(mesh) else ())
  p_eval_step = jax.jit(functools.partial(eval_step, model=model, dtype=dtype),
                        in_shardings=(replicated, data), out_shardings=data)
  return p_train_step, p_eval_step


def to_device(batch: dict, mesh) -> dict:
  """Assembles the global batch from every process's rows (the `data` axis)."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, batch[k])
          for k in DEVICE_KEYS}


def to_host(tree) -> Any:
  """Global device arrays -> NumPy on every host."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
