"""The benchmark's own pieces: FLOP formulas, budgets, JSON output, parameter counts.

Everything runs on tiny shapes; no test asserts a wall time.
"""

import json

import jax
import jax.numpy as jnp
import pytest

from hhjax import bench
from hhjax.models.segmenters.conv_transformer import MultiStageModel

SMALL = dict(num_stages=2, num_layers=2, channels=8, num_heads=2)


@pytest.mark.parametrize("kind", ["linear", "softmax"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_analytic_flops_match_xla(kind, mode):
  # The formula in bench's docstring agrees with XLA's count within 10% (it is
  # within ~2% at these and larger sizes).
  row = bench.bench_attention_one(kind, mode, 48, channels=16, num_heads=2, run=False)
  assert row["status"] == "ok"
  assert row["flops_xla"] == pytest.approx(row["flops_analytic"], rel=0.10)


def test_softmax_flops_grow_quadratically():
  small, large = (bench.attention_flops("softmax", t) for t in (4096, 8192))
  assert 3.5 < large / small <= 4.0
  small, large = (bench.attention_flops("linear", t) for t in (4096, 8192))
  assert large / small == pytest.approx(2.0)


def test_over_budget_memory_is_reported_not_run():
  row = bench.bench_attention_one("linear", "fwd", 64, memory_budget_bytes=1e3)
  assert row["status"].startswith(bench.OVER_BUDGET)
  assert row["time_ms"] is None and row["memory_xla"] > 1e3
  # Softmax's T x T matrices are checked analytically, before anything compiles.
  row = bench.bench_attention_one("softmax", "fwd+bwd", 1 << 20, memory_budget_bytes=16e9)
  assert row["status"].startswith(bench.OVER_BUDGET) and "analytic" in row["status"]
  assert row["flops_xla"] is None and row["compile_s"] is None


def test_over_budget_time_is_reported_not_run():
  row = bench.bench_attention_one("linear", "fwd", 64, time_budget_s=1.0,
                                  predicted_time_s=10.0)
  assert row["status"].startswith(bench.OVER_BUDGET) and "time" in row["status"]
  assert row["time_ms"] is None


def test_attention_json_lines_parse(capsys):
  bench.main(["attention", "--min-length", "16", "--max-length", "16", "--repeats", "1",
              "--d-model", "16", "--num-heads", "2", "--json",
              "--memory-budget-gb", "1e-9"])
  lines = capsys.readouterr().out.strip().splitlines()
  records = [json.loads(line) for line in lines]
  assert records[0]["record"] == "env" and records[0]["jax"] == jax.__version__
  rows = [r for r in records if r["record"] == "attention"]
  assert len(rows) == 2 * 2   # kinds x modes
  assert all(r["status"].startswith(bench.OVER_BUDGET) for r in rows)


def test_attention_table_and_plot(tmp_path, capsys):
  plot = tmp_path / "a.png"
  rows = bench.main(["attention", "--min-length", "16", "--max-length", "32",
                     "--repeats", "1", "--d-model", "16", "--num-heads", "2",
                     "--modes", "fwd", "--plot", str(plot)])
  out = capsys.readouterr().out
  assert "JAX " + jax.__version__ in out and "softmax" in out
  assert all(r["time_ms"] > 0 for r in rows)
  assert plot.stat().st_size > 0


def _tree_size(params):
  return sum(x.size for x in jax.tree.leaves(params))


def test_model_parameter_count_is_the_param_tree_size(capsys):
  rows = bench.main(["model", "--small", "--length", "32", "--feature-dim", "16",
                     "--kinds", "linear", "none", "--segmentation-only",
                     "--forward-only", "--json"])
  records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert records[0]["record"] == "env"
  assert [r["attention"] for r in records if r["record"] == "model"] == ["linear", "none"]
  x, mask = jnp.zeros((1, 32, 16)), jnp.ones((1, 32))
  for r in rows:
    params = MultiStageModel(attention=r["attention"], **SMALL).init(
        jax.random.key(0), x, mask)["params"]
    assert r["params"] == _tree_size(params)
    assert r["flops_xla"] > 0 and r["memory_xla"] > 0
  assert rows[0]["params"] > rows[1]["params"]   # the attention projections


def test_softmax_longest_length_search():
  # A stand-in memory model (bytes = T^2) checks the doubling + bisection logic.
  budget = 300 ** 2
  best, probes = bench.softmax_max_length(budget, 16, start=64, granularity=8,
                                          memory_fn=lambda t: t * t)
  assert best == 296
  assert all(p["fits"] == (p["length"] <= 300) for p in probes)
  best, _ = bench.softmax_max_length(budget, 16, start=64, upper=128,
                                     memory_fn=lambda t: t * t)
  assert best == 128
  best, _ = bench.softmax_max_length(10, 16, start=64, memory_fn=lambda t: t * t)
  assert best == 0


def test_softmax_longest_length_search_compiles_the_joint_model():
  # One real probe of the tiny softmax joint model's compiled memory.
  best, probes = bench.softmax_max_length(1e12, 16, start=64, upper=64, **SMALL)
  assert best == 64 and len(probes) == 1 and probes[0]["memory_xla"] > 0


# ------------------------------------------------------------------ versus (PyTorch)
# `python -m hhjax.bench versus`: the PyTorch MS-TCN is checked against hhjax's MS-TCN
# (same weights, same outputs; same loss), the scheduling and summary by hand, and the
# subprocess workers (hhjax side) on a tiny network.

from hhjax import bench_versus  # noqa: E402


def _copy_mstcn_weights(params, model):
  """Loads hhjax MS-TCN parameters (Conv kernels (k, in, out)) into the PyTorch
  MS-TCN (weights (out, in, k))."""
  import torch
  import numpy as np

  def put(conv, p):
    conv.weight.data = torch.from_numpy(np.asarray(p["kernel"]).transpose(2, 1, 0).copy())
    conv.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())

  for s, stage in enumerate(model.stages):
    tcn = params[f"stage_{s}"]["tcn"]
    put(stage.project, tcn["conv_in"])
    for i, layer in enumerate(stage.layers):
      put(layer.dilated, tcn[f"layer_{i}"]["conv_dilated"])
      put(layer.pointwise, tcn[f"layer_{i}"]["conv_1x1"])
    put(stage.classify, params[f"stage_{s}"]["classifier"])


def test_torch_mstcn_computes_what_hhjax_mstcn_computes():
  torch = pytest.importorskip("torch")
  import numpy as np
  from hhjax.models import segmenters

  sizes = bench_versus.Sizes(num_stages=3, num_layers=4, channels=8, feature_dim=12,
                             num_classes=5)
  flax_model = segmenters.get("mstcn")(num_classes=5, num_stages=3, num_layers=4,
                                       channels=8)
  x = jax.random.normal(jax.random.key(0), (2, 40, 12))
  mask = jnp.ones((2, 40))
  params = flax_model.init(jax.random.key(1), x, mask)["params"]
  want = np.asarray(flax_model.apply({"params": params}, x, mask)["logits"])  # (S,B,T,C)
  model = bench_versus.build_torch_mstcn(sizes)
  assert sum(p.numel() for p in model.parameters()) == _tree_size(params)
  _copy_mstcn_weights(params, model)
  model.eval()
  with torch.no_grad():
    got = model(torch.from_numpy(np.asarray(x).transpose(0, 2, 1).copy()),
                torch.ones(2, 5, 40)).numpy()                                 # (S,B,C,T)
  np.testing.assert_allclose(got.transpose(0, 1, 3, 2), want, rtol=1e-4, atol=1e-5)
  # Training mode drops about half of each residual branch (nn.Dropout(0.5)).
  assert isinstance(model.stages[0].layers[0].dropout, torch.nn.Dropout)
  assert model.stages[0].layers[0].dropout.p == 0.5


def test_torch_loss_is_the_shared_mstcn_loss():
  torch = pytest.importorskip("torch")
  import numpy as np
  from hhjax import losses

  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 1, 30, 5)).astype(np.float32) * 3   # (S, B, T, C)
  labels = rng.integers(0, 5, size=(1, 30))
  ce, smooth = losses.stage_losses(jnp.asarray(logits), jnp.asarray(labels),
                                   jnp.ones((1, 30)), tau=4.0)
  want = float(jnp.sum(ce + 0.15 * smooth))
  got = bench_versus.torch_mstcn_loss(
      torch.from_numpy(logits.transpose(0, 1, 3, 2).copy()), torch.from_numpy(labels),
      torch.ones(1, 5, 30)).item()
  assert got == pytest.approx(want, rel=1e-5)


