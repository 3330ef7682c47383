"""The experiment runner: rows trained once, finished rows skipped, the paper beside us."""

import copy
import importlib.util
import json
import math
import pathlib

import pytest

from hhjax import experiments, provenance

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _trains_unless_told(monkeypatch):
  """`main(["--report-only", ...])` sets the module's REPORT_ONLY; no test inherits it."""
  monkeypatch.setattr(experiments, "REPORT_ONLY", False)


def _tiny(tmp_path):
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 2
  config.tensorboard = False
  return config


def _tiny_folds(tmp_path, num_folds):
  """The tiny config over a manual directory of `num_folds` fold bundles of one video
  each (for tests that stand in for training)."""
  manual = tmp_path / "manual"
  (manual / "splits").mkdir(parents=True)
  for k in range(num_folds):
    (manual / "splits" / f"fold{k}.bundle").write_text(f"p{k}_wash0\n")
  base = _tiny(tmp_path)
  base.dataset.manual_dir = str(manual)
  return base


def test_table_runs_rows_writes_files_and_skips_finished_rows(tmp_path, monkeypatch):
  base = (_tiny(tmp_path), "split")
  out = tmp_path / "out"
  result = experiments.run_table("12", "tiny", [0], "full", out, base=base,
                                 log=lambda *_: None)
  md = (out / "table12_full.md").read_text()
  saved = json.loads((out / "table12_full.json").read_text())
  # The figure beside the table is drawn from the same figures.
  assert (out / "table12_full.png").stat().st_size > 0
  assert [r["name"] for r in saved["rows"]] == ["segment + MLP", "segment + KAS"]
  # Our figures (mean over one seed) and the paper's beside them.
  assert "Sp.Corr ours" in md and "Sp.Corr paper" in md and "0.814" in md
  assert "| segment + KAS |" in md
  for row in saved["rows"]:
    run = out / "runs" / experiments.dataset_slug("tiny") / "full" / row["key"] / "seed0"
    on_disk = list(json.loads((run / "eval_results.json").read_text()).values())[-1]
    assert row["per_seed"][0] == pytest.approx(on_disk, nan_ok=True)
  assert len(saved["claims"]) == 2
  # One seed: each verdict is the sign of the margin between the two rows' figures
  # (lower is better for R-l2), and a tie is "not shown".
  seed0 = {r["name"]: r["per_seed"][0] for r in saved["rows"]}
  for claim, metric, sign in zip(result["claims"], ("spearman", "rl2"), (1, -1)):
    margin = sign * (seed0["segment + KAS"][metric] - seed0["segment + MLP"][metric])
    expected = ("holds" if margin > 0 else "does not hold" if margin < 0
                else "not shown")
    assert claim["verdict"] == expected, (metric, margin, claim)
  assert md.count("- **") == 2
  # A finished row is read back, never retrained.
  def no_training(*args, **kwargs):
    raise AssertionError("a finished row was retrained")
  monkeypatch.setattr("hhjax.training.loop.train_and_evaluate", no_training)
  again = experiments.run_table("12", "tiny", [0], "full", out, base=base,
                                log=lambda *_: None)
  assert again["rows"] == result["rows"]
  # The table names the code that trained its runs...
  label = provenance.code_label(provenance.code_version())
  assert [list(r["code"].values()) for r in saved["rows"]] == [[label], [label]]
  assert [list(r["code"]) for r in saved["rows"]] == [[f"{r['key']}/seed0"]
                                                      for r in saved["rows"]]
  assert f"Code: every training run (2) by {label}." in md
  # ...and warns when a run read back was trained by other code.
  code_file = (out / "runs" / experiments.dataset_slug("tiny") / "full" /
               saved["rows"][0]["key"] / "seed0" / provenance.CODE_FILE)
  start = json.loads(code_file.read_text().splitlines()[0])
  changed = dict(start, commit="e" * 40, tree="e" * 12, changes=None)
  code_file.write_text(json.dumps(changed) + "\n")
  experiments.run_table("12", "tiny", [0], "full", out, base=base, log=lambda *_: None)
  other = provenance.code_label(changed)
  assert (f"**Warning: the runs were trained by 2 versions of the code:** {other} "
          f"(1 run); {label} (1 run)." in (out / "table12_full.md").read_text())
  code_file.write_text(json.dumps(start) + "\n")
  assert experiments.code_text({provenance.UNRECORDED: 3}).startswith("Code: not recorded")
  assert experiments.code_text({}).startswith("Code: not recorded")
  assert "unrecorded (2 runs); x (1 run)" in experiments.code_text(
    {provenance.UNRECORDED: 2, "x": 1})
  # A finished run whose training data has changed since is not read back.
  run = out / "runs" / experiments.dataset_slug("tiny") / "full" / saved["rows"][0][
      "key"] / "seed0"
  recorded = (run / "train_data.json").read_text()
  (run / "train_data.json").write_text(json.dumps(dict(json.loads(recorded), videos=1)))
  with pytest.raises(experiments.StaleRun, match="trained on other data") as err:
    experiments.run_table("12", "tiny", [0], "full", out, base=base,
                          log=lambda *_: None)
  assert "videos: 1 -> " in str(err.value)
  (run / "train_data.json").write_text(recorded)
  # --rows: only the chosen rows may train; the others are listed only when finished.
  partial = experiments.run_table("13", "tiny", [0], "full", out, base=base,
                                  log=lambda *_: None, rows_wanted=["learnable"])
  assert [r["name"] for r in partial["rows"]] == ["KAS (learnable sigmoid)"]
  assert partial["rows"][0]["per_seed"] == result["rows"][1]["per_seed"]
  # A finished run is read back only as the config it was trained with: another
  # training length (as a run of the other budget in the same folder would have) is
  # an error naming the field, never a silent stand-in.
  longer = copy.deepcopy(base[0])
  longer.num_train_steps = 3
  with pytest.raises(experiments.StaleRun, match="num_train_steps: 2 -> 3"):
    experiments.run_table("12", "tiny", [0], "full", out, base=(longer, "split"),
                          log=lambda *_: None)
  # The quick budget trains in a folder of its own.
  assert experiments.run_table("12", "tiny", [0], "quick", out, base=base,
                               log=lambda *_: None, rows_wanted=["nothing"]) == {}
  # Table XIII shares its KAS row with Table XII: only the fixed-sigmoid row trains.
  trained = []
  monkeypatch.setattr(experiments, "run_one",
                      lambda config, workdir, log=print, may_train=True: (
                          trained.append(workdir) or ({"spearman": 0.5}, 1.0, False))
                      if not (workdir / "eval_results.json").exists()
                      else (experiments._read_results(workdir), 1.0, True))
  experiments.run_table("13", "tiny", [0], "full", out, base=base, log=lambda *_: None)
  assert len(trained) == 1 and "learnable_sigmoid=False" in str(trained[0])


