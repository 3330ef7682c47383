"""TFDS folder entry point for `action_segmentation`; the builder itself is
`hhjax.data.hha300.ActionSegmentation` (GTEA, 50Salads, Breakfast in the MS-TCN layout).

`tfds build datasets/action_segmentation --config gtea --manual_dir DIR` imports this
file and expects exactly one builder class defined in it, so `Builder` is a subclass
that adds nothing and skips registration (importing `hhjax.data.hha300` has already
registered `action_segmentation`). That CLI imports TensorFlow at start-up; without
TensorFlow use `hhjax.data.hha300.build("gtea", manual_dir=DIR,
dataset="action_segmentation")`.
"""

from hhjax.data.hha300 import ActionSegmentation
from hhjax.data.hha300 import ActionSegmentationConfig

__all__ = ["ActionSegmentation", "ActionSegmentationConfig", "Builder"]


class Builder(ActionSegmentation, skip_registration=True):
  """`hhjax.data.hha300.ActionSegmentation` under the name the TFDS folder convention
  looks for."""
