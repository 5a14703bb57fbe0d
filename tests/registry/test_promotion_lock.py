"""workflow.registry.PromotionLock: the promotion mutex kept in the registry itself (a registered model
``<name>.promotion-lock``), on the embedded SQLite store. The same lock against a real ``mlflow server``, with
separate processes and a SIGKILLed holder: tests/reliability/test_rel_concurrent_promote.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import quiet_mlflow, store_with_versions  # noqa: E402

from workflow import registry# noqa: E402
from workflow.registry import LOCK_SUFFIX, LOCK_TAG, PromotionLock, PromotionLockError  # noqa: E402

quiet_mlflow()
MODEL = "lock-model"


@pytest.fixture()
def client(tmp_path):
    from mlflow import MlflowClient

    _, uri = store_with_versions(tmp_path, MODEL, 2)
    return MlflowClient(uri, uri)


def _names(client) -> set[str]:
    return {m.name for m in client.search_registered_models()}


def _plant_stale_lock(client, token: str = "deadbeef" * 4) -> None:
    """What a promoter SIGKILLed while holding the lock leaves: the lock, with a heartbeat that never moves."""
    client.create_registered_model(MODEL + LOCK_SUFFIX, tags={
        LOCK_TAG["token"]: token, LOCK_TAG["owner"]: "ghost@host:4242", LOCK_TAG["acquired_at"]: "2026-01-01T00:00:00",
        LOCK_TAG["heartbeat"]: "2026-01-01T00:00:00"})


def test_the_lock_is_a_registered_model_while_held_and_gone_after(client):
    with PromotionLock(client, MODEL, stale_after=30, wait=5) as lock:
        held = client.get_registered_model(MODEL + LOCK_SUFFIX)
        assert held.tags[LOCK_TAG["token"]] == lock.token and held.tags[LOCK_TAG["model"]] == MODEL
        assert held.tags[LOCK_TAG["owner"]].endswith(f":{__import__('os').getpid()}")
        lock.check()
    assert _names(client) == {MODEL}


def test_a_second_taker_waits_then_gives_up_naming_the_holder(client):
    with PromotionLock(client, MODEL, stale_after=30, wait=5) as holder:
        started = time.monotonic()
        with pytest.raises(PromotionLockError, match=r"within 1 s: held by .*@.*:\d+ since") as err:
            PromotionLock(client, MODEL, stale_after=30, wait=1, poll=0.05).acquire()
        assert 1.0 <= time.monotonic() - started < 10
        assert "MTLP_PROMOTION_LOCK_WAIT_S" in str(err.value)
        holder.check()  # still ours
    assert _names(client) == {MODEL}


def test_a_live_holder_keeps_its_lock_by_heartbeat(client):
    """Holder stale_after 1 s (heartbeat every 0.25 s): a waiter with stale_after 1 s waits 3 s and never breaks it."""
    with PromotionLock(client, MODEL, stale_after=1, wait=5) as holder:
        waiter = PromotionLock(client, MODEL, stale_after=1, wait=3, poll=0.05)
        with pytest.raises(PromotionLockError):
            waiter.acquire()
        assert waiter.broken == []
        beat = client.get_registered_model(MODEL + LOCK_SUFFIX).tags[LOCK_TAG["heartbeat"]]
        assert beat > client.get_registered_model(MODEL + LOCK_SUFFIX).tags[LOCK_TAG["acquired_at"]]
        holder.check()


def test_a_stale_lock_is_broken_after_the_timeout_with_a_log_line(client, caplog):
    _plant_stale_lock(client)
    caplog.set_level(logging.WARNING, logger="workflow.registry")
    started = time.monotonic()
    with PromotionLock(client, MODEL, stale_after=1.5, wait=20, poll=0.05) as lock:
        waited = time.monotonic() - started
        assert client.get_registered_model(MODEL + LOCK_SUFFIX).tags[LOCK_TAG["token"]] == lock.token
    assert 1.5 <= waited < 15
    tomb = f"{MODEL}{LOCK_SUFFIX}.broken-{'deadbeef' * 4}"
    assert lock.broken == [tomb] and _names(client) == {MODEL, tomb}
    tags = client.get_registered_model(tomb).tags
    assert tags[LOCK_TAG["owner"]] == "ghost@host:4242" and tags[LOCK_TAG["broken_by"]] == lock.owner
    line = [r.getMessage() for r in caplog.records if "broke the stale promotion lock" in r.getMessage()]
    assert len(line) == 1 and "'lock-model' held by ghost@host:4242 since 2026-01-01T00:00:00" in line[0]
    assert "MTLP_PROMOTION_LOCK_STALE_S" in line[0] and tomb in line[0]


def test_two_waiters_break_a_stale_lock_once_and_take_turns(client):
    _plant_stale_lock(client)
    locks = [PromotionLock(client, MODEL, stale_after=1, wait=30, poll=0.05) for _ in range(2)]
    inside: list[int] = []
    overlap: list[bool] = []

    def take(i):
        with locks[i]:
            overlap.append(bool(inside))
            inside.append(i)
            time.sleep(0.5)
            inside.remove(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlap == [False, False]
    assert sum(len(lk.broken) for lk in locks) == 1  # one breaker, not two
    assert _names(client) == {MODEL, f"{MODEL}{LOCK_SUFFIX}.broken-{'deadbeef' * 4}"}


def test_a_holder_whose_lock_was_broken_writes_nothing(client):
    lock = PromotionLock(client, MODEL, stale_after=30, wait=5).acquire()
    try:
        client.rename_registered_model(MODEL + LOCK_SUFFIX, MODEL + LOCK_SUFFIX + ".broken-x")  # as a breaker would
        with pytest.raises(PromotionLockError, match="no longer held by this process; nothing was written"):
            lock.check()
    finally:
        lock.release()
    assert MODEL + LOCK_SUFFIX + ".broken-x" in _names(client)  # release did not delete someone else's lock


def test_promote_refuses_while_another_process_holds_the_lock(client, monkeypatch):
    monkeypatch.setenv("MTLP_PROMOTION_LOCK_WAIT_S", "1")
    _plant_stale_lock(client)
    monkeypatch.setenv("MTLP_PROMOTION_LOCK_STALE_S", "60")
    with pytest.raises(PromotionLockError, match="ghost@host:4242"):
        registry.promote_version(client, MODEL, "1", reason="test", user="ci")
    assert registry.champion_version(client, MODEL) is None
    monkeypatch.setenv("MTLP_PROMOTION_LOCK_STALE_S", "soon")
    with pytest.raises(registry.RegistryError, match="MTLP_PROMOTION_LOCK_STALE_S must be a number of seconds"):
        registry.promote_version(client, MODEL, "1", reason="test", user="ci")


def test_show_names_the_lock_holder(client, capsys):
    import json

    from workflow.registry import cli as promote

    uri = client._registry_uri
    with PromotionLock(client, MODEL, stale_after=30, wait=5, user="alice") as lock:
        assert promote.main(["--model", MODEL, "--show", "--json", "--tracking-uri", uri]) == 0
        shown = json.loads(capsys.readouterr().out)["promotion_lock"]
        assert shown["owner"] == lock.owner and lock.owner.startswith("alice@") and shown["acquired_at"]
    assert promote.main(["--model", MODEL, "--show", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["promotion_lock"] is None
