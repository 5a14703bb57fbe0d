"""Smoke tests of the benchmark suite (bench/): one tiny measurement and the report from synthetic results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.run import main as bench_main

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"


def _env(load=1.0):
    return {"date": "2026-01-01T00:00:00+00:00", "cpu": "test cpu", "cpus": 2, "cpu_flags": ["avx2"], "memory_gib": 8,
            "gpu": False, "platform": "test", "versions": {"torch": "x"}, "git_commit": "abc", "load_average": [load, 0, 0]}


def _rec(n, result):
    return {"part": n, "title": f"part {n}", "mode": "quick", "env_start": _env(), "status": "ok", "result": result,
            "seconds": 1.0, "load_average_end": [1.0, 0, 0]}


def _auc(i, n):
    return {"income": 0.90 + 0.001 * i, "never_married": 0.95 + 0.001 * n}


def _part2_result() -> dict:
    """Part 2's shape, summarised by the part's own code: MMOE leads by 0.1 at p = 0.5 and ties at p = 1."""
    from bench.mmoe_synthetic import BASE, summarise

    cfg = {**BASE, "ps": [0.5, 1.0], "seeds": [0, 1, 2], "epochs": 5}
    runs = []
    for p in cfg["ps"]:
        for seed in cfg["seeds"]:
            for m in cfg["models"]:
                final = 0.3 + 0.01 * seed + (0.1 if (m == "SharedBottom" and p == 0.5) else 0.0)
                curve = [{"step": 40 * (k + 1), "mse": [final + 0.1 / (k + 1)] * 2} for k in range(5)]
                runs.append({"p": p, "seed": seed, "model": m, "curve": curve, "final_mse": final, "label_corr": p,
                             "n_params": 100})
    return {"config": cfg, "runs": runs, "summary": summarise(runs, cfg)}


def _part3_result() -> dict:
    """Part 3's shape, summarised by the part's own code: ESMM ahead by 0.02 AUC on every seed."""
    from bench.esmm_cvr import BASE, summarise

    def scope(auc):
        return {"soft_auc": auc, "logloss": 0.3, "pred_over_true": 1.1, "ece": 0.01, "curve": [[0.1, 0.1]]}

    runs = [{"seed": s, "n_train_clicks": 9000, "tail_share": 0.1, "esmm": {"all": scope(0.7 + 0.01 * s), "tail": scope(0.65)},
             "clicked_only": {"all": scope(0.68 + 0.01 * s), "tail": scope(0.6 + 0.001 * s)}} for s in range(3)]
    cell = {"name": "correlated", "options": {"effect_corr": 0.9}}
    return {"config": {**BASE, "seeds": [0, 1, 2], "cells": [cell]}, "cells": [{**cell, "runs": runs, "summary": summarise(runs)}]}


def synthetic_results() -> dict:
    """Results of every part in the shape the part modules write, with made-up numbers."""
    rows1 = []
    for seed in (0, 1):
        for i, m in enumerate(["SharedBottom", "ESMM", "MMOE", "PLE", "AITM", "AITM (calibration 0)"]):
            rows1.append({"model": m, "impl": "mtl_models", "seed": seed, "auc": _auc(i, seed)})
            if "(" not in m:
                rows1.append({"model": m, "impl": "Torch-RecHub 0.9.0", "seed": seed, "auc": _auc(i, 0)})
        rows1 += [{"model": "single-task MLP (income)", "impl": "mtl_models", "seed": seed, "auc": {"income": 0.9}},
                  {"model": "single-task MLP (never_married)", "impl": "mtl_models", "seed": seed, "auc": {"never_married": 0.96}},
                  {"model": "HistGradientBoosting", "impl": "sklearn", "seed": seed, "auc": _auc(20, 10)}]
    tuned = {"rows": [{"model": "mmoe", "impl": "mtl-pipeline tuned", "seed": 0, "val_score": 0.93, "auc": _auc(25, 14)},
                      {"model": "HistGradientBoosting", "impl": "sklearn (prepared split)", "seed": 0, "auc": _auc(27, 12)}],
             "searches": {"mmoe": {"best_params": {"lr": 0.001}, "n_complete": 2, "n_pruned": 1, "seconds": 3.0}}}
    p1 = {"config": {"seeds": [0, 1], "epochs": 1, "tuned_trials": 3, "tuned_search_epochs": 1, "tuned_train_epochs": 2},
          "fixed_config": {"embed": 16, "mlp": [128, 64], "tower": [32], "batch": 1024, "lr": 0.001, "numeric": "bins"},
          "rows": rows1, "tuned": tuned,
          "defaults": {"rows": [{"model": m, "impl": "mtl-pipeline defaults", "seed": s, "val_score": 0.94,
                                 "encoding": "gated_bins", "auc": {"income": inc + 0.001 * s, "never_married": 0.964}}
                                for m, inc in (("shared_bottom", 0.926), ("mmoe", 0.921)) for s in (0, 1)]
                       + [{"model": "HistGradientBoosting", "impl": "sklearn (prepared split)", "seed": s,
                           "auc": {"income": 0.9259, "never_married": 0.9635}} for s in (0, 1)],
                       "searches": {m: {"best_params": {"lr": 0.002}, "n_complete": 8, "n_pruned": 0, "seconds": 9.0}
                                    for m in ("shared_bottom", "mmoe")},
                       "budget": {"n_trials": 8, "n_epoch": 6, "pruner": "median", "batch_size": 256,
                                  "train_epochs": 15, "patience": 4}, "seeds": [0, 1],
                       "env": {"date": "2026-12-07", "load_average": [3.0, 0, 0]}}}
    p2, p3 = _part2_result(), _part3_result()
    tp = {"ours": 3e4, "plain": 2.9e4, "rechub": 7e3}
    p4 = {"config": {"threads": 1, "epochs": 2}, "rows": [
        {"model": "SharedBottom", "batch": 1024, "rows": 8192, "samples_s": tp, "median_samples_s": tp, "vs_rechub": 4.3,
         "vs_plain": 1.03, "median_vs_rechub": 4.3, "median_vs_plain": 1.03, "load": [1.0, 0, 0]}]}
    lat = {"batch": 1, "eager_median_ms": 0.5, "eager_p90_ms": 0.6, "onnx_median_ms": 0.1, "onnx_p90_ms": 0.2,
           "eager_samples_s": 2000, "onnx_samples_s": 10000, "onnx_over_eager": 0.2, "max_abs_diff": 1e-7}
    p5 = {"config": {"threads": 1, "n_b1": 10, "n_big": 2, "big_batch": 1024, "chunks": 1},
          "rows": [{"model": "SharedBottom", "b1": lat, "big": lat}]}
    arms = [{"arm": "none", "epochs_spent": 10, "epoch_fraction": 1.0, "best_value": 0.9, "best_delta": 0.0,
             "n_complete": 3, "n_pruned": 0, "seconds": 5, "meets_target": None},
            {"arm": "median", "epochs_spent": 5, "epoch_fraction": 0.5, "best_value": 0.9, "best_delta": 0.0,
             "n_complete": 2, "n_pruned": 1, "seconds": 3, "meets_target": True}]
    p6 = {"config": {"pipeline_config": "configs/default.yaml", "overrides": {"models": ["mmoe"]}},
          "search": {"model": "mmoe", "sampler": "random", "n_trials": 3, "n_epoch": 2, "patience": 3, "threads": 1,
                     "target": "t", "arms": arms},
          "local": {"seconds": 30.0, "by_step": {"prepare": 5.0, "train": 10.0}, "n_tasks": 8},
          "direct": {"seconds": 20.0, "by_step": {"prepare": 1.0, "train": 9.0}},
          "startup": {"median": 1.5, "seconds": [1.5], "bare_python_median": 0.02}, "overhead": 0.5,
          "pipeline_config_used": {"models": ["mmoe"], "dataset": "synthetic-funnel", "options": {}, "search": {}, "train": {}}}
    def scale_row(n: int, mib: int) -> dict:
        peak = {"peak_rss_bytes": mib * 2**20}
        return {"n_rows": n, "raw": {"bytes": 2**20},
                "prepare": {"seconds": 1.0, "rows_per_s": 1000, "parquet_bytes": 2**20, "load": [1.0], **peak},
                "loader": {"rows": 800, "seconds": 0.01, "rows_per_s": 80_000, **peak},
                "train": {"rows_per_s": 500, **peak}}
    p7 = {"config": {"batch": 4096, "threads": 2, "train_steps": 10}, "rows": [scale_row(1000, 500), scale_row(3000, 650)],
          "paired": {"steps": 4, "windows": 2, "rows_per_s": {"memory": [500, 500], "streamed": [480, 500]},
                     "load": [[1.0], [1.0]]}}
    cell = {"clients": 8, "requests": 100, "answered": 100, "errors": 0, "seconds": 1.0, "p50_ms": 5.0, "p99_ms": 9.0,
            "load": [1.0, 1.0, 1.0], "round": 0}
    p8 = {"config": {"clients": 8, "batches": [1, 100], "seconds": 1.0, "max_requests": 100, "rounds": 1},
          "cells": [{**cell, "server": "ours", "batch": 1, "rows_s": 300.0},
                    {**cell, "server": "mlflow", "batch": 1, "rows_s": 100.0},
                    {**cell, "server": "ours", "batch": 100, "rows_s": 9000.0},
                    {**cell, "server": "mlflow", "batch": 100, "rows_s": 6000.0}],
          "summary": {"1": {"ours_rows_s": 300.0, "mlflow_rows_s": 100.0, "ratio": 3.0, "errors": 0},
                      "100": {"ours_rows_s": 9000.0, "mlflow_rows_s": 6000.0, "ratio": 1.5, "errors": 0}}}
    return {n: _rec(n, r) for n, r in zip(range(1, 9), (p1, p2, p3, p4, p5, p6, p7, p8))}


def test_report_renders_every_part_from_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for n, rec in synthetic_results().items():
        (results / f"part{n}.json").write_text(json.dumps(rec))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{report.README_START}\nold\n{report.README_END}\n")
    out = report.render(results, tmp_path / "docs", command="python -m bench.run --quick", readme=readme)
    text = out.read_text()
    for title in report.TITLES.values():
        assert f"## {title}" in text
    assert "Could not render" not in text and "failed" not in text.lower().split("## headline")[0]
    assert "python -m bench.run --quick" in text
    # the defaults-only table: the champion on validation (ties: the first), judged against the trees - 0.003
    assert "#### Defaults only" in text and "| shared_bottom (champion) | gated_bins |" in text
    assert "income 0.9265 vs 0.9259 (gap +0.0006, worst seed 0.9260): **met**" in text
    assert "load average" in text and "test cpu" in text
    # targets are judged from the numbers: ours/TRH 4.3x met, local runner +50 % missed with its cause
    assert "≥ 3× **met**" in text and "(target ≤ 15 %: **missed**)" in text
    # part 7 judges its targets from the numbers: 650 / 500 MiB = 1.30x missed, loader 160x training met
    assert "1.30× that at 1,000 rows" in text and "target ≤ 1.2×: **missed**" in text and "(target ≥ 5×: **met**)" in text
    assert "streamed / memory = 0.980" in text
    # parts 2 and 3 state their verdicts from the per-seed values: MMOE ahead at p = 0.5 only, ESMM ahead on every seed
    assert "The paper's trend **reproduces**" in text and "p = 0.5: 0.100 [0.100, 0.100], p = 1.0: 0.000 [0.000, 0.000]" in text
    assert "| correlated | all impressions (100.0%) | 0.7100 [" in text and "paired lead 0.0200 [0.0200, 0.0200] (excludes 0)" in text
    for png in ("quality_adult.png", "mmoe_synthetic.png", "esmm_sweep.png", "throughput.png", "inference.png",
                "pipeline_steps.png"):
        assert (tmp_path / "docs" / "benchmarks" / png).stat().st_size > 1000
    merged = json.loads((tmp_path / "docs" / "benchmarks" / "results.json").read_text())
    assert sorted(merged["parts"]) == [str(n) for n in range(1, 9)]
    assert "Batch 1: ours 300 rows/s vs MLflow 100 rows/s: **3.0×** (0 errors)" in text
    assert "≥ 2×, 0 errors: **met**" in readme.read_text()
    new_readme = readme.read_text()
    assert "old" not in new_readme and "| benchmark | result | target |" in new_readme


def test_report_only_cli_renders_from_merged_json_and_names_missing_parts(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    recs = synthetic_results()
    (results / "results.json").write_text(json.dumps({"parts": {"5": recs[5]}}))
    assert bench_main(["--report-only", "--out", str(results), "--docs", str(tmp_path / "docs")]) == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "Not run in this report's results" in text and "ONNX / eager" in text


def test_rendering_some_parts_keeps_the_pages_other_parts(tmp_path):
    """`bench.run --parts 6` writes part6.json in bench/results; the page's merged JSON keeps parts 1-5 and 7."""
    recs = synthetic_results()
    docs = tmp_path / "docs"
    (docs / "benchmarks").mkdir(parents=True)
    (docs / "benchmarks" / "results.json").write_text(json.dumps({"parts": {str(n): recs[n] for n in (1, 5, 7)}}))
    out = tmp_path / "results"
    out.mkdir()
    newer = json.loads(json.dumps(recs[6]))
    newer["result"]["overhead"] = 0.1
    (out / "part6.json").write_text(json.dumps(newer))
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_START}\nold\n{report.README_END}\n")
    report.render(out, docs, command="python -m bench.run --parts 6", readme=readme)
    merged = json.loads((docs / "benchmarks" / "results.json").read_text())
    assert sorted(merged["parts"]) == ["1", "5", "6", "7"]
    assert merged["parts"]["6"]["result"]["overhead"] == 0.1
    headline = readme.read_text()
    assert "ONNX Runtime batch-1 latency" in headline and "local runner vs direct step calls" in headline


