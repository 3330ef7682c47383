"""The training loop's guarantees (docs/GUARANTEES.md), each shown by breaking a run.

* Exact resume: a run SIGKILLed at seeded random moments and rerun ends with the same
  parameters and the same `metrics.jsonl` as a run never stopped.
* SIGTERM: a checkpoint at the step in flight, exit status 0, then an exact resume.
* Resuming with settings that would mix two runs is refused, naming the fields.
* A non-finite loss stops the run, naming the step, before anything is checkpointed.
* `metrics.jsonl` never holds a step twice, whatever a crashed run left in it.
* TensorBoard event files hold the same scalars as `metrics.jsonl`.
* Two processes (`jax.distributed`) end with the parameters of one process.

The command-line runs are child processes with one CPU device each; they share a
TFDS folder built once here (so they never race to build it) and a persistent
compilation cache beside it (so each start compiles little).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hhjax import config as config_lib, provenance
from hhjax.data import splits
from hhjax.models.joint import create_model
from hhjax.training import checkpointing, loop, metric_writers, state as state_lib, steps

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 12
RUN_FLAGS = (f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=2",
             "--config.log_every_steps=3", "--config.eval_every_steps=6",
             "--config.tensorboard=False")
TIMING_KEYS = ("train/steps_per_sec",)   # wall-clock: differs between any two runs


def _tiny(data_dir, **overrides):
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset.data_dir = str(data_dir)
  config.compilation_cache_dir = str(pathlib.Path(data_dir).parent / "jax_cache")
  config.tensorboard = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """A TFDS folder holding the tiny data set (built once, here) and the environment of
  the child processes (a persistent compilation cache beside it)."""
  root = tmp_path_factory.mktemp("guarantees")
  data_dir = root / "tfds"
  splits.load_split(_tiny(data_dir), "train")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return dict(root=root, data_dir=data_dir, env=env, cache_dir=root / "jax_cache")


def _command(shared, workdir, *extra):
  return [sys.executable, "-m", "hhjax.train", "--config", "configs/tiny.py",
          "--workdir", str(workdir), f"--config.dataset.data_dir={shared['data_dir']}",
          f"--config.compilation_cache_dir={shared['cache_dir']}", *RUN_FLAGS, *extra]


def _run(shared, workdir, *extra, timeout=300):
  return subprocess.run(_command(shared, workdir, *extra), cwd=REPO, env=shared["env"],
                        capture_output=True, text=True, timeout=timeout)


def _start(shared, workdir, log_path):
  log = open(log_path, "w")
  proc = subprocess.Popen(_command(shared, workdir), cwd=REPO, env=shared["env"],
                          stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return proc


def _checkpoint_entries(workdir) -> set[str]:
  """Step folders in the checkpoint folder, including ones still being written."""
  d = pathlib.Path(workdir) / "checkpoints"
  return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _wait_for_entry(proc, workdir, step: int, timeout=240.0) -> None:
  """Polls until this run has begun saving a checkpoint of `step` or later (a step
  folder, or its temporary folder, that was not there when it started)."""
  before = _checkpoint_entries(workdir)
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(int(e.split(".")[0]) >= step for e in _checkpoint_entries(workdir) - before
           if e.split(".")[0].isdigit()):
      return
    if proc.poll() is not None:
      raise AssertionError(f"the run exited ({proc.returncode}) before step {step}")
    time.sleep(0.005)
  proc.kill()
  raise AssertionError(f"no checkpoint of step {step} within {timeout}s")


def _final_state(config, workdir):
  """(step, params as NumPy, loader state) of the latest checkpoint in `workdir`."""
  data = splits.load_split(config, "train")
  mesh = state_lib.make_mesh(jax.devices()[:1])
  state = state_lib.create_train_state(config, create_model(config),
                                       splits.feature_dim(config, data), mesh)
  ckpt = checkpointing.Checkpointer(pathlib.Path(workdir) / "checkpoints", every_steps=1)
  restored, data_state = ckpt.restore(checkpointing.abstract_like(state))
  ckpt.close()
  return int(restored.step), jax.device_get(restored.params), data_state


def _metric_rows(workdir) -> dict:
  """{(step, "train" | "eval"): {key: value}} from metrics.jsonl, timing keys left out
  and NaN spelled "nan" (so that rows compare with ==); fails on a step logged twice."""
  rows = {}
  path = pathlib.Path(workdir) / metric_writers.METRICS_FILE
  for line in path.read_text().splitlines():
    row = json.loads(line)
    kind = "eval" if any(k.startswith("eval/") for k in row) else "train"
    key = (row["step"], kind)
    assert key not in rows, f"step {row['step']} ({kind}) logged twice in {workdir}"
    rows[key] = {k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in row.items() if k not in TIMING_KEYS}
  return rows


def _assert_same_run(config, workdir, reference) -> None:
  step_a, params_a, data_a = _final_state(config, reference)
  step_b, params_b, data_b = _final_state(config, workdir)
  assert step_a == step_b == STEPS and data_a == data_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  want = _metric_rows(reference)
  assert sorted(want) == [(3, "train"), (6, "eval"), (6, "train"), (9, "train"),
                          (12, "eval"), (12, "train")]
  assert _metric_rows(workdir) == want
  assert (pathlib.Path(workdir) / "eval_results.json").read_text() == \
      (pathlib.Path(reference) / "eval_results.json").read_text()


@pytest.fixture(scope="module")
def reference(shared):
  """The uninterrupted command-line run every interrupted one is compared with."""
  workdir = shared["root"] / "reference"
  res = _run(shared, workdir)
  assert res.returncode == 0, res.stderr[-3000:]
  return workdir


def test_killed_and_resumed_run_equals_uninterrupted_run(shared, reference, tmp_path):
  """SIGKILL three times, at seeded random moments of training (a random checkpoint
  step begun, then a random delay: in a save, between a save and a log line, ...);
  the fourth start finishes. Same params, same metrics.jsonl, no step twice."""
  rng = np.random.default_rng(2024)
  kill_steps = sorted(rng.choice([2, 4, 6, 8, 10], size=3, replace=False).tolist())
  workdir = tmp_path / "killed"
  for i, step in enumerate(kill_steps):
    proc = _start(shared, workdir, tmp_path / f"run{i}.log")
    _wait_for_entry(proc, workdir, step)   # snapshots the folder before it trains
    time.sleep(float(rng.uniform(0.0, 0.25)))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL, "the run had finished before the kill"
  res = _run(shared, workdir)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "resumed from" in res.stdout
  _assert_same_run(_tiny(shared["data_dir"]), workdir, reference)


def test_sigterm_saves_exits_zero_and_resumes_exactly(shared, reference, tmp_path):
  workdir = tmp_path / "preempted"
  proc = _start(shared, workdir, tmp_path / "run.log")
  _wait_for_entry(proc, workdir, 4)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(120) == 0
  out = (tmp_path / "run.log").read_text()
  assert "Traceback" not in out
  stopped = [line for line in out.splitlines() if "stopped by SIGTERM at step" in line]
  assert len(stopped) == 1 and "checkpoint saved" in stopped[0], out[-2000:]
  step = int(stopped[0].split("at step ")[1].split(";")[0])
  assert 4 <= step < STEPS
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", every_steps=1)
  assert ckpt.latest_step() == step           # saved at the step it stopped
  ckpt.close()
  assert not (workdir / "eval_results.json").exists()
  res = _run(shared, workdir)
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"resumed from {workdir / 'checkpoints'} at step {step}" in res.stdout
  _assert_same_run(_tiny(shared["data_dir"]), workdir, reference)
  # Each start recorded where it began and the code it ran (hhjax.provenance).
  starts = provenance.starts(workdir)
  assert [(s["step"], s["last_step"]) for s in starts] == [(0, STEPS), (step, STEPS)]
  assert provenance.trained_with(workdir) == [
    provenance.code_label(provenance.code_version())]


def test_resume_with_changed_settings_is_refused_unless_allowed(shared, reference,
                                                                tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  before = sorted(_checkpoint_entries(workdir))
  res = _run(shared, workdir, "--config.model.channels=16", "--config.seed=1")
  assert res.returncode == 1, res.stderr[-3000:]
  assert "Traceback" not in res.stderr
  assert "model.channels: 8 -> 16" in res.stderr and "seed: 0 -> 1" in res.stderr
  assert "allow_resume_changes" in res.stderr
  assert sorted(_checkpoint_entries(workdir)) == before
  with pytest.raises(loop.ConfigMismatchError, match="learning_rate: 0.005 -> 0.001"):
    loop.train_and_evaluate(_tiny(shared["data_dir"], learning_rate=1e-3), workdir)

  # Safe fields change freely: two more steps with a constant learning rate.
  res = _run(shared, workdir, f"--config.num_train_steps={STEPS + 2}")
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"at step {STEPS}" in res.stdout
  assert _final_state(_tiny(shared["data_dir"]), workdir)[0] == STEPS + 2
  assert not (workdir / "config_changes.jsonl").exists()
  # Allowed: resumes, and the change is recorded.
  res = _run(shared, workdir, f"--config.num_train_steps={STEPS + 3}",
             "--config.learning_rate=0.001", "--config.allow_resume_changes=True")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "learning_rate: 0.005 -> 0.001" in res.stdout
  assert _final_state(_tiny(shared["data_dir"]), workdir)[0] == STEPS + 3
  changes = [json.loads(line)["changes"] for line in
             (workdir / "config_changes.jsonl").read_text().splitlines()]
  assert changes == [["learning_rate: 0.005 -> 0.001"]]
  # Allowed, but the checkpoint cannot hold the new model: a clear error naming the
  # parameters, no traceback.
  res = _run(shared, workdir, f"--config.num_train_steps={STEPS + 4}",
             "--config.model.channels=16", "--config.allow_resume_changes=True")
  assert res.returncode == 1
  assert "Traceback" not in res.stderr and "Exception" not in res.stderr
  assert f"error: config: the checkpoint at step {STEPS + 3}" in res.stderr
  assert "params/segmenter/block_1/attention/out/bias: (8,) -> (16,)" in res.stderr
  assert "--workdir" in res.stderr


def test_resume_on_changed_training_data_is_refused_unless_allowed(shared, reference,
                                                                   tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  before = sorted(_checkpoint_entries(workdir))
  saved = json.loads((workdir / loop.TRAIN_DATA_FILE).read_text())
  config = _tiny(shared["data_dir"])
  train = splits.load_split(config, config.dataset.train_split)
  want = splits.split_fingerprint(config, train)
  assert saved == {k: v for k, v in want.items() if k != "manual_dir"}
  # The same split with one frame relabelled (as washes composed afresh would be).
  labels = [np.array(l) for l in train.labels]
  labels[-1][0] = (labels[-1][0] + 1) % 7
  changed = dataclasses.replace(train, labels=labels)
  with pytest.raises(loop.ConfigMismatchError, match="other data") as err:
    loop.check_resume_data(config, workdir, True, changed)
  assert f"digest: {saved['digest']!r} -> " in str(err.value)
  assert "videos" not in str(err.value)          # only what differs is named
  loop.check_resume_data(config, workdir, True, train)   # unchanged: resumes
  # Through the command: refused, nothing written, no traceback.
  (workdir / loop.TRAIN_DATA_FILE).write_text(json.dumps(dict(saved, videos=1)))
  res = _run(shared, workdir)
  assert res.returncode == 1, res.stderr[-3000:]
  assert "Traceback" not in res.stderr
  assert f"videos: 1 -> {saved['videos']}" in res.stderr
  assert sorted(_checkpoint_entries(workdir)) == before
  # Allowed: resumes, and the change is recorded.
  config.allow_resume_changes = True
  loop.check_resume_data(config, workdir, True, train)
  assert "resuming on changed training data" in capsys.readouterr().out
  line = json.loads((workdir / "config_changes.jsonl").read_text().splitlines()[-1])
  assert line["data_changes"] == [f"videos: 1 -> {saved['videos']}"]


def test_num_train_steps_is_safe_only_with_a_constant_learning_rate():
  saved = json.loads(config_lib.get_config().to_json_best_effort())
  longer = dict(saved, num_train_steps=saved["num_train_steps"] * 2)
  assert config_lib.resume_conflicts(saved, longer) == []
  saved["lr_schedule"] = longer["lr_schedule"] = "cosine"
  assert config_lib.resume_conflicts(saved, longer) == ["num_train_steps: 1000 -> 2000"]


def test_saved_input_statistics_from_other_data_are_refused(shared, tmp_path):
  """Standardised runs save the training split's statistics with a fingerprint of it;
  a resumed run (or hhjax.evaluate) with other data or streams is refused, naming
  what changed, instead of scaling its inputs with the wrong statistics."""
  config = _tiny(shared["data_dir"])
  config.dataset.standardize = True
  train = splits.load_split(config, "train")
  saved = splits.feature_stats(config, train, tmp_path)
  again = splits.feature_stats(config, train, tmp_path)           # read back: the same
  np.testing.assert_array_equal(again.mean, saved.mean)
  config.dataset.streams = "rgb"
  with pytest.raises(splits.StaleStatisticsError,
                     match="streams: 'rgb\\+flow' -> 'rgb'"):
    splits.feature_stats(config, train, tmp_path)
  config.dataset.streams = "rgb+flow"
  both = splits.load_split(config, "train+test")                   # other videos
  with pytest.raises(splits.StaleStatisticsError, match="videos: 3 -> 5"):
    splits.feature_stats(config, both, tmp_path)


def _checkpoint_steps(workdir) -> list[int]:
  ckpt = checkpointing.Checkpointer(pathlib.Path(workdir) / "checkpoints", every_steps=1)
  found = ckpt.all_steps()
  ckpt.close()
  return found


def test_non_finite_loss_stops_before_any_checkpoint_of_it(shared, tmp_path,
                                                           monkeypatch):
  # A learning rate that blows the parameters up: the loss overflows within steps.
  workdir = tmp_path / "diverged"
  config = _tiny(shared["data_dir"], learning_rate=1e30, num_train_steps=8,
                 checkpoint_every_steps=1, keep_checkpoints=10, log_every_steps=100)
  with pytest.raises(FloatingPointError, match=r"is (nan|inf|-inf) at step \d+") as e:
    loop.train_and_evaluate(config, workdir)
  bad = int(str(e.value).split("at step ")[1].split(";")[0])
  saved = _checkpoint_steps(workdir)
  assert saved == list(range(1, bad))
  if saved:
    _, params, _ = _final_state(config, workdir)
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))

  # A NaN at exactly step 5, checked as part of the window flushed at step 6.
  compile_steps = steps.compile_steps

  def nan_at_step_5(config, model, mesh):
    train_step, eval_step = compile_steps(config, model, mesh)

    def poisoned(state, batch, key):
      new_state, out = train_step(state, batch, key)
      if int(new_state.step) == 5:
        out = dict(out, loss=out["loss"] * np.nan)
      return new_state, out
    return poisoned, eval_step

  monkeypatch.setattr(steps, "compile_steps", nan_at_step_5)
  workdir = tmp_path / "poisoned"
  config = _tiny(shared["data_dir"], num_train_steps=8, checkpoint_every_steps=2,
                 log_every_steps=3, keep_checkpoints=10)
  with pytest.raises(FloatingPointError, match="loss is nan at step 5;"):
    loop.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir) == [2, 4]
  assert [r["step"] for r in map(json.loads, (workdir / "metrics.jsonl").open())] == [3]


def test_metrics_never_hold_a_step_twice_after_a_crash(shared, tmp_path):
  """Lines a crashed run logged after its last checkpoint (here written by hand, the
  last one torn mid-write) are replaced by the resumed run's; a crash before the
  first checkpoint leaves nothing behind either."""
  data_dir = shared["data_dir"]
  overrides = dict(checkpoint_every_steps=4, log_every_steps=2, eval_every_steps=100)
  workdir = tmp_path / "crashed"
  loop.train_and_evaluate(_tiny(data_dir, num_train_steps=4, **overrides), workdir)
  metrics = workdir / metric_writers.METRICS_FILE
  with metrics.open("a") as f:
    f.write('{"step": 6, "train/loss": -1.0}\n{"step": 8, "train/loss": -2.0}\n'
            '{"step": 10, "train/lo')
  loop.train_and_evaluate(_tiny(data_dir, num_train_steps=8, **overrides), workdir)
  rows = _metric_rows(workdir)
  assert [s for s, kind in rows if kind == "train"] == [2, 4, 6, 8]
  assert all(r["train/loss"] > 0 for (_, kind), r in rows.items() if kind == "train")

  # Killed before its first checkpoint was complete: the rerun starts afresh, and the
  # lines of the first attempt go with it.
  workdir = tmp_path / "early"
  workdir.mkdir()
  (workdir / metric_writers.METRICS_FILE).write_text(
      '{"step": 2, "train/loss": -1.0}\n')
  loop.train_and_evaluate(_tiny(data_dir, num_train_steps=4, **overrides), workdir)
  rows = _metric_rows(workdir)
  assert [s for s, kind in rows if kind == "train"] == [2, 4]
  assert rows[(2, "train")]["train/loss"] > 0


def test_tensorboard_events_match_metrics_jsonl(shared, tmp_path):
  workdir = tmp_path / "tb"
  config = _tiny(shared["data_dir"], tensorboard=True, num_train_steps=6,
                 log_every_steps=2, eval_every_steps=3)
  loop.train_and_evaluate(config, workdir)
  events = metric_writers.read_events(workdir / metric_writers.TENSORBOARD_DIR)
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  want: dict[str, list] = {}
  for row in logged:
    for k, v in row.items():
      if k != "step" and math.isfinite(v):
        want.setdefault(k, []).append((row["step"], v))
  # TensorBoard allows [-/\w.] in tags: tensorboardX writes eval/f1@10 as eval/f1_10.
  tag_of = {k: re.sub(r"[^-/\w.]", "_", k) for k in want}
  assert tag_of["eval/f1@10"] == "eval/f1_10"
  assert len(set(tag_of.values())) == len(tag_of)
  assert {k for k in events if not k.startswith("images/")} == set(tag_of.values())
  for key, points in want.items():
    tag = tag_of[key]
    got = events[tag]
    assert [s for s, _ in got] == [s for s, _ in points], tag
    # Event files hold float32.
    np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6,
                               err_msg=tag)
  assert [s for s, _ in events["train/loss"]] == [2, 4, 6]
  assert [s for s, size in events["images/eval/timeline"] if size > 1000] == [3, 6]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(shared, tmp_path):
  """Two `jax.distributed` processes on this machine, one CPU device and one row of
  every global batch (of 2) each, sharing one workdir (process 0 writes the files;
  Orbax saves from both), end with the parameters of one process training on the same
  global batches."""
  env = dict(shared["env"], XLA_FLAGS="--xla_force_host_platform_device_count=1")
  child = REPO / "tests" / "multiprocess_child.py"
  steps_to_train = 4

  def launch(workdir, process_id, num_processes, port):
    args = dict(process_id=process_id, num_processes=num_processes, port=port,
                workdir=str(workdir), data_dir=str(shared["data_dir"]),
                compilation_cache_dir=str(shared["cache_dir"]),
                num_train_steps=steps_to_train)
    return subprocess.Popen([sys.executable, str(child), json.dumps(args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

  def finish(procs):
    outs = []
    try:
      for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
    return outs

  port = _free_port()
  two = finish([launch(tmp_path / "two", i, 2, port) for i in range(2)])
  one = finish([launch(tmp_path / "one", 0, 1, 0)])
  assert [(o["process_index"], o["process_count"], o["local_devices"], o["devices"])
          for o in two] == [(0, 2, 1, 2), (1, 2, 1, 2)]
  assert (one[0]["process_count"], one[0]["devices"]) == (1, 1)
  config = _tiny(shared["data_dir"], batch_size=2)
  step_two, params_two, data_two = _final_state(config, tmp_path / "two")
  step_one, params_one, data_one = _final_state(config, tmp_path / "one")
  assert step_two == step_one == steps_to_train and data_two == data_one
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               params_two, params_one)
  # The runs really trained (so equal parameters mean something) ...
  data = splits.load_split(config, "train")
  initial = jax.device_get(state_lib.create_train_state(
      config, create_model(config), splits.feature_dim(config, data),
      state_lib.make_mesh(jax.devices()[:1])).params)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params_one, initial)
  assert max(jax.tree.leaves(moved)) > 1e-3
  # ... and logged and evaluated alike (process 0 writes metrics.jsonl).
  assert two[0]["metrics"] == pytest.approx(one[0]["metrics"], rel=1e-5, abs=1e-6,
                                            nan_ok=True)
  rows_two, rows_one = _metric_rows(tmp_path / "two"), _metric_rows(tmp_path / "one")
  assert sorted(rows_two) == sorted(rows_one) == [(2, "train"), (4, "eval"),
                                                  (4, "train")]
  for key, row in rows_one.items():
    assert rows_two[key] == pytest.approx(row, rel=1e-5, abs=1e-6), key
