r"""The demo of configs/hha300_synthetic.py with the causal (online) segmenter.

  python -m hhjax.train --config configs/hha300_synthetic_causal.py --workdir runs/causal

Everything but the segmenter is that config's (data, training recipe, head), so the two
runs compare the causal network, whose frame t reads only frames 0..t and which can
label a video while it is recorded (`hhjax.inference.streaming`, docs/ONLINE.md), with
the offline one, which sees the whole video.
"""

import pathlib

from hhjax import config as config_lib


def _offline_config():
  """configs/hha300_synthetic.py's config (loaded by path: configs/ is no package)."""
  return config_lib.from_file(
      pathlib.Path(__file__).resolve().with_name("hha300_synthetic.py"))


def get_config():
  config = _offline_config()
  config.model.segmenter = "causal_conv_transformer"
  return config
