"""Part 1: quality on Adult, next to Torch-RecHub and HistGradientBoosting (tables A, B, C)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from workflow.reports.plots import pyplot, save_figure

from .common import TASKS, _fmt, _ms, _ok


TRH = "Torch-RecHub 0.9.0"


def _stats(rows: list[dict]) -> dict:
    """(model, impl) -> {task: (mean, std)} and the number of seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["impl"]), []).append(r)
    return {k: {t: _ms([r["auc"].get(t) for r in v]) for t in TASKS} | {"n": len(v)} for k, v in groups.items()}


def _models(stats: dict) -> list[str]:
    return list(dict.fromkeys(m for m, impl in stats if impl == "mtl_models" and not m.startswith("single-task")))


def _intro(res: dict) -> list[str]:
    fc, cfg = res.get("fixed_config", {}), res.get("config", {})
    return [f"Config of table A: every column a sparse feature ({fc.get('numeric')}), embed {fc.get('embed')}, "
            f"MLP {fc.get('mlp')} with BatchNorm, towers {fc.get('tower')}, Adam lr {fc.get('lr')}, batch "
            f"{fc.get('batch')}, {cfg.get('epochs')} epochs, no early stopping, seeds {cfg.get('seeds')}; "
            "trained on adult.data (32,561 rows), tested on adult.test (16,281 rows). Test AUC, mean ± std over seeds.", "",
            "| model | mtl_models income | Torch-RecHub income | mtl_models never-married | Torch-RecHub never-married "
            "| ours − TRH (income, never-married) | target ≥ TRH − 0.002 |", "|---|---|---|---|---|---|---|"]


def _model_row(m: str, stats: dict) -> tuple[str, bool | None]:
    """One row of table A and whether it meets the target (None: not judged)."""
    o = stats.get((m, "mtl_models"))
    # Torch-RecHub's AITM trains without a calibration loss: its like-for-like row is "AITM (calibration 0)"
    t = stats.get(("AITM" if m.startswith("AITM (") else m, TRH))
    d = [o[k][0] - t[k][0] for k in TASKS] if t else None
    if t and m == "AITM":
        ok, dtxt = None, f"{d[0]:+.4f}, {d[1]:+.4f} (not the same loss: ours adds the calibrator, weight 0.6)"
    elif t:
        ok, dtxt = all(x >= -0.002 for x in d), f"{d[0]:+.4f}, {d[1]:+.4f}"
    else:
        ok, dtxt = None, ""
    return (f"| {m} | {_fmt(*o['income'])} | {_fmt(*t['income']) if t else '–'} | {_fmt(*o['never_married'])} "
            f"| {_fmt(*t['never_married']) if t else '–'} | {dtxt} | {_ok(ok)} |"), ok


def _baseline_rows(stats: dict) -> list[str]:
    lines = []
    for t in TASKS:
        key = (f"single-task MLP ({t})", "mtl_models")
        if key in stats:
            lines.append(f"| single-task MLP, {t} only | {_fmt(*stats[key]['income']) if t == 'income' else ''} | | "
                         f"{_fmt(*stats[key]['never_married']) if t == 'never_married' else ''} | | | |")
    hgb = stats.get(("HistGradientBoosting", "sklearn"))
    if hgb:
        lines.append(f"| HistGradientBoosting (sklearn defaults, raw columns, one model per task) | {_fmt(*hgb['income'])} | | "
                     f"{_fmt(*hgb['never_married'])} | | | |")
    return lines


NOTES = ["", "- ESMM is a funnel model: its second output is pCTCVR = P(income) × P(never-married | income), "
         "scored against income ∧ never-married (in both libraries), so its never-married column is not "
         "comparable with the other models'.",
         "- AITM: its behavioural-expectation calibrator (weight 0.6, the paper's) penalises "
         "p(never-married) > p(income), a funnel that Adult's tasks are not (most never-married people earn "
         "≤ 50K); here it lowers income AUC (compare the two AITM rows); with weight 0 it is the plain AITM. Torch-RecHub 0.9.0's "
         "trainer adds no calibration loss, so its AITM is the weight-0 variant: the target is judged on that "
         "like-for-like row (Torch-RecHub's AITM numbers are repeated there)."]


def _plot_task(ax, t: str, models: list[str], stats: dict) -> None:
    impls = ["mtl_models", TRH]
    hgb = stats.get(("HistGradientBoosting", "sklearn"))
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


def _plot(models: list[str], stats: dict, path: Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.2))
    for ax, t in zip(axes, TASKS):
        _plot_task(ax, t, models, stats)
    save_figure(fig, path, dpi=110)


