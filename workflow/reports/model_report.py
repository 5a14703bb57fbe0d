"""One trained model's report for the KFP UI: its saved test metrics flattened, as an HTML page (with the plots the
train step drew) and a Markdown table. It renders ``metrics.json``; it evaluates nothing (``training.evaluate`` did)."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

__all__ = ["flat_metrics", "render"]

PathLike = str | os.PathLike


def flat_metrics(saved: Mapping[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` for each test metric of a saved ``metrics.json``, then ``test_score`` and, when recorded
    and finite, ``val_score`` (what promotion selects on)."""
    import math

    flat = {f"{task}/{name}": float(v) for task, ms in saved["test_metrics"].items() for name, v in ms.items()}
    flat["test_score"] = float(saved["test_score"])
    val = saved.get("val_score")
    if isinstance(val, (int, float)) and math.isfinite(val):
        flat["val_score"] = float(val)
    return flat


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:720px">'


def _html(saved: Mapping[str, Any], flat: Mapping[str, float], plots_dir: Path) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in flat.items())
    images = "".join(_img_tag(p) for p in sorted(plots_dir.glob("*.png")))
    return (f"<h2>{html.escape(saved['model_name'])}: test metrics</h2>"
            f"<table>{rows}</table><p>best epoch {saved['best_epoch']}</p>{images}")


def _markdown(saved: Mapping[str, Any], flat: Mapping[str, float]) -> str:
    lines = [f"## {saved['model_name']}", "", "| metric | value |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v:.4f} |" for k, v in flat.items()]) + "\n"


def render(trained_dir: PathLike, report_html: PathLike, report_md: Optional[PathLike] = None) -> dict[str, float]:
    """Write the HTML (and Markdown) report of ``trained_dir``; returns its flat test metrics."""
    trained_dir = Path(trained_dir)
    saved = json.loads((trained_dir / "metrics.json").read_text())
    flat = flat_metrics(saved)
    Path(report_html).write_text(_html(saved, flat, trained_dir / "plots"))
    if report_md:
        Path(report_md).write_text(_markdown(saved, flat))
    return flat