@pytest.mark.slow  # an ONNX export: seconds on an idle machine, can pass 30 s on a busy one
@pytest.mark.skipif(not (ADULT / "adult.data").is_file(), reason="Adult raw files not present")
def test_inference_part_measures_one_model(tmp_path):
    from bench import inference

    cfg = {**inference.config(True), "n_b1": 10, "n_big": 2, "chunks": 1}
    res = inference.run(cfg, log=lambda *_: None)
    (row,) = res["rows"]
    assert row["model"] == "SharedBottom"
    assert row["b1"]["eager_median_ms"] > 0 and row["b1"]["onnx_median_ms"] > 0
    assert row["b1"]["max_abs_diff"] < 1e-4


def test_throughput_misses_are_split_into_model_step_and_trainer_overhead(tmp_path):
    ours = {"ours": 20000.0, "plain": 20000.0, "rechub": 10000.0, "rechub_plain": 16000.0, "rechub_retained": 11000.0}
    row = {"model": "MMOE", "batch": 1024, "rows": 8192, "threads": 1, "samples_s": ours, "median_samples_s": ours,
           "vs_rechub": 2.0, "vs_plain": 1.0, "median_vs_rechub": 2.0, "median_vs_plain": 1.0, "load": [1.0, 0, 0]}
    other = dict(row, batch=4096, vs_rechub=3.5, median_vs_rechub=3.5)  # meets the target, but is not the batch
    rec = _rec(4, {"config": {"threads": 1, "epochs": 2}, "rows": [row, other]})
    lines, head = report.part4(rec, tmp_path)
    text = "\n".join(lines)
    assert ("| MMOE | 1 | 1024 | 20,000 (20,000) | 20,000 (20,000) | 10,000 (10,000) | 16,000 (16,000) | 11,000 (11,000) "
            "| 2.00×") in text
    assert "judged at batch 1024 (the issue's config): ≥ 3× Torch-RecHub: **missed** (missed at MMOE@1024/1t)" in text
    assert "Over every row: ≥ 3× in 1 of 2" in text and head["p4_ok_trh"] is False
    # model factor 20,000 / 16,000 = 1.25; Torch-RecHub's trainer runs its module at 1/1.60 of the plain loop;
    # our allocator setting moves its trainer by 11,000 / 10,000
    assert "same plain loop: MMOE 1.25×" in text and "over its trainer: MMOE 1.60×" in text
    assert "trainer by MMOE 1.10×" in text


