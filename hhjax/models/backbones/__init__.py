"""Backbones that turn pixels into features.

* `i3d`: the Inception-v1 I3D of the feature extractor (`hhjax.extract`), which loads
  the released PyTorch checkpoints.
* `resnet` (ResNet-18/34/50/101, with an optional temporal shift: TSM),
  `mobilenet_v2`, `alexnet`: torchvision's 2-D networks, layer for layer, for the
  frame-level models of `hhjax.models.vision`; `torchvision_weights` imports
  torchvision state dicts (.pth or .npz) into them.
"""
