"""Reading PyTorch checkpoint files into NumPy, for the backbones that import them.

Torch is imported only here, and only when a `.pt` / `.pth` file is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


def read_torch_state_dict(path: str | os.PathLike, convert_hint: str
                          ) -> dict[str, np.ndarray]:
  """A PyTorch state-dict file as {name: float32 NumPy array}.

  Accepts a plain state dict, a {'state_dict': ...} wrapper and DataParallel's
  `module.`-prefixed names; entries that are not tensors are skipped.

  Args:
    path: the `.pt` / `.pth` file.
    convert_hint: how to do without torch (ends the ImportError's message).

  Raises:
    ImportError: torch is not installed (the message says how to install it, then
      `convert_hint`).
    ValueError: the file holds no state dict.
  """
  try:
    import torch  # noqa: PLC0415 - optional dependency
  except ImportError as e:
    raise ImportError(f"reading {path} needs torch: `pip install torch` (the CPU build "
                      f"is enough), or {convert_hint}") from e
  obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
  if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      continue
    if name.startswith("module."):
      name = name[len("module."):]
    out[name] = value.detach().cpu().float().numpy()
  return out
