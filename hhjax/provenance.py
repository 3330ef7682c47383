"""Which code made a result: hhjax's version, JAX's, and the git commit of the checkout.

Results read back later (a fold trained yesterday, a table gathered from runs of several
days) may come from different code. hhjax records the code with them and says so where
they are gathered, rather than mixing them silently:

* `code_version()`: `{"hhjax", "jax", "commit", "tree", "changes"}`. `commit` is the
  checkout's git commit (None outside a git checkout, e.g. an installed wheel); `tree`
  identifies the committed state of hhjax's own files (`hhjax/`, `configs/`: 12 hex
  digits of the SHA-256 of their git tree ids), so commits that change only the docs or
  tests share it; `changes` is None when those files are as committed, else 12 hex
  digits of the SHA-256 of `git diff HEAD` over them (and of their untracked files), so
  two runs with the same local edits share a label and runs with other edits do not.
  It is read once per process, at its first call, and cached: the training loop and
  `hhjax.clips` call it as they start, so a commit made while a run goes on is not
  taken for the code the run imported.
* `code_label(version)`: one short string, e.g. `a1b2c3d4e5f6 + changes 0f9e8d7c6b5a,
  jax 0.10.2` (the tree digest, the edits' digest, JAX); equal labels mean the same
  code. The commit is not in it: it is in the records beside it.
* `record_start(workdir, step, last_step)`: appends one line per start of a training
  run to `<workdir>/code.jsonl` (a resumed run adds a line).
* `trained_with(workdir)`: the labels of the code that ran a run's training steps.
* `mixed_note(labels)`: None when every result's code is the same, else a line naming
  which results ran with which code, for the table that gathers them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Mapping, Sequence

CODE_FILE = "code.jsonl"
UNRECORDED = "unrecorded"
_PATHS = ("hhjax", "configs")   # the files whose edits change what runs


def _git(root: pathlib.Path, *args: str) -> str | None:
  try:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                         timeout=20, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.decode("utf-8", "replace")


def repository_root() -> pathlib.Path | None:
  """The git checkout hhjax is imported from, or None (an installed wheel)."""
  root = pathlib.Path(__file__).resolve().parent.parent
  return root if (root / ".git").exists() else None


def code_version() -> dict[str, str | None]:
  """hhjax's and JAX's versions, the checkout's commit and a digest of its local edits.

  Computed once per process; git's absence or failure gives None fields, never an
  error.
  """
  return dict(checkout_version(repository_root()))


@functools.lru_cache(maxsize=None)
def checkout_version(root: pathlib.Path | None) -> dict[str, str | None]:
  """`code_version()` for the git checkout at `root` (None: no checkout)."""
  import jax  # noqa: PLC0415

  import hhjax  # noqa: PLC0415
  version = {"hhjax": hhjax.__version__, "jax": jax.__version__, "commit": None,
             "tree": None, "changes": None}
  if root is None:
    return version
  commit = _git(root, "rev-parse", "HEAD")
  if commit is None:
    return version
  version["commit"] = commit.strip()
  trees = _git(root, "ls-tree", "HEAD", "--", *_PATHS)   # "<mode> tree <id>\t<path>"
  if trees is not None:
    version["tree"] = hashlib.sha256(trees.encode()).hexdigest()[:12]
  diff = _git(root, "diff", "HEAD", "--", *_PATHS)
  untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *_PATHS)
  if diff is None or untracked is None:
    version["changes"] = "unknown"
  elif diff or untracked:
    digest = hashlib.sha256(diff.encode())
    for name in sorted(untracked.splitlines()):
      digest.update(name.encode())
      path = root / name
      if path.is_file():
        digest.update(path.read_bytes())
    version["changes"] = digest.hexdigest()[:12]
  return version


def code_label(version: Mapping[str, str | None] | None) -> str:
  """One short string for a `code_version()` record; equal labels, same code."""
  if not version:
    return UNRECORDED
  if version.get("tree") or version.get("commit"):
    label = (str(version["tree"]) if version.get("tree")
             else f"commit {str(version['commit'])[:12]}")
    if version.get("changes"):
      label += f" + changes {version['changes']}"
  else:
    label = f"hhjax {version.get('hhjax')} (no git commit)"
  return label + f", jax {version.get('jax')}"


def record_start(workdir: str | os.PathLike, step: int, last_step: int) -> None:
  """Appends this start of a training run (`step`: where it starts, `last_step`: where
  it ends) and the code it runs to `<workdir>/code.jsonl`."""
  line = dict(time=round(time.time(), 3), step=int(step), last_step=int(last_step),
              **code_version())
  with open(pathlib.Path(workdir) / CODE_FILE, "a") as f:
    f.write(json.dumps(line) + "\n")


def starts(workdir: str | os.PathLike) -> list[dict]:
  """The records `record_start` wrote in `workdir` (none: [])."""
  path = pathlib.Path(workdir) / CODE_FILE
  if not path.is_file():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except ValueError:
      continue   # a line cut short by a crash
  return out


def trained_with(workdir: str | os.PathLike) -> list[str]:
  """Labels, in order and without repeats, of the code that ran the training steps of
  the run in `workdir` (starts that had steps left); [UNRECORDED] for a run that
  recorded none (an older hhjax)."""
  labels = []
  for start in starts(workdir):
    if start.get("step", 0) < start.get("last_step", 0):
      label = code_label(start)
      if label not in labels:
        labels.append(label)
  return labels or [UNRECORDED]


def mixed_note(labels: Mapping[str, Sequence[str] | str]) -> str | None:
  """None when every result (key: its name, value: its code label or labels) ran the
  same code; else `code differs: <names>: <label>; <names>: <label>`."""
  groups: dict[str, list[str]] = {}
  for name, value in labels.items():
    key = value if isinstance(value, str) else " then ".join(value)
    groups.setdefault(key, []).append(str(name))
  if len(groups) <= 1:
    return None
  return "code differs: " + "; ".join(f"{', '.join(names)}: {label}"
                                       for label, names in groups.items())
