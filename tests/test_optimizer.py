"""The optimiser choices: SGD with momentum and L2 decay, and per-group learning rates,
checked against a hand-written PyTorch-style SGD loop."""

import ml_collections
import numpy as np
import jax.numpy as jnp
import optax
import pytest

from hhjax.training import state


def _config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=0.01, lr_schedule="constant",
                                     num_train_steps=10, weight_decay=1e-2,
                                     optimizer="sgd", momentum=0.9, lr_multipliers=""))
  c.update(kw)
  return c


def _params():
  return {"head": {"w": jnp.array([1.0, -2.0])}, "stream": {"w": jnp.array([0.5, 3.0])}}


def _grads(params):   # a fixed, parameter-dependent gradient: d/dw of sum(w^3)/3
  return {k: {"w": v["w"] ** 2} for k, v in params.items()}


def _naive_sgd(params, lrs, wd, mu, steps):
  """PyTorch's SGD: g += wd * p; b = mu * b + g; p -= lr_group * b."""
  p = {k: np.asarray(v["w"], np.float64) for k, v in params.items()}
  b = {k: np.zeros_like(v) for k, v in p.items()}
  for _ in range(steps):
    for k in p:
      g = p[k] ** 2 + wd * p[k]
      b[k] = mu * b[k] + g
      p[k] = p[k] - lrs[k] * b[k]
  return p


def _run(config, steps=4):
  tx = state.create_optimizer(config)
  params = _params()
  opt = tx.init(params)
  for _ in range(steps):
    updates, opt = tx.update(_grads(params), opt, params)
    params = optax.apply_updates(params, updates)
  return params


def test_sgd_with_group_learning_rates_matches_pytorch_style_loop():
  got = _run(_config(lr_multipliers="^head/=5"))
  want = _naive_sgd(_params(), {"head": 0.05, "stream": 0.01}, 1e-2, 0.9, 4)
  for k in want:
    np.testing.assert_allclose(got[k]["w"], want[k], rtol=1e-5)


def test_multiplier_scales_adam_group_only():
  plain = _run(_config(optimizer="adam", weight_decay=0.0), steps=1)
  scaled = _run(_config(optimizer="adam", weight_decay=0.0, lr_multipliers="stream=3"),
                steps=1)
  start = _params()
  np.testing.assert_allclose(scaled["head"]["w"], plain["head"]["w"])
  np.testing.assert_allclose(scaled["stream"]["w"] - start["stream"]["w"],
                             3 * (plain["stream"]["w"] - start["stream"]["w"]), rtol=1e-5)


@pytest.mark.parametrize("spec, needle", [("head", "needs a pattern"),
                                          ("head=abc", "not '<regex>=<factor>'"),
                                          ("head=-1", "factor > 0"),
                                          ("(=2", "not '<regex>=<factor>'")])
def test_bad_multiplier_specs_name_the_field(spec, needle):
  with pytest.raises(ValueError, match="config.lr_multipliers") as e:
    state.parse_lr_multipliers(spec)
  assert needle in str(e.value)


def test_pattern_matching_no_parameter_is_refused():
  tx = state.create_optimizer(_config(lr_multipliers="video_regressor/head=5"))
  with pytest.raises(ValueError, match="match no parameter"):
    tx.init(_params())


def test_unknown_optimizer_is_refused():
  with pytest.raises(ValueError, match="config.optimizer='rmsprop'"):
    state.create_optimizer(_config(optimizer="rmsprop"))
