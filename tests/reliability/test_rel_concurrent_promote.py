"""Group 4: two ``mtlp promote`` processes at once on one registered model: the champion ends on exactly one of
the two versions and the audit and champion history record both decisions truthfully, in one order (each
decision's ``previous`` is the version the one before it made champion).

Promotions are serialised by the registry's own mutex (``workflow.registry.PromotionLock``: a registered
model ``<name>.promotion-lock``), so this holds on the embedded SQLite store and against a real ``mlflow server``
(SQLite or PostgreSQL behind it). Against the server, a promoter SIGKILLed while it holds the lock leaves a stale
lock that the next promoters break after ``MTLP_PROMOTION_LOCK_STALE_S`` seconds, saying so on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from _mlflow_helpers import quiet_mlflow, store_with_versions
from _servers import background, free_port, mlflow_bin, wait_http
from _rel import PY, REPO, env

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
quiet_mlflow()
MODEL = "rel-promote"
ROUNDS = 2
STALE_S = 5  # MTLP_PROMOTION_LOCK_STALE_S for the SIGKILL case


def _store(tmp_path: Path) -> tuple[Path, str]:
    """An embedded store holding ``MODEL`` with 3 versions (no champion yet); ``(work dir, sqlite URI)``."""
    return store_with_versions(tmp_path, MODEL, 3)


# Each promoter is `mtlp promote`'s main() in its own process, started behind a barrier: the imports are done
# first, then both are released at once (MLflow's import alone takes seconds on a busy machine). Released
# together, the first could still finish before the second reaches the lock, so the one that takes the lock
# holds it until the other has found it held (the `<barrier>.waited` file; at most 30 s): every round overlaps.
# INFO from workflow.registry shows who had to wait for the lock.
PROMOTER = """
import logging, pathlib, sys, time
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
logging.getLogger("workflow.registry").setLevel(logging.INFO)
import mlflow
from workflow.registry import cli as promote
from workflow import registry
from workflow import tracking
go = pathlib.Path(sys.argv[1])
waited = go.with_name(go.name + ".waited")
note_holder, acquire = registry.PromotionLock._note_holder, registry.PromotionLock.acquire

def noting(self, state, first):
    note_holder(self, state, first)
    if first and state:
        waited.touch()

def holding(self):
    lock = acquire(self)
    deadline = time.monotonic() + 30
    while not waited.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return lock

