"""Names of things on disk, and the empty anchor segment.

The journal always holds one empty JSON segment: it gives an empty tail its columns (storage/fold.py).
It is created once and never removed. (`parquet/` holds events in the format before the fold, folded
and removed by the first fold.)
"""

from __future__ import annotations

from pathlib import Path

EVENT_COLUMNS = {  # the envelope as DuckDB types (records.py documents each field)
    "id": "VARCHAR",
    "type": "VARCHAR",
    "ts": "DOUBLE",
    "receipt_id": "VARCHAR",
    "writer": "VARCHAR",
    "seq": "BIGINT",
    "data": "JSON",
}
ANCHOR_JSON = "_anchor.jsonl"


def parquet_dir(journal: Path) -> Path:
    return journal / "parquet"


def columns_sql() -> str:
    """The `columns={...}` argument for read_json, so every file is read with one schema."""
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in EVENT_COLUMNS.items()) + "}"


def ensure_anchors(journal: Path) -> None:
    journal.mkdir(parents=True, exist_ok=True)
    anchor = journal / ANCHOR_JSON
    if not anchor.exists():
        anchor.touch()
