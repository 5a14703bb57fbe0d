"""Part 8: the model server under load beside `mlflow models serve`."""

from __future__ import annotations

from pathlib import Path

from .common import _ok

SERVERS = {"ours": "ours (`workflow.serving.model_server`)", "mlflow": "MLflow (`mlflow models serve`)"}


def _row(c: dict) -> str:
    p50 = "–" if c["p50_ms"] is None else f"{c['p50_ms']:.1f}"
    p99 = "–" if c["p99_ms"] is None else f"{c['p99_ms']:.1f}"
    return (f"| {c['batch']} | {SERVERS[c['server']]} | {c.get('round', 0) + 1} | {c['requests']:,} | {c['errors']} | "
            f"{c['rows_s']:,.0f} | {p50} | {p99} | {c['load'][0]:.1f} |")


def part8(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    cfg, cells, summary = res["config"], res["cells"], res["summary"]
    b1 = summary.get("1", {})
    errors = sum(s["errors"] for s in summary.values())
    ok = bool(b1) and b1["ratio"] >= 2.0 and errors == 0
    lines = [f"One model (shared_bottom, one epoch on Adult, the raw-rows ONNX pyfunc) served on 127.0.0.1 by our model "
             f"server and by `mlflow models serve --env-manager local`, one uvicorn worker each, one after the other "
             f"in the same run ({cfg['rounds']} round(s), the order flipped each round). {cfg['clients']} client "
             f"threads on keep-alive connections POST `dataframe_split` requests of raw Adult test rows back to back "
             f"for {cfg['seconds']:g} s or {cfg['max_requests']:,} requests per cell; an answer that is not HTTP 200 "
             "with one prediction per row is an error. Client and server share the machine's CPUs.", "",
             "| batch | server | round | requests | errors | rows/s | p50 ms | p99 ms | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(c) for c in sorted(cells, key=lambda c: (c["batch"], c.get("round", 0), c["server"] != "ours"))]
    lines += [""] + [f"Batch {b}: ours {s['ours_rows_s']:,.0f} rows/s vs MLflow {s['mlflow_rows_s']:,.0f} rows/s: "
                     f"**{s['ratio']:.1f}×** ({s['errors']} errors)." for b, s in summary.items()]
    lines += ["", f"Target ≥ 2× MLflow's rows/s at batch 1 with zero errors: {_ok(ok)}. Where the difference comes "
              "from: the raw-rows pyfunc costs about as much for 100 rows as for 1 (its pandas encoding is per "
              "column), and our server scores the requests that arrive while a predict call runs together in the "
              "next one (`workflow/serving/app.py`); MLflow's scoring server makes one predict call per request."]
    head = {"p8_ratio_b1": b1.get("ratio"), "p8_errors": errors, "p8_ok": ok} if b1 else {}
    return lines, head
