"""One trained model's report for the KFP UI: its saved test and validation metrics with their 95 % intervals
(``0.7129 [0.7061, 0.7197]``), as an HTML page (with the plots the train step drew) and a Markdown table. It renders
``metrics.json``; it evaluates nothing (``training.evaluate`` did)."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from .intervals import cell, values_only

__all__ = ["flat_metrics", "render"]

PathLike = str | os.PathLike


def flat_metrics(saved: Mapping[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` for each finite test metric of a saved ``metrics.json`` (an undefined one, e.g. GAUC where
    no user has both classes, is left out: KFP's Metrics refuse NaN), then ``test_score`` and, when recorded and
    finite, ``val_score`` (what promotion selects on)."""
    import math

    flat = {f"{task}/{name}": float(v) for task, ms in saved["test_metrics"].items() for name, v in ms.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}
    flat["test_score"] = float(saved["test_score"])
    val = saved.get("val_score")
    if isinstance(val, (int, float)) and math.isfinite(val):
        flat["val_score"] = float(val)
    return flat


def _rows(saved: Mapping[str, Any], flat: Mapping[str, float]) -> list[tuple[str, str, str]]:
    """(metric, test with interval, validation with interval) per metric, then the test score."""
    val = {f"{task}/{name}": float(v) for task, ms in (saved.get("val_metrics") or {}).items() for name, v in ms.items()}
    rows = [(k, cell(flat, k), cell(val, k)) for k in values_only(flat) if k != "test_score"]
    return rows + [("score (task mean)", f"{flat['test_score']:.4f}", cell(saved, "val_score"))]


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:720px">'


def _html(saved: Mapping[str, Any], flat: Mapping[str, float], plots_dir: Path) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{t}</td><td>{v}</td></tr>" for k, t, v in _rows(saved, flat))
    images = "".join(_img_tag(p) for p in sorted(plots_dir.glob("*.png")))
    return (f"<h2>{html.escape(saved['model_name'])}: test and validation metrics</h2>"
            f"<table><tr><th>metric</th><th>test [95 % interval]</th><th>validation [95 % interval]</th></tr>{rows}"
            f"</table><p>{_NOTE}</p><p>best epoch {saved['best_epoch']}</p>{images}")


def _markdown(saved: Mapping[str, Any], flat: Mapping[str, float]) -> str:
    lines = [f"## {saved['model_name']}", "", "| metric | test [95 % interval] | validation [95 % interval] |",
             "|---|---|---|"]
    return "\n".join(lines + [f"| {k} | {t} | {v} |" for k, t, v in _rows(saved, flat)] + ["", _NOTE]) + "\n"


_NOTE = ("Brackets: the 95 % interval: built this way, it holds the model's true score on data like this 95 times "
         "in 100 (AUC: DeLong's variance; GAUC, calibration, ece, logloss: a bootstrap of 200 resamples). GAUC is the per-user AUC "
         "weighted by impressions; calibration is mean prediction / mean label (1 is calibrated).")


def render(trained_dir: PathLike, report_html: PathLike, report_md: Optional[PathLike] = None) -> dict[str, float]:
    """Write the HTML (and Markdown) report of ``trained_dir``; returns its flat test metrics."""
    trained_dir = Path(trained_dir)
    saved = json.loads((trained_dir / "metrics.json").read_text())
    flat = flat_metrics(saved)
    Path(report_html).write_text(_html(saved, flat, trained_dir / "plots"))
    if report_md:
        Path(report_md).write_text(_markdown(saved, flat))
    return flat
