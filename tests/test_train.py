"""Training: loss goes down, data parallelism is exact, resume is exact, configs."""

import copy
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import config as default_config
from hhjax import evaluate
from hhjax.data import pipeline, splits
from hhjax.models.joint import create_model
from hhjax.training import checkpointing, loop, state as state_lib, steps

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture
def tiny(tmp_path):
  config = _load_config("tiny")
  config.dataset.data_dir = str(tmp_path / "tfds")
  return config


def _keys(cfg, prefix=""):
  out = set()
  for k, v in cfg.items():
    out |= _keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
  return out


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs").glob("*.py")))
def test_every_config_has_exactly_the_default_keys(name):
  """Each config holds exactly its command's fields: hhjax.train's (hhjax/config.py),
  or for the clip tasks (configs/clips_*.py) hhjax.clips's."""
  if name.startswith("clips_"):
    from hhjax import clips  # noqa: PLC0415
    assert _keys(_load_config(name)) == _keys(clips.get_config())
    return
  assert _keys(_load_config(name)) == _keys(default_config.get_config())


def _batch(config, data, rows):
  plan = (tuple(rows), pipeline.bucket_length(
      int(max(data.lengths[list(rows)])), config.dataset.bucket_size))
  return pipeline.load_batch(data.source, plan, batch_size=config.batch_size)


def test_loss_is_finite_and_decreases(tiny):
  tiny.model.dropout_rate = 0.0   # a noiseless descent on one batch
  data = splits.load_split(tiny, "train")
  mesh = state_lib.make_mesh()
  model = create_model(tiny)
  state = state_lib.create_train_state(tiny, model, splits.feature_dim(tiny, data), mesh)
  step, _ = steps.compile_steps(tiny, model, mesh)
  batch = steps.to_device(_batch(tiny, data, [0, 1, 2]), mesh)
  key = jax.random.key(0)
  losses = []
  for _ in range(8):
    state, m = step(state, batch, key)
    losses.append(float(m["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_bfloat16_compute_keeps_float32_state_and_tracks_float32(tiny):
  """Mixed precision: the network runs in bfloat16 (its logits carry bfloat16's
  rounding), while the parameters, gradients and optimiser state stay float32, and the
  loss and the update stay close to float32's."""
  tiny.model.dropout_rate = 0.0
  tiny.model.attention_dropout_rate = 0.0
  data = splits.load_split(tiny, "train")
  mesh = state_lib.make_mesh()
  model = create_model(tiny)
  state = state_lib.create_train_state(tiny, model, splits.feature_dim(tiny, data), mesh)
  batch = steps.to_device(_batch(tiny, data, [0, 1, 2]), mesh)
  results = {}
  for name in ("float32", "bfloat16"):
    tiny.compute_dtype = name
    train, evaluate_step = steps.compile_steps(tiny, model, mesh)
    new, metrics = train(state, batch, jax.random.key(0))
    results[name] = (new, metrics, evaluate_step(state.params, batch))
  (new32, m32, _), (new16, m16, _) = results["float32"], results["bfloat16"]
  assert {leaf.dtype for leaf in jax.tree.leaves(new16.params)} == {jnp.dtype("float32")}
  assert {leaf.dtype for leaf in jax.tree.leaves(new16.opt_state)
          if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype("float32")}
  # bfloat16 keeps 8 bits of mantissa: the loss within 3 %, not bit-equal.
  assert float(m16["loss"]) != float(m32["loss"])
  np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=0.03)
  np.testing.assert_allclose(float(m16["grad_norm"]), float(m32["grad_norm"]), rtol=0.1)
  # The outputs come back as float32, the frame labels mostly agree.
  out16 = results["bfloat16"][2]
  assert out16["video_score"].dtype == jnp.float32
  mask = np.asarray(batch["mask"]) > 0
  agree = (np.asarray(out16["labels"]) == np.asarray(results["float32"][2]["labels"]))
  assert agree[mask].mean() > 0.9
  # The network really ran in bfloat16: its forward differs from float32's by
  # bfloat16-sized, not float32-sized, amounts.
  f32 = steps._apply(model, state.params, batch, jnp.float32, train=False)
  b16 = steps._apply(model, state.params, batch, jnp.bfloat16, train=False)
  diff = float(np.abs(np.asarray(f32["logits"]) - np.asarray(b16["logits"])).max())
  assert 1e-4 < diff < 0.5, diff


def test_unknown_compute_dtype_names_the_field(tiny, tmp_path):
  tiny.compute_dtype = "float16"
  with pytest.raises(ValueError, match="config.compute_dtype='float16'"):
    loop.train_and_evaluate(tiny, tmp_path)


def test_state_is_not_donated_on_cpu(tiny):
  """On CPU the train step keeps the old state's buffers (donating them is slower
  there: `steps.donate_state`); on an accelerator mesh it would donate them."""
  data = splits.load_split(tiny, "train")
  mesh = state_lib.make_mesh()
  assert not steps.donate_state(mesh)
  model = create_model(tiny)
  state = state_lib.create_train_state(tiny, model, splits.feature_dim(tiny, data), mesh)
  step, _ = steps.compile_steps(tiny, model, mesh)
  new, _ = step(state, steps.to_device(_batch(tiny, data, [0, 1, 2]), mesh),
                jax.random.key(0))
  old = jax.tree.leaves(state.params)
  assert not any(leaf.is_deleted() for leaf in old)
  assert any(float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 0
             for a, b in zip(old, jax.tree.leaves(new.params)))


def test_four_devices_match_one_device(tiny):
  assert jax.device_count() == 4, "the root conftest makes four CPU devices"
  data = splits.load_split(tiny, "train")
  model = create_model(tiny)   # dropout on: the keys must agree too
  host_batch = _batch(tiny, data, [0, 1, 2])
  params = {}
  for n in (1, 4):
    mesh = state_lib.make_mesh(jax.devices()[:n])
    state = state_lib.create_train_state(tiny, model, splits.feature_dim(tiny, data),
                                         mesh)
    step, _ = steps.compile_steps(tiny, model, mesh)
    batch = steps.to_device(host_batch, mesh)
    if n == 4:
      assert len(batch["features"].sharding.device_set) == 4   # really split
    state, _ = step(state, batch, jax.random.key(0))
    state, _ = step(state, batch, jax.random.key(0))
    params[n] = jax.device_get(state.params)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                       params[1], params[4]))
  assert max(diffs) < 1e-5
  moved = jax.tree.leaves(jax.tree.map(lambda a: float(np.abs(a).max()), params[1]))
  assert max(moved) > 0


