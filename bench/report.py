"""Renders docs/benchmarks.md and its PNG plots from the part JSON files of ``bench.run``.

The part files are merged into ``<docs>/benchmarks/results.json`` (kept in git, so the page can be
re-rendered: ``python -m bench.run --report-only --out docs/benchmarks``), and every number on the page comes
from that file. The README's headline table sits between two markers and is re-rendered too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from workflow.reports.plots import pyplot, save_figure

REPO = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- bench:headline:start -->", "<!-- bench:headline:end -->"
TASKS = ["income", "never_married"]


def load_results(results_dir: Path) -> dict:
    """Part files (part<N>.json) in ``results_dir``, or an already merged results.json there."""
    results_dir = Path(results_dir)
    parts = {}
    merged = results_dir / "results.json"
    if merged.is_file():
        parts.update({int(k): v for k, v in json.loads(merged.read_text())["parts"].items()})
    for f in sorted(results_dir.glob("part*.json")):
        rec = json.loads(f.read_text())
        parts[int(rec["part"])] = rec
    return parts


def _ms(values) -> tuple[float, float]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (float(np.mean(v)), float(np.std(v))) if v else (math.nan, math.nan)


def _fmt(m, s=None, nd=4) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s is not None and not math.isnan(s) else "")


def _ok(flag) -> str:
    return "—" if flag is None else ("**met**" if flag else "**missed**")


def _env_line(rec: dict) -> str:
    e = rec.get("env_start", {})
    return (f"_Measured {e.get('date', '?')} ({rec.get('mode')} mode, {rec.get('seconds', 0):.0f} s), load average "
            f"{e.get('load_average', ['?'])[0]} at the start and {rec.get('load_average_end', ['?'])[0]} at the end on "
            f"{e.get('cpus', '?')} CPUs._")



# ---------------------------------------------------------------------------------------------- part 1
def part1(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    rows = res["rows"]
    lines, head = [], {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["impl"]), []).append(r)
    stats = {k: {t: _ms([r["auc"].get(t) for r in v]) for t in TASKS} | {"n": len(v)} for k, v in groups.items()}
    fc = res.get("fixed_config", {})
    cfg = res.get("config", {})
    lines += [f"Config of table A: every column a sparse feature ({fc.get('numeric')}), embed {fc.get('embed')}, "
              f"MLP {fc.get('mlp')} with BatchNorm, towers {fc.get('tower')}, Adam lr {fc.get('lr')}, batch "
              f"{fc.get('batch')}, {cfg.get('epochs')} epochs, no early stopping, seeds {cfg.get('seeds')}; "
              "trained on adult.data (32,561 rows), tested on adult.test (16,281 rows). Test AUC, mean ± std over seeds.", "",
              "| model | mtl_models income | Torch-RecHub income | mtl_models never-married | Torch-RecHub never-married "
              "| ours − TRH (income, never-married) | target ≥ TRH − 0.002 |", "|---|---|---|---|---|---|---|"]
    checks = []
    models = []
    for (m, impl) in groups:
        if impl == "mtl_models" and not m.startswith("single-task") and m not in models:
            models.append(m)
    for m in models:
        o = stats.get((m, "mtl_models"))
        # Torch-RecHub's AITM trains without a calibration loss: its like-for-like row is "AITM (calibration 0)"
        t = stats.get(("AITM" if m.startswith("AITM (") else m, "Torch-RecHub 0.9.0"))
        d = [o[k][0] - t[k][0] for k in TASKS] if t else None
        if t and m == "AITM":
            ok, dtxt = None, f"{d[0]:+.4f}, {d[1]:+.4f} (not the same loss: ours adds the calibrator, weight 0.6)"
        elif t:
            ok = all(x >= -0.002 for x in d)
            checks.append(ok)
            dtxt = f"{d[0]:+.4f}, {d[1]:+.4f}"
        else:
            ok, dtxt = None, ""
        lines.append(f"| {m} | {_fmt(*o['income'])} | {_fmt(*t['income']) if t else '–'} | {_fmt(*o['never_married'])} "
                     f"| {_fmt(*t['never_married']) if t else '–'} | {dtxt} | {_ok(ok)} |")
    for t in TASKS:
        key = (f"single-task MLP ({t})", "mtl_models")
        if key in stats:
            lines.append(f"| single-task MLP, {t} only | {_fmt(*stats[key]['income']) if t == 'income' else ''} | | "
                         f"{_fmt(*stats[key]['never_married']) if t == 'never_married' else ''} | | | |")
    hgb = stats.get(("HistGradientBoosting", "sklearn"))
    if hgb:
        lines.append(f"| HistGradientBoosting (sklearn defaults, raw columns, one model per task) | {_fmt(*hgb['income'])} | | "
                     f"{_fmt(*hgb['never_married'])} | | | |")
    lines += ["", "- ESMM is a funnel model: its second output is pCTCVR = P(income) × P(never-married | income), "
              "scored against income ∧ never-married (in both libraries), so its never-married column is not "
              "comparable with the other models'.",
              "- AITM: its behavioural-expectation calibrator (weight 0.6, the paper's) penalises "
              "p(never-married) > p(income), a funnel that Adult's tasks are not (most never-married people earn "
              "≤ 50K); here it lowers income AUC (compare the two AITM rows); with weight 0 it is the plain AITM. Torch-RecHub 0.9.0's "
              "trainer adds no calibration loss, so its AITM is the weight-0 variant: the target is judged on that "
              "like-for-like row (Torch-RecHub's AITM numbers are repeated there)."]
    head["p1_vs_trh"] = all(checks) if checks else None
    # plot
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    impls = ["mtl_models", "Torch-RecHub 0.9.0"]
    for ax, t in zip(axes, TASKS):
        xs = np.arange(len(models))
        for j, impl in enumerate(impls):
            vals = [stats.get((m, impl), {}).get(t, (np.nan, np.nan)) for m in models]
            ax.bar(xs + (j - 0.5) * 0.38, [v[0] for v in vals], 0.38, yerr=[v[1] for v in vals], label=impl, capsize=2)
        if hgb:
            ax.axhline(hgb[t][0], color="k", ls="--", lw=1, label="HistGradientBoosting")
        st = stats.get((f"single-task MLP ({t})", "mtl_models"))
        if st:
            ax.axhline(st[t][0], color="tab:green", ls=":", lw=1.5, label="single-task MLP")
        ax.set_xticks(xs, [m.replace(" (calibration 0)", "\n(calib. 0)") for m in models], fontsize=8)
        finite = [v for m in models for impl in impls for v in [stats.get((m, impl), {}).get(t, (np.nan,))[0]] if not math.isnan(v)]
        if finite:
            ax.set_ylim(min(finite) - 0.01, max(finite + ([hgb[t][0]] if hgb else [])) + 0.006)
        ax.set_title(f"Adult test AUC: {t}")
        ax.legend(fontsize=7)
    save_figure(fig, img / "quality_adult.png", dpi=110)
    lines += ["", "![Adult test AUC](benchmarks/quality_adult.png)", ""]

    tuned = res.get("tuned")
    if tuned:
        lines += _part1_tuned(tuned, res["config"], head)
    return lines, head


def _part1_tuned(tuned: dict, cfgs: dict, head: dict) -> list[str]:
    """Table B (the pipeline's search, encoding searched, champion on validation) and C (one row per encoding)."""
    trows = tuned["rows"]
    tg: dict[str, list[dict]] = {}
    for r in trows:
        key = r["model"] if r.get("table", "pipeline") == "pipeline" else f"{r['model']} [{r['encoding']}]"
        tg.setdefault(key, []).append(r)
    pipeline = {m: rs for m, rs in tg.items()
                if m != "HistGradientBoosting" and rs[0].get("table", "pipeline") == "pipeline"}
    per_encoding = {m: rs for m, rs in tg.items() if rs[0].get("table") == "encoding"}
    budget = (f"{cfgs.get('tuned_trials')} trials × ≤ {cfgs.get('tuned_search_epochs')} epochs, median pruner, TPE "
              f"sampler; then `workflow.training.train` with the best params, ≤ {cfgs.get('tuned_train_epochs')} epochs, "
              f"early stopping on validation (patience {cfgs.get('tuned_patience', 2)}), seeds "
              f"{cfgs.get('tuned_seeds', cfgs.get('seeds'))}")
    lines = ["#### Tuned by the pipeline", "",
             "`workflow.data.prepare` (adult: train/val split of adult.data, test = adult.test; numerics standardised, "
             "heavy-tailed ones log1p, with train quantiles and target-aware tree bins in the feature spec), then "
             "`workflow.search` per model with `configs/adult.yaml`'s search space (numeric encoding, bins, "
             f"embedding widths, AdamW weight decay, lr schedule, widths searched): {budget}. The champion is the "
             "model with the best mean **validation** score (mean val AUC) among the models scored on both labels "
             "(not ESMM, whose second output is scored against income ∧ never-married); test AUC is reported.", "",
             "| model | numeric encoding (best trial) | mean val score | test AUC income | test AUC never-married "
             "| search: complete / pruned, seconds |", "|---|---|---|---|---|---|"]

    def row(m: str, rs: list[dict], champion: bool = False) -> str:
        s = tuned["searches"].get(m, {})
        return (f"| {m}{' (champion)' if champion else ''} | {rs[0].get('encoding', 'standard')} | "
                f"{_fmt(_ms([r.get('val_score') for r in rs])[0])} | {_fmt(*_ms([r['auc']['income'] for r in rs]))} | "
                f"{_fmt(*_ms([r['auc']['never_married'] for r in rs]))} | {s.get('n_complete')} / {s.get('n_pruned')}, "
                f"{s.get('seconds')} |")

    # ESMM's second output is pCTCVR, scored against income ∧ never-married on validation as on test: its mean
    # val score is over another label, so it does not compete for the champion here
    comparable = [m for m in pipeline if m != "esmm"]
    best_m = max(comparable, key=lambda m: _ms([r.get("val_score") for r in pipeline[m]])[0], default=None)
    lines += [row(m, rs, m == best_m) for m, rs in pipeline.items()]
    h = tg.get("HistGradientBoosting")
    hi = hn = None
    if h:
        hi, hn = _ms([r["auc"]["income"] for r in h]), _ms([r["auc"]["never_married"] for r in h])
        lines.append(f"| HistGradientBoosting (same prepared train split) | raw values | | {_fmt(*hi)} | "
                     f"{_fmt(*hn)} | |")
    if per_encoding:
        lines += ["", f"One row per numeric encoding: {per_encoding[next(iter(per_encoding))][0]['model']} searched "
                      "with the same space and budget, the encoding fixed (`standard`: the standardised / log1p "
                      "values fed as they are, as before this change).", "",
                  "| model [encoding] | numeric encoding | mean val score | test AUC income | test AUC never-married "
                  "| search: complete / pruned, seconds |", "|---|---|---|---|---|---|"]
        lines += [row(m, rs) for m, rs in per_encoding.items()]
    if best_m and h:
        ci = _ms([r["auc"]["income"] for r in pipeline[best_m]])[0]
        cn = _ms([r["auc"]["never_married"] for r in pipeline[best_m]])[0]
        must, aim, ok_n = ci >= 0.915, ci >= hi[0] - 0.005, cn >= hn[0]
        head.update(p1_champion=best_m, p1_champ_income=ci, p1_champ_nm=cn, p1_hgb_income=hi[0], p1_hgb_nm=hn[0],
                    p1_champ_ok=must and ok_n)
        lines += ["", f"Targets: champion ({best_m}) income AUC {ci:.4f} (must ≥ 0.915: {_ok(must)}; aim ≥ "
                      f"HistGradientBoosting − 0.005 = {hi[0] - 0.005:.4f}: {_ok(aim)}, gap {ci - hi[0]:+.4f}); "
                      f"never-married {cn:.4f} vs {hn[0]:.4f} (target ≥ 0): {_ok(ok_n)}."]
    lines += ["", "Best params per search: " + "; ".join(
        f"{m}: `{json.dumps(s.get('best_params'), sort_keys=True)}`" for m, s in tuned["searches"].items())]
    return lines


def part2(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    runs = res["runs"]
    plt = pyplot()
    ps = cfg["ps"]
    fig, axes = plt.subplots(1, len(ps), figsize=(4.2 * len(ps), 3.6), sharey=False)
    axes = np.atleast_1d(axes)
    for ax, p in zip(axes, ps):
        for m in cfg["models"]:
            rs = [r for r in runs if r["p"] == p and r["model"] == m]
            if not rs:
                continue
            steps = [c["step"] for c in rs[0]["curve"]]
            curves = np.array([[np.mean(c["mse"]) for c in r["curve"]] for r in rs])
            mean = curves.mean(0)
            ax.plot(steps, mean, label=m)
            if len(rs) > 1:
                ax.fill_between(steps, mean - curves.std(0), mean + curves.std(0), alpha=0.15)
        ax.set_title(f"p = {p}")
        ax.set_xlabel("training steps")
        ax.set_ylabel("test MSE (mean of 2 tasks)")
        ax.legend(fontsize=8)
    save_figure(fig, img / "mmoe_synthetic.png", dpi=110)
    lines = [f"Data: `synthetic-mmoe` (d = 100, m = 10 sines, c = 1, noise 0.1), {cfg['n_rows'] - cfg['n_test']:,} train / "
             f"{cfg['n_test']:,} test rows per seed; models of similar size: SharedBottom bottom {cfg['bottom']}, MMOE "
             f"{cfg['n_expert']} experts {cfg['expert']}, PLE 1 level with {cfg['n_expert']} experts {cfg['expert']} in all "
             f"(per-task and shared), towers {cfg['tower']}; Adam lr {cfg['lr']}, batch {cfg['batch']}, {cfg['epochs']} epochs, "
             f"seeds {cfg['seeds']}. Final = mean test MSE over the last fifth of the curve, mean ± std over seeds.", "",
             "| p | label correlation | " + " | ".join(f"{m} final MSE (params)" for m in cfg["models"])
             + " | SharedBottom − MMOE |", "|---" * (len(cfg["models"]) + 3) + "|"]
    gains = []
    for row in res["summary"]:
        cells = [f"{_fmt(row[m]['final_mse_mean'], row[m]['final_mse_std'], 3)} ({row[m]['n_params']:,})" for m in cfg["models"]]
        g = row.get("mmoe_gain")
        gains.append(g)
        lines.append(f"| {row['p']} | {row['label_corr']:.3f} | " + " | ".join(cells) + f" | {_fmt(g, None, 3)} |")
    monotone = all(gains[i] is not None and gains[i + 1] is not None and gains[i] >= gains[i + 1]
                   for i in range(len(gains) - 1)) if len(gains) > 1 else None
    lines += ["", "![MMOE synthetic](benchmarks/mmoe_synthetic.png)", "",
              f"Paper's claim (MMOE's advantage over SharedBottom grows as the task correlation falls): "
              f"{'reproduced: the gap grows monotonically as p falls' if monotone else 'not reproduced cleanly here'} "
              f"(SharedBottom − MMOE final MSE by p = {', '.join(str(p) for p in ps)}: "
              f"{', '.join(_fmt(g, None, 3) for g in gains)})."]
    if not monotone:
        lines.append("With this few seeds and steps the seed-to-seed spread (the ± above) is as large as the gaps: "
                     "the paper averages 200 runs of many more steps; more seeds and epochs are the way to settle it.")
    return lines, {"p2_monotone": monotone, "p2_gains": gains}


# ---------------------------------------------------------------------------------------------- part 3
def part3(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    runs = res["runs"]
    arms = [("esmm", "ESMM (all impressions)"), ("cvr_clicked_only", "CVR model on clicked impressions only")]
    keys = [("soft_auc_all", "AUC vs true pCVR, all impressions"), ("spearman_all", "Spearman vs true pCVR, all"),
            ("logloss_vs_true_all", "log loss vs true pCVR, all"), ("pred_over_true", "mean pred / mean true pCVR, all"),
            ("ece", "calibration error (ECE), all"), ("pred_over_true_clicked", "mean pred / mean true, clicked only"),
            ("auc_clicked_observed", "AUC on clicked test rows (observed conversions)")]

    def val(run, arm, k):
        a = run[arm]
        if k == "pred_over_true":
            return a["calibration_all"]["pred_over_true"]
        if k == "ece":
            return a["calibration_all"]["ece"]
        if k == "pred_over_true_clicked":
            return a["calibration_clicked"]["pred_over_true"]
        return a[k]

    lines = [f"`synthetic-funnel`, {cfg['n_rows']:,} impressions ({cfg['n_users']:,} users, {cfg['n_items']:,} items, CTR 5 %, "
             f"CVR 10 % among clicks), seeds {cfg['seeds']}, ≤ {cfg['epochs']} epochs with early stopping, the pipeline's "
             f"default architecture for both arms. Train clicks per seed: {', '.join(format(r['n_train_clicked'], ',') for r in runs)}; "
             f"scored on all {runs[0]['n_test']:,} test impressions.", "",
             "| metric | " + " | ".join(a[1] for a in arms) + " |", "|---|---|---|"]
    for k, label in keys:
        lines.append(f"| {label} | " + " | ".join(_fmt(*_ms([val(r, a, k) for r in runs])) for a, _ in arms) + " |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for a, label in arms:
        c = np.array(runs[0][a]["calibration_all"]["curve"])
        ax.plot(c[:, 0], c[:, 1], "o-", label=label)
    lim = max(float(np.max([np.array(runs[0][a]["calibration_all"]["curve"]).max() for a, _ in arms])), 0.01)
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="perfect")
    ax.set_xlabel("mean predicted pCVR (decile of prediction)")
    ax.set_ylabel("mean true pCVR")
    ax.set_title("pCVR calibration over all impressions")
    ax.legend(fontsize=7)
    save_figure(fig, img / "esmm_calibration.png", dpi=110)
    e = _ms([val(r, "esmm", "soft_auc_all") for r in runs])[0]
    c = _ms([val(r, "cvr_clicked_only", "soft_auc_all") for r in runs])[0]
    er = _ms([val(r, "esmm", "pred_over_true") for r in runs])[0]
    cr = _ms([val(r, "cvr_clicked_only", "pred_over_true") for r in runs])[0]
    lines += ["", "![ESMM calibration](benchmarks/esmm_calibration.png)", "",
              f"Over the entire impression space ESMM's pCVR ranks impressions {'better' if e > c else 'worse'} than the "
              f"clicked-only CVR model (AUC against the true pCVR {e:.4f} vs {c:.4f}); its mean is {er:.2f}× the true "
              f"mean vs {cr:.2f}× for the clicked-only model."]
    if e > c and abs(er - 1) < abs(cr - 1):
        lines.append("This is the paper's claim: trained over the entire space, ESMM's pCVR is both better ranked and "
                     "better calibrated where it is served (every impression).")
    else:
        lines.append("The paper's claim is **not reproduced** here" + (" on ranking" if e <= c else "")
                     + (" nor on calibration" if abs(er - 1) >= abs(cr - 1) else "; ESMM's mean is closer to the truth") + ". "
                     "Likely causes, in this setup: (1) in `synthetic-funnel` a conversion given a click depends only on "
                     "the observed features (pCVR and pCTR come from independent user/item effects, no hidden "
                     "confounder), so P(conversion | click, x) = pCVR(x) and a model fitted on clicked rows is unbiased "
                     "wherever clicks cover the feature space (every user and item here has clicks); the selection bias "
                     "the paper removes comes from real-world confounding this generator does not have; (2) ESMM only "
                     "sees pCVR through pCTCVR = pCTR × pCVR and is early-stopped on the click and CTCVR validation "
                     "AUCs, not on CVR; (3) one seed and at most a few epochs. A generator where clicking and converting "
                     "share an unobserved cause is the test that would show the paper's effect.")
    return lines, {"p3_esmm_auc": e, "p3_cvr_auc": c, "p3_esmm_ratio": er, "p3_cvr_ratio": cr}


# ---------------------------------------------------------------------------------------------- part 4
def _part4_schedule(cfg: dict) -> str:
    """How part 4's epochs were scheduled, for results written before and after epochs were interleaved."""
    if "warmup" in cfg:
        return (f"{cfg['epochs']} epochs per runner, the first {cfg['warmup']} of them warm-up, each runner in its own "
                "forked process, their epochs interleaved (one epoch of each in turn, the order reversed every round)")
    return (f"{cfg.get('repeats', 1)} × {cfg['epochs']} epochs per runner of which the first of each is warm-up, runners "
            "alternating, each in its own forked process")


def _paired(row: dict, other: str, ours: str = "ours") -> tuple[float, float, float]:
    """Median, min and max over the rounds of ``other``'s epoch seconds over ``ours``'s (ours is that many times
    faster)."""
    ratios = [b / a for a, b in zip(row["epoch_seconds"][ours], row["epoch_seconds"][other])]
    return float(np.median(ratios)), min(ratios), max(ratios)


def _compiled_cell(row: dict) -> str:
    """MTLTrainer(compile=True)'s samples/s and its ratio to Torch-RecHub, where part 4 measured it."""
    if "ours_compiled" not in row["samples_s"]:
        return "—"
    return f"{row['samples_s']['ours_compiled']:,.0f}, {row['compiled_vs_rechub']:.2f}×"


def part4(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    rows = res["rows"]
    target_batch = 1024  # the common config; the other batch sizes are context
    lines = [f"bench/bench_training.py's runners (Adult, every column sparse, BatchNorm MLPs) on the first "
             f"{rows[0]['rows']:,} training rows, torch threads {cfg['threads']}, " + _part4_schedule(cfg)
             + "; samples/s of the fastest timed epoch (median in brackets). *TRH, our allocator* is Torch-RecHub's trainer in a process "
             "where `mtl_models.allocator.retain_freed_memory()` (which MTLTrainer applies on CPU) was called first.", "",
             "| model | threads | batch | MTLTrainer | plain loop | Torch-RecHub | TRH model, plain loop | TRH, our allocator "
             "| ours / TRH (target ≥ 3×, aim 5×) | ours / plain (target ≥ 1.0×) | MTLTrainer, compile=True: samples/s, / TRH | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ok_trh, ok_plain = [], []
    for r in rows:
        s, md = r["samples_s"], r["median_samples_s"]
        ok_trh.append(r["vs_rechub"] >= 3)
        ok_plain.append(r["vs_plain"] >= 1.0)
        cell = lambda k: f"{s[k]:,.0f} ({md[k]:,.0f})" if k in s else "—"  # noqa: E731
        lines.append(f"| {r['model']} | {r.get('threads', cfg['threads'])} | {r['batch']} | {cell('ours')} | {cell('plain')} | "
                     f"{cell('rechub')} | {cell('rechub_plain')} | {cell('rechub_retained')} | {r['vs_rechub']:.2f}× ({r['median_vs_rechub']:.2f}×) "
                     f"{'✓' if ok_trh[-1] else '✗'} | {r['vs_plain']:.2f}× ({r['median_vs_plain']:.2f}×) "
                     f"{'✓' if ok_plain[-1] else '✗'} | {_compiled_cell(r)} | {r['load'][0]} |")
    tag = lambda r: f"{r['model']}@{r['batch']}" + (f"/{r['threads']}t" if "threads" in r else "")  # noqa: E731
    at_target = [(r, a, b) for r, a, b in zip(rows, ok_trh, ok_plain) if r["batch"] == target_batch] or list(zip(rows, ok_trh, ok_plain))
    miss_trh = [tag(r) for r, o, _ in at_target if not o]
    miss_plain = [tag(r) for r, _, o in at_target if not o]
    lines += ["", f"Targets, judged at batch {target_batch} (the issue's config): ≥ 3× Torch-RecHub: {_ok(not miss_trh)}"
              + (f" (missed at {', '.join(miss_trh)})" if miss_trh else "")
              + f"; ≥ 1.0× the plain loop: {_ok(not miss_plain)}" + (f" (missed at {', '.join(miss_plain)})" if miss_plain else "")
              + f". Over every row: ≥ 3× in {sum(ok_trh)} of {len(rows)}, ≥ 1.0× in {sum(ok_plain)} of {len(rows)}.", ""]
    if "warmup" in cfg:  # interleaved epochs: a round's epochs ran back to back, so their ratio cancels the drift
        paired = [(tag(r), _paired(r, "rechub"), _paired(r, "plain")) for r, _, _ in at_target]
        lines += ["Paired per round (each round's epochs ran back to back, so their ratio cancels the machine's drift), "
                  f"median [range] over the rounds at batch {target_batch}: ours / TRH "
                  + ", ".join(f"{t} {m:.2f}× [{lo:.2f}–{hi:.2f}]" for t, (m, lo, hi), _ in paired)
                  + "; ours / plain " + ", ".join(f"{t} {m:.2f}× [{lo:.2f}–{hi:.2f}]" for t, _, (m, lo, hi) in paired)
                  + ".", ""]
    compiled = [r for r in rows if "ours_compiled" in r["samples_s"]]  # the config's compile_batches
    if compiled:  # the opt-in: Inductor compiles the training step in the first (warm-up) epoch
        lines += ["With `MTLTrainer(compile=True)` (off by default; Inductor compiles forward and backward in the first "
                  "epoch, which is warm-up here): compiled / TRH "
                  + ", ".join(f"{tag(r)} {r['compiled_vs_rechub']:.2f}× (paired {_paired(r, 'rechub', 'ours_compiled')[0]:.2f}×)"
                              for r in compiled)
                  + "; compiled / eager MTLTrainer "
                  + ", ".join(f"{tag(r)} {r['compiled_vs_ours']:.2f}× (paired {_paired(r, 'ours', 'ours_compiled')[0]:.2f}×)"
                              for r in compiled) + ".", ""]
    loads = [r["load"][0] for r in rows]
    split = [r for r in rows if "rechub_plain" in r["samples_s"]]
    if split:  # the same plain loop over both libraries' modules: model compute vs trainer overhead
        by_model: dict = {}
        for r in split:
            s = r["samples_s"]
            by_model.setdefault(r["model"], []).append(
                (s["plain"] / s["rechub_plain"], s["rechub_plain"] / s["rechub"],
                 s["rechub_retained"] / s["rechub"] if "rechub_retained" in s else float("nan")))
        med = lambda v, i: float(np.median([t[i] for t in v]))  # noqa: E731
        epochs = [t for r in rows for ts in r.get("epoch_seconds", {}).values() for t in ts]
        lines.append(
            "Where the ratio comes from (medians over batch sizes and threads): the gap to Torch-RecHub is the product of "
            "(1) the model step, our module vs theirs in the same plain loop: "
            + ", ".join(f"{m} {med(v, 0):.2f}×" for m, v in by_model.items())
            + "; and (2) Torch-RecHub's trainer overhead, its plain loop over its trainer: "
            + ", ".join(f"{m} {med(v, 1):.2f}×" for m, v in by_model.items())
            + ". Our allocator setting alone moves Torch-RecHub's trainer by "
            + ", ".join(f"{m} {med(v, 2):.2f}×" for m, v in by_model.items())
            + ". What is left in our step: the table-product path removes the first layer's GEMMs (exact; "
            "docs/training.md), so the step is the layers above it (MMOE: 8 experts' 128 → 64 GEMMs; PLE: the second "
            "level's 64 → 128 → 64 experts), per-expert BatchNorm and ReLU passes, and the gather-sum; fp32 throughout, "
            "since this AVX2 CPU has no AVX512-BF16 for bf16 autocast; `bench/step_floor.py` sets each model's step beside "
            "the time of the GEMM and BatchNorm kernels it needs (docs/training.md). Noise: load average "
            f"{min(loads):.1f}–{max(loads):.1f} on {rec.get('env_start', {}).get('cpus', 2)} CPUs shared with other jobs; "
            "a timed epoch lasts " + (f"{min(epochs):.2f}–{max(epochs):.2f} s" if epochs else "under a few seconds")
            + ", and MTLTrainer writes a checkpoint every epoch, which the plain loop skips.")
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in rows))
    batches = list(dict.fromkeys(r["batch"] for r in rows))
    fig, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 3.8))
    axes = np.atleast_1d(axes)
    top_threads = max(r.get("threads", 1) for r in rows)
    for ax, b in zip(axes, batches):
        xs = np.arange(len(models))
        for j, (k, label) in enumerate([("ours", "MTLTrainer"), ("plain", "plain loop"), ("rechub", "Torch-RecHub")]):
            vals = [next((r["samples_s"][k] for r in rows if r["model"] == m and r["batch"] == b
                          and r.get("threads", 1) == top_threads), np.nan) for m in models]
            ax.bar(xs + (j - 1) * 0.27, vals, 0.27, label=label)
        ax.set_xticks(xs, models, fontsize=8)
        ax.set_title(f"batch {b}, {top_threads} thread(s)")
        ax.set_ylabel("samples/s")
        ax.legend(fontsize=7)
    save_figure(fig, img / "throughput.png", dpi=110)
    lines += ["", "![Training throughput](benchmarks/throughput.png)"]
    return lines, {"p4_med_vs_trh": float(np.median([r["vs_rechub"] for r in rows])),
                   "p4_med_vs_plain": float(np.median([r["vs_plain"] for r in rows])),
                   "p4_min_vs_trh": min(r["vs_rechub"] for r in rows), "p4_max_vs_trh": max(r["vs_rechub"] for r in rows),
                   "p4_min_vs_plain": min(r["vs_plain"] for r in rows), "p4_ok_trh": not miss_trh, "p4_ok_plain": not miss_plain,
                   "p4_target": [(r["model"], r.get("threads", cfg["threads"]), r["vs_rechub"], r["vs_plain"])
                                 for r, _, _ in at_target], "p4_target_batch": target_batch}


# ---------------------------------------------------------------------------------------------- part 5
def part5(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    rows = res["rows"]
    lines = [f"Adult test rows, bench_training's models (13 sparse features), `mtl_models.export_onnx` (opset 18); "
             f"{cfg['threads']} thread each for ONNX Runtime and PyTorch; {cfg['n_b1']} timed batch-1 calls and "
             f"{cfg['n_big']} batch-{cfg['big_batch']} calls per engine, alternating in {cfg['chunks']} chunks.", "",
             f"| model | batch 1 eager ms (p90) | batch 1 ONNX ms (p90) | ONNX / eager (target ≤ 0.5) | batch {cfg['big_batch']} "
             "eager samples/s | batch {0} ONNX samples/s | max abs diff |".format(cfg["big_batch"]), "|---|---|---|---|---|---|---|"]
    oks = []
    for r in rows:
        b1, big = r["b1"], r["big"]
        oks.append(b1["onnx_over_eager"] <= 0.5)
        lines.append(f"| {r['model']} | {b1['eager_median_ms']:.3f} ({b1['eager_p90_ms']:.3f}) | {b1['onnx_median_ms']:.3f} "
                     f"({b1['onnx_p90_ms']:.3f}) | {b1['onnx_over_eager']:.2f} {'✓' if oks[-1] else '✗'} | "
                     f"{big['eager_samples_s']:,.0f} | {big['onnx_samples_s']:,.0f} | {max(b1['max_abs_diff'], big['max_abs_diff']):.1e} |")
    lines += ["", f"Target ONNX Runtime batch-1 latency ≤ 0.5× eager: {_ok(all(oks))}."]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["b1"]["eager_median_ms"] for r in rows], 0.4, label="PyTorch eager")
    ax.bar(xs + 0.2, [r["b1"]["onnx_median_ms"] for r in rows], 0.4, label="ONNX Runtime")
    ax.set_xticks(xs, [r["model"] for r in rows], fontsize=8)
    ax.set_ylabel("batch-1 latency, ms (median)")
    ax.legend(fontsize=8)
    save_figure(fig, img / "inference.png", dpi=110)
    lines += ["", "![Inference latency](benchmarks/inference.png)"]
    return lines, {"p5_max_ratio": max(r["b1"]["onnx_over_eager"] for r in rows), "p5_ok": all(oks)}


