"""Finding raw dataset files: in a user's data directory, or downloaded once into a cache and checked by sha256.

Without network and without the files, the error names each file and the directory to put it in.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import DataError

__all__ = ["RawFile", "sha256_of", "cache_dir", "locate_files", "check_nonempty"]

CACHE_ENV = "MTL_PIPELINE_CACHE"       # overrides ~/.cache/mtl-pipeline/datasets
OFFLINE_ENV = "MTL_PIPELINE_OFFLINE"   # "1": never try to download


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset: its name, where it is published and the sha256 values accepted for it.

    ``sha256`` lists every published spelling we know (e.g. UCI's file and a copy without its trailing blank
    line); an empty tuple means no pinned hash is known, so a downloaded file is trusted on first use and its
    hash pinned in the cache beside it.
    """

    name: str
    url: Optional[str] = None
    sha256: tuple[str, ...] = ()
    gzipped: bool = False  # the URL serves name + '.gz'


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(dataset: str) -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mtl-pipeline" / "datasets"
    return Path(root) / dataset


def check_nonempty(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"raw file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"raw file is empty: {path}")


def _where_to_put(dataset: str, files: Sequence[RawFile], directory: Path, reason: str, manual_hint: str) -> DataError:
    names = ", ".join(f.name for f in files)
    sources = "; ".join(f"{f.name} from {f.url}" for f in files if f.url) or manual_hint
    return DataError(f"{dataset}: {reason}. Put the files {names} in {directory} (or pass --data-dir DIR holding "
                     f"them). Official source: {sources}")


def _download(file: RawFile, target: Path) -> None:
    url = file.url + (".gz" if file.gzipped else "")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            if file.gzipped:
                with gzip.GzipFile(fileobj=response) as unzipped:
                    shutil.copyfileobj(unzipped, out)
            else:
                shutil.copyfileobj(response, out)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _verify(file: RawFile, path: Path) -> str:
    digest = sha256_of(path)
    pin = path.with_name(path.name + ".sha256")
    accepted = set(file.sha256) or ({pin.read_text().split()[0]} if pin.exists() else set())
    if accepted and digest not in accepted:
        raise DataError(f"{path} has sha256 {digest}, expected one of {sorted(accepted)}; delete it to download "
                        "again, or pass --data-dir with a verified copy")
    if not accepted:
        pin.write_text(f"{digest}  {path.name}\n")
    return digest


def locate_files(dataset: str, files: Sequence[RawFile], data_dir: Optional[str | os.PathLike],
                 manual_hint: str = "see the dataset's documentation") -> dict[str, Path]:
    """Paths of the raw files: from ``data_dir`` if given (must hold them all), else the verified cache."""
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        absent = [f for f in files if not (directory / f.name).is_file()]
        if absent:
            raise _where_to_put(dataset, absent, directory, f"missing file(s) {[f.name for f in absent]} in "
                                f"{directory}", manual_hint)
        paths = {f.name: directory / f.name for f in files}
        for path in paths.values():
            check_nonempty(path)
        return paths
    directory = cache_dir(dataset)
    paths: dict[str, Path] = {}
    for file in files:
        path = directory / file.name
        if not path.is_file():
            if file.url is None or os.environ.get(OFFLINE_ENV) == "1":
                raise _where_to_put(dataset, [f for f in files if not (directory / f.name).is_file()], directory,
                                    "raw files are not in the cache and cannot be downloaded", manual_hint)
            directory.mkdir(parents=True, exist_ok=True)
            try:
                _download(file, path)
            except OSError as e:
                raise _where_to_put(dataset, [f for f in files if not (directory / f.name).is_file()], directory,
                                    f"download of {file.url} failed ({e})", manual_hint) from None
        check_nonempty(path)
        _verify(file, path)
        paths[file.name] = path
    return paths
