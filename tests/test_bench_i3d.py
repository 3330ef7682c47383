"""I3D on CPU: the 2D-convolution forward against plain 3D convolutions, and the
`python -m hhjax.bench i3d` benchmark (its PyTorch I3D against the golden reference
outputs and against hhjax, its options, its summary and table from fake workers).

Tiny clips throughout; no test asserts a wall time. The PyTorch tests skip without
torch.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import bench, bench_i3d, bench_versus
from hhjax.models.backbones import i3d

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "golden" / "i3d"
REL_TOL = 1e-5  # float32 rewrites of the same sums: relative to the largest |value|
TORCH_OPTIONAL = "torch is optional (pip install -e '.[bench]')"


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


def _conv3d_reference(x, kernel, strides):
  """XLA's own 3D convolution; lax's "SAME" is TF-SAME (smaller half of the padding
  first), the padding the reference computes from the input size."""
  return jax.lax.conv_general_dilated(
    x, kernel, strides, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    precision=jax.lax.Precision.HIGHEST)


# --------------------------------------------------------------------------------------
# The CPU rewrites in hhjax.models.backbones.i3d.


@pytest.mark.parametrize(
  "x_shape, kernel, strides",
  [
    ((2, 9, 13, 12, 3), (7, 7, 7), (2, 2, 2)),  # the stem, odd sizes: uneven padding
    ((1, 5, 6, 7, 4), (3, 3, 3), (1, 1, 1)),
    ((1, 4, 5, 5, 6), (1, 1, 1), (1, 1, 1)),
    ((1, 7, 6, 9, 2), (2, 3, 1), (2, 1, 2)),
  ],
)
def test_conv3d_same_is_the_3d_convolution_and_its_gradient(x_shape, kernel, strides):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kernel, x_shape[-1], 5)), jnp.float32)
  want = _conv3d_reference(x, w, strides)
  assert want.shape == (
    x_shape[0], *(-(-n // s) for n, s in zip(x_shape[1:4], strides)), 5)
  probe = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  want_grads = jax.grad(lambda x, w: jnp.sum(_conv3d_reference(x, w, strides) * probe),
                        argnums=(0, 1))(x, w)
  # By default the CPU gets the 2D form (a rank-4 convolution), other backends the 3D.
  jaxpr = jax.make_jaxpr(functools.partial(i3d.conv3d_same, strides=strides))(x, w)
  ranks = [e.invars[0].aval.ndim for e in jaxpr.eqns
           if e.primitive.name == "conv_general_dilated"]
  assert ranks == [4 if jax.default_backend() == "cpu" else 5]
  for as_2d in (True, False):
    got = i3d.conv3d_same(x, w, strides, as_2d=as_2d)
    assert got.shape == want.shape and _rel_err(got, want) <= REL_TOL
    # Training differentiates through the rewrite: the 3D convolution's gradients.
    grads = jax.grad(
      lambda x, w: jnp.sum(i3d.conv3d_same(x, w, strides, as_2d=as_2d) * probe),
      argnums=(0, 1))(x, w)
    for g, h in zip(grads, want_grads):
      assert _rel_err(g, h) <= REL_TOL


@pytest.mark.parametrize(
  "x_shape, window, strides",
  [
    ((1, 4, 11, 10, 3), (1, 3, 3), (1, 2, 2)),  # MaxPool3d_2a / 3a
    ((2, 5, 6, 7, 4), (3, 3, 3), (1, 1, 1)),  # branch 3 of every Inception block
    ((1, 5, 7, 6, 3), (3, 3, 3), (2, 2, 2)),  # MaxPool3d_4a
    ((1, 3, 5, 4, 2), (2, 2, 2), (2, 2, 2)),  # MaxPool3d_5a
  ],
)
def test_max_pool_same_is_the_windowed_maximum(x_shape, window, strides):
  # Post-ReLU input: zero padding and -inf padding give the same maxima.
  x = np.abs(np.random.default_rng(1).standard_normal(x_shape)).astype(np.float32)
  want = jax.lax.reduce_window(jnp.asarray(x), -jnp.inf, jax.lax.max, (1, *window, 1),
                               (1, *strides, 1), "SAME")
  np.testing.assert_array_equal(i3d.max_pool_same(x, window, strides), want)


def _plain_mixed_5c(variables, x):
  """The network up to Mixed_5c from the variables alone: 3D convolutions, batch norm
  written out, reduce-window max pools (the layer order of the reference port)."""
  params, stats = variables["params"], variables["batch_stats"]

  def unit(path, x, strides=(1, 1, 1)):
    p, s = params, stats
    for key in path:
      p, s = p[key], s[key]
    y = _conv3d_reference(x, p["conv3d"]["kernel"], strides)
    bn, running = p["bn"], s["bn"]
    y = (y - running["mean"]) / jnp.sqrt(running["var"] + 1e-3)
    y = y * bn["scale"] + bn["bias"]
    return jnp.maximum(y, 0.0)

  def pool(x, window, strides):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1),
                                 (1, *strides, 1), "SAME")

  def mixed(name, x):
    b0 = unit((name, "b0"), x)
    b1 = unit((name, "b1b"), unit((name, "b1a"), x))
    b2 = unit((name, "b2b"), unit((name, "b2a"), x))
    b3 = unit((name, "b3b"), pool(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)

  x = unit(("Conv3d_1a_7x7",), x, (2, 2, 2))
  x = pool(x, (1, 3, 3), (1, 2, 2))
  x = unit(("Conv3d_2c_3x3",), unit(("Conv3d_2b_1x1",), x))
  x = pool(x, (1, 3, 3), (1, 2, 2))
  x = mixed("Mixed_3c", mixed("Mixed_3b", x))
  x = pool(x, (3, 3, 3), (2, 2, 2))
  for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
    x = mixed(name, x)
  x = pool(x, (2, 2, 2), (2, 2, 2))
  return mixed("Mixed_5c", mixed("Mixed_5b", x))


@pytest.fixture(scope="module")
def random_variables():
  state_dict = bench_i3d.random_state_dict(i3d.reference_shapes(), seed=3)
  return i3d.params_from_torch(state_dict)


@pytest.fixture(scope="module")
def tiny_run(random_variables):
  """(clip (1, 9, 40, 48, 3), hhjax's Mixed_5c map of it), computed once."""
  clip = np.random.default_rng(2).uniform(-1.0, 1.0, (1, 9, 40, 48, 3))
  clip = clip.astype(np.float32)  # not square: the padding differs between H and W
  model = i3d.InceptionI3d(final_endpoint="Mixed_5c")
  out = jax.jit(functools.partial(model.apply, train=False))(random_variables, clip)
  return clip, np.asarray(out)


def test_mixed_5c_forward_equals_plain_3d_convolutions(random_variables, tiny_run):
  clip, got = tiny_run
  want = jax.jit(_plain_mixed_5c)(random_variables, clip)
  assert got.shape == want.shape == (1, 2, 2, 2, i3d.FEATURE_DIM)
  assert float(jnp.abs(want).max()) > 0.1  # the random weights keep a signal
  assert _rel_err(got, want) <= REL_TOL


def test_final_endpoint_is_checked():
  x = jax.ShapeDtypeStruct((1, 8, 64, 64, 3), jnp.float32)
  model = i3d.InceptionI3d(final_endpoint="Mixed_4f")
  with pytest.raises(ValueError, match="final_endpoint"):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  # The full network still refuses what its final pool cannot take.
  with pytest.raises(ValueError, match="too small"):
    jax.eval_shape(functools.partial(i3d.InceptionI3d().init, train=False),
                   jax.random.key(0), x)


# --------------------------------------------------------------------------------------
# The PyTorch I3D of the benchmark.


def _golden_rgb():
  path = GOLDEN_DIR / "i3d_rgb_golden.npz"
  if not path.is_file():
    pytest.skip(f"{path} is absent: the golden test needs ../shared/golden/i3d")
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def test_torch_i3d_gives_the_golden_reference_outputs():
  torch = pytest.importorskip("torch", reason=TORCH_OPTIONAL)
  golden = _golden_rgb()
  state_dict = {k[len("param/"):]: v for k, v in golden.items()
                if k.startswith("param/")}
  model = bench_i3d.build_torch_i3d()
  assert bench_i3d.torch_state_shapes(model) == i3d.reference_shapes() == \
      {k: v.shape for k, v in state_dict.items()}
  bench_i3d.load_state_dict_into(model, state_dict)
  model.eval()
  clip = golden["clip_uint8_nthwc"].astype(np.float32) / 127.5 - 1.0  # (1,32,224,224,3)
  with torch.inference_mode():
    logits, features = model(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3).copy()))
  assert logits.shape == golden["logits"].shape == (1, 400, 3)
  assert features.shape == golden["features"].shape == (1, 1024, 3, 1, 1)
  assert _rel_err(logits.numpy(), golden["logits"]) <= 1e-4
  assert _rel_err(features.numpy(), golden["features"]) <= 1e-4