def part1(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    stats = _stats(res["rows"])
    models = _models(stats)
    judged = [_model_row(m, stats) for m in models]
    lines = _intro(res) + [row for row, _ in judged] + _baseline_rows(stats) + NOTES
    checks = [ok for _, ok in judged if ok is not None]
    head = {"p1_vs_trh": all(checks) if checks else None}
    _plot(models, stats, img / "quality_adult.png")
    lines += ["", "![Adult test AUC](benchmarks/quality_adult.png)", ""]
    if res.get("carried"):
        lines = [_carried_line(res["carried"]), ""] + lines
    if res.get("tuned"):
        lines += _part1_tuned(res["tuned"], res["config"], head)
    if res.get("defaults"):
        lines += _part1_defaults(res["defaults"], res["config"], head)
    return lines, head


def _carried_line(carried: dict) -> str:
    e = carried.get("env_start") or {}
    return (f"_Tables A to C were measured {e.get('date', '?')} ({carried.get('mode')} mode, "
            f"{carried.get('seconds') or 0:.0f} s, load average {(e.get('load_average') or ['?'])[0]} at the start, "
            f"{e.get('cpu', '?')}); "
            "this run added the defaults-only table, whose date and load are stated with it._")


def _part1_defaults(d: dict, cfgs: dict, head: dict) -> list[str]:
    """Table D: ``configs/adult.yaml`` with no search space (the default space fitted to the data), its budget."""
    b, env = d.get("budget", {}), d.get("env", {})
    tg: dict[str, list[dict]] = {}
    for r in d["rows"]:
        tg.setdefault(r["model"], []).append(r)
    h = tg.pop("HistGradientBoosting", None)
    best_m = _champion(tg)
    lines = ["#### Defaults only", "",
             f"`configs/adult.yaml` as it ships: no `search.space`, so each model searches the default space of "
             f"`workflow.search.space` fitted to the data (numeric encoding incl. gated bins, tree bins from the train "
             f"split, AdamW weight decay, lr schedule, widths from the number of columns), {b.get('n_trials')} trials × "
             f"≤ {b.get('n_epoch')} epochs ({b.get('pruner')} pruner) at the training's batch {b.get('batch_size')}; then "
             f"≤ {b.get('train_epochs')} epochs, patience {b.get('patience')}, seeds {d.get('seeds')}. "
             f"Measured {env.get('date', '?')} on {env.get('cpu', '?')}, {env.get('cpus', '?')} CPUs, load average "
             f"{(env.get('load_average') or ['?'])[0]} at the start."
             + (f" {d['note']}" if d.get("note") else ""), "",
             "| model | numeric encoding (best trial) | mean val score | test AUC income | test AUC never-married "
             "| search: complete / pruned, seconds |", "|---|---|---|---|---|---|"]
    lines += [_tuned_row(d, m, rs, m == best_m) for m, rs in tg.items()]
    if not (h and best_m):
        return lines
    hi, hn = _ms([r["auc"]["income"] for r in h]), _ms([r["auc"]["never_married"] for r in h])
    lines.append(f"| HistGradientBoosting (same prepared train split) | raw values | | {_fmt(*hi)} | {_fmt(*hn)} | |")
    champ = tg[best_m]
    ci, cn = (_ms([r["auc"][t] for r in champ])[0] for t in ("income", "never_married"))
    worst = [min(r["auc"][t] for r in champ) for t in ("income", "never_married")]
    ok_i, ok_n = ci >= hi[0] - 0.003, cn >= hn[0] - 0.003
    head.update(p1_defaults_champion=best_m, p1_defaults_income=ci, p1_defaults_nm=cn, p1_defaults_ok=ok_i and ok_n,
                p1_defaults_hgb_income=hi[0], p1_defaults_hgb_nm=hn[0])
    return lines + ["", f"Target: the defaults-only champion ({best_m}, chosen on validation) within 0.003 of "
                        f"HistGradientBoosting on both tasks: income {ci:.4f} vs {hi[0]:.4f} (gap {ci - hi[0]:+.4f}, "
                        f"worst seed {worst[0]:.4f}): {_ok(ok_i)}; never-married {cn:.4f} vs {hn[0]:.4f} (gap "
                        f"{cn - hn[0]:+.4f}, worst seed {worst[1]:.4f}): {_ok(ok_n)}.",
                    "", "Best params per search: " + "; ".join(
                        f"{m}: `{json.dumps(s.get('best_params'), sort_keys=True)}`" for m, s in d["searches"].items())]


def _tuned_groups(tuned: dict) -> dict[str, list[dict]]:
    """Rows of tables B and C by model (table C's keyed 'model [encoding]')."""
    tg: dict[str, list[dict]] = {}
    for r in tuned["rows"]:
        key = r["model"] if r.get("table", "pipeline") == "pipeline" else f"{r['model']} [{r['encoding']}]"
        tg.setdefault(key, []).append(r)
    return tg


def _tuned_intro(cfgs: dict) -> list[str]:
    budget = (f"{cfgs.get('tuned_trials')} trials × ≤ {cfgs.get('tuned_search_epochs')} epochs, median pruner, TPE "
              f"sampler; then `workflow.training.train` with the best params, ≤ {cfgs.get('tuned_train_epochs')} epochs, "
              f"early stopping on validation (patience {cfgs.get('tuned_patience', 2)}), seeds "
              f"{cfgs.get('tuned_seeds', cfgs.get('seeds'))}")
    return ["#### Tuned by the pipeline", "",
            "`workflow.data.prepare` (adult: train/val split of adult.data, test = adult.test; numerics standardised, "
            "heavy-tailed ones log1p, with train quantiles and target-aware tree bins in the feature spec), then "
            "`workflow.search` per model with `configs/adult.yaml`'s search space (numeric encoding, bins, "
            f"embedding widths, AdamW weight decay, lr schedule, widths searched): {budget}. The champion is the "
            "model with the best mean **validation** score (mean val AUC) among the models scored on both labels "
            "(not ESMM, whose second output is scored against income ∧ never-married); test AUC is reported.", "",
            "| model | numeric encoding (best trial) | mean val score | test AUC income | test AUC never-married "
            "| search: complete / pruned, seconds |", "|---|---|---|---|---|---|"]


def _tuned_row(tuned: dict, m: str, rs: list[dict], champion: bool = False) -> str:
    s = tuned["searches"].get(m, {})
    return (f"| {m}{' (champion)' if champion else ''} | {rs[0].get('encoding', 'standard')} | "
            f"{_fmt(_ms([r.get('val_score') for r in rs])[0])} | {_fmt(*_ms([r['auc']['income'] for r in rs]))} | "
            f"{_fmt(*_ms([r['auc']['never_married'] for r in rs]))} | {s.get('n_complete')} / {s.get('n_pruned')}, "
            f"{s.get('seconds')} |")


def _champion(pipeline: dict[str, list[dict]]) -> str | None:
    # ESMM's second output is pCTCVR, scored against income ∧ never-married on validation as on test: its mean
    # val score is over another label, so it does not compete for the champion here
    comparable = [m for m in pipeline if m != "esmm"]
    return max(comparable, key=lambda m: _ms([r.get("val_score") for r in pipeline[m]])[0], default=None)


def _encoding_table(tuned: dict, per_encoding: dict[str, list[dict]]) -> list[str]:
    return (["", f"One row per numeric encoding: {per_encoding[next(iter(per_encoding))][0]['model']} searched "
                 "with the same space and budget, the encoding fixed (`standard`: the standardised / log1p "
                 "values fed as they are, as before this change).", "",
             "| model [encoding] | numeric encoding | mean val score | test AUC income | test AUC never-married "
             "| search: complete / pruned, seconds |", "|---|---|---|---|---|---|"]
            + [_tuned_row(tuned, m, rs) for m, rs in per_encoding.items()])


def _champion_targets(best_m: str, champ_rows: list[dict], hi: tuple, hn: tuple, head: dict) -> list[str]:
    ci = _ms([r["auc"]["income"] for r in champ_rows])[0]
    cn = _ms([r["auc"]["never_married"] for r in champ_rows])[0]
    must, aim, ok_n = ci >= 0.915, ci >= hi[0] - 0.005, cn >= hn[0]
    head.update(p1_champion=best_m, p1_champ_income=ci, p1_champ_nm=cn, p1_hgb_income=hi[0], p1_hgb_nm=hn[0],
                p1_champ_ok=must and ok_n)
    return ["", f"Targets: champion ({best_m}) income AUC {ci:.4f} (must ≥ 0.915: {_ok(must)}; aim ≥ "
                f"HistGradientBoosting − 0.005 = {hi[0] - 0.005:.4f}: {_ok(aim)}, gap {ci - hi[0]:+.4f}); "
                f"never-married {cn:.4f} vs {hn[0]:.4f} (target ≥ 0): {_ok(ok_n)}."]


def _part1_tuned(tuned: dict, cfgs: dict, head: dict) -> list[str]:
    """Table B (the pipeline's search, encoding searched, champion on validation) and C (one row per encoding)."""
    tg = _tuned_groups(tuned)
    pipeline = {m: rs for m, rs in tg.items() if m != "HistGradientBoosting" and rs[0].get("table", "pipeline") == "pipeline"}
    per_encoding = {m: rs for m, rs in tg.items() if rs[0].get("table") == "encoding"}
    best_m = _champion(pipeline)
    lines = _tuned_intro(cfgs) + [_tuned_row(tuned, m, rs, m == best_m) for m, rs in pipeline.items()]
    h = tg.get("HistGradientBoosting")
    if h:
        hi, hn = _ms([r["auc"]["income"] for r in h]), _ms([r["auc"]["never_married"] for r in h])
        lines.append(f"| HistGradientBoosting (same prepared train split) | raw values | | {_fmt(*hi)} | {_fmt(*hn)} | |")
    if per_encoding:
        lines += _encoding_table(tuned, per_encoding)
    if best_m and h:
        lines += _champion_targets(best_m, pipeline[best_m], hi, hn, head)
    lines += ["", "Best params per search: " + "; ".join(
        f"{m}: `{json.dumps(s.get('best_params'), sort_keys=True)}`" for m, s in tuned["searches"].items())]
    return lines
