"""Orbax checkpoints of the train state and the input pipeline's position.

All Orbax use sits here, so a move to another checkpoint API touches one file. A
checkpoint holds two items: `state` (params, optimizer state, step) and `data` (the
grain iterator's state, JSON). Resume order: the latest checkpoint in the workdir, else
a fresh start. A checkpoint whose arrays do not fit the state the config builds (another
model size, say) is refused before anything is read, naming the arrays.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves every `every_steps` steps and keeps the latest `keep` checkpoints."""

  def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=max(1, every_steps), create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether it saved."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state))
    return self._manager.save(step, args=args, force=force)

  def restore(self, abstract_state, step: int | None = None):
    """Restores `(state, data_state)` at `step` (default: latest) into `abstract_state`'s
    structure and shardings (from `jax.eval_shape` plus shardings)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    unfit = self._mismatches(abstract_state, step)
    if unfit:
      more = f" and {len(unfit) - 5} more" if len(unfit) > 5 else ""
      raise ValueError(
          f"config: the checkpoint at step {step} in {self.directory} does not fit the "
          "train state this config builds (a changed model or optimiser setting): "
          + "; ".join(unfit[:5]) + more + ". Resume with the settings it was saved "
          "with, or use a new --workdir.")
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except ValueError as e:   # what the shape check above cannot see (e.g. dtypes)
      raise ValueError(f"config: cannot restore the checkpoint at step {step} in "
                       f"{self.directory} into this config's train state: "
                       f"{' '.join(str(e).split())[:600]}") from e
    return restored["state"], restored["data"]

  def _mismatches(self, abstract_state, step: int) -> list[str]:
    """`path: saved shape -> shape now` for every array whose shape differs, or that
    only one of the checkpoint and `abstract_state` has (checked from the saved
    metadata, so a failed restore never leaves Orbax reads in flight)."""
    reader = ocp.StandardCheckpointHandler()   # reads files only: no threads, barriers
    try:
      saved_tree = reader.metadata(self.directory / str(step) / "state")
    except Exception:  # noqa: BLE001  (unreadable metadata: the restore itself decides)
      return []
    finally:
      reader.close()
    saved, now = _shapes(getattr(saved_tree, "tree", saved_tree)), _shapes(abstract_state)
    return [f"{k}: {saved.get(k, 'absent')} -> {now.get(k, 'absent')}"
            for k in sorted(set(saved) | set(now), key=lambda k: (k.startswith("opt"), k))
            if saved.get(k) != now.get(k)]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """{"params/segmenter/.../kernel": shape} for every array-like leaf of `tree` (a
  train state, or the tree of a checkpoint's metadata)."""
  def name(path):
    return "/".join(str(next(getattr(k, a) for a in ("key", "name", "idx")
                             if hasattr(k, a))) for k in path)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {name(p): tuple(v.shape) for p, v in leaves if hasattr(v, "shape")}


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) of a concrete state, as a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      if isinstance(x, jax.Array) else x, state)