class _ScriptedRunner:
    """Stands in for a bench runner: logs each epoch it trains to a file and reports made-up seconds."""
    log: Path
    fail = False

    def __init__(self, name, data, feats, vocab, out):
        self.key = out.name

    def run(self, epochs, between=None):
        if self.fail and self.key == "plain":
            raise ValueError("scripted failure")
        times = []
        for i in range(epochs):
            with open(self.log, "a") as f:
                f.write(f"{self.key} {i}\n")
            times.append({"ours": 1.0, "plain": 2.0, "rechub": 4.0, "ours_compiled": 0.8}[self.key] / (i + 1))
            between(times[-1])
        return times


def test_throughput_interleaves_the_runners_epochs_and_drops_warmup(tmp_path, monkeypatch):
    from bench import throughput

    _ScriptedRunner.log, _ScriptedRunner.fail = tmp_path / "log", False
    monkeypatch.setattr(throughput, "RUNNERS", [(k, _ScriptedRunner) for k in ("ours", "plain", "rechub")])
    data = {"y": {"income": [0] * 100}}
    r = throughput.measure("MMOE", 1024, data, [], {}, epochs=3, warmup=1)
    order = (tmp_path / "log").read_text().split("\n")[:-1]
    assert order == ["ours 0", "plain 0", "rechub 0", "rechub 1", "plain 1", "ours 1", "ours 2", "plain 2", "rechub 2"]
    assert r["epoch_seconds"] == {"ours": [0.5, 1 / 3], "plain": [1.0, 2 / 3], "rechub": [2.0, 4 / 3]}
    assert r["samples_s"]["ours"] == pytest.approx(300.0) and r["median_samples_s"]["ours"] == pytest.approx(240.0)
    assert r["vs_rechub"] == pytest.approx(4.0) and r["vs_plain"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="more epochs than warm-up epochs"):
        throughput.measure("MMOE", 1024, data, [], {}, epochs=2, warmup=2)
    # the compiled runner joins only where asked (part 4's compile_batches)
    monkeypatch.setattr(throughput, "RUNNERS", [(k, _ScriptedRunner) for k in ("ours", "plain", "rechub", "ours_compiled")])
    (tmp_path / "log").unlink()
    assert "ours_compiled" not in throughput.measure("MMOE", 256, data, [], {}, epochs=2, warmup=1)["samples_s"]
    assert "ours_compiled" not in (tmp_path / "log").read_text()
    r = throughput.measure("MMOE", 1024, data, [], {}, epochs=2, warmup=1, compiled=True)
    assert r["compiled_vs_rechub"] == pytest.approx(5.0) and r["compiled_vs_ours"] == pytest.approx(1.25)