def test_torch_and_hhjax_compute_the_same_mixed_5c(tiny_run):
  torch = pytest.importorskip("torch", reason=TORCH_OPTIONAL)
  model = bench_i3d.build_torch_i3d()
  state_dict = bench_i3d.random_state_dict(i3d.reference_shapes(), seed=3)
  bench_i3d.load_state_dict_into(model, state_dict)
  model.eval()
  clip, got = tiny_run
  with torch.inference_mode():
    want = model.mixed_5c(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3).copy()))
  assert _rel_err(got, want.numpy().transpose(0, 2, 3, 4, 1)) <= REL_TOL
  with pytest.raises(KeyError, match="missing"):
    bench_i3d.load_state_dict_into(model, {k: v for k, v in state_dict.items()
                                           if not k.startswith("logits.")})


def test_random_state_dict_depends_on_names_and_seed_only():
  shapes = {"b.conv3d.weight": (4, 2, 1, 1, 1), "a.bn.running_var": (4,)}
  first = bench_i3d.random_state_dict(shapes, seed=5)
  again = bench_i3d.random_state_dict(dict(reversed(list(shapes.items()))), seed=5)
  for name in shapes:
    np.testing.assert_array_equal(first[name], again[name])
  assert np.all((first["a.bn.running_var"] >= 0.5) & (first["a.bn.running_var"] <= 1.5))
  other = bench_i3d.random_state_dict(shapes, seed=6)
  assert not np.array_equal(first["b.conv3d.weight"], other["b.conv3d.weight"])