def test_rows_left_out_of_rows_are_listed_with_their_finished_seeds(tmp_path,
                                                                    monkeypatch):
  """More seeds for some rows (--rows) keep the other rows in the table, with the
  seeds they have, named; a row with no finished seed is left out."""
  finished = {}   # workdir -> spearman

  def fake_run_one(config, workdir, log=print, may_train=True):
    if str(workdir) not in finished:
      if not may_train:
        raise experiments.NotRun(str(workdir))
      finished[str(workdir)] = 0.1 * (len(finished) + 1)
    return {"spearman": finished[str(workdir)]}, 1.0, False

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  base = (_tiny(tmp_path), "split")
  out = tmp_path / "out"
  experiments.run_table("12", "tiny", [0], "full", out, base=base, log=lambda *_: None)
  messages = []
  result = experiments.run_table("12", "tiny", [0, 1], "full", out, base=base,
                                 log=messages.append, rows_wanted=["KAS"])
  mlp, kas = result["rows"]
  assert kas["seeds"] == [0, 1] and mlp["seeds"] == [0]
  assert [s["spearman"] for s in mlp["per_seed"]] == pytest.approx([0.1])
  assert math.isnan(mlp["mean_sd"]["spearman"][1])
  assert kas["mean_sd"]["spearman"][0] == pytest.approx((0.2 + 0.3) / 2)
  md = (out / "table12_full.md").read_text()
  assert "| segment + MLP (seed 0 only) |" in md and "| segment + KAS |" in md
  assert any("segment + MLP: listed with seed(s) [0] only" in m for m in messages)
  # Seeds that no row has finished: the rows not chosen are left out, named.
  messages.clear()
  result = experiments.run_table("12", "tiny", [5], "full", out, base=base,
                                 log=messages.append, rows_wanted=["KAS"])
  assert [r["name"] for r in result["rows"]] == ["segment + KAS"]
  assert any("segment + MLP: not finished" in m for m in messages)


def test_a_table_counts_its_runs_and_says_how_long_the_rest_will_take(tmp_path,
                                                                      monkeypatch):
  """Each run that trains is numbered out of the runs the table still has to make,
  with the time left estimated from the runs made so far; runs read back, and a row's
  twin in another table, are not counted."""
  finished = set()

  def fake_run_one(config, workdir, log=print, may_train=True):
    reused = str(workdir) in finished
    finished.add(str(workdir))
    return {"spearman": 0.5}, 120.0, reused

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  monkeypatch.setattr(experiments, "_read_results",
                      lambda workdir: {"spearman": 0.5} if str(workdir) in finished
                      else None)
  base = (_tiny(tmp_path), "split")
  out = tmp_path / "out"
  said = []
  experiments.run_table("12", "tiny", [0, 1], "full", out, base=base, log=said.append)
  runs = [m for m in said if ": seed " in m]
  assert "4 training run(s) to make" in said[1]
  assert runs[0].endswith(": seed 0 (run 1 of 4)")
  assert runs[1].endswith(": seed 1 (run 2 of 4; 1 made in 2 min, about 6 min left)")
  assert runs[3].endswith(": seed 1 (run 4 of 4; 3 made in 6 min, about 2 min left)")
  # Table XIII shares its KAS row with Table XII: only the fixed sigmoid's two runs.
  said.clear()
  experiments.run_table("13", "tiny", [0, 1], "full", out, base=base, log=said.append)
  runs = [m for m in said if ": seed " in m]
  assert "2 training run(s) to make" in said[1]
  assert [m.endswith(")") for m in runs].count(True) == 2
  assert any(m.endswith("(run 2 of 2; 1 made in 2 min, about 2 min left)") for m in runs)
  progress = experiments.Progress([])
  assert progress.note(out) == "" and progress.total == 0


def test_evaluation_only_rows_share_the_training_run(tmp_path, monkeypatch):
  """A row with eval_overrides (short runs merged) re-evaluates its twin's run into
  files of its own; the twin's figures and files are untouched."""
  ours = experiments.OURS
  merged = (("model.min_segment_frames", 4),)
  monkeypatch.setitem(experiments.TABLES, "m", dict(
      title="merge", claims=[("edit", "A, merged", "A", "merging helps")],
      rows=[experiments.Row("A", ours), experiments.Row("A, merged", ours,
                                                         eval_overrides=merged)]))
  base = (_tiny(tmp_path), "split")
  out = tmp_path / "out"
  result = experiments.run_table("m", "tiny", [0], "full", out, base=base,
                                 log=lambda *_: None)
  raw, again = result["rows"]
  assert raw["key"] == again["key"] and again["train_seconds"] == 0.0
  run = out / "runs" / experiments.dataset_slug("tiny") / "full" / raw["key"] / "seed0"
  saved = json.loads((run / "eval" / "test_minseg-4_step2.json").read_text())
  assert again["per_seed"][0] == pytest.approx(saved["metrics"], nan_ok=True)
  assert raw["per_seed"][0] == pytest.approx(experiments._read_results(run), nan_ok=True)
  # Merging can only lower the segment count.
  assert again["per_seed"][0]["segs"] <= raw["per_seed"][0]["segs"]
  # The shared run is one training run of the table's code line, not two.
  label = provenance.code_label(provenance.code_version())
  assert result["meta"]["code"] == {label: 1}
  assert f"Code: every training run (1) by {label}." in (out / "tablem_full.md").read_text()
  with pytest.raises(ValueError, match="not an evaluation-time field"):
    experiments.Row("B", ours, eval_overrides=(("model.channels", 8),))


def test_saved_evaluations_are_reused_only_on_the_same_data(tmp_path, monkeypatch):
  """evaluate_split reads back an evaluation made on the split's data as it is now,
  and evaluates again when the recorded data (or, for a file without that record,
  the predicted videos) differ."""
  from hhjax.data import splits
  monkeypatch.setitem(experiments.TABLES, "m", dict(
      title="one row", claims=[], rows=[experiments.Row("A", experiments.OURS)]))
  config = _tiny(tmp_path)
  out = tmp_path / "out"
  result = experiments.run_table("m", "tiny", [0], "full", out, base=(config, "split"),
                                 log=lambda *_: None)
  run = out / "runs" / experiments.dataset_slug("tiny") / "full" / \
      result["rows"][0]["key"] / "seed0"
  config = experiments.row_config(config, experiments.TABLES["m"]["rows"][0], 0, "full")
  first = experiments.evaluate_split(config, run, "train")
  path = run / "eval" / "train_step2.json"
  saved = json.loads(path.read_text())
  data = splits.load_split(config, "train")
  assert saved["data"] == splits.evaluation_fingerprint(config, data)
  assert saved["data"]["build"] and saved["data"]["videos"] == len(data.names)

  def tamper(**changes):
    record = json.loads(path.read_text())
    record["metrics"]["acc"] = -1.0      # marks the saved file: read back, or not
    record.update(changes)
    if changes.get("data") is None:
      record.pop("data", None)
    path.write_text(json.dumps(record))

  tamper(data=dict(saved["data"]))
  assert experiments.evaluate_split(config, run, "train")["acc"] == -1.0
  tamper(data=dict(saved["data"], build="0" * 64))     # features rebuilt since
  assert experiments.evaluate_split(config, run, "train")["acc"] == pytest.approx(
      first["acc"])
  # A file from before the record: judged by its predicted videos and labels.
  tamper(data=None)
  assert experiments.evaluate_split(config, run, "train")["acc"] == -1.0
  predictions = path.with_name("train_step2.predictions.jsonl")
  lines = predictions.read_text().splitlines()
  predictions.write_text("\n".join(lines[:-1]) + "\n")   # one video fewer
  tamper(data=None)
  assert experiments.evaluate_split(config, run, "train")["acc"] == pytest.approx(
      first["acc"])
  assert len(predictions.read_text().splitlines()) == len(lines)