registry.PromotionLock._note_holder, registry.PromotionLock.acquire = noting, holding
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
sys.exit(promote.main(sys.argv[2:]))
"""


def _run_pair(pair: tuple[str, str], where: list[str], tag: str, barrier: Path, **extra_env: str
              ) -> tuple[dict[str, tuple[str, str]], float]:
    """Both promotions at once; both must succeed. ``({version: (stdout, stderr)}, seconds from the release
    of the barrier until both finished)``."""
    barrier.unlink(missing_ok=True)
    barrier.with_name(barrier.name + ".waited").unlink(missing_ok=True)
    procs = {v: subprocess.Popen([PY, "-c", PROMOTER, str(barrier), "--model", MODEL, "--version", v,
                                  "--reason", f"{tag} user {v}", "--user", f"user-{v}", *where],
                                 cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for v in pair}
    for v, p in procs.items():
        assert p.stdout.readline().strip() == "ready", p.communicate(timeout=60)
    barrier.touch()
    released = time.monotonic()
    outs = {v: p.communicate(timeout=300) for v, p in procs.items()}
    elapsed = time.monotonic() - released
    for v, p in procs.items():
        assert p.returncode == 0, outs[v]
        assert f"champion is now version {v}" in outs[v][0]
    return outs, elapsed


def _waited(outs: dict[str, tuple[str, str]]) -> list[str]:
    return [v for v, (_, err) in outs.items() if "; waiting" in err]


def _check_records(client, pairs: list[tuple[tuple[str, str], str]]) -> None:
    """Champion on one version; per pair both decisions in the audit, in an order in which each ``previous`` is
    the version the decision before it made champion; the champion history in the same order; version tags."""
    from workflow import registry

    rm = client.get_registered_model(MODEL)
    audit = json.loads(rm.tags[registry.TAG["audit"]])
    assert len(audit) == 2 * len(pairs)  # no lost update
    assert [e["action"] for e in audit] == ["manual_promote"] * len(audit)
    assert audit[0]["previous"] is None
    for before, after in zip(audit, audit[1:]):  # one consistent order: each saw the one before it as champion
        assert after["previous"] == before["version"], audit
    for i, (pair, tag) in enumerate(pairs):
        entries = audit[2 * i:2 * i + 2]
        assert sorted(e["version"] for e in entries) == sorted(pair)
        assert all(e["reason"] == f"{tag} user {e['version']}" and e["by"] == f"user-{e['version']}"
                   for e in entries)
    champion = registry.champion_version(client, MODEL)
    assert champion == audit[-1]["version"]  # the later decision is the one in force, on exactly one version
    assert [v for v in ("1", "2", "3") if registry.CHAMPION in client.get_model_version(MODEL, v).aliases] == [champion]
    history = registry.champion_history(client, MODEL)
    assert [h["version"] for h in history] == [e["version"] for e in audit]
    last = {e["version"]: e for e in audit}  # a version promoted twice carries its latest decision's tags
    for v, e in last.items():
        tags = client.get_model_version(MODEL, v).tags
        assert tags[registry.TAG["by"]] == e["by"]
        assert tags[registry.TAG["champion_version"]] == (e["previous"] or "none")
    assert not [m.name for m in client.search_registered_models() if m.name == MODEL + registry.LOCK_SUFFIX]


def test_two_concurrent_promotions_leave_one_champion_and_both_records(tmp_path) -> None:
    """Embedded SQLite store (``--work-dir``)."""
    from mlflow import MlflowClient

    work, uri = _store(tmp_path)
    pairs = [(("1", "2") if r % 2 == 0 else ("3", "1"), f"round {r}") for r in range(ROUNDS)]
    waits = []
    for pair, tag in pairs:
        waits.append(_waited(_run_pair(pair, ["--work-dir", str(work)], tag, tmp_path / "go")[0]))
    _check_records(MlflowClient(uri, uri), pairs)
    print(f"embedded: promoters that waited for the lock, per round: {waits}")
    assert [len(w) for w in waits] == [1] * ROUNDS, waits  # every round overlapped: one promoter waited for the other


HOLDER = """
import sys, time
from workflow.registry import PromotionLock
from workflow.tracking import client_for
lock = PromotionLock(client_for(sys.argv[1]), sys.argv[2]).acquire()
print("held", lock.token, flush=True)
time.sleep(600)
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request, tmp_path):
    """``mlflow server`` on loopback over the seeded store: its own SQLite file, or a PostgreSQL database
    (the session's ``postgres`` fixture) filled with the same model through the server."""
    from mlflow import MlflowClient

    if request.param == "sqlite":
        _, backend = _store(tmp_path)
    else:
        pytest.importorskip("psycopg2")
        backend = request.getfixturevalue("postgres").create_database("mlflow_promote")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    cmd = mlflow_bin() + ["server", "--backend-store-uri", backend, "--default-artifact-root",
                          (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
                          "--workers", "2", "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    with background(cmd, log, env=env()) as proc:
        wait_http(url + "/health", proc, 240, log)
        if request.param == "postgresql":  # the server created the tables; the versions go in directly (the
            direct = MlflowClient(backend, backend)  # server refuses a local source without a run)
            direct.create_registered_model(MODEL)
            for _ in range(3):
                direct.create_model_version(MODEL, source=str(tmp_path / "model"), run_id=None)
        yield url, MlflowClient(url, url), request.param, log


def test_concurrent_promotions_against_an_mlflow_server(server, tmp_path) -> None:
    """Two rounds of two promotions at once through the server, then a holder SIGKILLed with the lock: the next
    two promotions wait ``STALE_S`` seconds, exactly one of them breaks the stale lock and says so, both finish."""
    from workflow import registry

    url, client, backend, log = server
    where = ["--tracking-uri", url]
    pairs = [(("1", "2") if r % 2 == 0 else ("3", "1"), f"round {r}") for r in range(ROUNDS)]
    timings, waits = [], []
    for pair, tag in pairs:
        outs, elapsed = _run_pair(pair, where, tag, tmp_path / "go")
        waits.append(_waited(outs))
        timings.append(elapsed)
    assert [len(w) for w in waits] == [1] * ROUNDS, waits  # every round overlapped: one promoter waited for the other

    # a promoter dies (SIGKILL) while it holds the lock
    holder = subprocess.Popen([PY, "-c", HOLDER, url, MODEL], cwd=REPO,
                              env=env(MTLP_PROMOTION_LOCK_STALE_S=str(STALE_S)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    assert line.startswith("held "), holder.stderr.read()
    stale_token = line.split()[1]
    time.sleep(1.5)  # a heartbeat (every STALE_S / 4 s) went out: the lock was live until the kill
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert client.get_registered_model(MODEL + registry.LOCK_SUFFIX).tags["mtlp.lock.token"] == stale_token

    pair, tag = ("2", "3"), "after kill"
    outs, after_kill = _run_pair(pair, where, tag, tmp_path / "go", MTLP_PROMOTION_LOCK_STALE_S=str(STALE_S))
    pairs.append((pair, tag))
    breakers = [v for v, (_, err) in outs.items() if "broke the stale promotion lock" in err]
    assert len(breakers) == 1, outs
    message = next(ln for ln in outs[breakers[0]][1].splitlines() if "broke the stale promotion lock" in ln)
    assert f"'{MODEL}' held by " in message and f":{holder.pid} since " in message
    assert "MTLP_PROMOTION_LOCK_STALE_S" in message and f".broken-{stale_token}" in message
    assert STALE_S <= after_kill < STALE_S + 30
    assert sorted(_waited(outs)) == sorted(pair)  # both waited on the dead holder's lock

    _check_records(client, pairs)
    tomb = client.get_registered_model(f"{MODEL}{registry.LOCK_SUFFIX}.broken-{stale_token}")
    assert tomb.tags["mtlp.lock.owner"].endswith(f":{holder.pid}")
    assert tomb.tags["mtlp.lock.broken_by"].startswith(f"user-{breakers[0]}@")  # owner: user@host:pid
    print(f"{backend}: concurrent pairs {', '.join(f'{t:.1f} s' for t in timings)} (waited: {waits}); after SIGKILL "
          f"{after_kill:.1f} s (stale after {STALE_S} s); broken by the promoter of version {breakers[0]}")
    server_log = log.read_text()
    print(f"server log: {server_log.count('Traceback')} tracebacks")
