"""The convolution and batch norm of torchvision's 2-D networks, in Flax.

Bias-free k x k convolutions with torch's symmetric (k - 1) / 2 padding and its
fan-out He initialisation, and batch norm with torch's epsilon and momentum (torch's
momentum 0.1 is Flax's 0.9), so that the ported networks match torchvision's layer for
layer (`hhjax.models.backbones.torchvision_weights`).
"""

from __future__ import annotations

import flax.linen as nn

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel: int, stride: int, name: str, groups: int = 1) -> nn.Conv:
  """A bias-free k x k convolution with torch's symmetric (k - 1) / 2 padding."""
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                 use_bias=False, kernel_init=conv_init, name=name)


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """Batch norm with torch's epsilon and momentum (running averages unless `train`)."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, name=name)
