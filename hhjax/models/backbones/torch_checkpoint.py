"""Reading PyTorch checkpoint files into NumPy, for the backbones that import them.

Torch is imported only here, and only when a `.pt` / `.pth` file is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def flatten_tree(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
                 ) -> dict[tuple[str, ...], Any]:
  """{path tuple: leaf} of a nested mapping (a Flax variables collection)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten_tree(value, (*prefix, key)))
    else:
      out[(*prefix, key)] = value
  return out


def set_path(tree: dict, path: Sequence[str], value: Any) -> None:
  """Puts `value` at `path` in a nested dict, making the dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def map_state_dict(
  layout: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]],
  given: Mapping[str, Any],
  to_torch_shape: Callable[[tuple[str, ...], tuple[int, ...]], tuple[int, ...]],
  convert: Callable[[tuple[str, ...], np.ndarray], np.ndarray],
) -> tuple[dict[str, dict], list[str], list[str], dict]:
  """Fills Flax variables from a state dict, collecting every mismatch at once.

  Args:
    layout: {torch name: (Flax variables path, Flax shape)} of the module.
    given: {torch name: array} (NumPy or torch), ignored entries already dropped.
    to_torch_shape: the torch shape a Flax leaf at `path` of `flax_shape` has.
    convert: (path, float32 torch-layout array) -> Flax-layout array.

  Returns:
    (variables {"params", "batch_stats"}, missing names, unexpected names, mismatched
    {name: (expected torch shape, found shape)}); the caller raises on any mismatch.
  """
  missing = [name for name in layout if name not in given]
  unexpected = sorted(name for name in given if name not in layout)
  mismatched = {}
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for name, (path, flax_shape) in layout.items():
    if name not in given:
      continue
    value = given[name]
    value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach")
                       else value, dtype=np.float32)
    expected = tuple(to_torch_shape(path, flax_shape))
    if value.shape != expected:
      mismatched[name] = (expected, tuple(value.shape))
      continue
    set_path(variables, path, np.ascontiguousarray(convert(path, value)))
  return variables, missing, unexpected, mismatched


class StateDictMismatchError(KeyError, ValueError):
  """A state dict does not match a module: missing, unexpected or misshapen keys.

  Attributes `missing`, `unexpected` (lists of names) and `mismatched`
  ({name: (expected torch shape, found shape)}) hold the details; the message lists
  them (the first 20 of each kind).
  """

  def __init__(self, model_name: str, missing: Sequence[str], unexpected: Sequence[str],
               mismatched: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
               hint: str = ""):
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.mismatched = dict(mismatched)
    lines = [f"state dict does not match {model_name}:"]
    lines += _listing("missing key", [repr(k) for k in self.missing])
    lines += _listing("unexpected key", [repr(k) for k in self.unexpected])
    lines += _listing("misshapen key", [f"{k!r}: expected shape {e}, found {f}"
                                        for k, (e, f) in self.mismatched.items()])
    if hint:
      lines.append(hint)
    self.message = "\n".join(lines)
    super().__init__(self.message)

  def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
    return self.message


def _listing(what: str, items: Sequence[str], limit: int = 20) -> list[str]:
  out = [f"  {what} {item}" for item in items[:limit]]
  if len(items) > limit:
    out.append(f"  ... and {len(items) - limit} more {what}s")
  return out


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
