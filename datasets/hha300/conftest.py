"""Keeps the repository's `datasets/` folder from standing in for HuggingFace `datasets`.

With `--import-mode=importlib`, a test file in a folder without `__init__.py`, such as
`datasets/hha300/hha300_dataset_builder_test.py`, is imported as
`datasets.hha300.hha300_dataset_builder_test`, and pytest imports its parents by path:
`sys.modules["datasets"]` becomes a namespace module for this repository's folder. Any
later `import datasets` in the same session would then get that folder instead of the
HuggingFace package. After each collector finishes, the two parent entries are dropped
again when (and only when) they are those folder modules.
"""

import pathlib
import sys

_HERE = pathlib.Path(__file__).resolve().parent
_FOLDER_MODULES = (("datasets.hha300", _HERE), ("datasets", _HERE.parent))


def _is_folder_module(module, folder: pathlib.Path) -> bool:
  """True for a namespace module whose only location is `folder`."""
  if module is None or getattr(module, "__file__", None) is not None:
    return False
  paths = list(getattr(module, "__path__", None) or [])
  return bool(paths) and all(pathlib.Path(p).resolve() == folder for p in paths)


def pytest_collectreport(report):
  """Drops the folder modules pytest put into `sys.modules` while collecting."""
  del report
  for name, folder in _FOLDER_MODULES:
    if _is_folder_module(sys.modules.get(name), folder):
      del sys.modules[name]
