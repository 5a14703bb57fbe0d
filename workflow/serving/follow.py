"""Following a registry alias: the model server's current version, replaced while it serves.

``models:/<name>@<alias>`` names whatever version the alias points at now. :class:`AliasFollower` asks the
registry which version that is every ``interval`` seconds (a background thread). When the alias has moved, the
new version is downloaded and loaded beside the one being served, then **checked**: its pyfunc scores the sample
rows stored with it (the input example logged at registration) and must answer one row of finite numbers per
sample row, in the output columns of its signature. Only then is it swapped in, by replacing one reference
(:attr:`AliasFollower.current`); a request reads that reference once when it starts, so requests already in
flight finish on the version they started on. A version that fails to load or to pass its check is refused: the
server keeps the version it had, logs why, and does not try that version again (a registered version's files
never change). A rollback (the alias moved back) is followed the same way; the version served before the last
swap is kept in memory, so going back to it needs no download.

Any other model URI (a version number, ``runs:/``, a folder) is loaded and checked once and never changes.
No torch import: this needs MLflow, pandas and the model's own dependencies only.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["ServedVersion", "VersionRefused", "AliasFollower", "parse_alias_uri", "read_sample", "check_version"]

log = logging.getLogger("workflow.serving.follow")

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")


class VersionRefused(Exception):
    """A version that could not be loaded or failed its check on its sample rows (the message says which)."""


@dataclass
class ServedVersion:
    """One loaded, checked model: ``version`` is the registry's version number ('' for a URI without one)."""
    version: str
    model_uri: str
    model: Any             # mlflow.pyfunc.PyFuncModel (in memory: its downloaded files are gone once it is loaded)
    sample: Any            # the sample rows stored with it (its input example), kept to re-check it on a rollback
    checked_rows: int
    loaded_at: float = field(default_factory=time.time)
    app: Any = None        # the ASGI app answering with this version (set by the server)


def parse_alias_uri(model_uri: str) -> Optional[tuple[str, str]]:
    """``(name, alias)`` for ``models:/<name>@<alias>``, else ``None`` (a fixed model)."""
    m = _ALIAS_URI.match(model_uri.strip())
    return (m.group("name"), m.group("alias")) if m else None


def read_sample(local_path: str) -> Any:
    """The sample rows stored with the model at ``local_path`` (its input example); ``VersionRefused`` without."""
    from mlflow.models import Model

    try:
        sample = Model.load(local_path).load_input_example(local_path)
    except Exception as e:  # a listed example file that is missing or unreadable
        raise VersionRefused(f"its sample rows could not be read: {type(e).__name__}: {e}") from None
    if sample is None or len(sample) == 0:
        raise VersionRefused("it has no sample rows stored with it (input example) to check it on")
    return sample