def test_schedule_interleaves_and_rotates():
  order = bench_versus.schedule(["a", "b", "c"], [8, 16], 3)
  assert order[:6] == [(0, 8, "a"), (0, 8, "b"), (0, 8, "c"),
                       (0, 16, "a"), (0, 16, "b"), (0, 16, "c")]
  assert [c for r, t, c in order if r == 1 and t == 8] == ["b", "c", "a"]
  assert [c for r, t, c in order if r == 2 and t == 8] == ["c", "a", "b"]
  assert len(order) == len(set(order)) == 3 * 2 * 3


def _run(contender, repeat, train_fps, infer_fps, compile_s, hits=0, length=100):
  return dict(record="run", contender=contender, length=length, repeat=repeat,
              status="ok", framework="x", train_fps=train_fps, infer_fps=infer_fps,
              compile_s=compile_s, cache_hits=hits, rss_peak=2**20 * (10 + repeat),
              rss_base=2**20)


def test_summary_medians_ratios_and_compile_times_by_hand():
  runs = [_run("torch-mstcn", 0, 100, 400, 0.0), _run("torch-mstcn", 1, 120, 380, 0.0),
          _run("torch-mstcn", 2, 90, 420, 0.0),
          _run("hhjax-mstcn", 0, 150, 900, 20.0),
          _run("hhjax-mstcn", 1, 210, 700, 2.0, 2),
          _run("hhjax-mstcn", 2, 180, 800, 4.0, 2),
          dict(record="run", contender="hhjax-joint", length=100, repeat=0,
               status="error (exit 1): boom")]
  rows = {r["contender"]: r for r in bench_versus.summarize(runs)}
  torch_row, jax_row = rows["torch-mstcn"], rows["hhjax-mstcn"]
  assert torch_row["train_fps"] == 100 and torch_row["infer_fps"] == 400
  assert jax_row["train_fps"] == 180 and jax_row["infer_fps"] == 800
  assert (jax_row["train_fps_min"], jax_row["train_fps_max"]) == (150, 210)
  assert jax_row["train_vs_torch"] == pytest.approx(1.8)
  assert jax_row["infer_vs_torch"] == pytest.approx(2.0)
  assert torch_row["train_vs_torch"] == pytest.approx(1.0)
  assert jax_row["compile_cold_s"] == 20.0 and jax_row["compile_cached_s"] == 3.0
  assert jax_row["rss_peak_mb"] == 11 and jax_row["rss_base_mb"] == 1
  assert rows["hhjax-joint"]["status"].startswith("error") and \
      "train_fps" not in rows["hhjax-joint"]


