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


# a funnel small enough for a search test and with enough clicks and conversions for AUCs on every split
SMALL_FUNNEL = {"n_rows": 2500, "ctr": 0.3, "cvr": 0.3, "n_users": 200, "n_items": 100, "n_categories": 10}


def prepare_small_funnel(out: Path, seed: int) -> Path:
    """``SMALL_FUNNEL`` prepared into ``out`` (the search tests' data)."""
    from workflow.data.prepare import prepare

    prepare("synthetic-funnel", out, seed=seed, options=SMALL_FUNNEL)
    return out