def _final_params(config, workdir):
  data = splits.load_split(config, "train")
  model = create_model(config)
  mesh = state_lib.make_mesh()
  state = state_lib.create_train_state(config, model, splits.feature_dim(config, data),
                                       mesh)
  ckpt = checkpointing.Checkpointer(pathlib.Path(workdir) / "checkpoints", every_steps=1)
  restored, data_state = ckpt.restore(checkpointing.abstract_like(state))
  ckpt.close()
  return int(restored.step), jax.device_get(restored.params), data_state


def test_resume_from_checkpoint_continues_identically(tiny, tmp_path):
  # Train and test videos together: 5 videos, so an epoch is 2 batches and the
  # input pipeline's position matters on resume.
  tiny.dataset.train_split = "train+test"
  tiny.num_train_steps = 6
  tiny.checkpoint_every_steps = 3
  tiny.eval_every_steps = 100
  straight = loop.train_and_evaluate(tiny, tmp_path / "straight")
  tiny.num_train_steps = 3
  loop.train_and_evaluate(tiny, tmp_path / "resumed")
  tiny.num_train_steps = 6
  resumed = loop.train_and_evaluate(tiny, tmp_path / "resumed")
  step_a, params_a, data_a = _final_params(tiny, tmp_path / "straight")
  step_b, params_b, data_b = _final_params(tiny, tmp_path / "resumed")
  assert step_a == step_b == 6 and data_a == data_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert straight == resumed
  logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").open()]
  # The first run logs its last step (3) too.
  assert [r["step"] for r in logged if "train/loss" in r] == [2, 3, 4, 6]
  straight_log = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
  loss = lambda log, s: next(r["train/loss"] for r in log if r["step"] == s and "train/loss" in r)
  assert loss(logged, 6) == loss(straight_log, 6)


def test_train_and_evaluate_writes_outputs(tiny, tmp_path):
  metrics = loop.train_and_evaluate(tiny, tmp_path / "run")
  first = (tmp_path / "run" / "predictions.jsonl").read_text()
  report = (tmp_path / "run" / "eval_results.json").read_text()
  # `hhjax.evaluate` restores the latest checkpoint: the same predictions again, written
  # under the split's and the step's name, never over the training run's report.
  again, _ = evaluate.evaluate_checkpoint(tiny, tmp_path / "run")
  assert again == metrics
  assert (tmp_path / "run" / "predictions.jsonl").read_text() == first
  assert (tmp_path / "run" / "eval_results.json").read_text() == report
  metrics_path, predictions_path = evaluate.output_paths(tmp_path / "run", "test", 6)
  assert predictions_path.read_text() == first
  assert json.loads(metrics_path.read_text())["metrics"] == metrics
  # Another model or input setting than the run's is refused, naming the field; an
  # evaluation-time one is not.
  other = copy.deepcopy(tiny)
  other.dataset.frame_stride = 2
  with pytest.raises(loop.ConfigMismatchError, match="dataset.frame_stride: 1 -> 2"):
    evaluate.evaluate_checkpoint(other, tmp_path / "run")
  # Evaluation-time settings (a view, merging short runs) get files of their own.
  assert len({evaluate.output_paths(tmp_path / "run", "test", 6, *setting)[0]
              for setting in [(), ("rot90",), ("", 5), ("rot90", 5)]}) == 4
  evaluate.evaluate_checkpoint(tiny, tmp_path / "run", split="train", step=3)
  _, train_predictions = evaluate.output_paths(tmp_path / "run", "train", 3)
  assert len(train_predictions.read_text().splitlines()) == 3
  assert (tmp_path / "run" / "predictions.jsonl").read_text() == first
  with pytest.raises(FileNotFoundError, match="step 4"):
    evaluate.evaluate_checkpoint(tiny, tmp_path / "run", step=4)
  with pytest.raises(FileNotFoundError, match="train first"):
    evaluate.evaluate_checkpoint(tiny, tmp_path / "empty")
  assert set(metrics) == {"acc", "edit", "f1@10", "f1@25", "f1@50", "segs", "spearman",
                          "rl2", "rank_acc"}
  rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").open()]
  assert len(rows) == 2
  for row in rows:
    assert len(row["frame_labels"]) == len(row["gt_frame_labels"])
    assert len(row["step_scores"]) == 6
    assert row["video_score"] == pytest.approx(sum(row["step_scores"]), abs=1e-4)
  log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert {"step", "train/loss", "train/ce", "train/smooth", "train/score_mse"} <= set(log[0])
  assert any("eval/f1@50" in r for r in log)