def test_same_videos_compares_names_and_labels_in_any_order():
  import numpy as np
  from hhjax.data import splits
  data = splits.SplitData(source=None, lengths=np.array([3, 2]), names=["a", "b"],
                          raw_feature_dim=4, labels=[np.array([0, 1, 1]), np.array([2, 2])],
                          scores=np.zeros(2), step_scores=np.zeros((2, 6)),
                          attributes=np.zeros((2, 6)), split="s")
  row = lambda name, labels: {"video": name, "gt_frame_labels": labels}
  assert splits.same_videos([row("b", [2, 2]), row("a", [0, 1, 1])], data)
  assert not splits.same_videos([row("b", [2, 2]), row("a", [0, 1, 2])], data)
  assert not splits.same_videos([row("b", [2, 2])], data)
  assert not splits.same_videos([row("b", [2, 2]), row("b", [2, 2]),
                                 row("a", [0, 1, 1])], data)


def test_plot_draws_each_rows_mean_sd_seeds_and_whole_clip_bars(tmp_path):
  import matplotlib.image
  rows = [dict(name="A", per_seed=[{"edit": 50.0, "segs": 2.0}, {"edit": 70.0,
                                                                   "segs": 1.0}],
               mean_sd={"edit": (60.0, 14.1), "segs": (1.5, 0.7)},
               per_seed_whole=[{"edit": 40.0}, {"edit": 44.0}],
               mean_sd_whole={"edit": (42.0, 2.8)}, paper={"edit": 80.0}, seeds=[0, 1]),
          dict(name="B", per_seed=[{"spearman": 0.3}], mean_sd={"spearman": (0.3,
                                                                           math.nan)},
               paper={}, seeds=[0])]
  meta = dict(dataset="tiny", budget="quick", seeds=[0, 1])
  path = tmp_path / "t.png"
  drawn = experiments.plot_table(path, dict(title="T"), rows, meta)
  assert list(drawn) == ["edit", "segs", "spearman"]   # F1@50: no row has it
  assert drawn["edit"] == [("A", "composed", 60.0, 14.1, [50.0, 70.0]),
                           ("A", "whole", 42.0, 2.8, [40.0, 44.0])]
  assert drawn["segs"] == [("A", "composed", 1.5, 0.7, [2.0, 1.0])]
  assert drawn["spearman"][0][:2] == ("B", "composed")
  image = matplotlib.image.imread(path)
  assert image.shape[0] > 100 and image.shape[1] > 3 * image.shape[0] / 2
  assert experiments.plot_table(tmp_path / "none.png", dict(title="T"),
                                [dict(name="C", mean_sd={}, paper={})], meta) == {}
  assert not (tmp_path / "none.png").exists()


def test_row_keys_are_shared_and_distinct(tmp_path):
  rows = {r.name: r for t in experiments.TABLES.values() for r in t["rows"]}
  assert rows["segment + KAS"].key == rows["Ours"].key   # the same run in two tables
  keys = {r.overrides: r.key for r in rows.values()}
  assert len(set(keys.values())) == len(keys)
  # Overrides equal to the base config do not make a new run.
  base = _tiny(tmp_path)
  base.training_segments = "ground_truth"
  gt_row = rows["ground-truth segments, input features"]
  assert experiments.effective(base, gt_row).key == experiments.effective(
      base, rows["Ours"]).key
  assert experiments.effective(base, rows["Ours w/o LT"]).overrides == (
      ("model.attention", "none"),)


def _row(name, **means):
  return dict(name=name, mean_sd={k: (v, 0.1) for k, v in means.items()})


def test_claims_by_hand():
  rows = [_row("A + MLP", edit=70.0, spearman=0.5), _row("B + MLP", edit=75.0),
          _row("Ours", edit=74.0, spearman=0.6)]
  claim = ("edit", "Ours", "every segmentation network + MLP", "ours best")
  verdict = experiments.judge_claim(claim, rows)
  assert verdict["verdict"] == "does not hold"
  assert "vs A + MLP: +4.00" in verdict["detail"] and "vs B + MLP: -1.00" in verdict["detail"]
  lower = experiments.judge_claim(("rl2", "Ours", "A + MLP", "lower is better"),
                                  [_row("A + MLP", rl2=3.0), _row("Ours", rl2=2.0)])
  assert lower["verdict"] == "holds"
  par = experiments.judge_claim(("edit", "Ours", "B + MLP", "par", "par"), rows)
  assert par["verdict"] == "holds"   # within two points
  # "As good as" is one-sided: far better holds, worse by more than two points does not.
  assert experiments.judge_claim(("edit", "B + MLP", "A + MLP", "par", "par"),
                                 rows)["verdict"] == "holds"
  assert experiments.judge_claim(("edit", "A + MLP", "Ours", "par", "par"),
                                 rows)["verdict"] == "does not hold"
  missing = experiments.judge_claim(("acc", "Ours", "B + MLP", "x"), rows)
  assert missing["verdict"] == "not measured"
  # One seed, a tie with one row and better than the other: not shown, not refuted.
  tied = [_row("A + MLP", edit=100.0), _row("B + MLP", edit=90.0), _row("Ours", edit=100.0)]
  assert experiments.judge_claim(claim, tied)["verdict"] == "not shown"
  tied[1] = _row("B + MLP", edit=100.5)
  assert experiments.judge_claim(claim, tied)["verdict"] == "does not hold"


