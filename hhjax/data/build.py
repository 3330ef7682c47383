"""Builds an `hha300` config into a TFDS data directory, without TensorFlow.

Usage:

  python -m hhjax.data.build --config synthetic_small [--data_dir DIR]
  python -m hhjax.data.build --config features --manual_dir MANUAL_DIR [--data_dir DIR]
      [--on-change {rebuild,error}]

Without --manual_dir, `features` and `handwash` read TFDS's default manual directory,
`<data_dir>/downloads/manual` (when that is absent or empty, a prepared copy is checked
against the folder it was built from).

Prints whether the config was reused, built or rebuilt, where the data is and the size
of each split. A prepared copy is reused only while its inputs are unchanged (the manual
directory and its files, or the synthetic preset and generator; see `hhjax.data.hha300`);
otherwise it is rebuilt, or with `--on-change error` the command stops and names what
changed. The stock `tfds build datasets/hha300` CLI builds the same data but imports
TensorFlow at start-up, so it is only a route where TensorFlow is installed, and it
reuses any prepared copy without checking its inputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from hhjax.data import hha300
from hhjax.data import layout


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m hhjax.data.build",
      description="Build an hha300 TFDS config (ArrayRecord) without TensorFlow.")
  parser.add_argument(
      "--config", required=True, choices=[c.name for c in hha300.Hha300.BUILDER_CONFIGS],
      help="which hha300 config to build")
  parser.add_argument(
      "--data_dir", default=None,
      help="TFDS data directory (default: TFDS's, usually ~/tensorflow_datasets)")
  parser.add_argument(
      "--manual_dir", default=None,
      help="manual directory with the real data's layout (only for --config features "
      "or handwash; default: TFDS's, <data_dir>/downloads/manual)")
  parser.add_argument(
      "--on-change", dest="on_change", choices=hha300.ON_CHANGE, default="rebuild",
      help="when a prepared copy was built from other inputs: rebuild it (default) or "
      "stop with an error naming what changed")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Builds the requested config and prints a summary.

  Args:
    argv: command-line arguments without the program name (sys.argv[1:] if None).

  Returns:
    Process exit status: 0 on success, 1 when the manual directory is invalid (its
    problems are printed to stderr), 2 for bad arguments, 3 when a prepared copy was
    built from other inputs and `--on-change error` was given.
  """
  args = _parse_args(argv)
  start = time.perf_counter()
  try:
    result = hha300.ensure_built(args.config, data_dir=args.data_dir,
                                 manual_dir=args.manual_dir, on_change=args.on_change)
  except layout.LayoutError as e:
    print(f"hha300/{args.config}: the manual directory is not usable.\n{e}",
          file=sys.stderr)
    return 1
  except hha300.StaleBuildError as e:
    print(str(e), file=sys.stderr)
    return 3
  except ValueError as e:
    print(f"hha300/{args.config}: {e}", file=sys.stderr)
    return 2
  seconds = time.perf_counter() - start
  builder = result.builder
  info = builder.info
  print(f"hha300/{args.config} {info.version} ({info.file_format.value}) "
        f"{result.action} in {builder.data_dir}")
  for name, split in info.splits.items():
    print(f"  {name}: {split.num_examples} examples")
  print(f"  feature_dim: {info.metadata.get('feature_dim')}, "
        f"classes: {len(info.metadata.get('class_names', []))}")
  print(f"done in {seconds:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
