"""Raw inputs of the streaming prepare: a CSV or Parquet file, a folder or glob of them, local or on an fsspec URL
(``s3://bucket/logs/``, ``gs://bucket/logs/*.parquet``), read in chunks of rows. Every error names its file."""

from __future__ import annotations

import glob as globlib
import hashlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Sequence

from .errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["is_url", "list_files", "iter_chunks", "file_digest", "EXTENSIONS"]

EXTENSIONS = {"csv": (".csv", ".csv.gz", ".tsv"), "parquet": (".parquet", ".pq")}


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _is_glob(location: str) -> bool:
    return any(c in location for c in "*?[")


def list_files(kind: str, location: str) -> list[str]:
    """The input files in name order: ``location`` itself, the ``kind`` files under a folder, or a glob's matches."""
    location = str(location).removeprefix("file://")
    if is_url(location):
        import fsspec

        fs, root = fsspec.core.url_to_fs(location)
        if _is_glob(root):
            found = [p for p in fs.glob(root) if fs.isfile(p)]
        elif fs.isdir(root):
            found = [p for p in fs.find(root) if p.endswith(EXTENSIONS[kind])]
        else:
            found = [root] if fs.exists(root) else []
        files = sorted(fs.unstrip_protocol(p) for p in found)
    else:
        path = Path(location).expanduser()
        if _is_glob(location):
            files = sorted(p for p in globlib.glob(str(path), recursive=True) if Path(p).is_file())
        elif path.is_dir():
            files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(EXTENSIONS[kind])
                           and not p.name.startswith("."))
        else:
            files = [str(path)] if path.is_file() else []
    if not files:
        raise DataError(f"no {kind} files found at {location}")
    return files


def _open(path: str) -> IO[bytes]:
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb", compression="infer").open()  # a .csv.gz arrives decompressed
    return open(path, "rb")


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes (provenance in the feature spec)."""
    digest = hashlib.sha256()
    if is_url(path):
        import fsspec

        handle = fsspec.open(path, "rb").open()  # the stored bytes, compressed or not
    else:
        handle = open(path, "rb")
    with handle as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_names(path: str, names: Sequence[str], columns: Sequence[str]) -> None:
    names = [str(c) for c in names]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(f"{path} has duplicate column names: {duplicated}")
    absent = [c for c in columns if c not in names]
    if absent:
        raise DataError(f"{path} lacks declared column(s) {absent}; it has {names[:20]}"
                        + (" ..." if len(names) > 20 else ""))


def _parquet_kind(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_dictionary(t):
        return _parquet_kind(t.value_type)
    return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else str(t)


def iter_chunks(kind: str, path: str, columns: Sequence[str], chunk_rows: int,
                types: dict[str, tuple[str, str]]) -> Iterator[pd.DataFrame]:
    """``columns`` of ``path`` as DataFrames of at most ``chunk_rows`` rows. ``types`` (column -> (kind, first file))
    is filled from the first Parquet file read; a later file whose column is of another kind (text where the first
    had numbers) is a DataError naming both, as are a missing column and a file that cannot be parsed."""
    import pandas as pd

    if kind == "parquet":
        from mtl_models.parquet_loader import open_parquet

        try:
            parquet = open_parquet(path)
        except ValueError as e:
            raise DataError(str(e)) from None
        schema = parquet.schema_arrow
        _check_names(path, schema.names, columns)
        for c in columns:
            found = _parquet_kind(schema.field(c).type)
            first = types.setdefault(c, (found, path))
            if first[0] != found:
                raise DataError(f"{path} has a different schema: column {c!r} is {found}, but {first[0]} in "
                                f"{first[1]}")
        try:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(columns)):
                yield batch.to_pandas()
        except (OSError, ValueError) as e:
            raise DataError(f"{path} cannot be read as parquet: {str(e).splitlines()[0]}") from None
        return
    def source() -> Any:  # a local path lets pandas infer compression from the name; a URL's handle decompresses
        return _open(path) if is_url(path) else path

    try:
        _check_names(path, list(pd.read_csv(source(), nrows=0).columns), columns)
        for chunk in pd.read_csv(source(), chunksize=chunk_rows, usecols=list(columns)):
            yield chunk
    except pd.errors.EmptyDataError:
        raise DataError(f"raw file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path} cannot be read as csv: {str(e).splitlines()[0]}") from None
