"""hhjax: hand-hygiene assessment via joint step segmentation and key action scoring."""

__version__ = "0.1.0"
