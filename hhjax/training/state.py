"""The device mesh, the optimiser and the replicated train state."""

from __future__ import annotations

import re

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


OPTIMIZERS = ("adam", "sgd")


def parse_lr_multipliers(spec: str) -> list[tuple[str, float]]:
  """`"regex=factor,regex=factor"` -> [(regex, factor)]; "" -> []. Errors name the
  field `config.lr_multipliers`."""
  out = []
  for item in filter(None, (part.strip() for part in spec.split(","))):
    pattern, sep, factor = item.rpartition("=")
    value = None
    if sep and pattern:
      try:
        value = float(factor)
        re.compile(pattern)
      except (ValueError, re.error) as e:
        raise ValueError(f"config.lr_multipliers={spec!r}: {item!r} is not "
                         f"'<regex>=<factor>' ({e})") from None
    if value is None or not value > 0:
      raise ValueError(f"config.lr_multipliers={spec!r}: {item!r} needs a pattern and "
                       "a factor > 0, as in 'video_regressor/head=5'")
    out.append((pattern, value))
  return out


def check_optimizer(config) -> None:
  """Raises a ValueError naming the field for an unknown `config.optimizer` or a
  malformed `config.lr_multipliers` (which parameters they match is checked when the
  optimiser meets the model's parameters)."""
  kind = config.get("optimizer", "adam")
  if kind not in OPTIMIZERS:
    raise ValueError(f"config.optimizer={kind!r}; expected one of {OPTIMIZERS}")
  parse_lr_multipliers(config.get("lr_multipliers", ""))


def lr_factors(params, spec: str):
  """Per-leaf learning-rate factors: a leaf whose "/"-joined path (e.g.
  `video_regressor/head/Dense_0/kernel`) matches a pattern (`re.search`) takes its
  factor (the first pattern that matches wins), others 1. A pattern that matches no
  parameter is an error: it would otherwise be a silent no-op."""
  rules = parse_lr_multipliers(spec)
  used = set()

  def factor(path, _):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    for pattern, value in rules:
      if re.search(pattern, name):
        used.add(pattern)
        return value
    return 1.0

  factors = jax.tree_util.tree_map_with_path(factor, params)
  unused = [p for p, _ in rules if p not in used]
  if unused:
    raise ValueError(f"config.lr_multipliers: pattern(s) {unused} match no parameter "
                     "of this model (paths look like 'video_regressor/head/...')")
  return factors


def scale_by_tree(spec: str) -> optax.GradientTransformation:
  """Multiplies each update by its leaf's `lr_factors`: for Adam and for SGD (with
  momentum and L2 decay) alike, the same as training that group at lr x factor."""

  def init(params):
    lr_factors(params, spec)            # fail at start-up, not at the first step
    return optax.EmptyState()

  def update(updates, state, params=None):
    factors = lr_factors(updates, spec)
    return jax.tree.map(lambda u, f: u * f, updates, factors), state

  return optax.GradientTransformation(init, update)


def create_optimizer(config) -> optax.GradientTransformation:
  """The optimiser of `config.optimizer`, constant or cosine-decayed learning rate:

  * "adam" (default): Adam, or AdamW (decoupled decay) with `weight_decay`;
  * "sgd": SGD with `config.momentum` and L2 weight decay added to the gradient (as
    PyTorch's SGD does: ACTION-NET's recipe).

  `config.lr_multipliers` ("regex=factor,...") trains parameter groups at a multiple
  of the learning rate (ACTION-NET: score head 0.05 against 0.01 for the rest).
  """
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps)
  check_optimizer(config)
  if config.get("optimizer", "adam") == "sgd":
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(lr, momentum=config.get("momentum", 0.9) or None))
  elif config.weight_decay:
    tx = optax.adamw(lr, weight_decay=config.weight_decay)
  else:
    tx = optax.adam(lr)
  spec = config.get("lr_multipliers", "")
  return optax.chain(tx, scale_by_tree(spec)) if spec else tx


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
