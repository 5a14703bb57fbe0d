"""Shared helpers for the data-preparation tests: where the shared real datasets live, output checks."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ADULT_DIR = SHARED_DATA / "adult"
ALIEXPRESS_DIR = SHARED_DATA / "aliexpress"
OUTPUT_FILES = ("train.parquet", "val.parquet", "test.parquet", "feature_spec.json")


def assert_nothing_written(out_dir: Path) -> None:
    """A failed prepare leaves neither the output directory nor any temp directory beside it."""
    assert not out_dir.exists(), f"{out_dir} exists after a failed prepare: {list(out_dir.iterdir())}"
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]
    assert leftovers == [], f"temporary outputs left behind: {leftovers}"