def test_missing_torch_is_reported_and_nothing_runs(monkeypatch, capsys):
  monkeypatch.setattr(bench_versus, "torch_available", lambda: False)
  monkeypatch.setattr(bench_versus, "run_worker",
                      lambda *a, **k: pytest.fail("no worker may start"))
  rows = bench.main(["versus", "--contenders", "torch-mstcn", "--repeats", "1",
                     "--lengths", "16", "--small", "--json"])
  assert [r["status"] for r in rows if r["record"] == "versus"] == \
      ["skipped: torch is not installed (pip install -e '.[bench]')"]
  assert "no ratios" in capsys.readouterr().out


def test_versus_workers_run_hhjax_and_a_warm_cache_skips_compiling(capsys):
  # Two repeats of the tiny hhjax MS-TCN, each in its own process: the first compiles
  # (and fills the shared persistent cache), the second loads both steps from it.
  rows = bench.main(["versus", "--small", "--lengths", "24", "--repeats", "2",
                     "--steps", "1", "--contenders", "hhjax-mstcn", "--json"])
  runs = [r for r in rows if r["record"] == "run"]
  assert [r["status"] for r in runs] == ["ok", "ok"], runs
  assert runs[0]["cache_hits"] == 0 and runs[1]["cache_hits"] >= 2
  for r in runs:
    assert r["train_fps"] > 0 and r["infer_fps"] > 0 and r["compile_train_s"] > 0
    assert r["rss_peak"] >= r["rss_base"] > 0
    assert len(r["train_times"]) == len(r["infer_times"]) == 1
  from hhjax.models.segmenters.mstcn import MSTCN
  params = MSTCN(num_classes=7, num_stages=2, num_layers=2, channels=8).init(
      jax.random.key(0), jnp.zeros((1, 8, 16)), jnp.ones((1, 8)))["params"]
  assert runs[0]["params"] > _tree_size(params)   # the MS-TCN plus the KAS head
  summary = [r for r in rows if r["record"] == "versus"]
  assert len(summary) == 1 and summary[0]["repeats"] == 2
  lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert lines[0]["record"] == "env" and lines[-1]["record"] == "note"


# -------------------------------------------------------- compilation cache (training)