def test_claims_within_the_spread_are_not_shown():
  # sd 2 on every row: a margin of 1.5 decides nothing, 3 does.
  def row(name, edit, sd=2.0):
    return dict(name=name, mean_sd={"edit": (edit, sd)})
  claim = ("edit", "Ours", "every segmentation network + MLP", "ours best")
  judge = lambda *rows: experiments.judge_claim(claim, list(rows))
  clear = judge(row("A + MLP", 70.0), row("Ours", 73.0))
  assert clear["verdict"] == "holds" and "(within" not in clear["detail"]
  close = judge(row("A + MLP", 70.0), row("B + MLP", 71.5), row("Ours", 73.0))
  assert close["verdict"] == "not shown"
  assert "vs B + MLP: +1.50 (within the seeds' spread)" in close["detail"]
  tied = judge(row("A + MLP", 73.0), row("Ours", 73.0))
  assert tied["verdict"] == "not shown"
  # Clearly worse than one row outweighs a close call with another.
  worse = judge(row("A + MLP", 72.0), row("B + MLP", 77.0), row("Ours", 73.0))
  assert worse["verdict"] == "does not hold"
  # The larger sd of the pair is the spread; one seed alone reads the means.
  assert judge(row("A + MLP", 70.0, sd=math.nan), row("Ours", 71.0, sd=0.5))[
      "verdict"] == "holds"
  single = judge(row("A + MLP", 72.9, sd=math.nan), row("Ours", 73.0, sd=math.nan))
  assert single["verdict"] == "holds" and "one seed" in single["detail"]


def test_mean_sd_skips_nan():
  out = experiments.mean_sd([{"acc": 1.0, "spearman": math.nan}, {"acc": 3.0,
                                                                  "spearman": 0.5}])
  assert out["acc"][0] == 2.0 and out["acc"][1] == pytest.approx(math.sqrt(2))
  assert out["spearman"][0] == 0.5 and math.isnan(out["spearman"][1])


def test_rows_that_match_nothing_are_named(capsys):
  with pytest.raises(SystemExit):
    experiments.main(["6", "--rows", "BCN,Nope", "--report-only"])
  err = capsys.readouterr().err
  assert "--rows 'Nope' matches no row of table(s) 6" in err and "BCN + MLP" in err
  rows = experiments.TABLES["6"]["rows"]
  assert experiments.select_rows(rows, ["ms-tcn +"]) == {"MS-TCN + MLP"}
  assert experiments.select_rows(rows, ["MS-TCN"]) == {"MS-TCN + MLP", "MS-TCN++ + MLP"}
  assert experiments.select_rows(rows, None) == {r.name for r in rows}


def test_unknown_table_and_dataset_are_named():
  with pytest.raises(ValueError, match="unknown table '14'"):
    experiments.run_table("14", "synthetic", [0], "quick", pathlib.Path("/tmp/x"))
  with pytest.raises(ValueError, match="neither"):
    experiments.base_config("/no/such/folder")


