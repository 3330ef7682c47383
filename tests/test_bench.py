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