def test_throughput_reports_a_failing_runner_and_stops_the_others(tmp_path, monkeypatch):
    from bench import throughput

    _ScriptedRunner.log, _ScriptedRunner.fail = tmp_path / "log", True
    monkeypatch.setattr(throughput, "RUNNERS", [(k, _ScriptedRunner) for k in ("ours", "plain", "rechub")])
    closed = []
    monkeypatch.setattr(throughput._RunnerProcess, "close",
                        lambda self, finished, orig=throughput._RunnerProcess.close: (orig(self, finished), closed.append(self._proc.is_alive())))
    with pytest.raises(RuntimeError, match=r"(?s)runner plain failed for MMOE at batch 1024.*scripted failure"):
        throughput.measure("MMOE", 1024, {"y": {"income": [0] * 100}}, [], {}, epochs=3, warmup=1)
    assert closed == [False, False, False]  # every child started was joined, the failed one included


@pytest.mark.skipif(not (ADULT / "adult.data").is_file(), reason="Adult raw files not present")
def test_step_floor_records_every_gemm_over_the_batch_and_every_batchnorm():
    from bench import bench_training as bt
    from bench import step_floor

    x, y, _, _, feats, vocab = bt.load_adult(ADULT)
    rec = step_floor.record_step("SharedBottom", {"x": x, "y": y}, feats, vocab, batch=512)
    # bottom [208 -> 128 -> 64] (its first layer on the table-product path: no GEMM over the batch), towers [64 -> 32 -> 1]
    assert dict(rec.norms) == {(512, 128): 1, (512, 64): 1, (512, 32): 2}
    # forward, input gradient and weight gradient of 128 -> 64, and of each tower's 64 -> 32 and 32 -> 1
    assert sum(rec.gemms.values()) == 15 and step_floor.gemm_macs(rec) == 512 * 3 * (128 * 64 + 2 * (64 * 32 + 32 * 1))
    assert step_floor.gemm_ms(*next(iter(rec.gemms))) > 0 and step_floor.norm_relu_ms((512, 64)) > 0


