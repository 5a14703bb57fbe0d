"""Part 5: ONNX Runtime against PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.plots import pyplot, save_figure

from .common import _ok


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
