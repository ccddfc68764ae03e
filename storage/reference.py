"""The tables reference of the README: every table and view with its columns and types, as DuckDB
describes them (`python -m receipts.storage.reference` prints it; a test checks that the README holds it)."""

from __future__ import annotations

import tempfile

from . import db, fold

VIEWS = ("receipts", "calls", "challenges", "payments", "settlements", "checks", "sessions", "channels", "events")


def describe(con, relation: str) -> str:
    cols = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {relation})").fetchall()
    return ", ".join(f"`{name}` {kind}" for name, kind in cols)


def reference() -> str:
    with tempfile.TemporaryDirectory() as empty, db.connect(empty) as con:
        lines = ["| view | columns (DuckDB types) |", "|---|---|"]
        lines += [f"| `{v}` | {describe(con, v)} |" for v in VIEWS]
        lines += ["", "| folded table (Parquet under `data/tables/<table>/`) | columns (DuckDB types) |", "|---|---|"]
        lines += [f"| `folded.{t}` | {describe(con, 'folded.' + t)} |" for t in fold.TABLES]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference())