def test_throughput_report_pairs_each_rounds_epochs(tmp_path):
    s = {"ours": 8192 / 0.5, "plain": 8192 / 0.5, "rechub": 8192 / 1.0}
    row = {"model": "PLE", "batch": 1024, "rows": 8192, "threads": 2, "samples_s": s, "median_samples_s": s,
           "vs_rechub": 2.0, "vs_plain": 1.0, "median_vs_rechub": 2.0, "median_vs_plain": 1.0, "load": [1.0, 0, 0],
           # a slow round in the middle slows every runner alike: paired, it still reads 2x and 1x
           "epoch_seconds": {"ours": [0.5, 1.0, 0.5], "plain": [0.5, 1.2, 0.55], "rechub": [1.0, 2.0, 1.5]}}
    rec = _rec(4, {"config": {"threads": 2, "epochs": 4, "warmup": 1}, "rows": [row]})
    text = "\n".join(report.part4(rec, tmp_path)[0])
    assert "4 epochs per runner, the first 1 of them warm-up, each runner in its own forked process, their epochs interleaved" in text
    assert "ours / TRH PLE@1024/2t 2.00× [2.00–3.00]; ours / plain PLE@1024/2t 1.10× [1.00–1.20]." in text
    assert "compiled / TRH" not in text and "✓ | — | 1.0 |" in text  # no compiled runner: its cell, before the load, is empty
    # with MTLTrainer(compile=True) measured too: its cell, and its ratios, fastest epoch and paired per round
    compiled = dict(row, samples_s=dict(s, ours_compiled=8192 / 0.4), compiled_vs_rechub=2.5, compiled_vs_ours=1.25,
                    epoch_seconds=dict(row["epoch_seconds"], ours_compiled=[0.4, 0.8, 0.5]))
    text = "\n".join(report.part4(_rec(4, {"config": {"threads": 2, "epochs": 4, "warmup": 1}, "rows": [compiled]}), tmp_path)[0])
    assert "| 20,480, 2.50× |" in text
    assert "compiled / TRH PLE@1024/2t 2.50× (paired 2.50×); compiled / eager MTLTrainer PLE@1024/2t 1.25× (paired 1.25×)." in text


def test_a_defaults_only_rerun_keeps_when_tables_a_to_c_were_measured(tmp_path):
    """Part 1 run for its defaults-only table alone carries tables A-C over; a second such run must still date them
    by their own measurement, not by the first defaults-only run's."""
    import json

    from bench.quality import _previous_part1

    tables_abc = {"env_start": {"date": "2026-12-06T02:43:23+00:00", "cpu": "Xeon"}, "seconds": 2755.6,
                  "load_average_end": [19.5], "mode": "full"}
    first_defaults_run = {"env_start": {"date": "2026-12-07T03:14:41+00:00", "cpu": "EPYC"}, "seconds": 1939,
                          "load_average_end": [30.6], "mode": "full",
                          "result": {"rows": [], "carried": tables_abc, "defaults": {"rows": []}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"parts": {"1": first_defaults_run}}))
    assert _previous_part1(path)["carried"] == tables_abc
    # a record of a full part 1 run (no carried block) is itself the measurement of tables A-C
    full_run = {**first_defaults_run, "result": {"rows": []}}
    path.write_text(json.dumps({"parts": {"1": full_run}}))
    assert _previous_part1(path)["carried"]["env_start"]["date"] == "2026-12-07T03:14:41+00:00"