def check_version(model: Any, sample: Any) -> int:
    """Score ``sample`` (the rows stored with the model); raise :class:`VersionRefused` saying what was wrong.

    Passing means: ``predict`` answers without error, one output row per sample row, every value a finite number,
    and the output columns are the signature's (when it has output columns). Returns the number of rows checked."""
    import numpy as np
    import pandas as pd

    try:
        out = model.predict(sample)
    except Exception as e:
        raise VersionRefused(f"predict failed on its {len(sample)} sample rows: {type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from None
    frame = out if isinstance(out, pd.DataFrame) else pd.DataFrame(np.asarray(out))
    if len(frame) != len(sample):
        raise VersionRefused(f"predict answered {len(frame)} rows for {len(sample)} sample rows")
    values = frame.to_numpy()
    if values.dtype.kind not in "fiub":
        raise VersionRefused(f"predict answered non-numeric values (dtype {values.dtype})")
    if not np.isfinite(values.astype("float64")).all():
        bad = int((~np.isfinite(values.astype("float64"))).any(axis=1).sum())
        raise VersionRefused(f"predict answered NaN or infinite values in {bad} of {len(sample)} sample rows")
    schema = model.metadata.get_output_schema() if model.metadata else None
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    if names and list(frame.columns) != list(names):
        raise VersionRefused(f"predict answered columns {list(frame.columns)}, its signature says {names}")
    return len(sample)


def _load(model_uri: str, version: str) -> ServedVersion:
    """Download, load and check one version; its files are deleted once it is in memory (nothing is left in /tmp,
    however the process ends)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.pyfunc import scoring_server

    with tempfile.TemporaryDirectory(prefix="mtlp-serve-") as tmp:
        try:
            local = download_artifacts(artifact_uri=model_uri, dst_path=tmp)
            model = scoring_server.load_model_with_mlflow_config(local)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise VersionRefused(f"it could not be loaded: {type(e).__name__}: {first}") from None
        sample = read_sample(local)
    rows = check_version(model, sample)
    return ServedVersion(version, model_uri, model, sample, rows)


class AliasFollower:
    """The served version of ``model_uri``, kept up to date with its alias every ``interval`` seconds.

    :meth:`start` loads and checks the first version (an error if that fails: nothing to serve) and, for an alias
    URI with ``interval > 0``, starts the polling thread. ``on_swap(served)`` is called with each new version
    before it becomes :attr:`current` (the server builds its app there)."""

    def __init__(self, model_uri: str, interval: float, on_swap: Optional[Callable[[ServedVersion], None]] = None,
                 client: Any = None) -> None:
        self.model_uri = model_uri
        self.alias = parse_alias_uri(model_uri)
        self.interval = float(interval)
        self.on_swap = on_swap
        self._client = client
        self.current: Optional[ServedVersion] = None
        self.previous: Optional[ServedVersion] = None
        self.refused: dict[str, str] = {}  # version -> why
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # one check at a time (the thread, or a test calling check_now)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient
            self._client = MlflowClient()
        return self._client

    def _target(self) -> tuple[str, str]:
        """``(version, uri to load)`` the alias points at now; a fixed URI gives ``('', uri)``."""
        if self.alias is None:
            return "", self.model_uri
        name, alias = self.alias
        version = str(self.client.get_model_version_by_alias(name, alias).version)
        return version, f"models:/{name}/{version}"

    def _install(self, served: ServedVersion) -> None:
        if self.on_swap is not None:
            self.on_swap(served)
        old, self.current = self.current, served  # the swap: one reference; requests in flight keep theirs
        if old is not None and old.version != served.version:
            self.previous = old
        self.swaps += 1

    def start(self) -> ServedVersion:
        version, uri = self._target()
        start = time.perf_counter()
        served = _load(uri, version)  # VersionRefused: nothing to serve
        self._install(served)
        log.info("serving %s%s (checked on %d sample rows, loaded in %.1fs)", self.model_uri,
                 f" = version {version}" if version else "", served.checked_rows, time.perf_counter() - start)
        if self.alias is not None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="mtlp-alias-follower", daemon=True)
            self._thread.start()
            log.info("following alias %r of %r: checked every %gs", self.alias[1], self.alias[0], self.interval)
        return served

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_now()
            except Exception as e:  # the registry unreachable, a bug: keep serving, say so, try again later
                log.warning("could not check alias %s: %s: %s; still serving version %s", self.model_uri,
                            type(e).__name__, str(e).strip().splitlines()[0][:300] if str(e).strip() else "",
                            self.current.version if self.current else "?")

    def check_now(self) -> Optional[str]:
        """One poll: follow the alias if it moved. Returns the version now served if it changed, else ``None``."""
        with self._lock:
            version, uri = self._target()
            current = self.current.version if self.current else None
            if version == current or version in self.refused:
                return None
            log.info("alias %s moved: version %s -> %s; loading and checking it", self.model_uri, current, version)
            start = time.perf_counter()
            try:
                if self.previous is not None and self.previous.version == version:  # a rollback: still in memory
                    served = self.previous
                    served.checked_rows = check_version(served.model, served.sample)
                else:
                    served = _load(uri, version)
            except VersionRefused as e:
                self.refused[version] = str(e)
                log.error("refused version %s of %s: %s; still serving version %s", version, self.model_uri, e,
                          current)
                return None
            self._install(served)
            log.info("now serving version %s of %s (was %s; checked on %d sample rows, %.1fs)", version,
                     self.model_uri, current, served.checked_rows, time.perf_counter() - start)
            return version
