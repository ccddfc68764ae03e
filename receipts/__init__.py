"""receipts: a recording proxy that stamps receipts on paid AI calls.

For notebooks and programs: `receipts.connect(data_dir)` gives a DuckDB connection over a snapshot of the
recorded tables and views (the same ones `receipts sql` queries):

    import receipts
    con = receipts.connect("./data")
    con.sql("SELECT app_name, sum(amount) FROM receipts GROUP BY ALL").df()
"""

from __future__ import annotations

import os
from pathlib import Path

# Installed, the recorder's parts are subpackages: receipts.addon, receipts.storage, receipts.verifier.
# In a checkout they are the top-level folders addon/, storage/ and verifier/ beside this one; the
# checkout's root is searched for them too (only there: it is the folder holding pyproject.toml).
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "storage").is_dir():
    __path__.append(str(_checkout))


def connect(data_dir: str | os.PathLike = "./data"):
    """A DuckDB connection (in memory, sandboxed: it opens no file outside the data directory's tables)
    with the tables and views of `data_dir` as they are now. Connect again to see newer calls."""
    from receipts.storage import db

    if not os.path.isdir(os.path.join(data_dir, "journal")):
        raise FileNotFoundError(f"no recorded data at {data_dir}: start `receipts proxy` first")
    return db.connect(data_dir, journal=False)