@pytest.mark.parametrize("dataset", ["synthetic", "handwash"])
def test_every_row_of_every_table_is_a_valid_model(dataset):
  """Each row's config passes the config checks and its model builds and scores a
  small batch of that data set's feature size (2048: I3D RGB + flow; 212: hand pose)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from hhjax import config as config_lib  # noqa: PLC0415
  from hhjax.models.joint import create_model  # noqa: PLC0415
  from hhjax.training import state  # noqa: PLC0415
  base, _ = experiments.base_config(dataset)
  dim = 212 if dataset == "handwash" else 2048
  seen = set()
  for spec in experiments.TABLES.values():
    for row in spec["rows"]:
      if row.key in seen or row.overrides and not any(
          k in ("model.video_pool", "loss.ranking_weight") for k, _ in row.overrides):
        continue           # the segmentation rows are covered by their own tests
      seen.add(row.key)
      config = experiments.row_config(base, row, seed=0, budget="quick")
      config_lib.check_config(config)
      model = create_model(config)
      x, mask = jnp.ones((2, 24, dim)), jnp.ones((2, 24)).at[1, 20:].set(0)
      params = model.init(jax.random.key(0), x, mask)
      out = model.apply(params, x, mask)
      assert out["video_score"].shape == (2,), row.name
      state.create_optimizer(config).init(params["params"])   # its lr groups match
  assert len(seen) >= 10    # three pooling regressors, six ACTION-NETs, the SA-RNN


def _result(table, dataset, budget, seeds, claims):
  return dict(meta=dict(table=table, dataset=dataset, seeds=list(range(seeds)),
                        budget=budget, kind="split"),
              title=f"Table {table}: x", rows=[], claims=claims)


def test_claims_matrix_by_hand(tmp_path, capsys):
  real = _result("9", "handwash", "full", 3, [
      dict(text="LT improves edit", verdict="not shown", detail="",
           whole=dict(text="LT improves edit", verdict="does not hold", detail=""))])
  synth6 = _result("6", "synthetic", "quick", 1, [
      dict(text="ours best", verdict="holds", detail="")])
  synth9 = _result("9", "synthetic", "quick", 1, [
      dict(text="LT improves edit", verdict="does not hold", detail="")])
  md = experiments.claims_matrix([real, synth9, synth6]).splitlines()
  assert md[0] == ("| Table | Claim | handwash, full, 3 seeds | handwash, full, 3 seeds, "
                   "whole-clip | synthetic, quick, 1 seed |")
  # Table VI comes before Table IX whatever the order of the files.
  assert md[2] == "| Table 6 | ours best | - | - | holds |"
  assert md[3] == ("| Table 9 | LT improves edit | not shown | does not hold | "
                   "does not hold |")
  assert len(md) == 4
  # Within a data set: the full budget first, then more seeds before fewer.
  synth_full = _result("9", "synthetic", "full", 3, [
      dict(text="LT improves edit", verdict="holds", detail="")])
  synth_quick3 = _result("9", "synthetic", "quick", 3, [
      dict(text="LT improves edit", verdict="not shown", detail="")])
  head = experiments.claims_matrix([synth9, synth_quick3, synth_full]).splitlines()[0]
  assert head == ("| Table | Claim | synthetic, full, 3 seeds | synthetic, quick, 3 seeds "
                  "| synthetic, quick, 1 seed |")
  # The same table and data twice with different verdicts is refused, not merged.
  other = copy.deepcopy(synth9)
  other["claims"][0]["verdict"] = "holds"
  with pytest.raises(ValueError, match="disagree on 'LT improves edit'"):
    experiments.claims_matrix([synth9, other])
  # The command reads folders, names a file it cannot read, and writes --out.
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "table9_full.json").write_text(json.dumps(real))
  (tmp_path / "a" / "table6_quick.json").write_text(json.dumps(synth6))
  out = tmp_path / "claims.md"
  assert experiments.main(["claims", str(tmp_path / "a"), "--out", str(out)]) == 0
  assert out.read_text() == capsys.readouterr().out
  # Columns come in the order the files are read (sorted names in a folder).
  assert "| Table 6 | ours best | holds | - | - |" in out.read_text()
  (tmp_path / "a" / "table8_quick.json").write_text("{not json")
  with pytest.raises(SystemExit):
    experiments.main(["claims", str(tmp_path / "a")])
  assert "table8_quick.json: not a table written by hhjax.experiments" in \
      capsys.readouterr().err


@pytest.mark.parametrize("videos", [2, 6])
def test_whole_clip_ranking_claims_need_enough_videos(videos):
  def row(name, edit, sp):
    return dict(name=name, mean_sd={"edit": (edit, 0.5), "spearman": (sp, 0.01)},
                paper={}, train_seconds=0.0, mean_sd_whole={"edit": (edit, 0.5), "spearman": (sp, 0.01)},
                per_seed_whole=[{"edit": edit, "spearman": sp, "videos": videos}],
                whole_videos=videos)
  rows = [row("A + MLP", 80.0, 0.5), row("Ours", 85.0, 0.9)]
  specs = [("edit", "Ours", "A + MLP", "ours edits best"),
           ("spearman", "Ours", "A + MLP", "ours ranks best")]
  claims = [experiments.judge_claim(c, rows) for c in specs]
  meta = {}
  experiments.judge_whole_clip(specs, claims, rows, meta)
  assert claims[0]["whole"]["verdict"] == "holds"          # edit is judged either way
  if videos < experiments.MIN_VIDEOS_TO_RANK:
    assert claims[1]["whole"] == dict(text="ours ranks best", verdict="not measured",
                                      detail="2 whole-clip washes per fold: too few "
                                             "to rank")
    assert meta == {"whole_videos": 2}
    assert all("spearman" not in r["mean_sd_whole"] for r in rows)
    assert rows[1]["per_seed_whole"][0]["spearman"] == 0.9   # the values are kept
    md = experiments.format_table("x", dict(title="T", claims=specs), rows,
                                  dict(meta, dataset="d", seeds=[0], budget="full",
                                       kind="folds"), claims)
    assert "2 washes per fold, too few to rank: Sp.Corr and RankAcc left out" in md
    assert "- on whole-clip washes: **not measured** (2 whole-clip washes" in md
  else:
    assert claims[1]["whole"]["verdict"] == "holds" and meta == {}
    assert "spearman" in rows[1]["mean_sd_whole"]
  assert claims[1]["verdict"] == "holds"      # composed washes: judged as before


def test_per_person_metrics_from_a_predictions_file(tmp_path):
  """Hand-worked: person a's two washes (one right, one all the wrong step) pool to
  accuracy 4/8, edit (100 + 0) / 2 and F1@50 from tp 2, fp 1, fn 1 (2/3)."""
  path = tmp_path / "predictions.jsonl"
  washes = [("a_wash0", [1, 1, 2, 2], [1, 1, 2, 2]), ("a_wash1", [4, 4, 4, 4], [3, 3, 3, 3]),
            ("b_wash0", [0, 5, 5, 5], [0, 5, 5, 6])]
  path.write_text("".join(json.dumps({"video": v, "frame_labels": p,
                                      "gt_frame_labels": g}) + "\n" for v, p, g in washes))
  got = experiments.per_person(path)
  assert list(got) == ["a", "b"]
  assert got["a"] == pytest.approx({"acc": 50.0, "edit": 50.0, "f1@50": 200 / 3})
  # b: 3 of 4 frames; one true segment of two missing (edit 50); 5-run IoU 2/3 > 0.5.
  assert got["b"] == pytest.approx({"acc": 75.0, "edit": 50.0, "f1@50": 200 / 3})
  path.write_text(json.dumps({"video": "a_wash0", "frame_labels": None,
                              "gt_frame_labels": [1]}) + "\n")
  assert experiments.per_person(path) == {}
  assert experiments.per_person(tmp_path / "absent.jsonl") == {}


def test_rows_average_each_person_over_seeds_and_the_table_lists_them(monkeypatch):
  persons = {0: {"a": {"acc": 50.0, "edit": 40.0, "f1@50": 30.0}},
             1: {"a": {"acc": 70.0, "edit": 60.0, "f1@50": 50.0},
                 "b": {"acc": 90.0, "edit": 80.0, "f1@50": 85.0}}}
  monkeypatch.setattr(experiments, "_run_seed",
                      lambda base, kind, row, seed, *a: ({"edit": 1.0}, None,
                                                         persons[seed], 1.0, {}))
  monkeypatch.setattr(experiments, "effective", lambda base, row: row)
  record = experiments.run_row(None, "folds", experiments.Row("A", ()), [0, 1], "full",
                               pathlib.Path("/nonexistent"))
  assert record["per_person"]["a"]["edit"] == pytest.approx((50.0, 14.142), abs=1e-3)
  assert record["per_person"]["b"]["acc"][0] == 90.0
  meta = dict(dataset="d", seeds=[0, 1], budget="full", kind="folds")
  md = experiments.format_table("x", dict(title="t"), [dict(record, paper={})], meta, [])
  assert "| Method | a | b |" in md
  assert "| A | 60.0 / 50.0 / 40.0 | 90.0 / 80.0 / 85.0 |" in md


def test_a_row_left_out_names_the_seeds_and_folds_not_finished(tmp_path, monkeypatch):
  """--report-only over folds some of which were never trained names them, per seed,
  instead of only saying that no seed finished."""
  base = _tiny_folds(tmp_path, 4)
  finished = {("seed0", "fold0"), ("seed0", "fold3"), ("seed1", "fold0")}

  def fake_run_one(config, workdir, log=print, may_train=True):
    if (workdir.parent.name, workdir.name) not in finished:
      raise experiments.NotRun(str(workdir))
    return {"edit": 50.0}, 1.0, True

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  with pytest.raises(experiments.NotRun) as e:
    experiments.run_row(base, "folds", experiments.Row("A", ()), [0, 1], "full",
                        tmp_path / "out", folds=[0, 1, 2, 3], may_train=False)
  assert str(e.value).endswith("no seed of [0, 1] finished (seed 0: folds 1, 2 not "
                               "finished; seed 1: folds 1, 2, 3 not finished)")
  with pytest.raises(experiments.NotRun) as e:
    experiments.run_row(base, "folds", experiments.Row("A", ()), [0, 1, 2], "full",
                        tmp_path / "out", folds=[1, 2], may_train=False)
  assert str(e.value).endswith("no seed of [0, 1, 2] finished (nothing run yet)")
  with pytest.raises(experiments.NotRun) as e:
    experiments.run_row(base, "folds", experiments.Row("A", ()), [0, 1, 2], "full",
                        tmp_path / "out", folds=[0, 1], may_train=False)
  assert str(e.value).endswith("(seeds 0, 1: fold 1 not finished; seed 2: folds 0, 1 "
                               "not finished)")
  # The folds that are finished make a record.
  record = experiments.run_row(base, "folds", experiments.Row("A", ()), [0, 1], "full",
                               tmp_path / "out", folds=[0, 3], may_train=False)
  assert record["seeds"] == [0] and record["mean_sd"]["edit"][0] == 50.0
  with pytest.raises(experiments.NotRun, match=r"\(nothing run yet\)"):
    experiments.run_row(base, "split", experiments.Row("A", ()), [0], "full",
                        tmp_path / "out", may_train=False)
  # The table of the finished folds is written under a name of its own and says where;
  # the one over every fold leaves the rows out, naming the folds they lack.
  said = []
  monkeypatch.setattr(experiments, "REPORT_ONLY", True)
  experiments.run_table("12", "tiny", [0], "full", tmp_path / "out", folds=[0, 3],
                        base=(base, "folds"), log=said.append)
  written = tmp_path / "out" / "table12_full_folds0-3"
  assert json.loads(written.with_suffix(".json").read_text())["meta"]["folds"] == [0, 3]
  assert written.with_suffix(".md").is_file() and written.with_suffix(".png").is_file()
  assert f"table 12 written to {written}.md (and .json, .png)" in said
  said.clear()
  assert experiments.run_table("12", "tiny", [0], "full", tmp_path / "out",
                               folds=[0, 1, 2, 3], base=(base, "folds"),
                               log=said.append) == {}
  assert any("(seed 0: folds 1, 2 not finished)); left out (--report-only)" in m
             for m in said)
  assert not (tmp_path / "out" / "table12_full.json").exists()


def test_fold_mean_skips_folds_without_a_metric_quietly():
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = experiments._fold_mean([{"edit": 1.0, "spearman": math.nan},
                                  {"edit": 3.0, "spearman": math.nan, "acc": 50.0}])
  assert got["edit"] == 2.0 and got["acc"] == 50.0 and math.isnan(got["spearman"])
  assert "f1@50" not in got


def test_settings_are_typed_by_their_field_and_bad_ones_named(tmp_path):
  config = _tiny(tmp_path)
  parsed = experiments.parse_settings(
      config, ["num_train_steps=1800", "learning_rate=1e-3", "lr_schedule=cosine",
               "model.learnable_sigmoid=false"])
  assert parsed == (("num_train_steps", 1800), ("learning_rate", 1e-3),
                    ("lr_schedule", "cosine"), ("model.learnable_sigmoid", False))
  assert type(parsed[0][1]) is int and type(parsed[1][1]) is float
  with pytest.raises(ValueError, match="no field 'model.no_such'"):
    experiments.parse_settings(config, ["model.no_such=1"])
  with pytest.raises(ValueError, match=r"num_train_steps is 2 \(int\); '1.5'"):
    experiments.parse_settings(config, ["num_train_steps=1.5"])
  with pytest.raises(ValueError, match="expected true or false"):
    experiments.parse_settings(config, ["model.learnable_sigmoid=maybe"])
  with pytest.raises(ValueError, match="FIELD=VALUE"):
    experiments.parse_settings(config, ["num_train_steps"])
  with pytest.raises(ValueError, match="twice"):
    experiments.parse_settings(config, ["seed=1", "seed=2"])
  rows = experiments.TABLES["13"]["rows"]
  # The quick budget fixes the training length; a row's own field is the row's.
  with pytest.raises(ValueError, match="quick budget sets this field itself"):
    experiments.apply_settings(config, (("num_train_steps", 5),), "quick", rows)
  with pytest.raises(ValueError, match=r"row 'KAS \(original sigmoid\)' sets this field"):
    experiments.apply_settings(config, (("model.learnable_sigmoid", False),), "full",
                               rows)


def test_a_table_with_settings_trains_apart_and_says_so(tmp_path, monkeypatch):
  """`--set` changes every row's config; its runs and files are named after the
  settings, so the plain table's runs are neither reused nor overwritten."""
  configs = {}

  def fake_run_one(config, workdir, log=print, may_train=True):
    configs[str(workdir)] = config.num_train_steps
    return {"spearman": 0.5, "rl2": 1.0}, 1.0, False

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  base = (_tiny(tmp_path), "split")
  out = tmp_path / "out"
  experiments.run_table("12", "tiny", [0], "full", out, base=base, log=lambda *_: None)
  settings = (("num_train_steps", 7),)
  result = experiments.run_table("12", "tiny", [0], "full", out, base=base,
                                 log=lambda *_: None, settings=settings)
  variant = experiments.variant_name("full", settings)
  assert variant.startswith("full+num_train_steps=7-")
  slug = experiments.dataset_slug("tiny")
  plain = {k: v for k, v in configs.items() if f"/{slug}/full/" in k}
  changed = {k: v for k, v in configs.items() if f"/{slug}/{variant}/" in k}
  assert len(plain) == len(changed) == 2
  assert set(plain.values()) == {2} and set(changed.values()) == {7}
  assert result["meta"]["settings"] == [["num_train_steps", 7]]
  assert (out / "table12_full.md").exists()
  md = (out / f"table12_{variant}.md").read_text()
  assert "budget full with num_train_steps=7;" in md
  assert "budget full;" in (out / "table12_full.md").read_text()
  # The claims matrix keeps the two apart, in columns of their own.
  matrix = experiments.claims_matrix([
      json.loads((out / "table12_full.json").read_text()),
      json.loads((out / f"table12_{variant}.json").read_text())])
  assert "tiny, full, 1 seed |" in matrix
  assert "tiny, full with num_train_steps=7, 1 seed |" in matrix