def test_standardised_run_saves_and_reuses_its_statistics(tiny, tmp_path):
  tiny.dataset.standardize = True
  tiny.eval_every_steps = 100
  metrics = loop.train_and_evaluate(tiny, tmp_path / "run")
  saved = pipeline.FeatureStats.load(tmp_path / "run" / splits.STATS_FILE)
  train = splits.load_split(tiny, "train")
  frames = np.concatenate([np.asarray(train.source[i]["features"], np.float64)
                           for i in range(len(train.lengths))])
  np.testing.assert_allclose(saved.mean, frames.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(saved.std, np.maximum(frames.std(0), 1e-3), rtol=1e-4)
  # Re-evaluating reads the same statistics back: the same metrics.
  again, _ = evaluate.evaluate_checkpoint(tiny, tmp_path / "run")
  np.testing.assert_equal(again, metrics)   # NaN (a constant score) equals NaN here
  (tmp_path / "run" / splits.STATS_FILE).unlink()
  with pytest.raises(FileNotFoundError, match="feature_stats.npz"):
    evaluate.evaluate_checkpoint(tiny, tmp_path / "run")


def _run_cli(args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "hhjax.train", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_unknown_config_key_is_an_error(tmp_path):
  res = _run_cli(["--config", "configs/tiny.py", "--workdir", str(tmp_path),
                  "--config.model.num_stagez=3"])
  assert res.returncode != 0
  assert "num_stagez" in res.stderr


def test_bad_config_value_names_the_field(tiny, tmp_path):
  tiny.model.attention = "quadratic"
  with pytest.raises(ValueError, match="config.model.attention"):
    loop.train_and_evaluate(tiny, tmp_path)
  tiny.model.attention = "linear"
  tiny.batch_size = 3
  with pytest.raises(ValueError, match="config.batch_size"):
    loop.train_and_evaluate(tiny, tmp_path)


def test_missing_manual_directory_is_named_without_traceback(tmp_path):
  res = _run_cli(["--config", "configs/hha300.py", "--workdir", str(tmp_path / "w"),
                  f"--config.dataset.data_dir={tmp_path / 'tfds'}",
                  f"--config.dataset.manual_dir={tmp_path / 'absent'}"])
  assert res.returncode == 1
  assert str(tmp_path / "absent") in res.stderr and "manual_dir" in res.stderr
  assert "Traceback" not in res.stderr


def test_scores_outside_the_range_are_named_by_file_line_and_video(tmp_path):
  """A split whose scores leave config.dataset.score_range stops the run; with a manual
  directory the error names scores.csv's rows, otherwise the split's videos."""
  import types  # noqa: PLC0415
  from hhjax.data import layout  # noqa: PLC0415
  steps = ",".join(f"step{k}" for k in range(1, 7))
  (tmp_path / "scores.csv").write_text(
      f"video,score,{steps}\n"
      "a,5.0,ES,ES,ES,ES,ES,EN\n"
      "b,9.0,ES,ES,ES,ES,ES,ES\n")
  data = types.SimpleNamespace(names=["a", "b"], scores=np.array([5.0, 9.0]),
                               has_scores=True, split="train")
  config = default_config.get_config()
  config.dataset.manual_dir = str(tmp_path)
  with pytest.raises(layout.LayoutError) as raised:
    loop.check_scores_in_range(config, data)
  message = str(raised.value)
  assert f"{tmp_path / 'scores.csv'}:3: video 'b' has score 9" in message
  assert "score_range=(0, 6)" in message and ":2:" not in message
  config.dataset.manual_dir = ""
  with pytest.raises(ValueError, match=r"split 'train' .* b \(9\)"):
    loop.check_scores_in_range(config, data)
  config.dataset.score_range = (0.0, 10.0)
  loop.check_scores_in_range(config, data)          # in range: no error
  data.has_scores = False
  config.dataset.score_range = (1.0, 2.0)
  loop.check_scores_in_range(config, data)          # no scores: nothing to check
