"""Screenshots of MLflow's UI on a finished run's store: the runs table, the chart view, the compare page of the
model runs and the registered model's versions, for docs/mlflow.md.

Needs Debian's Chromium (headless): ``apt-get update && apt-get install -y chromium``. Run from the repo root::

    .venv/bin/python bench/mlflow_screenshots.py mtlp-runs/<run> --out docs/mlflow

It starts ``mlflow ui`` on the SQLite store that run logged to (the runs root's shared one by default) on loopback (a free port), finds the experiment, the model
runs and the registered model through the tracking API, points headless Chromium at the single-page app's
routes (``#/experiments/<id>/runs``, ``#/compare-runs?runs=[...]``, ``#/models/<name>``) with a virtual-time
budget so the app has fetched and drawn its data, writes one PNG per view, and stops the server.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.loopback import free_port, wait_http  # noqa: E402
from workflow import tracking# noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--disable-dev-shm-usage"]


class Browser:
    """Headless Chromium driven over the DevTools protocol (``websocket-client``): the plain ``--screenshot`` flag
    cannot click, and MLflow's runs table keeps the model runs folded under the pipeline run until a click."""

    def __init__(self, chromium: str, size: tuple[int, int]) -> None:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="mtlp-chromium-")
        port = free_port()
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={port}", f"--window-size={size[0]},{size[1]}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.3)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120,
                                              suppress_origin=True)
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self.ws.recv())
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def js(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js(expression):
                return True
            time.sleep(0.5)
        return False

    def open(self, url: str, ready_text: str, timeout: float = 90.0) -> None:
        """Navigate and wait until the page shows ``ready_text`` (the app fetched its data), then let it settle."""
        self.call("Page.navigate", url=url)
        if not self.wait_for(f"document.body && document.body.innerText.includes({json.dumps(ready_text)})", timeout):
            raise RuntimeError(f"{url} never showed {ready_text!r}")
        time.sleep(2.0)

    def click_all(self, elements: str) -> int:
        """Mouse clicks (as a user's, through the input pipeline) on each visible element of the JS array
        ``elements`` as it is when called; returns how many."""
        centres = self.js(f"({elements}).map(e => e.getBoundingClientRect())"
                          ".filter(r => r.width > 0 && r.height > 0).map(r => [r.x + r.width / 2, r.y + r.height / 2])")
        for x, y in centres or []:
            for kind in ("mousePressed", "mouseReleased"):
                self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
            time.sleep(0.5)
        return len(centres or [])

    def save(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


CLOSE_ASSISTANT = """[...document.querySelectorAll('button[aria-label="Close"]')]"""  # the Assistant side panel
DEBUG_BUTTONS = ("[...document.querySelectorAll('button,[role=button]')].map(b => (b.getAttribute('aria-label') || '')"
                 " + ' | ' + (b.getAttribute('data-testid') || '') + ' | ' + b.innerText.slice(0, 30)).join(String.fromCharCode(10))")
# the "+" beside a folded pipeline run's name (not the model runs' own "+", which would unfold their trials)
EXPAND_ROWS = """[...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')].filter(b =>
    b.innerHTML.includes('M7.25 7.25V4.5') && (b.closest('.ag-cell-wrapper')?.innerText || '').includes('pipeline-'))"""


def views(uri: str, base: str) -> list[tuple[str, str, str, bool]]:
    """(file name, URL, text the page shows once loaded, unfold nested runs) of each view, for the newest
    pipeline run in the store."""
    client = tracking.client_for(uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    if not experiments:
        raise SystemExit(f"no experiment in {uri}: is this a finished run folder?")
    exp = max(experiments, key=lambda e: e.last_update_time or 0)
    role = tracking.TAGS["role"]
    parents = client.search_runs([exp.experiment_id], f"tags.`{role}` = 'pipeline'", max_results=2,
                                 order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit(f"no pipeline run in experiment {exp.name!r}")
    models = [m for p in parents for m in client.search_runs(  # the model runs of the newest two pipeline runs
        [exp.experiment_id], f"tags.`{role}` = 'model' and tags.`mlflow.parentRunId` = '{p.info.run_id}'",
        order_by=["metrics.score DESC"])]
    runs_page = tracking.ui_url(base, exp.experiment_id)
    out = [("runs_table.png", runs_page, "matching runs", False),
           ("runs_table_unfolded.png", runs_page, "matching runs", True),
           ("chart_view.png", f"{runs_page}&compareRunsMode=CHART", "matching runs", True),
           ("compare_models.png", tracking.ui_url(base, exp.experiment_id, [r.info.run_id for r in models]),
            "Comparing", False)]
    registered = [m for m in client.search_registered_models() if not m.name.endswith(".promotion-lock")
                  and ".promotion-lock.broken-" not in m.name]
    if registered:
        out.append(("model_versions.png", f"{base}/#/models/{urllib.parse.quote(registered[0].name)}"
                                          "?workflowType=machine_learning", "Versions", False))
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder (the store it logged to: tracking.json, "
                                                   "else its own mlflow.db)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "mlflow")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "chromium"))
    parser.add_argument("--size", default="1600x1000", help="window WIDTHxHEIGHT")
    parser.add_argument("--debug", action="store_true", help="print each page's buttons (labels to click)")
    args = parser.parse_args(argv)
    if shutil.which(args.chromium) is None:
        raise SystemExit(f"{args.chromium} not found: apt-get update && apt-get install -y chromium")
    from workflow.tracking.local_store import sqlite_path, store_of_run

    db = sqlite_path(store_of_run(args.run_dir)[0])
    if db is None or not db.is_file():
        raise SystemExit(f"{args.run_dir} logged to no local SQLite store: pass a finished run folder, e.g. "
                         "mtlp-runs/<run>")
    uri = f"sqlite:///{db}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mtlp-ui-") as tmp:
        log = open(Path(tmp) / "mlflow-ui.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                                 "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=args.run_dir, start_new_session=True)
        try:
            wait_http(f"{base}/health", proc, 120)
            browser = Browser(args.chromium, size)
            try:
                for name, url, ready, unfold in views(uri, base):
                    browser.open(url, ready)
                    if args.debug:
                        print(browser.js(DEBUG_BUTTONS))
                    closed = browser.click_all(CLOSE_ASSISTANT)
                    unfolded = browser.click_all(EXPAND_ROWS) if unfold else 0
                    if args.debug:
                        print(f"closed {closed} panel(s), unfolded {unfolded} run(s)")
                    time.sleep(2.0)
                    path = browser.save(args.out / name)
                    print(f"{path}  <-  {url}")
            finally:
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
