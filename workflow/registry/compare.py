"""``mtlp compare``: two registered versions scored on the same validation or test rows, per task, with paired
intervals (DeLong's test for AUC, a paired bootstrap for GAUC and calibration).

    mtlp compare --model NAME [--a V] [--b V] [--split val|test] [--prepared DIR] [--work-dir RUN]

``--a`` defaults to the champion, ``--b`` to the challenger (the newest candidate). Each version is scored through
its own logged model on the rows of a prepared folder: ``--prepared``, else the one the run folder ``--work-dir``
(else the newest run under ``./mtlp-runs``) prepared. The store: as ``mtlp promote`` finds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import cli_error

__all__ = ["main", "compare_versions", "find_prepared", "format_table"]

DEFAULT_METRICS = ("auc", "gauc", "calibration", "ece")


def find_prepared(work_dir: Optional[str], runs_root: str | Path = "mtlp-runs") -> Path:
    """The prepared folder (``val.parquet`` beside ``feature_spec.json``) of the run folder ``work_dir``, else of
    the newest run under ``runs_root``; the newest one when a folder holds several."""
    roots = [Path(work_dir)] if work_dir else sorted(Path(runs_root).glob("*/"), key=lambda p: p.stat().st_mtime)[-1:]
    found = [p.parent for root in roots for p in root.rglob("val.parquet") if (p.parent / "feature_spec.json").is_file()]
    if not found:
        where = work_dir or f"the newest run under {runs_root}"
        raise FileNotFoundError(f"no prepared data (val.parquet + feature_spec.json) in {where}: name it with "
                                "--prepared DIR")
    return max(found, key=lambda p: p.stat().st_mtime)


def compare_versions(client: Any, name: str, a: str, b: str, prepared: str | Path, split: str = "val",
                     metrics: Sequence[str] = DEFAULT_METRICS, level: float = 0.05) -> dict[str, Any]:
    """``{"a", "b", "split", "rows", "comparisons": {"<task>/<metric>": {a, b, delta, lo, hi, p_value}}}``: b
    against a on the same rows, each scored through its logged model. GAUC is left out without a user column."""
    from .promotion import _label
    from .rescore import read_rows
    from .rule import compare_tasks

    rows = read_rows(prepared, split)
    wanted = [m for m in metrics if m != "gauc" or rows.users is not None]
    p_a, p_b = (rows.predict(f"models:/{name}/{v}") for v in (a, b))
    comps = compare_tasks(rows.labels, p_a, p_b, rows.tasks, wanted, rows.users, level)
    return {"model": name, "a": _label(client, name, a), "b": _label(client, name, b), "split": split,
            "prepared": str(prepared), "rows": int(len(rows.labels)), "level": level, "comparisons": comps}


def format_table(result: dict[str, Any]) -> str:
    from .rule import metric_words, p_words

    a, b = result["a"], result["b"]
    conf = round(100 * (1 - result["level"]))
    lines = [f"{result['model']}: {b} against {a} on the same {result['rows']:,} {result['split']} rows "
             f"({result['prepared']})", "",
             f"| task | metric | {a} | {b} | Δ ({b} − {a}) [{conf} % interval] | test |", "|---|---|---|---|---|---|"]
    for c in result["comparisons"].values():
        lines.append(f"| {c['task']} | {metric_words(c['metric'])} | {c['a']:.4f} | {c['b']:.4f} | "
                     f"{c['delta']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}] | {p_words(c['p_value'])} |")
    lines += ["", "An interval that excludes 0 tells the two apart at that confidence. Calibration: the change of "
                  "|mean prediction / mean label − 1| (below 0: b is better calibrated); ece: lower is better."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlp compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--a", default=None, help="version to compare against (default: the champion)")
    p.add_argument("--b", default=None, help="version to compare (default: the challenger, the newest candidate)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="which rows (default: val)")
    p.add_argument("--prepared", default=None, help="prepared data folder (default: the run folder's)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated: auc, gauc, calibration, ece")
    p.add_argument("--level", type=float, default=0.05, help="1 - the intervals' confidence (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI")
    p.add_argument("--work-dir", default=None, help="run folder (mtlp-runs/<run>): its store and prepared data")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from mlflow.exceptions import MlflowException

    from .. import registry
    from ..tracking import TrackingUnavailable, check_tracking_reachable, client_for, use_globally
    from .cli import resolve_store
    from .rescore import NotComparable

    try:
        uri, note = resolve_store(args.tracking_uri, args.work_dir)
        if note:
            print(f"mtlp compare: {note}", file=sys.stderr)
        check_tracking_reachable(uri, timeout=10.0)
        client = client_for(uri)
        use_globally(uri)  # models:/ URIs resolve on this store
        a = args.a or registry.champion_version(client, args.model)
        b = args.b or registry.challenger_version(client, args.model)
        if a is None or b is None:
            raise registry.RegistryError(f"{args.model!r} has no {'champion' if a is None else 'challenger'}: "
                                         "name the versions with --a and --b")
        if str(a) == str(b):
            raise registry.RegistryError(f"--a and --b are both version {a} (the challenger is the champion): "
                                         "name another with --a or --b")
        prepared = Path(args.prepared) if args.prepared else find_prepared(args.work_dir)
        result = compare_versions(client, args.model, str(a), str(b), prepared, args.split,
                                  [m.strip() for m in args.metrics.split(",") if m.strip()], args.level)
        print(json.dumps(result, indent=2) if args.json else format_table(result))
        return 0
    except (registry.RegistryError, TrackingUnavailable, NotComparable, FileNotFoundError, ValueError,
            MlflowException) as e:
        return cli_error("mtlp compare", e)


if __name__ == "__main__":
    sys.exit(main())