def test_set_on_the_command_line_is_checked_before_training(capsys):
  with pytest.raises(SystemExit):
    experiments.main(["6", "--budget", "quick", "--set", "num_train_steps=5",
                      "--report-only"])
  assert "quick budget sets this field itself" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    experiments.main(["6", "--set", "model.nope=5", "--report-only"])
  assert "no field 'model.nope'" in capsys.readouterr().err


def test_a_table_of_some_folds_says_which_and_keeps_its_own_claims_column(tmp_path):
  def folds_result(folds, verdict):
    result = _result("6", "handwash", "full", 3,
                     [dict(text="ours best", verdict=verdict, detail="")])
    result["meta"].update(kind="folds", folds=folds, num_folds=4)
    return result
  f12, f03, every = (folds_result([1, 2], "holds"), folds_result([0, 3], "does not hold"),
                     folds_result([0, 1, 2, 3], "not shown"))
  md = experiments.format_table("6", dict(title="T"), [], f12["meta"], [])
  assert "Data: handwash, folds 1, 2 of 4; 3 seed(s)" in md
  assert "Data: handwash; 3 seed(s)" in experiments.format_table(
      "6", dict(title="T"), [], every["meta"], [])
  # Tables of other folds are columns of their own, not a disagreement.
  matrix = experiments.claims_matrix([f12, f03, every]).splitlines()
  assert matrix[0] == ("| Table | Claim | handwash, full, 3 seeds | handwash, folds 0, 3 "
                       "of 4, full, 3 seeds | handwash, folds 1, 2 of 4, full, 3 seeds |")
  assert matrix[2] == "| Table 6 | ours best | not shown | does not hold | holds |"
  # A table of some folds has a name of its own, so tables of several sets of folds
  # and the all-folds one live side by side in one --out.
  assert experiments.table_stem("6", "full", f12["meta"]) == "table6_full_folds1-2"
  assert experiments.table_stem("6", "quick", f03["meta"]) == "table6_quick_folds0-3"
  assert experiments.table_stem("6", "full", every["meta"]) == "table6_full"
  assert experiments.table_stem("6", "full", dict(kind="split")) == "table6_full"
  # Writing over a table of other folds (a file from before these names) says so, and
  # how to write it again.
  path = tmp_path / "table6_full.json"
  path.write_text(json.dumps(f12))
  said = []
  experiments._warn_replaced(path, f03["meta"], said.append)
  assert len(said) == 1 and "held folds [1, 2]" in said[0] and "--folds 1,2" in said[0]
  experiments._warn_replaced(path, f12["meta"], said.append)
  experiments._warn_replaced(tmp_path / "absent.json", f03["meta"], said.append)
  assert len(said) == 1


