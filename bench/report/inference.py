"""Part 5: ONNX Runtime against PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.reports.plots import pyplot, save_figure

from .common import _ok


def _row(r: dict) -> str:
    b1, big = r["b1"], r["big"]
    return (f"| {r['model']} | {b1['eager_median_ms']:.3f} ({b1['eager_p90_ms']:.3f}) | {b1['onnx_median_ms']:.3f} "
            f"({b1['onnx_p90_ms']:.3f}) | {b1['onnx_over_eager']:.2f} {'✓' if b1['onnx_over_eager'] <= 0.5 else '✗'} | "
            f"{big['eager_samples_s']:,.0f} | {big['onnx_samples_s']:,.0f} | {max(b1['max_abs_diff'], big['max_abs_diff']):.1e} |")


def _plot(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.6))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["b1"]["eager_median_ms"] for r in rows], 0.4, label="PyTorch eager")
    ax.bar(xs + 0.2, [r["b1"]["onnx_median_ms"] for r in rows], 0.4, label="ONNX Runtime")
    ax.set_xticks(xs, [r["model"] for r in rows], fontsize=8)
    ax.set_ylabel("batch-1 latency, ms (median)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def part5(rec: dict, img: Path) -> tuple[list[str], dict]:
    cfg, rows = rec["result"]["config"], rec["result"]["rows"]
    ok = all(r["b1"]["onnx_over_eager"] <= 0.5 for r in rows)
    lines = [f"Adult test rows, bench_training's models (13 sparse features), `mtl_models.export_onnx` (opset 18); "
             f"{cfg['threads']} thread each for ONNX Runtime and PyTorch; {cfg['n_b1']} timed batch-1 calls and "
             f"{cfg['n_big']} batch-{cfg['big_batch']} calls per engine, alternating in {cfg['chunks']} chunks.", "",
             f"| model | batch 1 eager ms (p90) | batch 1 ONNX ms (p90) | ONNX / eager (target ≤ 0.5) | batch {cfg['big_batch']} "
             "eager samples/s | batch {0} ONNX samples/s | max abs diff |".format(cfg["big_batch"]), "|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows] + ["", f"Target ONNX Runtime batch-1 latency ≤ 0.5× eager: {_ok(ok)}."]
    _plot(rows, img / "inference.png")
    lines += ["", "![Inference latency](benchmarks/inference.png)"]
    return lines, {"p5_max_ratio": max(r["b1"]["onnx_over_eager"] for r in rows), "p5_ok": ok}
