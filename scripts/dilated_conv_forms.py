"""A ten-layer dilated stack in three forms: XLA's convolution against the same maths as
three shifted matrix products ("taps") or one im2col product, forward + backward.

  python scripts/dilated_conv_forms.py --length 4096 --repeats 5

Each layer is MS-TCN's: a k=3 convolution of dilation 2^i (64 -> 64 channels), ReLU,
a 1x1 projection, the residual sum; batch 1. The three forms share one set of weights
and the script checks that their losses agree before timing them interleaved in one
process (median of the repeats, each the mean of 3 calls). Written for
docs/BENCHMARKS.md ("Why 4,096 was harder"). The stack has no frame mask: what made
the real layers slow was the mask ("The mask multiply" there).
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FORMS = ("conv", "taps", "im2col")


class ShiftedConv(nn.Module):
  """A k=3 dilated convolution ("SAME") as matrix products, with nn.Conv's parameters."""

  channels: int
  dilation: int
  form: str

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, x.shape[-1], self.channels))
    bias = self.param("bias", nn.initializers.zeros, (self.channels,))
    d, length = self.dilation, x.shape[1]
    padded = jnp.pad(x, ((0, 0), (d, d), (0, 0)))
    left, right = padded[:, :length], padded[:, 2 * d:]
    if self.form == "taps":
      return left @ kernel[0] + x @ kernel[1] + right @ kernel[2] + bias
    stacked = jnp.concatenate([left, x, right], -1)
    return stacked @ kernel.reshape(-1, self.channels) + bias


class DilatedStack(nn.Module):
  form: str
  channels: int = 64
  layers: int = 10

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      if self.form == "conv":
        h = nn.Conv(self.channels, (3,), kernel_dilation=(2**i,), padding="SAME",
                    name=f"conv{i}")(x)
      else:
        h = ShiftedConv(self.channels, 2**i, self.form, name=f"conv{i}")(x)
      x = x + nn.Dense(self.channels, name=f"proj{i}")(nn.relu(h))
    return x


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--length", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  x = jax.random.normal(jax.random.key(0), (1, args.length, 64))
  target = jax.random.normal(jax.random.key(1), x.shape)
  params = DilatedStack("conv").init(jax.random.key(2), x)
  steps, forwards = {}, {}
  for form in FORMS:
    model = DilatedStack(form)
    loss = lambda p, x, model=model: jnp.sum(model.apply(p, x) * target)
    steps[form] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    forwards[form] = jax.jit(model.apply)
  losses = {f: float(steps[f](params, x)[0]) for f in FORMS}
  scale = abs(losses["conv"]) + 1.0
  for form in FORMS:
    if abs(losses[form] - losses["conv"]) > 1e-4 * scale:
      raise SystemExit(f"{form} computes another loss: {losses}")
    jax.block_until_ready(forwards[form](params, x))
  for name, fns in (("forward + backward", steps), ("forward", forwards)):
    times = {f: [] for f in FORMS}
    for _ in range(args.repeats):
      for form in FORMS:
        t0 = time.perf_counter()
        for _ in range(3):
          jax.block_until_ready(fns[form](params, x))
        times[form].append((time.perf_counter() - t0) / 3)
    print(f"T={args.length} {name}: " + ", ".join(
        f"{f} {1000 * np.median(times[f]):.1f} ms" for f in FORMS))


if __name__ == "__main__":
  main()