def test_bad_folds_on_the_command_line_are_named(capsys, monkeypatch):
  for argv, message in (
      (["--folds", "1,x"], "--folds '1,x': expected comma-separated fold numbers"),
      (["--folds", "1,1"], "names a fold twice"),
      (["--dataset", "synthetic", "--folds", "1"], "has a train/test split, not folds")):
    with pytest.raises(SystemExit):
      experiments.main(["6", "--dataset", "handwash", *argv, "--report-only"])
    assert message in capsys.readouterr().err
  from hhjax import crossval
  monkeypatch.setattr(crossval, "fold_indices", lambda manual_dir: [0, 1, 2, 3])
  with pytest.raises(SystemExit):
    experiments.main(["6", "--dataset", "handwash", "--folds", "2,7", "--report-only"])
  assert "--folds: folds [7] are not among the data set's folds [0, 1, 2, 3]" in \
      capsys.readouterr().err


def _mstcn_folder(root: pathlib.Path, num_splits: int = 4) -> pathlib.Path:
  """A small data set folder in the MS-TCN release's layout (the builder tests' own:
  five classes, one video per test split)."""
  spec = importlib.util.spec_from_file_location(
      "builder_tests", REPO / "tests" / "test_action_segmentation_data.py")
  builder_tests = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(builder_tests)
  return builder_tests._write_mstcn(root, folds=builder_tests.FOUR_FOLDS[:num_splits])


def test_table_seven_cross_validates_the_release_splits_beside_the_paper(tmp_path,
                                                                        monkeypatch):
  """Table VII on a GTEA folder: every network trained on each of the release's four
  splits (train_split<k> / test_split<k>), the mean over the splits beside Li et al.'s
  GTEA figures, one table file per data set."""
  folder = _mstcn_folder(tmp_path / "gtea")
  base, kind = experiments.base_config(str(folder))
  assert kind == "splits" and base.dataset.config == "gtea"
  assert base.dataset.manual_dir == str(folder.resolve())
  runs = {}

  def fake_run_one(config, workdir, log=print, may_train=True):
    k = int(workdir.name.removeprefix("split"))
    runs[str(workdir)] = (config.dataset.train_split, config.dataset.eval_split)
    good = config.model.segmenter == "conv_transformer"
    return {"acc": 80.0 + k + (5.0 if good else 0.0), "edit": 70.0 + k,
            "f1@50": 60.0 + (1.0 if good else 0.0)}, 1.0, False

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  out = tmp_path / "out"
  said = []
  result = experiments.run_table("7", str(folder), [0], "quick", out, base=(base, kind),
                                 log=said.append)
  # Six networks x four splits, each split's own train / test pair.
  assert len(runs) == 24
  for workdir, (train, test) in runs.items():
    k = workdir.rsplit("split", 1)[1]
    assert (train, test) == (f"train_split{k}", f"test_split{k}")
  rows = {r["name"]: r for r in result["rows"]}
  assert list(rows) == ["MS-TCN", "MS-TCN++", "ASRF", "BCN", "ASFormer",
                        "Ours (conv-transformer)"]
  ours = rows["Ours (conv-transformer)"]
  assert ours["mean_sd"]["acc"][0] == pytest.approx(85.0 + 2.5)   # mean of splits 1-4
  assert ours["paper"] == {"acc": 81.3, "edit": 84.7, "f1@10": 89.0, "f1@25": 88.2,
                           "f1@50": 78.0}
  assert rows["ASFormer"]["paper"] == {}    # not in Li et al.'s table
  verdicts = {c["text"]: c["verdict"] for c in result["claims"]}
  assert verdicts["the joint model's network has the best frame accuracy"] == "holds"
  assert verdicts["it beats BCN in edit"] == "not shown"            # a tie
  assert verdicts["it beats BCN in F1@50"] == "holds"
  md = (out / "table7_quick_gtea.md").read_text()
  assert "(each seed: mean over the splits)" in md
  assert "Li et al., Table VII" in md
  assert f"table 7 written to {out / 'table7_quick_gtea'}.md (and .json, .png)" in said
  # Some splits: named in the file and the header.
  experiments.run_table("7", str(folder), [0], "quick", out, base=(base, kind),
                        folds=[1, 3], log=said.append)
  md = (out / "table7_quick_gtea_splits1-3.md").read_text()
  assert "Data: " + str(folder) + ", splits 1, 3 of 4; 1 seed(s)" in md
  # Table VII needs such a folder, and the other tables need scores.
  said.clear()
  assert experiments.run_table("7", "synthetic", [0], "quick", out,
                               base=experiments.base_config("synthetic"),
                               log=said.append) == {}
  assert "skipped on synthetic: it runs on GTEA, 50Salads or Breakfast" in said[0]
  assert experiments.run_table("6", str(folder), [0], "quick", out, base=(base, kind),
                               log=said.append) == {}
  assert "has no assessment scores (Table VII is its table)" in said[1]


def test_table_seven_names_a_folder_it_cannot_place_and_bad_splits(tmp_path, capsys):
  other = _mstcn_folder(tmp_path / "my_kitchen", num_splits=2)
  with pytest.raises(ValueError, match="is in the MS-TCN layout .* not one of gtea, "
                                       "50salads, breakfast"):
    experiments.base_config(str(other))
  gtea = _mstcn_folder(tmp_path / "GTEA")   # the name in any case
  with pytest.raises(SystemExit):
    experiments.main(["7", "--dataset", str(gtea), "--folds", "0,5", "--report-only",
                      "--out", str(tmp_path / "out")])
  assert ("--folds: splits [0, 5] are not among gtea's splits [1, 2, 3, 4] (numbered "
          "from 1, as in the MS-TCN release)") in capsys.readouterr().err


