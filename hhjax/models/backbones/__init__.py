"""Feature backbones that turn pixels into per-frame features (I3D; see hhjax.extract)."""
