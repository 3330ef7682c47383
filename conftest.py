"""Shared pytest set-up for every test folder (tests/, datasets/, hhjax/).

Four fake CPU devices are made before JAX starts its backend, so data-parallel code is
exercised on a laptop exactly as it would be on four accelerators.
"""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 4)

REPO_ROOT = pathlib.Path(__file__).resolve().parent
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` beside the repository (golden files, real clips); skips if absent."""
  if not SHARED.is_dir():
    pytest.skip(f"{SHARED} is absent: golden/real-data tests need ../shared beside the repo")
  return SHARED