# ---------------------------------------------------------------------------------------------- part 6
def part6(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    lines, head = [], {}
    s = res.get("search")
    if s:
        lines += [f"**Pruning** (bench/bench_search.py: {s['model']} on Adult, {s['sampler']} sampler so every arm "
                  f"evaluates the same configurations, {s['n_trials']} trials × {s['n_epoch']} epochs, patience {s['patience']}, "
                  f"{s['threads']} thread):", "",
                  "| arm | epochs spent | fraction | best val score | Δ vs none | complete / pruned | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for a in s["arms"]:
            lines.append(f"| {a['arm']} | {a['epochs_spent']} | {a['epoch_fraction']:.2f} | {a['best_value']:.4f} | "
                         f"{a['best_delta']:+.4f} | {a['n_complete']} / {a['n_pruned']} | {a['seconds']} |")
        lines += ["", f"That issue's target ({s['target']}): " + ", ".join(
            f"{a['arm']} {_ok(a['meets_target'])}" for a in s["arms"] if a["meets_target"] is not None) + ".", ""]
    local, direct = res["local"], res["direct"]
    used = res.get("pipeline_config_used", {})
    over = res["overhead"]
    st = res["startup"]
    n_tasks = local.get("n_tasks", 0)
    cold = res.get("local_cold")
    lines += [f"**`mtlp run`** ({Path(res['config']['pipeline_config']).name}"
              + (f" with overrides {json.dumps(res['config'].get('overrides'))}" if res["config"].get("overrides") else "")
              + f": {used.get('dataset')} {json.dumps(used.get('options'))}, models {used.get('models')}, search "
              f"{json.dumps(used.get('search'))}, train {json.dumps(used.get('train'))}), caching off. "
              "KFP's local runner (`pipeline.local.run_local`: each task a fork of one warm worker process that "
              "imported torch, MLflow and the steps once) vs the same `workflow.steps` functions called one after "
              "the other in one fresh Python process, its interpreter start and imports included as the local run's "
              "are (`bench.pipeline_overhead.run_direct_fresh`)"
              + ("; and, for comparison, the local runner with KFP's own launcher (`--cold-tasks`: a fresh "
                 "`python3` per task)" if cold else "") + ". Seconds per step, summed over models:", "",
              "| step | local runner (sum of task durations) | direct calls |" + (" cold tasks |" if cold else ""),
              "|---|---|---|" + ("---|" if cold else "")]
    for k in dict.fromkeys(list(direct["by_step"]) + list(local["by_step"])):
        lines.append(f"| {k} | {local['by_step'].get(k, float('nan')):.1f} | {direct['by_step'].get(k, float('nan')):.1f} |"
                     + (f" {cold['by_step'].get(k, float('nan')):.1f} |" if cold else ""))
    lines += [f"| **total wall time** | **{local['seconds']:.1f}** | **{direct['seconds']:.1f}** |"
              + (f" **{cold['seconds']:.1f}** |" if cold else ""), "",
              f"Local runner overhead over direct calls: **{over * 100:+.0f} %** (target ≤ 15 %: {_ok(over <= 0.15)})"
              + (f", from the mean wall time of {len(local['all_seconds'])} runs of each path in ABBA order (local "
                 f"{', '.join(f'{x:.1f}' for x in local['all_seconds'])} s; direct "
                 f"{', '.join(f'{x:.1f}' for x in direct.get('all_seconds', []))} s; per-step seconds from the first)"
                 if len(local.get("all_seconds", [])) > 1 else "")
              + (f"; with a fresh interpreter per task it is {res['overhead_cold'] * 100:+.0f} %." if cold else "."),
              f"One cold task's fixed cost, measured here: a fresh interpreter importing torch, mlflow, kfp and the steps "
              f"module takes {st['median']:.1f} s (median of {len(st['seconds'])}; a bare `python3 -c pass` "
              f"{st['bare_python_median']:.2f} s), ≈ {n_tasks * st['median']:.0f} s over this run's {n_tasks} tasks; the warm "
              "worker pays it once."]
    in_tasks = sum(local["by_step"].values())
    if local.get("timed_by") == "worker":
        lines.append(f"The local run's tasks themselves ran for {in_tasks:.1f} s (the worker's clock) of its "
                     f"{local['seconds']:.1f} s; the other {local['seconds'] - in_tasks:.1f} s are the worker's start "
                     "(the imports the first task waits for) and KFP's orchestration between tasks (resolving "
                     "inputs, writing each task's executor input and output files, caching checks).")
        slower = {k: local["by_step"][k] - direct["by_step"].get(k, 0.0) for k in local["by_step"]}
        worst = sorted((k for k in slower if slower[k] > 0.5), key=lambda k: -slower[k])[:3]
        if worst:
            lines.append("Inside the tasks the local run is slower at " + ", ".join(
                f"{k} (+{slower[k]:.1f} s)" for k in worst) + ": each task is a new process that starts cold "
                "where the direct process reuses what its earlier steps warmed (allocator and oneDNN caches, the "
                "ONNX exporter's first-call setup: a forked export of a small MMOE took 3.8–5.3 s against 3.4 s for "
                "a second export in one process), and a task that arrives while the worker is still importing "
                "(torch, the exporter) waits for that import to finish.")
    head.update(p6_overhead=over, p6_local=local["seconds"], p6_direct=direct["seconds"], p6_startup=st["median"])
    plt = pyplot()
    ks = list(dict.fromkeys(list(direct["by_step"]) + list(local["by_step"])))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = np.arange(len(ks))
    ax.bar(xs - 0.2, [local["by_step"].get(k, 0) for k in ks], 0.4, label="KFP local runner")
    ax.bar(xs + 0.2, [direct["by_step"].get(k, 0) for k in ks], 0.4, label="direct calls")
    ax.set_xticks(xs, ks, rotation=30, fontsize=8)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    save_figure(fig, img / "pipeline_steps.png", dpi=110)
    expected = 4 + 6 * len(used.get("models") or [])
    if n_tasks < expected:
        lines.append(f"({n_tasks} of the run's {expected} task durations were matched in the runner's log; the local "
                     "total is the wall time of the whole run and includes all of them.)")
    lines += ["", "![Pipeline steps](benchmarks/pipeline_steps.png)"]
    return lines, head


# ---------------------------------------------------------------------------------------------- part 7
def part7(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    lines = ["`workflow.data.prepare` on synthetic-funnel, then one epoch of MMOE (the pipeline's default: embed 16, "
             f"8 experts [128, 64], towers [32]) from the Parquet train split, batch {cfg['batch']}, {cfg['threads']} torch "
             "threads; each phase in its own process, with its own peak RSS.", "",
             "| rows | prepare s | prepare rows/s | prepare peak RSS MiB | data MiB | Parquet MiB | train rows loaded | rows trained "
             "| load s | epoch s | train rows/s | train peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def mib(d):  # a peak equal to the start value was inherited from the parent (ru_maxrss across exec): an upper bound
        v = f"{d['peak_rss_bytes'] / 2**20:,.0f}"
        return f"≤ {v}" if d.get("baseline_rss_bytes") and d["peak_rss_bytes"] <= d["baseline_rss_bytes"] else v

    for r in res["rows"]:
        p, t = r["prepare"], r["train"]
        lines.append(f"| {r['n_rows']:,} | {p['seconds']:.1f} | {p['rows_per_s']:,.0f} | {mib(p)} | "
                     f"{p['data_bytes'] / 2**20:,.0f} | {r['parquet_bytes'] / 2**20:,.0f} | {t['train_rows_total']:,} | "
                     f"{t['rows_trained']:,} | {t['load_seconds']:.1f} | {t['epoch_seconds']:.1f} | {t['rows_per_s']:,.0f} | "
                     f"{mib(t)} |")
    rates = [r["train"]["rows_per_s"] for r in res["rows"]]
    if len(rates) > 1 and max(rates) > 1.5 * min(rates):
        lines += ["", "The training rates differ between sizes by more than the data size explains (the model and batch "
                  "are the same): they were measured minutes apart on a machine whose load changed (load average per "
                  "row in results.json); the higher figure is the closer one to what this machine does when less busy."]
    if any("≤" in mib(r[k]) for r in res["rows"] for k in ("prepare", "train")):
        lines += ["", "≤: these results were measured with `ru_maxrss`, which Linux carries across `exec` from the "
                  "parent process (here the benchmark runner, at that moment the figure after ≤): such a peak is only "
                  "an upper bound. `bench.scale` now reads VmHWM, which starts afresh in each child."]
    capped = [r for r in res["rows"] if r["train"]["rows_trained"] < (r["train"]["train_rows_total"] or 0)]
    if capped:
        lines += ["", "Time box: at " + ", ".join(f"{r['n_rows']:,}" for r in capped) + " rows the whole train split is "
                  "loaded (its memory is in the peak) but the epoch runs over its first rows only (rows trained); "
                  "rows/s does not depend on the split's size, a full epoch takes rows / (rows/s)."]
    return lines, {"p7": [(r["n_rows"], r["prepare"]["rows_per_s"], r["train"]["rows_per_s"],
                           max(r["prepare"]["peak_rss_bytes"], r["train"]["peak_rss_bytes"])) for r in res["rows"]]}


RENDER = {1: part1, 2: part2, 3: part3, 4: part4, 5: part5, 6: part6, 7: part7}
TITLES = {1: "1. Quality on Adult census (income, never-married)", 2: "2. The MMOE paper's synthetic experiment",
          3: "3. Entire-space CVR: ESMM vs a clicked-only CVR model", 4: "4. Training throughput",
          5: "5. Inference: ONNX Runtime vs PyTorch eager", 6: "6. Search pruning and `mtlp run` wall time",
          7: "7. Scale: synthetic-funnel at 1M and 10M rows"}


def headline(head: dict) -> list[str]:
    rows = ["| benchmark | result | target |", "|---|---|---|"]
    if "p1_vs_trh" in head:
        rows.append(f"| Adult test AUC vs Torch-RecHub 0.9.0, same config | every model ≥ TRH − 0.002: "
                    f"{'yes' if head['p1_vs_trh'] else 'no'} | {_ok(head['p1_vs_trh'])} |")
    if "p1_champion" in head:
        rows.append(f"| Tuned champion ({head['p1_champion']}) vs HistGradientBoosting, Adult test AUC | income "
                    f"{head['p1_champ_income']:.4f} vs {head['p1_hgb_income']:.4f}, never-married {head['p1_champ_nm']:.4f} vs "
                    f"{head['p1_hgb_nm']:.4f} | {_ok(head['p1_champ_ok'])} |")
    if "p2_gains" in head:
        rows.append(f"| MMOE synthetic: SharedBottom − MMOE test MSE as correlation falls | "
                    f"{', '.join(_fmt(g, None, 3) for g in head['p2_gains'])} | paper's trend "
                    f"{'reproduced' if head['p2_monotone'] else 'not reproduced'} |")
    if "p3_esmm_auc" in head:
        rows.append(f"| ESMM vs clicked-only CVR, AUC vs true pCVR over all impressions | {head['p3_esmm_auc']:.4f} vs "
                    f"{head['p3_cvr_auc']:.4f} (mean pred/true {head['p3_esmm_ratio']:.2f} vs {head['p3_cvr_ratio']:.2f}) | — |")
    if "p4_min_vs_trh" in head:
        at = head.get("p4_target") or []  # (model, threads, ours/TRH, ours/plain) at the target batch

        def per_model(i: int) -> str:
            return "; ".join(f"{t} thread{'s' if t > 1 else ''}: " + ", ".join(f"{x[0]} {x[i]:.2f}×" for x in at if x[1] == t)
                             for t in dict.fromkeys(x[1] for x in at))

        batch = head.get("p4_target_batch", 1024)
        rows.append(f"| Training samples/s vs Torch-RecHub at batch {batch} (all batch sizes: median "
                    f"{head.get('p4_med_vs_trh', float('nan')):.1f}×, range {head['p4_min_vs_trh']:.1f}× – "
                    f"{head['p4_max_vs_trh']:.1f}×) | {per_model(2) if at else '—'} | ≥ 3× {_ok(head['p4_ok_trh'])} |")
        rows.append(f"| Training samples/s vs plain PyTorch loop at batch {batch} (all: median "
                    f"{head.get('p4_med_vs_plain', float('nan')):.2f}×, min {head['p4_min_vs_plain']:.2f}×) | "
                    f"{per_model(3) if at else '—'} | ≥ 1.0× {_ok(head['p4_ok_plain'])} |")
    if "p5_max_ratio" in head:
        rows.append(f"| ONNX Runtime batch-1 latency / PyTorch eager | ≤ {head['p5_max_ratio']:.2f} | ≤ 0.5 {_ok(head['p5_ok'])} |")
    if "p6_overhead" in head:
        rows.append(f"| `mtlp run` local runner vs direct step calls | {head['p6_local']:.0f} s vs {head['p6_direct']:.0f} s "
                    f"({head['p6_overhead'] * 100:+.0f} %) | ≤ 15 % {_ok(head['p6_overhead'] <= 0.15)} |")
    if "p7" in head:
        rows.append("| Scale (prepare rows/s, MMOE train rows/s, peak RSS) | " + "; ".join(
            f"{n / 1e6:g}M: {a:,.0f}, {b:,.0f}, {m / 2**30:.1f} GiB" for n, a, b, m in head["p7"]) + " | — |")
    return rows


def render(results_dir: Path, docs: Path, command: str = "python -m bench.run", readme: Path | None = REPO / "README.md") -> Path:
    docs = Path(docs)
    img = docs / "benchmarks"
    # the page's own merged results first, then the part files just written: a run of some parts keeps the others
    parts = load_results(img) if (img / "results.json").is_file() else {}
    parts.update(load_results(results_dir))
    img.mkdir(parents=True, exist_ok=True)
    merged = {"parts": {str(k): v for k, v in sorted(parts.items())}}
    if Path(results_dir).resolve() != img.resolve() or not (img / "results.json").exists() or parts:
        (img / "results.json").write_text(json.dumps(merged, indent=1, default=str))
    envs = [v.get("env_start", {}) for v in parts.values()]
    env = envs[0] if envs else {}
    ver = env.get("versions", {})
    lines = ["# Benchmarks", "",
             "Generated by `bench/report.py` from `docs/benchmarks/results.json`; do not edit by hand. Regenerate with",
             "", "```bash", "make bench            # .venv/bin/python -m bench.run (all seven parts, then this page)",
             "make bench-quick      # .venv/bin/python -m bench.run --quick (small sizes, 1 seed)",
             ".venv/bin/python -m bench.run --parts 4,5            # some parts; the others keep their last results",
             ".venv/bin/python -m bench.run --report-only --out docs/benchmarks   # re-render from the committed JSON",
             "```", "", f"This page was rendered from: `{command}`.", "",
             f"**Machine**: {env.get('cpu', '?')}, {env.get('cpus', '?')} CPUs (flags: {' '.join(env.get('cpu_flags', []))}), "
             f"{env.get('memory_gib', '?')} GiB, GPU: {env.get('gpu')}; {env.get('platform', '?')}. "
             "**Shared with other jobs**: the load average is recorded with every part (and every row where it matters); "
             "timings on a machine whose load exceeds its core count are noisy, and ratios between runners that "
             "alternate in the same minutes are more robust than absolute figures.", "",
             "**Versions**: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + f"; git {env.get('git_commit', '?')}.", "",
             "**Seeds**: stated per part (model initialisation, data order and synthetic data all follow the seed).", ""]
    head: dict = {}
    body: list[str] = []
    for n in range(1, 8):
        body += [f"## {TITLES[n]}", ""]
        rec = parts.get(n)
        if rec is None:
            body += ["_Not run in this report's results (missing)._", ""]
            continue
        if rec.get("status") != "ok":
            body += [_env_line(rec), "", f"_This part failed: {rec.get('error')}_", ""]
            continue
        try:
            part_lines, h = RENDER[n](rec, img)
        except Exception as e:  # noqa: BLE001  (a rendering bug in one part must not hide the others)
            part_lines, h = [f"_Could not render this part: {type(e).__name__}: {e}_"], {}
        head.update(h)
        body += [_env_line(rec), ""] + part_lines + [""]
    lines += ["## Headline", ""] + headline(head) + [""] + body
    out = docs / "benchmarks.md"
    out.write_text("\n".join(lines) + "\n")
    if readme is not None and Path(readme).is_file():
        text = Path(readme).read_text()
        if README_START in text and README_END in text:
            a, b = text.index(README_START) + len(README_START), text.index(README_END)
            Path(readme).write_text(text[:a] + "\n" + "\n".join(headline(head)) + "\n" + text[b:])
    return out