_CACHE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp
from hhjax import config as config_lib
from hhjax.training import loop
config = config_lib.get_config()
config.compilation_cache_dir = sys.argv[1]
path = loop.setup_compilation_cache(config)
min_secs = jax.config.jax_persistent_cache_min_compile_time_secs
# Keep even this quick compile (on a fast machine it may take under the threshold).
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
start = loop.COMPILE_CLOCK.read()
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8))).block_until_ready()
seconds, compiles, hits = (b - a for a, b in zip(start, loop.COMPILE_CLOCK.read()))
print(json.dumps(dict(path=path, seconds=seconds, compiles=compiles, hits=hits,
                      jax_dir=jax.config.jax_compilation_cache_dir, min_secs=min_secs)))
"""


def _cache_run(setting, env=None):
  import os
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, setting],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, **(env or {})))
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def loop_min_secs():
  from hhjax.training import loop
  return loop.PERSISTENT_CACHE_MIN_COMPILE_SECS


def test_compilation_cache_is_reused_by_a_second_process(tmp_path):
  cache = tmp_path / "cache"
  first = _cache_run(str(cache))
  assert first["path"] == str(cache) and first["hits"] == 0
  assert first["min_secs"] == loop_min_secs()
  assert first["compiles"] >= 1 and first["seconds"] > 0
  assert any(p.name.endswith("-cache") for p in cache.iterdir())
  second = _cache_run(str(cache))
  assert second["hits"] >= 1 and second["compiles"] >= second["hits"]


def test_compilation_cache_default_folder_and_none(tmp_path):
  default = _cache_run("", env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
  assert default["path"] == str(tmp_path / "xdg" / "hhjax" / "jax_cache")
  assert default["jax_dir"] == default["path"]
  off = _cache_run("none", env={"JAX_COMPILATION_CACHE_DIR": ""})
  assert off["path"] is None and not off["jax_dir"] and off["hits"] == 0


def test_compilation_cache_folder_that_cannot_be_made_names_the_field(tmp_path):
  from hhjax import config as config_lib
  from hhjax.training import loop
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  config = config_lib.get_config()
  config.compilation_cache_dir = str(blocker / "cache")
  with pytest.raises(ValueError, match="config.compilation_cache_dir"):
    loop.setup_compilation_cache(config)
  config.compilation_cache_dir = ""
  config.dataset.bucket_policy = "fibonacci"
  with pytest.raises(ValueError, match="config.dataset.bucket_policy"):
    config_lib.check_config(config)


def test_train_rows_for_each_segmenter_dtype_and_length(capsys):
  common = ["train", "--config", "configs/tiny.py", "--batch-size", "4", "--repeats", "1",
            "--json"]
  rows = bench.main(common + ["--segmenter", "mstcn", "conv_transformer",
                              "--compute-dtype", "float32", "bfloat16", "--length", "32"])
  assert [(r["segmenter"], r["compute_dtype"], r["length"]) for r in rows] == [
      ("mstcn", "float32", 32), ("mstcn", "bfloat16", 32),
      ("conv_transformer", "float32", 32), ("conv_transformer", "bfloat16", 32)]
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
  assert [(p["segmenter"], p["compute_dtype"]) for p in printed
          if p.get("record") == "train"] == [(r["segmenter"], r["compute_dtype"])
                                             for r in rows]
  longer = bench.main(common + ["--segmenter", "mstcn", "--length", "64"])
  for r in rows + longer:
    assert r["devices"] == 4 and r["batch"] == 4
    assert r["frames_per_s"] == pytest.approx(4 * r["length"] / (r["ms_per_step"] / 1e3))
    assert r["device_peak"] is None   # CPU reports no device peak
  flops = {(r["segmenter"], r["compute_dtype"], r["length"]): r["flops_xla"]
           for r in rows + longer}
  # Twice the frames, about twice the work; the attention blocks cost extra work.
  assert 1.6 < flops["mstcn", "float32", 64] / flops["mstcn", "float32", 32] < 2.4
  assert flops["conv_transformer", "float32", 32] > flops["mstcn", "float32", 32]


def test_train_unknown_segmenter_and_indivisible_batch_are_named():
  with pytest.raises(ValueError, match="mstcm"):
    bench.main(["train", "--config", "configs/tiny.py", "--segmenter", "mstcm",
                "--length", "32", "--repeats", "1", "--json"])
  with pytest.raises(ValueError, match="batch size 3 .* 4 devices"):
    bench.main(["train", "--config", "configs/tiny.py", "--batch-size", "3",
                "--length", "32", "--repeats", "1", "--json"])
