"""TFDS folder entry point for `hha300`; the builder itself is `hhjax.data.hha300.Hha300`.

`tfds build datasets/hha300 --config synthetic` imports this file and expects exactly
one builder class defined in it, so `Builder` is a subclass that adds nothing and skips
registration (importing `hhjax.data.hha300` has already registered `hha300`). That CLI
imports TensorFlow at start-up; without TensorFlow use
`python -m hhjax.data.build --config synthetic`.
"""

from hhjax.data.hha300 import Hha300
from hhjax.data.hha300 import Hha300Config

__all__ = ["Builder", "Hha300", "Hha300Config"]


class Builder(Hha300, skip_registration=True):
  """`hhjax.data.hha300.Hha300` under the name the TFDS folder convention looks for."""
