"""Names of things on disk, and the empty anchor files every view relies on.

DuckDB fails a query whose glob matches no file, so the journal always holds one empty JSON segment
and one empty Parquet file with the event schema. Both are created once and never removed.
"""
from __future__ import annotations

import os
from pathlib import Path

EVENT_COLUMNS = {  # the envelope as DuckDB types (records.py documents each field)
    "id": "VARCHAR", "type": "VARCHAR", "ts": "DOUBLE", "receipt_id": "VARCHAR",
    "writer": "VARCHAR", "seq": "BIGINT", "data": "JSON",
}
ANCHOR_JSON = "_anchor.jsonl"
ANCHOR_PARQUET = Path("date=1970-01-01") / "_anchor.parquet"


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
    target = parquet_dir(journal) / ANCHOR_PARQUET
    if target.exists():
        return
    import duckdb

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    casts = ", ".join(f"NULL::{t} AS {c}" for c, t in EVENT_COLUMNS.items())
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT {casts} LIMIT 0) TO '{tmp}' (FORMAT parquet)")
    os.replace(tmp, target)
