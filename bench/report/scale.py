"""Part 7: prepare and train at 1M and 10M rows."""

from __future__ import annotations

from pathlib import Path


def _mib(d: dict) -> str:
    """A peak equal to the start value was inherited from the parent (ru_maxrss across exec): an upper bound."""
    v = f"{d['peak_rss_bytes'] / 2**20:,.0f}"
    return f"≤ {v}" if d.get("baseline_rss_bytes") and d["peak_rss_bytes"] <= d["baseline_rss_bytes"] else v


def _row(r: dict) -> str:
    p, t = r["prepare"], r["train"]
    return (f"| {r['n_rows']:,} | {p['seconds']:.1f} | {p['rows_per_s']:,.0f} | {_mib(p)} | "
            f"{p['data_bytes'] / 2**20:,.0f} | {r['parquet_bytes'] / 2**20:,.0f} | {t['train_rows_total']:,} | "
            f"{t['rows_trained']:,} | {t['load_seconds']:.1f} | {t['epoch_seconds']:.1f} | {t['rows_per_s']:,.0f} | "
            f"{_mib(t)} |")


def _notes(rows: list[dict]) -> list[str]:
    lines = []
    rates = [r["train"]["rows_per_s"] for r in rows]
    if len(rates) > 1 and max(rates) > 1.5 * min(rates):
        lines += ["", "The training rates differ between sizes by more than the data size explains (the model and batch "
                  "are the same): they were measured minutes apart on a machine whose load changed (load average per "
                  "row in results.json); the higher figure is the closer one to what this machine does when less busy."]
    if any("≤" in _mib(r[k]) for r in rows for k in ("prepare", "train")):
        lines += ["", "≤: these results were measured with `ru_maxrss`, which Linux carries across `exec` from the "
                  "parent process (here the benchmark runner, at that moment the figure after ≤): such a peak is only "
                  "an upper bound. `bench.scale` now reads VmHWM, which starts afresh in each child."]
    capped = [r for r in rows if r["train"]["rows_trained"] < (r["train"]["train_rows_total"] or 0)]
    if capped:
        lines += ["", "Time box: at " + ", ".join(f"{r['n_rows']:,}" for r in capped) + " rows the whole train split is "
                  "loaded (its memory is in the peak) but the epoch runs over its first rows only (rows trained); "
                  "rows/s does not depend on the split's size, a full epoch takes rows / (rows/s)."]
    return lines


def part7(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    lines = ["`workflow.data.prepare` on synthetic-funnel, then one epoch of MMOE (the pipeline's default: embed 16, "
             f"8 experts [128, 64], towers [32]) from the Parquet train split, batch {cfg['batch']}, {cfg['threads']} torch "
             "threads; each phase in its own process, with its own peak RSS.", "",
             "| rows | prepare s | prepare rows/s | prepare peak RSS MiB | data MiB | Parquet MiB | train rows loaded | rows trained "
             "| load s | epoch s | train rows/s | train peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in res["rows"]] + _notes(res["rows"])
    return lines, {"p7": [(r["n_rows"], r["prepare"]["rows_per_s"], r["train"]["rows_per_s"],
                           max(r["prepare"]["peak_rss_bytes"], r["train"]["peak_rss_bytes"])) for r in res["rows"]]}
