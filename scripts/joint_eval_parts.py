"""Where the joint model's inference time goes beside MS-TCN's, and two attention forms.

  python scripts/joint_eval_parts.py --length 4096

Times, interleaved in one process (median of --repeats calls after a warm-up), the
jitted eval steps (`hhjax.training.steps`) of `bench versus`'s sizes (4 stages x 10
layers x 64 channels, 2048-d input, 7 classes, batch 1): MS-TCN, the joint model, and
the joint model with `attention="none"`. Then one `MultiHeadAttention` forward (64
channels, 4 heads, linear) three ways on the same parameters: as hhjax computes it;
with the Q, K and V kernels concatenated into one (64, 192) product; and with all heads
in one product and the output projection folded into the key-value summary. Prints
each form's largest difference from hhjax's. Written for docs/BENCHMARKS.md ("Nor did
removing the joint model's last transposes").
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _median_ms(fns: dict, args: tuple | dict, repeats: int) -> dict[str, float]:
  import jax  # noqa: PLC0415
  times = {k: [] for k in fns}
  for k, f in fns.items():
    jax.block_until_ready(f(*args[k]))   # warm-up
  for _ in range(repeats):
    for k, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f(*args[k]))
      times[k].append(time.perf_counter() - start)
  return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def eval_steps(length: int, repeats: int) -> None:
  import jax  # noqa: PLC0415

  from hhjax import config as config_lib  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  from hhjax.training import state as state_lib, steps  # noqa: PLC0415

  rng = np.random.default_rng(0)
  host = dict(features=rng.normal(size=(1, length, 2048)).astype(np.float32),
              labels=rng.integers(0, 7, size=(1, length)).astype(np.int32),
              mask=np.ones((1, length), np.float32), score=np.ones((1,), np.float32),
              step_scores=np.ones((1, 6), np.float32), weight=np.ones((1,), np.float32))
  mesh = state_lib.make_mesh(jax.local_devices()[:1])
  batch = steps.to_device(host, mesh)
  fns, args = {}, {}
  for name, segmenter, attention in (("MS-TCN", "mstcn", "linear"),
                                     ("joint model", "conv_transformer", "linear"),
                                     ("joint model, attention none", "conv_transformer",
                                      "none")):
    config = config_lib.get_config()
    config.model.update(segmenter=segmenter, attention=attention, num_stages=4,
                        num_layers=10, channels=64, num_classes=7)
    config.batch_size = 1
    config.dataset.bucket_size = 16
    model = create_model(config)
    state = state_lib.create_train_state(config, model, 2048, mesh)
    _, p_eval = steps.compile_steps(config, model, mesh)
    fns[name] = p_eval.lower(state.params, batch).compile()
    args[name] = (state.params, batch)
  for name, ms in _median_ms(fns, args, repeats).items():
    print(f"eval step, T = {length}: {name}: {ms:.1f} ms")


def attention_forms(length: int, repeats: int) -> None:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from hhjax.models import attention as attn  # noqa: PLC0415

  c, h = 64, 4
  d = c // h
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, c)).astype(np.float32))
  mask = jnp.ones((1, length))
  module = attn.MultiHeadAttention("linear", h)
  params = module.init(jax.random.key(0), x, mask)

  def qkv(p, x):
    w = jnp.concatenate([p[n]["kernel"].reshape(c, c) for n in ("query", "key", "value")],
                        -1)
    b = jnp.concatenate([p[n]["bias"].reshape(c) for n in ("query", "key", "value")])
    return x @ w + b                                              # (1, T, 3C)

  def fused(p, x, mask):
    p = p["params"]
    q, k, v = jnp.split(qkv(p, x).reshape(1, length, 3, h, d), 3, axis=2)
    out = attn.linear_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], mask)
    return out.reshape(1, length, c) @ p["out"]["kernel"].reshape(c, c) + p["out"]["bias"]

  def folded(p, x, mask):
    p = p["params"]
    q, k, v = jnp.split(qkv(p, x), 3, axis=-1)
    m = mask[..., None]
    phi_q, phi_k = attn.elu_feature_map(q), attn.elu_feature_map(k) * m
    heads = jnp.kron(jnp.eye(h), jnp.ones((d, 1)))               # (C, H)
    kv = jnp.einsum("btc,bte->bce", phi_k, v * m) * (heads @ heads.T)   # block diagonal
    den = jnp.einsum("btc,bc,ch->bth", phi_q, phi_k.sum(1), heads)
    summary = kv @ p["out"]["kernel"].reshape(c, c)              # (1, C, C)
    scaled = phi_q * jnp.repeat(1.0 / (den + 1e-6), d, axis=-1)
    return (jnp.einsum("btc,bcf->btf", scaled, summary) + p["out"]["bias"]) * m

  forms = {"hhjax": lambda p, x, m: module.apply(p, x, m), "Q, K, V in one product": fused,
           "all heads, output projection folded": folded}
  fns = {k: jax.jit(f).lower(params, x, mask).compile() for k, f in forms.items()}
  ref = np.asarray(fns["hhjax"](params, x, mask))
  times = _median_ms(fns, {k: (params, x, mask) for k in fns}, repeats)
  for name, f in fns.items():
    diff = np.abs(np.asarray(f(params, x, mask)) - ref).max()
    print(f"attention forward, T = {length}: {name}: {times[name]:.2f} ms "
          f"(max difference from hhjax's {diff:.1e})")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--length", type=int, default=4096)
  p.add_argument("--repeats", type=int, default=15)
  args = p.parse_args()
  eval_steps(args.length, args.repeats)
  attention_forms(args.length, 2 * args.repeats)
  return 0


if __name__ == "__main__":
  sys.exit(main())
