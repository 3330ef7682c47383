"""Flax Linen models.

* `segmenters/`: temporal action-segmentation networks, registered by name
  (`config.model.segmenter`): Li et al.'s conv-transformer, MS-TCN, MS-TCN++, ASRF, BCN,
  ASFormer; each keeps the small contract in `segmenters/__init__.py`.
* `heads/`: assessment heads: segment selection and per-step scorers (KAS, MLP), and
  whole-video regressors.
* `backbones/`: pixel-to-feature networks (I3D).
* `joint.py`: the joint model (segmenter + head) and `create_model(config)`.
* `tcn.py`, `attention.py`: the layers the networks share.
"""
