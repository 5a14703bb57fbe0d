"""The headline table (page top and README), from the facts each part's renderer returns: one function per part,
each giving its rows (none when the part's facts are missing)."""

from __future__ import annotations

from .common import _ok


def _part1(head: dict) -> list[str]:
    rows = []
    if "p1_vs_trh" in head:
        rows.append(f"| Adult test AUC vs Torch-RecHub 0.9.0, same config | every model ≥ TRH − 0.002: "
                    f"{'yes' if head['p1_vs_trh'] else 'no'} | {_ok(head['p1_vs_trh'])} |")
    if "p1_champion" in head:
        rows.append(f"| Tuned champion ({head['p1_champion']}) vs HistGradientBoosting, Adult test AUC | income "
                    f"{head['p1_champ_income']:.4f} vs {head['p1_hgb_income']:.4f}, never-married {head['p1_champ_nm']:.4f} vs "
                    f"{head['p1_hgb_nm']:.4f} | {_ok(head['p1_champ_ok'])} |")
    if "p1_defaults_champion" in head:
        rows.append(f"| Defaults-only champion ({head['p1_defaults_champion']}, `configs/adult.yaml` with no search space) "
                    f"vs HistGradientBoosting − 0.003, Adult test AUC | income {head['p1_defaults_income']:.4f} vs "
                    f"{head['p1_defaults_hgb_income']:.4f}, never-married {head['p1_defaults_nm']:.4f} vs "
                    f"{head['p1_defaults_hgb_nm']:.4f} | {_ok(head['p1_defaults_ok'])} |")
    return rows


def _part2(head: dict) -> list[str]:
    if "p2_gaps" not in head:
        return []
    return [f"| MMOE synthetic: SharedBottom − MMOE test MSE by correlation p, low to high ({head.get('p2_seeds')} seeds) | "
            f"{', '.join(f'{g:+.3f}' for g in head['p2_gaps'])} | paper's trend "
            f"{'reproduced' if head['p2_reproduced'] else 'not reproduced'} |"]


def _part3(head: dict) -> list[str]:
    cells = [c for c in head.get("p3_cells", []) if c[1] == "all"]
    if not cells:
        return []
    def cell(n, e, c, winner, sep, paired) -> str:
        how = "intervals separate" if sep else "paired lead excludes 0" if paired else "within noise"
        return f"{n}: {e:.3f} vs {c:.3f}, {'ESMM' if winner == 'esmm' else 'clicked-only'} ({how})"

    text = "; ".join(cell(n, e, c, w, sep, paired) for n, _, e, c, w, sep, paired in cells)
    return [f"| ESMM vs clicked-only CVR: AUC vs true pCVR over all impressions, ESMM vs clicked-only, per setting | {text} | — |"]


def _per_model(at: list, i: int) -> str:
    return "; ".join(f"{t} thread{'s' if t > 1 else ''}: " + ", ".join(f"{x[0]} {x[i]:.2f}×" for x in at if x[1] == t)
                     for t in dict.fromkeys(x[1] for x in at))


def _part4(head: dict) -> list[str]:
    if "p4_min_vs_trh" not in head:
        return []
    at = head.get("p4_target") or []  # (model, threads, ours/TRH, ours/plain) at the target batch
    batch = head.get("p4_target_batch", 1024)
    return [f"| Training samples/s vs Torch-RecHub at batch {batch} (all batch sizes: median "
            f"{head.get('p4_med_vs_trh', float('nan')):.1f}×, range {head['p4_min_vs_trh']:.1f}× – "
            f"{head['p4_max_vs_trh']:.1f}×) | {_per_model(at, 2) if at else '—'} | ≥ 3× {_ok(head['p4_ok_trh'])} |",
            f"| Training samples/s vs plain PyTorch loop at batch {batch} (all: median "
            f"{head.get('p4_med_vs_plain', float('nan')):.2f}×, min {head['p4_min_vs_plain']:.2f}×) | "
            f"{_per_model(at, 3) if at else '—'} | ≥ 1.0× {_ok(head['p4_ok_plain'])} |"]


def _parts567(head: dict) -> list[str]:
    rows = []
    if "p5_max_ratio" in head:
        rows.append(f"| ONNX Runtime batch-1 latency / PyTorch eager | ≤ {head['p5_max_ratio']:.2f} | ≤ 0.5 {_ok(head['p5_ok'])} |")
    if "p6_overhead" in head:
        rows.append(f"| `mtlp run` local runner vs direct step calls | {head['p6_local']:.0f} s vs {head['p6_direct']:.0f} s "
                    f"({head['p6_overhead'] * 100:+.0f} %) | ≤ 15 % {_ok(head['p6_overhead'] <= 0.15)} |")
    if "p7" in head:
        loads = head.get("p7_load") or []
        at = f"; load {min(loads):.0f}–{max(loads):.0f} on 2 cores" if loads else ""
        rows.append(f"| Scale, streamed from raw Parquet (prepare rows/s, MMOE train rows/s, peak RSS{at}) | " + "; ".join(
            f"{n / 1e6:g}M: {a:,.0f}, {b:,.0f}, {m / 2**30:.2f} GiB" for n, a, b, m in head["p7"]) + " | — |")
    if "p7_rss_ratio" in head:
        big, small, ratio = head["p7_rss_ratio"]
        rows.append(f"| Peak RSS at {big / 1e6:g}M rows / at {small / 1e6:g}M rows (streaming prepare, loader, training) "
                    f"| {ratio:.2f}× | ≤ 1.2× {_ok(ratio <= 1.2)} |")
    if "p7_loader_ratio" in head:
        rows.append(f"| Streaming loader rows/s / MMOE training rows/s | ≥ {head['p7_loader_ratio']:,.0f}× | "
                    f"≥ 5× {_ok(head['p7_loader_ratio'] >= 5)} |")
    return rows


def _part8(head: dict) -> list[str]:
    if head.get("p8_ratio_b1") is None:
        return []
    return [f"| Serving under load, batch 1: ours / `mlflow models serve` rows/s | {head['p8_ratio_b1']:.1f}×, "
            f"{head['p8_errors']} errors | ≥ 2×, 0 errors: {_ok(head['p8_ok'])} |"]


def headline(head: dict) -> list[str]:
    rows = ["| benchmark | result | target |", "|---|---|---|"]
    for part in (_part1, _part2, _part3, _part4, _parts567, _part8):
        rows += part(head)
    return rows
