"""What the command-line entry points share: their config flags and their errors.

`user_errors()` turns bad-input and config errors into one message and exit status 1,
without a traceback (the message already names the file, field or video at fault);
`Preempted` (SIGTERM during training) exits with status 0 after its checkpoint.
"""

from __future__ import annotations

import contextlib
import sys

from absl import flags
from ml_collections import config_flags


def define_config_flags(workdir_help: str) -> None:
  """`--config FILE` (locked: an unknown `--config.field` is an error) and `--workdir`."""
  config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)


@contextlib.contextmanager
def user_errors():
  """See the module docstring."""
  from hhjax.data import layout  # noqa: PLC0415
  from hhjax.training import loop  # noqa: PLC0415
  try:
    yield
  except loop.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(0)
  except layout.LayoutError as e:
    hint = ("\n(set the manual directory with --config.dataset.manual_dir=DIR)"
            if "anual directory" in str(e) else "")
    sys.exit(f"error: {e}{hint}")
  except (FileNotFoundError, FloatingPointError) as e:
    sys.exit(f"error: {e}")
  except ValueError as e:
    if not (str(e).startswith("config") or type(e).__name__.startswith("Stale")
            or isinstance(e, loop.ConfigMismatchError)):
      raise
    sys.exit(f"error: {e}")
