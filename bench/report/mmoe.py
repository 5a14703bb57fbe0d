"""Part 2: the MMOE paper's synthetic experiment, SharedBottom / MMOE / PLE over task correlation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.reports.plots import pyplot, save_figure

GAP = "SharedBottom − MMOE"


def _ci(v: dict, arm: str, nd: int = 3) -> str:
    lo, hi = v["ci95"][arm]
    return f"{v['mean'][arm]:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def _setup(cfg: dict, rows: list[dict]) -> list[str]:
    params = ", ".join(f"{m} {n:,}" for m, n in rows[0]["n_params"].items())
    return [f"Data: `synthetic-mmoe` (d = 100, m = 10 sinusoids, c = 1, noise 0.1; the two unit weight vectors' cosine "
            f"is p), {cfg['n_train']:,} train / {cfg['n_test']:,} test rows, fresh data and initialisation per seed, "
            f"seeds 0–{len(cfg['seeds']) - 1} ({len(cfg['seeds'])} per p). Models of equal size ({params} parameters): "
            f"MMOE {cfg['n_expert']} experts {cfg['expert']}, PLE one level with the same {cfg['n_expert']} experts "
            f"(per-task and shared), SharedBottom one hidden layer as wide as matches MMOE's count; towers "
            f"{cfg['tower']}; normalisation layers: {cfg.get('norm', 'batch')} (the paper's layers are plain ReLU "
            f"layers; the library's default is BatchNorm). Adam lr {cfg['lr']}, batch {cfg['batch']}, {cfg['epochs']} epochs "
            f"({cfg['epochs'] * -(-cfg['n_train'] // cfg['batch']):,} steps), no early stopping; final = test MSE (mean "
            f"of the two tasks) over the last {cfg['final_epochs']} epochs. Mean with its 95% t-interval over seeds."]


def _row(row: dict, models: list[str]) -> str:
    v, gap = row["all_models"], row["gap"]
    verdict = f"**{v['winner']}**, intervals {'separate' if v['separated'] else 'overlap'}"
    sb = row["sb_vs_mmoe"]
    pair = f"{sb['winner']} ({'separated' if sb['separated'] else 'overlap'}" + (
        f"; paired {'excludes' if sb['paired_lead']['excludes_zero'] else 'includes'} 0)" if "paired_lead" in sb else ")")
    return (f"| {row['p']} | {row['label_corr']:.3f} | " + " | ".join(_ci(v, m) for m in models)
            + f" | {verdict} | {pair} | {_ci(gap, GAP)} |")


def _table(rows: list[dict], models: list[str]) -> list[str]:
    return (["", "| p | label correlation | " + " | ".join(f"{m} final MSE" for m in models)
             + " | best of all (95% intervals) | SharedBottom vs MMOE | SharedBottom − MMOE per seed |",
             "|---" * (len(models) + 5) + "|"] + [_row(r, models) for r in rows])


def trend(rows: list[dict]) -> dict:
    """The paper's trend: the SharedBottom − MMOE gap falls as p rises, and the lowest p's gap interval lies above
    the highest p's."""
    by_p = sorted(rows, key=lambda r: r["p"])
    gaps = [r["gap"]["mean"][GAP] for r in by_p]
    monotone = all(a >= b for a, b in zip(gaps, gaps[1:]))
    separated = by_p[0]["gap"]["ci95"][GAP][0] > by_p[-1]["gap"]["ci95"][GAP][1]
    return {"gaps": gaps, "monotone": monotone, "separated": bool(separated), "reproduced": monotone and separated}


def _sentence(t: dict, rows: list[dict]) -> str:
    gaps = ", ".join(f"p = {r['p']}: {_ci(r['gap'], GAP)}" for r in sorted(rows, key=lambda r: r["p"]))
    if t["reproduced"]:
        return (f"The paper's trend **reproduces**: MMOE's lead over SharedBottom shrinks as the correlation rises, and "
                f"the lowest correlation's interval lies above the highest's ({gaps}).")
    why = "the gap does not fall monotonically with p" if not t["monotone"] else "the intervals of the gap overlap"
    leads = [str(r["p"]) for r in rows if r["sb_vs_mmoe"]["winner"] == "MMOE"
             and r["sb_vs_mmoe"].get("paired_lead", {}).get("excludes_zero")]
    text = f"The paper's trend **does not reproduce** here: {why} ({gaps})."
    if leads:
        text += (f" MMOE's per-seed lead over SharedBottom excludes 0 at p = {', '.join(leads)}: an advantage at this "
                 "size and budget, not one that grows as the tasks' correlation falls.")
    return text


def _plot(res: dict, rows: list[dict], path: Path) -> None:
    cfg, plt = res["config"], pyplot()
    fig, axes = plt.subplots(1, len(cfg["ps"]) + 1, figsize=(4 * (len(cfg["ps"]) + 1), 3.6))
    for ax, p in zip(axes, cfg["ps"]):
        for m in cfg["models"]:
            rs = [r for r in res["runs"] if r["p"] == p and r["model"] == m]
            curves = np.array([[np.mean(c["mse"]) for c in r["curve"]] for r in rs])  # [seeds, epochs]
            ax.plot([c["step"] for c in rs[0]["curve"]], curves.mean(0), label=m)
        ax.set(title=f"p = {p}", xlabel="training steps", ylabel="test MSE, mean over seeds")
        ax.legend(fontsize=8)
    ps = [r["p"] for r in rows]
    mean = [r["gap"]["mean"][GAP] for r in rows]
    axes[-1].errorbar(ps, mean, yerr=[m - r["gap"]["ci95"][GAP][0] for m, r in zip(mean, rows)], fmt="o-", capsize=3)
    axes[-1].axhline(0, color="k", lw=0.8)
    axes[-1].set(title=f"{GAP} (95% interval)", xlabel="p (cosine of the weight vectors)")
    save_figure(fig, path, dpi=110)


def part2(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    rows, models = res["summary"], res["config"]["models"]
    _plot(res, rows, img / "mmoe_synthetic.png")
    t = trend(rows)
    lines = (_setup(res["config"], rows) + _table(rows, models)
             + ["", "![MMOE synthetic](benchmarks/mmoe_synthetic.png)", "", _sentence(t, rows)])
    return lines, {"p2_gaps": t["gaps"], "p2_monotone": t["monotone"], "p2_reproduced": t["reproduced"],
                   "p2_seeds": len(res["config"]["seeds"])}
