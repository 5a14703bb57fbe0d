"""The short Markdown report of one gpu-check run, from its JSON (every figure the JSON holds, fewer digits)."""

from __future__ import annotations

from bench.gpu_check import TASKS

RUN_LABELS = {"cpu": "CPU fp32 (reference)", "device": "device fp32", "device_plain": "device fp32, plain graph",
              "device_bf16": "device bf16 autocast", "cpu_next_seed": "CPU fp32, next seed (the AUC limits' scale)"}
COMPARE_LABELS = {"device_vs_cpu": "device fp32 vs CPU", "plain_vs_products": "plain graph vs table products",
                  "bf16_vs_cpu": "bf16 vs CPU fp32", "next_seed_vs_cpu": "next seed vs seed (widens the AUC limits)"}


def _auc(d: dict) -> str:
    return " / ".join(f"{d[t]:.4f}" for t in TASKS)


def _header(r: dict) -> list[str]:
    env, cfg, tol = r["env"], r["config"], r["config"]["tol"]
    v = env["versions"]
    lines = [f"# gpu-check: {'OK' if r['ok'] else 'MISMATCH'} on {r['device']}", "",
             f"- device: {env['device_name']}; {env['date']}; load average {env['load_average']}; {r['seconds']} s",
             f"- torch {v['torch']}, onnxruntime {v['onnxruntime']}, torch-rechub {v['torch-rechub']}, "
             f"numpy {v['numpy']}, python {v['python']}; float32 matmul precision {env['float32_matmul_precision']}"]
    if "cuda" in env:
        lines.append(f"- CUDA: {env['cuda']}")
    lines += [f"- data {cfg['data']}, rows {cfg['rows'] or 'all'}, val rows {cfg['val_rows'] or 'all'}, batch "
              f"{cfg['batch']}, {cfg['steps']} steps, seed {cfg['seed']}; models {', '.join(cfg['models'])}",
              f"- tolerances: {', '.join(f'{k} {v:g}' for k, v in tol.items())}", ""]
    return lines


def _parity(models: list[dict]) -> list[str]:
    lines = ["## Training parity", "", "Final validation AUC (income / never-married) and steps per run:", "",
             "| model | " + " | ".join(RUN_LABELS.values()) + " |", "|---" * (len(RUN_LABELS) + 1) + "|"]
    for m in models:
        cells = [f"{_auc(m['runs'][k]['final_auc'])} ({m['runs'][k]['steps']})" if k in m["runs"] else "not run"
                 for k in RUN_LABELS]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Largest relative loss-curve difference; final AUC differences (income / never-married):", "",
              "| model | " + " | ".join(COMPARE_LABELS.values()) + " |", "|---" * (len(COMPARE_LABELS) + 1) + "|"]
    for m in models:
        cells = [f"{c['loss_max_rel']:.2e}; {_auc(c['auc_abs'])}" if (c := m["compare"].get(k)) else "not run"
                 for k in COMPARE_LABELS]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    lines += ["", "One training step (largest output difference, gradient difference over the largest gradient, "
              "BatchNorm running-stat difference):", "", "| model | comparison | output | gradient | running stats |",
              "|---|---|---|---|---|"]
    for m in models:
        for k, d in m["step"].items():
            lines.append(f"| {m['model']} | {k} | {d['out']:.2e} | {d['grad_over_scale']:.2e} | {d['running_stats']:.2e} |")
    secs = {k: sum(m["runs"][k]["seconds"] for m in models if k in m["runs"]) for k in RUN_LABELS}
    lines += ["", "Seconds per kind of run, all models: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()), ""]
    return lines


def _speed(s: dict) -> list[str]:
    keys = s["runners"]
    lines = ["## Training samples/s", "", f"Torch-RecHub: {s['rechub']}.", "",
             "| model | batch | " + " | ".join(keys) + " | ours / Torch-RecHub |", "|---" * (len(keys) + 3) + "|"]
    for r in s["rows"]:
        ratio = f"{r['ours_over_rechub']:.2f}x" if "ours_over_rechub" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(f"{r['samples_s'][k]:,.0f}" for k in keys)
                     + f" | {ratio} |")
    return lines + [""]


def _onnx(o: dict) -> list[str]:
    if o["status"] != "ran":
        return ["## ONNX Runtime", "", o["status"], ""]
    lines = ["## ONNX Runtime", "", f"{o['provider']}, onnxruntime {o['onnxruntime']}; median per call.", "",
             "| model | batch 1 eager ms | batch 1 ONNX ms | batch 1024 eager samples/s | batch 1024 ONNX samples/s "
             "| largest difference |", "|---|---|---|---|---|---|"]
    for r in o["rows"]:
        diff = max(r["b1"]["max_abs_diff"], r["b1024"]["max_abs_diff"])
        lines.append(f"| {r['model']} | {r['b1']['eager_ms']:.3f} | {r['b1']['onnx_ms']:.3f} | "
                     f"{r['b1024']['eager_samples_s']:,.0f} | {r['b1024']['onnx_samples_s']:,.0f} | {diff:.1e} |")
    return lines + [""]


def _ddp(d: dict) -> list[str]:
    if d["status"] != "ran":
        return ["## DDP", "", d["status"], ""]
    return ["## DDP", "", f"{d['model']} on {d['world_size']} processes ({d['backend']}, {d['devices']}): "
            f"{d['samples_s']:,.0f} samples/s (validation included), final AUC {_auc(d['final_auc'])}, "
            f"largest parameter difference between ranks {d['param_max_diff']:.2g}.", ""]


def markdown(r: dict) -> str:
    lines = _header(r)
    if "parity" in r:
        lines += _parity(r["parity"])
    if "speed" in r:
        lines += _speed(r["speed"])
    if "onnx" in r:
        lines += _onnx(r["onnx"])
    if "ddp" in r:
        lines += _ddp(r["ddp"])
    lines += ["## Result", "", f"{len(r['checks'])} checks, {len(r['failures'])} outside tolerance."]
    lines += [f"- MISMATCH {f}" for f in r["failures"]]
    return "\n".join(lines) + "\n"
