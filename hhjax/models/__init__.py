"""Flax Linen models: temporal convolutions, attention, segmentation, scoring, I3D."""
