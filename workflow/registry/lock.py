"""The promotion lock: one promotion of a registered model at a time, on any backend and across hosts.

The mutex lives in the registry itself: a registered model ``<name>.promotion-lock``. Creating a registered model
whose name exists fails with ``RESOURCE_ALREADY_EXISTS`` (the name is the table's primary key), so exactly one
promoter creates it; it is deleted on release. Its tags say who holds it (``mtlp.lock.owner``: user@host:pid,
``mtlp.lock.acquired_at``) and a heartbeat (``mtlp.lock.heartbeat``) that the holder refreshes every quarter of
the stale timeout. A waiter that sees the same holder and heartbeat for ``MTLP_PROMOTION_LOCK_STALE_S`` seconds
(default 60, measured on its own clock) breaks the lock by renaming it to ``<name>.promotion-lock.broken-<token>``:
a rename is one atomic statement and the target name is unique to that holder, so of several waiters breaking the
same stale lock only one succeeds, and none can rename a newer lock by mistake. The renamed lock stays in the
registry as the record of a promoter that died holding it (delete it once read). A waiter gives up after
``MTLP_PROMOTION_LOCK_WAIT_S`` seconds (default 600). The holder checks it still holds the lock right before
writing (:meth:`PromotionLock.check`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Optional

from .versions import RegistryError, current_user

__all__ = ["PromotionLock", "PromotionLockError", "LOCK_SUFFIX", "LOCK_TAG", "promotion_lock_holder",
           "promotion_lock"]

log = logging.getLogger("workflow.registry")

_THREAD_LOCK = threading.Lock()

LOCK_SUFFIX = ".promotion-lock"
LOCK_STALE_ENV = "MTLP_PROMOTION_LOCK_STALE_S"
LOCK_WAIT_ENV = "MTLP_PROMOTION_LOCK_WAIT_S"
LOCK_TAG = {"token": "mtlp.lock.token", "owner": "mtlp.lock.owner", "acquired_at": "mtlp.lock.acquired_at",
            "heartbeat": "mtlp.lock.heartbeat", "model": "mtlp.lock.model", "broken_by": "mtlp.lock.broken_by",
            "broken_at": "mtlp.lock.broken_at"}
# MLflow errors that are the request's fault, not contention: waiting will not help
_FATAL_CODES = {"PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_PARAMETER_VALUE", "ENDPOINT_NOT_FOUND"}


class PromotionLockError(RegistryError):
    """The promotion lock could not be taken in time, or was lost while held."""


def _env_seconds(key: str, default: float) -> float:
    raw = os.environ.get(key, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise RegistryError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise RegistryError(f"{key} must be > 0, got {raw!r}")
    return value


def _now_precise() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class PromotionLock:
    """A mutex on one registered model's promotions, kept in the registry (see the module docstring).

    ``stale_after``: seconds without a heartbeat after which a waiter breaks the lock (``$MTLP_PROMOTION_LOCK_STALE_S``,
    60); ``wait``: seconds a waiter waits before :class:`PromotionLockError` (``$MTLP_PROMOTION_LOCK_WAIT_S``, 600).
    """

    def __init__(self, client: Any, name: str, *, stale_after: Optional[float] = None, wait: Optional[float] = None,
                 poll: float = 0.2, user: Optional[str] = None) -> None:
        self.client = client
        self.model = name
        self.name = name + LOCK_SUFFIX
        self.stale_after = stale_after if stale_after is not None else _env_seconds(LOCK_STALE_ENV, 60.0)
        self.wait = wait if wait is not None else _env_seconds(LOCK_WAIT_ENV, 600.0)
        self.poll = poll
        self.token = uuid.uuid4().hex
        self.owner = f"{user or current_user()}@{socket.gethostname()}:{os.getpid()}"
        self.broken: list[str] = []  # names of the stale locks this instance broke
        self._held = False
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    # -- state ---------------------------------------------------------------------------------------------
    def _state(self) -> Optional[dict[str, str]]:
        """The lock's tags, or None when nobody holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(self.name).tags or {})
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _try_create(self) -> bool:
        from mlflow.exceptions import MlflowException

        now = _now_precise()
        tags = {LOCK_TAG["token"]: self.token, LOCK_TAG["owner"]: self.owner, LOCK_TAG["acquired_at"]: now,
                LOCK_TAG["heartbeat"]: now, LOCK_TAG["model"]: self.model}
        try:
            self.client.create_registered_model(
                self.name, tags=tags, description=f"promotion lock of {self.model!r} (workflow.registry); "
                                                  "deleted when the promotion ends")
            return True
        except MlflowException as e:
            if e.error_code in _FATAL_CODES:
                raise
            return False  # RESOURCE_ALREADY_EXISTS, or contention on the store: look and retry

    # -- acquire / release ---------------------------------------------------------------------------------
    def acquire(self) -> "PromotionLock":
        """Take the lock: create it, or wait for its holder, breaking it once its heartbeat has gone stale."""
        deadline = time.monotonic() + self.wait
        seen: Optional[tuple] = None
        seen_since = time.monotonic()
        while not self._try_create():
            state = self._peek()
            if state is None and time.monotonic() <= deadline:
                time.sleep(self.poll / 10)
                continue  # released meanwhile: try again at once
            state = state or {}
            if state.get(LOCK_TAG["token"]) == self.token:
                break  # our create went through although its answer was lost (a retried request)
            key = (state.get(LOCK_TAG["token"]), state.get(LOCK_TAG["heartbeat"]))
            if key != seen:
                self._note_holder(state, first=seen is None)
                seen, seen_since = key, time.monotonic()
            elif state and time.monotonic() - seen_since >= self.stale_after:
                self._break(state, time.monotonic() - seen_since)
                seen = None
                continue
            if time.monotonic() > deadline:
                raise self._timeout(state)
            time.sleep(self.poll * (0.5 + random.random()))
        self._start_heartbeat()
        return self

    def _peek(self) -> Optional[dict[str, str]]:
        """The lock's tags; ``{}`` while the store cannot be read (keep waiting), None when nobody holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return self._state()
        except MlflowException as e:
            if e.error_code in _FATAL_CODES:
                raise
            return {}

    def _note_holder(self, state: Mapping[str, str], first: bool) -> None:
        if first and state:
            log.info("promotion lock of %r is held by %s since %s; waiting", self.model,
                     state.get(LOCK_TAG["owner"]), state.get(LOCK_TAG["acquired_at"]))

    def _timeout(self, state: Mapping[str, str]) -> PromotionLockError:
        return PromotionLockError(
            f"could not take the promotion lock of {self.model!r} within {self.wait:.0f} s: held by "
            f"{state.get(LOCK_TAG['owner'], '?')} since {state.get(LOCK_TAG['acquired_at'], '?')} "
            f"(registered model {self.name!r}; set {LOCK_WAIT_ENV} to wait longer)")

    def _start_heartbeat(self) -> None:
        self._held = True
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"promotion-lock-{self.model}", daemon=True)
        self._beat.start()

    def _break(self, state: Mapping[str, str], silent_for: float) -> None:
        """Rename the stale lock to a name unique to its holder: atomic, and at most once per holder."""
        from mlflow.exceptions import MlflowException

        stale_token = state.get(LOCK_TAG["token"], "unknown")
        tomb = f"{self.name}.broken-{stale_token}"
        try:
            self.client.rename_registered_model(self.name, tomb)
        except MlflowException:
            return  # another waiter broke it first (or it was released): look again
        renamed = self._tags_of(tomb)
        if renamed.get(LOCK_TAG["token"]) != stale_token:  # not the lock we judged stale: put it back
            with contextlib.suppress(MlflowException):
                self.client.rename_registered_model(tomb, self.name)
            return
        with contextlib.suppress(MlflowException):
            self.client.set_registered_model_tag(tomb, LOCK_TAG["broken_by"], self.owner)
            self.client.set_registered_model_tag(tomb, LOCK_TAG["broken_at"], _now_precise())
        self.broken.append(tomb)
        log.warning("broke the stale promotion lock of %r held by %s since %s: no heartbeat for %.1f s "
                    "(stale after %.0f s, %s); kept as registered model %r", self.model,
                    state.get(LOCK_TAG["owner"], "?"), state.get(LOCK_TAG["acquired_at"], "?"), silent_for,
                    self.stale_after, LOCK_STALE_ENV, tomb)

    def _tags_of(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            return dict(self.client.get_registered_model(name).tags or {})
        return {}

    def _heartbeat(self) -> None:
        from mlflow.exceptions import MlflowException

        interval = max(self.stale_after / 4.0, 0.2)
        while not self._stop.wait(interval):
            try:
                state = self._state()
                if state is None or state.get(LOCK_TAG["token"]) != self.token:
                    self._lost = (f"the promotion lock of {self.model!r} was broken while held (this process was "
                                  f"silent for more than {self.stale_after:.0f} s?)")
                    log.error(self._lost)
                    return
                self.client.set_registered_model_tag(self.name, LOCK_TAG["heartbeat"], _now_precise())
            except MlflowException as e:  # a missed beat is not fatal; several in a row make the lock stale
                log.warning("promotion lock heartbeat failed: %s", e.message)

    def check(self) -> None:
        """Raise :class:`PromotionLockError` unless this process still holds the lock (call before writing)."""
        if self._lost is None:
            state = self._state()
            if state is None or state.get(LOCK_TAG["token"]) != self.token:
                self._lost = f"the promotion lock of {self.model!r} is no longer held by this process"
        if self._lost is not None:
            raise PromotionLockError(self._lost + "; nothing was written, try again")

    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        try:
            state = self._state()
            if state is not None and state.get(LOCK_TAG["token"]) == self.token:
                self.client.delete_registered_model(self.name)
            else:
                log.warning("promotion lock of %r was no longer ours at release (broken as stale?)", self.model)
        except MlflowException as e:
            log.warning("could not release the promotion lock of %r: %s (it goes stale after %.0f s)", self.model,
                        e.message, self.stale_after)

    def __enter__(self) -> "PromotionLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def promotion_lock_holder(client: Any, name: str) -> Optional[dict[str, str]]:
    """Who holds the promotion lock of ``name`` now (``owner``, ``acquired_at``, ``heartbeat``), or None."""
    state = PromotionLock(client, name, stale_after=1, wait=1)._state()
    if state is None:
        return None
    return {k: state.get(LOCK_TAG[k], "") for k in ("owner", "acquired_at", "heartbeat")}


@contextlib.contextmanager
def promotion_lock(client: Any, name: str, user: Optional[str] = None) -> Iterator[PromotionLock]:
    """One promotion of ``name`` at a time: a thread lock in this process, the registry mutex across processes."""
    with _THREAD_LOCK, PromotionLock(client, name, user=user) as lock:
        yield lock