def test_table_seven_trains_a_network_on_one_split_end_to_end(tmp_path):
  """One real run: configs/mstcn_gtea.py's split 2 read through the builder, a small
  joint-model network, evaluated on test_split2's video."""
  folder = _mstcn_folder(tmp_path / "gtea")
  base, kind = experiments.base_config(str(folder), str(tmp_path / "tfds"))
  settings = experiments.parse_settings(base, [
      "num_train_steps=2", "eval_every_steps=2", "checkpoint_every_steps=2",
      "batch_size=4", "model.num_stages=2", "model.num_layers=2", "model.channels=8",
      "model.num_classes=5", "dataset.bucket_size=16", "tensorboard=False"])
  out = tmp_path / "out"
  result = experiments.run_table("7", str(folder), [0], "full", out, folds=[2],
                                 base=(base, kind), rows_wanted=["Ours"],
                                 settings=settings, log=lambda *_: None)
  (row,) = result["rows"]
  run = next((out / "runs").glob("*/*/base/seed0/split2"))
  saved = json.loads((run / "config.json").read_text())
  assert saved["dataset"]["train_split"] == "train_split2"
  assert saved["dataset"]["eval_split"] == "test_split2"
  predictions = [json.loads(line) for line in
                 (run / "predictions.jsonl").read_text().splitlines()]
  assert [p["video"] for p in predictions] == ["S1_Cheese_C1"]   # test.split2
  assert 0.0 <= row["mean_sd"]["acc"][0] <= 100.0


def test_table_seven_runs_every_data_set_of_the_release_folder(tmp_path, monkeypatch):
  """`--dataset` naming the release's data folder runs Table VII on each data set in it
  (in the paper's order of names known here), one table file each."""
  release = tmp_path / "data"
  _mstcn_folder(release / "gtea")
  _mstcn_folder(release / "Breakfast")
  (release / "notes").mkdir()
  assert experiments.release_subfolders(str(release)) == [
      str(release / "gtea"), str(release / "Breakfast")]
  assert experiments.release_subfolders(str(release / "gtea")) == []
  assert experiments.release_subfolders("synthetic") == []
  trained = []

  def fake_run_one(config, workdir, log=print, may_train=True):
    if not may_train:
      raise experiments.NotRun(str(workdir))
    trained.append((config.dataset.config, workdir.name))
    return {"acc": 50.0, "edit": 40.0, "f1@50": 30.0}, 1.0, False

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  out = tmp_path / "out"
  assert experiments.main(["7", "--dataset", str(release), "--rows", "BCN",
                           "--folds", "2", "--out", str(out)]) == 0
  assert trained == [("gtea", "split2"), ("breakfast", "split2")]
  for name, acc in (("gtea", 79.8), ("breakfast", 70.4)):
    result = json.loads((out / f"table7_quick_{name}_splits2.json").read_text())
    (row,) = result["rows"]
    assert row["name"] == "BCN" and row["paper"]["acc"] == acc


def test_views_table_trains_each_augmentation_once_and_evaluates_every_view(
    tmp_path, monkeypatch):
  """The "views" table: three trainings (as filmed, augment=handpose, handpose_half)
  per fold, each evaluated through every view with dataset.eval_view set; the claims
  read the right rows. Training and evaluation are stood in for by a known function of
  (augmentation, view)."""
  base = _tiny_folds(tmp_path, 2)
  base.dataset.streams = "all"
  # Frame accuracy: as filmed 90 from the front, 30 from above; augmented 70
  # everywhere; half 80 from the front and 65 elsewhere.
  acc = {("", ""): 90.0, ("", "rot45_pitch"): 30.0, ("", "rot30_yaw"): 60.0,
         ("", "mirror"): 85.0}
  trained, evaluated = [], []

  def fake_run_one(config, workdir, log=print, may_train=True):
    trained.append((config.dataset.augment, workdir.name))
    assert config.dataset.eval_view == ""     # training never sees a view
    return {"acc": _acc(config.dataset.augment, ""), "f1@50": 50.0}, 1.0, False

  def _acc(augmented, view):
    if augmented == "handpose":
      return 70.0
    if augmented == "handpose_half":
      return 80.0 if not view else 65.0
    return acc[("", view)]

  def fake_evaluate_split(config, workdir, split, *, with_predictions=False):
    view = config.dataset.eval_view
    evaluated.append((config.dataset.augment, view, workdir.name, split))
    m = {"acc": _acc(config.dataset.augment, view), "f1@50": 40.0 + len(view)}
    return (m, workdir / "none.jsonl") if with_predictions else m

  monkeypatch.setattr(experiments, "run_one", fake_run_one)
  monkeypatch.setattr(experiments, "evaluate_split", fake_evaluate_split)
  monkeypatch.setattr(experiments, "per_person", lambda path: {})
  result = experiments.run_table("views", "tiny", [0], "full", tmp_path / "out",
                                 base=(base, "folds"), log=lambda *_: None)
  rows = {r["name"]: r for r in result["rows"]}
  assert len(rows) == 12
  # Each training's run per fold is shared by its four views: the run is asked for
  # once per row (read back after the first), never with a view.
  assert {a for a, _ in trained} == {"", "handpose", "handpose_half"}
  assert {w for _, w in trained} == {"fold0", "fold1"}
  views = {v for _, v, _, _ in evaluated}
  assert views == {"rot30_yaw", "mirror", "rot45_pitch"}
  assert all(split == workdir for _, _, workdir, split in evaluated)
  assert rows["trained as filmed, from above (rot45_pitch)"]["mean_sd"]["acc"][0] == 30
  assert rows["augment=handpose, front"]["mean_sd"]["acc"][0] == 70
  verdicts = {c["text"]: c["verdict"] for c in result["claims"]}
  assert verdicts[("viewpoint augmentation keeps a camera looking down at 45 degrees "
                   "usable (frame accuracy)")] == "holds"
  assert verdicts[("viewpoint augmentation costs nothing seen from the front (frame "
                   "accuracy)")] == "does not hold"           # 70 against 90
  assert verdicts["augmenting half the washes wins back front-view accuracy"] == "holds"
  # Features split into I3D streams: the table is skipped, saying why.
  said = []
  base.dataset.streams = "rgb+flow"
  assert experiments.run_table("views", "tiny", [0], "full", tmp_path / "out2",
                               base=(base, "folds"), log=said.append) == {}
  assert "212 hand-pose values" in said[0] and "skipped" in said[0]
