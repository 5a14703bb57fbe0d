"""Part 7: data bigger than memory: streaming prepare, the streaming loader's full epoch and MMOE training from it."""

from __future__ import annotations

from pathlib import Path
from statistics import mean


def _mib(d: dict) -> str:
    return f"{d['peak_rss_bytes'] / 2**20:,.0f}"


def peak(r: dict) -> int:
    """A size's peak RSS: the largest of its phases (each in its own process)."""
    return max(r[k]["peak_rss_bytes"] for k in ("prepare", "loader", "train"))


def _row(r: dict) -> str:
    p, lo, t = r["prepare"], r["loader"], r["train"]
    return (f"| {r['n_rows']:,} | {r['raw']['bytes'] / 2**20:,.0f} | {p['seconds']:.0f} | {p['rows_per_s']:,.0f} | "
            f"{_mib(p)} | {p['parquet_bytes'] / 2**20:,.0f} | {lo['rows']:,} | {lo['seconds']:.1f} | "
            f"{lo['rows_per_s']:,.0f} | {_mib(lo)} | {t['rows_per_s']:,.0f} | {_mib(t)} | "
            f"{lo['rows_per_s'] / t['rows_per_s']:,.0f}× | {r['prepare']['load'][0]:.1f} |")


def _paired(paired: dict | None) -> list[str]:
    """In-process windows (``rows_per_s`` per loader) or, in older results, fresh processes (``runs``)."""
    if not paired:
        return []
    if "runs" in paired:
        by = {"memory": [r["rows_per_s"] for r in paired["runs"] if r["loader"] == "TensorLoader"],
              "streamed": [r["rows_per_s"] for r in paired["runs"] if r["loader"] == "ParquetLoader"]}
        how = f"MMOE {paired['steps']} steps per run in fresh processes, alternating ABBA"
    else:
        by = paired["rows_per_s"]
        how = (f"one MMOE trainer fed from both loaders in alternating windows of {paired['steps']} steps (ABBA, "
               f"{paired['windows']} windows each after a warm-up window)")
    memory, streamed = by.get("memory") or [], by.get("streamed") or []
    if not memory or not streamed:
        return []
    values = "; ".join(f"{k}: " + ", ".join(f"{v:,.0f}" for v in vs) for k, vs in (("memory", memory),
                                                                                    ("streamed", streamed)))
    spread = max(memory + streamed) / min(memory + streamed) - 1
    load = paired.get("load")
    lines = ["", f"Paired check on the 1M split, {how}: the trainer's rows/s with the split in memory "
             f"{mean(memory):,.0f}, streamed {mean(streamed):,.0f} (streamed / memory = "
             f"{mean(streamed) / mean(memory):.3f}; per window {values}; the spread across all windows is "
             f"{spread * 100:.0f} %" + (f", load {load[0][0]:.1f} → {load[1][0]:.1f}" if load else "") + ")."]
    cpu = paired.get("rows_per_cpu_s")
    if cpu and cpu.get("memory") and cpu.get("streamed"):
        m, st = cpu["memory"], cpu["streamed"]
        lines += ["", f"Per CPU second of the process (its own work, less sensitive to the other jobs' load than wall "
                  f"time): memory {mean(m):,.0f} rows, streamed {mean(st):,.0f} rows (streamed / memory = "
                  f"{mean(st) / mean(m):.3f}; windows ranged {min(m + st):,.0f}–{max(m + st):,.0f})."]
    return lines


def part7(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg = res["config"]
    rows = res["rows"]
    lines = ["Synthetic-funnel rows written as raw Parquet files (1M rows a file), then `workflow.data.prepare` on them as "
             "the `parquet` dataset with a folder input: the streaming prepare (two passes over 256k-row chunks, "
             "sharded output with 256k-row row groups). Then the streaming loader (`ParquetLoader`, 1M-row shuffle "
             f"buffer) alone over one full shuffled epoch of the train split, batch {cfg['batch']}, and MMOE (the "
             "pipeline's default: embed 16, 8 experts [128, 64], towers [32]) training from the streamed split, "
             f"{cfg['threads']} torch threads. Each phase in its own process, with its own peak RSS (VmHWM).", "",
             f"**Time box**: the loader's pass reads every train row, so its peak RSS covers a whole epoch; training runs "
             f"the first {cfg['train_steps']} steps ({cfg['train_steps'] * cfg['batch']:,} rows) only: its rate does "
             "not depend on the split's size (a full epoch takes train rows / rows/s).", "",
             "| rows | raw MiB | prepare s | prepare rows/s | prepare peak RSS MiB | shards MiB | loader rows read | "
             "loader s | loader rows/s | loader peak RSS MiB | MMOE train rows/s | train peak RSS MiB | "
             "loader / training | load at prepare |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    head: dict = {"p7": [(r["n_rows"], r["prepare"]["rows_per_s"], r["train"]["rows_per_s"], peak(r)) for r in rows],
                  "p7_load": [r["prepare"]["load"][0] for r in rows if r["prepare"].get("load")]}
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        ratio = peak(big) / peak(small)
        head["p7_rss_ratio"] = (big["n_rows"], small["n_rows"], ratio)
        lines += ["", f"Peak RSS (largest phase) at {big['n_rows']:,} rows is {ratio:.2f}× that at {small['n_rows']:,} "
                  f"rows ({peak(big) / 2**20:,.0f} vs {peak(small) / 2**20:,.0f} MiB; target ≤ 1.2×: "
                  f"**{'met' if ratio <= 1.2 else 'missed'}**)."]
    ratios = [r["loader"]["rows_per_s"] / r["train"]["rows_per_s"] for r in rows]
    head["p7_loader_ratio"] = min(ratios)
    lines += ["", f"The loader alone reads {min(ratios):,.0f}× to {max(ratios):,.0f}× as many rows per second as MMOE "
              f"trains on (target ≥ 5×: **{'met' if min(ratios) >= 5 else 'missed'}**). Prepare rows/s includes its "
              "fixed costs (imports, the 32 decision trees of the tree bins fitted on a 200k-row sample), which "
              "dominate at 1M rows. The load averages are those of a machine shared with other jobs: rates measured "
              "minutes apart are not comparable, the loader/training ratio is measured a minute apart."]
    lines += _paired(res.get("paired"))
    lines += [line for note in res.get("notes", []) for line in ("", note)]  # what a merged run needs said
    return lines, head