# --------------------------------------------------------------------------------------
# The benchmark's options, summary and table (fake workers: nothing is timed).


def test_i3d_options_defaults_and_bad_values(capsys):
  args = bench.build_parser().parse_args(["i3d"])
  assert (args.frames, args.size, args.repeats, args.steps, args.torch_threads) == \
      (64, 224, 3, 3, 2)
  assert args.precision == ["float32", "bfloat16"]
  assert args.contenders == ["torch-i3d", "hhjax-i3d"]
  args = bench.build_parser().parse_args(["i3d", "--frames", "8", "--size", "64",
                                          "--precision", "bfloat16", "--json"])
  assert (args.frames, args.size, args.precision, args.json) == \
      (8, 64, ["bfloat16"], True)
  with pytest.raises(SystemExit):
    bench.build_parser().parse_args(["i3d", "--frames", "0"])
  message = capsys.readouterr().err
  assert "argument --frames: must be a positive integer, got '0'" in message
  with pytest.raises(SystemExit):
    bench.build_parser().parse_args(["i3d", "--precision", "float16"])
  assert "argument --precision: invalid choice: 'float16'" in capsys.readouterr().err


def _run(contender, precision, repeat, fps, compile_s=0.0, hits=0):
  return dict(record="run", contender=contender, precision=precision, length=64,
              size=224, repeat=repeat, status="ok", framework="x", fps=fps,
              compile_s=compile_s, cache_hits=hits, rss_peak=2**20 * (100 + repeat),
              rss_base=2**20 * 50)


def test_summary_medians_ratios_and_errors_by_hand():
  runs = [_run("torch-i3d", "float32", 0, 10.0), _run("torch-i3d", "float32", 1, 14.0),
          _run("torch-i3d", "float32", 2, 12.0),
          _run("hhjax-i3d", "float32", 0, 30.0, 40.0),
          _run("hhjax-i3d", "float32", 1, 18.0, 3.0, 1),
          _run("hhjax-i3d", "float32", 2, 24.0, 5.0, 1),
          _run("hhjax-i3d", "bfloat16", 0, 20.0, 50.0),
          dict(record="run", contender="torch-i3d", precision="bfloat16", length=64,
               size=224, repeat=0, status="error (exit 1): boom")]
  f32 = np.array([[[1.0, -4.0], [2.0, 0.5]]])  # max |f| = 4
  errors = bench_i3d.feature_errors({
    ("torch-i3d", "float32"): f32,
    ("hhjax-i3d", "float32"): f32 + np.array([[[0.0, 2e-6], [0.0, 0.0]]]),
    ("hhjax-i3d", "bfloat16"): f32 + np.array([[[0.0, 0.0], [-0.02, 0.0]]])})
  assert errors[("hhjax-i3d", "float32")] == (pytest.approx(5e-7), "torch-i3d float32")
  assert errors[("hhjax-i3d", "bfloat16")] == (pytest.approx(5e-3), "hhjax-i3d float32")
  assert ("torch-i3d", "float32") not in errors
  rows = {(r["contender"], r["precision"]): r
          for r in bench_i3d.summarize(runs, errors)}
  torch_row, jax_row = rows[("torch-i3d", "float32")], rows[("hhjax-i3d", "float32")]
  assert torch_row["fps"] == 12.0 and torch_row["vs_torch"] == 1.0
  assert jax_row["fps"] == 24.0 and (jax_row["fps_min"], jax_row["fps_max"]) == (18, 30)
  assert jax_row["vs_torch"] == pytest.approx(2.0)
  assert jax_row["compile_cold_s"] == 40.0 and jax_row["compile_cached_s"] == 4.0
  assert jax_row["rss_peak_mb"] == 101 and jax_row["rss_base_mb"] == 50
  assert jax_row["status"] == "ok" and jax_row["counts"]
  bf16 = rows[("hhjax-i3d", "bfloat16")]
  assert bf16["rel_err"] == pytest.approx(5e-3) and not bf16["counts"]
  assert "does not count" in bf16["status"]
  assert "vs_torch" not in bf16  # PyTorch's bfloat16 run failed: nothing to divide by
  assert rows[("torch-i3d", "bfloat16")]["status"] == "error (exit 1): boom"


