"""Moved: `hhjax.models.segmentation` is now `hhjax.models.segmenters.conv_transformer` (importing the old path says so)."""

raise ImportError("hhjax.models.segmentation moved to hhjax.models.segmenters.conv_transformer; import it from there")
