"""Orbax checkpoints of the train state and the input pipeline's position.

All Orbax use sits here, so a move to another checkpoint API touches one file. A
checkpoint holds two items: `state` (params, optimizer state, step) and `data` (the
grain iterator's state, JSON). Resume order: the latest checkpoint in the workdir, else
a fresh start.
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
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) of a concrete state, as a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      if isinstance(x, jax.Array) else x, state)
