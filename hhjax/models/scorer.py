"""Moved: `hhjax.models.scorer` is now `hhjax.models.heads.scorers` (importing the old path says so)."""

raise ImportError("hhjax.models.scorer moved to hhjax.models.heads.scorers; import it from there")
