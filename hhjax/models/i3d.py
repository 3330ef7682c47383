"""Moved: `hhjax.models.i3d` is now `hhjax.models.backbones.i3d` (importing the old path says so)."""

raise ImportError("hhjax.models.i3d moved to hhjax.models.backbones.i3d; import it from there")