def test_table_from_fake_workers(monkeypatch, capsys):
  base = np.linspace(-3.0, 5.0, 2 * 1024).reshape(1, 2, 1024)  # max |f| = 5
  offsets = {("torch-i3d", "float32"): 0.0, ("hhjax-i3d", "float32"): 1e-6,
             ("torch-i3d", "bfloat16"): 0.02, ("hhjax-i3d", "bfloat16"): 1e-4}
  fps = {"torch-i3d": 4.0, "hhjax-i3d": 10.0}
  specs = []

  def fake_worker(spec, timeout_s, module, torch_worker):
    assert module == "hhjax.bench_i3d"
    assert torch_worker == (spec["contender"] == "torch-i3d")
    specs.append(spec)
    key = (spec["contender"], spec["precision"])
    np.save(spec["features_path"], base + offsets[key])
    return dict(_run(*key, spec["repeat"], fps[key[0]] * (1 + spec["repeat"])),
                length=spec["length"], size=spec["size"])

  monkeypatch.setattr(bench_versus, "torch_available", lambda: True)
  monkeypatch.setattr(bench_versus, "run_worker", fake_worker)
  rows = bench.main(["i3d", "--frames", "16", "--size", "32", "--repeats", "2"])
  out = capsys.readouterr().out
  assert len(specs) == 2 * 2 * 2  # contenders x precisions x repeats
  assert [(s["contender"], s["precision"]) for s in specs[:4]] == [
    ("torch-i3d", "float32"), ("hhjax-i3d", "float32"),
    ("torch-i3d", "bfloat16"), ("hhjax-i3d", "bfloat16")]
  assert specs[4]["contender"] == "hhjax-i3d"  # the second repeat starts rotated
  assert all(s["length"] == 16 and s["size"] == 32 and s["steps"] == 3 for s in specs)
  summary = {(r["contender"], r["precision"]): r for r in rows if r["record"] == "i3d"}
  assert summary[("hhjax-i3d", "float32")]["vs_torch"] == pytest.approx(2.5)
  assert summary[("hhjax-i3d", "float32")]["rel_err"] == pytest.approx(1e-6 / 5,
                                                                       rel=1e-3)
  assert summary[("hhjax-i3d", "bfloat16")]["counts"]  # 2e-5 relative
  assert not summary[("torch-i3d", "bfloat16")]["counts"]  # 4e-3 relative
  lines = out.splitlines()
  assert lines[1].split() == ["contender", "precision", "T", "size", "frames/s", "x",
                              "torch", "compile", "s", "(cold)", "compile", "s",
                              "(cached)", "peak", "RSS", "MiB", "base", "RSS", "MiB",
                              "rel.", "error", "status"]
  torch_bf16 = next(line for line in lines if line.lstrip().startswith("torch-i3d")
                    and "bfloat16" in line)
  assert "does not count" in torch_bf16
  assert any("bfloat16 counts only within 0.001" in line for line in lines)


def test_missing_torch_is_reported_and_only_hhjax_runs(monkeypatch, capsys):
  monkeypatch.setattr(bench_versus, "torch_available", lambda: False)
  monkeypatch.setattr(bench_versus, "run_worker",
                      lambda spec, *a, **k: pytest.fail(f"no worker may start: {spec}"))
  rows = bench.main(["i3d", "--contenders", "torch-i3d", "--precision", "float32",
                     "--repeats", "1", "--json"])
  assert [r["status"] for r in rows if r["record"] == "i3d"] == \
      ["skipped: torch is not installed (pip install -e '.[bench]')"]
  records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert records[0]["record"] == "env" and records[-1]["record"] == "note"
  assert any("no ratios" in r.get("text", "") for r in records)
