"""Moved: `hhjax.checkpointing` is now `hhjax.training.checkpointing` (importing the old path says so)."""

raise ImportError("hhjax.checkpointing moved to hhjax.training.checkpointing; import it from there")
