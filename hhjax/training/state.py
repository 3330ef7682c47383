"""The device mesh, the optimiser and the replicated train state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (Flax's TrainState)."""


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis (`data`) mesh over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def create_optimizer(config) -> optax.GradientTransformation:
  """Adam (AdamW with `weight_decay`), constant or cosine-decayed learning rate."""
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps)
  return optax.adamw(lr, weight_decay=config.weight_decay) if config.weight_decay \
      else optax.adam(lr)


def create_train_state(config, model, feature_dim: int, mesh) -> TrainState:
  """Initialises params and optimiser state, replicated over the mesh."""
  tx = create_optimizer(config)

  def init():
    x = jnp.zeros((1, config.dataset.bucket_size, feature_dim), jnp.float32)
    mask = jnp.ones((1, config.dataset.bucket_size), jnp.float32)
    params = model.init(jax.random.key(config.seed), x, mask)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  replicated = NamedSharding(mesh, P())
  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  return jax.jit(init, out_shardings=shardings)()


def parameter_count(params) -> int:
  """Number of scalars in a parameter tree."""
  return int(sum(np.prod(np.shape(p)) for p in jax.tree.leaves(params)))
