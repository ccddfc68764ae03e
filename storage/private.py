"""Everything the project writes is private to its owner: files 0600, directories 0700.

Receipts say what apps paid, to whom, and (with `bodies: full`) what they asked; other local users have no
business reading them. Three things make it hold:
- **a umask of 077 at every entry point** (`private_umask`): the `receipts` command (proxy, verify, ingest,
  export, audit, serve) and the recorder addon's `load()` (for `mitmdump -s addon/script.py`). Everything
  created afterwards is private, whoever creates it: this code, DuckDB (databases, Parquet files, spill
  files), mitmproxy (its CA);
- **the data directory is created 0700** explicitly (`make_private_dir`), whatever the umask;
- **a data directory left by an older version** (0755 directories, 0644 files) is tightened when a writer
  starts (`secure_data_dir`, logged once): the data directory itself, and what the project keeps in it
  (`journal/`, `receipts.duckdb`, the CA directory). Other files a user keeps there are left as they are.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("receipts")

UMASK = 0o077
DIR_MODE = 0o700
OURS = (
    "journal",
    "tables",
    "receipts.duckdb",
    "receipts.duckdb.wal",
    "ca",
)  # what the project keeps in a data directory


def private_umask() -> None:
    """From now on this process creates files 0600 and directories 0700 (unless told otherwise)."""
    os.umask(UMASK)


def make_private_dir(path: str | os.PathLike) -> Path:
    """Create a directory (and its missing parents) accessible to its owner only."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def _private(path: Path) -> int:
    """Take group and other access away from one path (never following a link); 1 if it changed."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
            return 0
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
        return 1
    except FileNotFoundError:  # gone meanwhile (a compaction of another writer): nothing to protect
        return 0
    except OSError as exc:
        log.warning("receipts: could not make %s private: %s", path, exc.strerror or exc)
        return 0


def tighten(paths: Iterable[str | os.PathLike]) -> int:
    """Make each path private, and everything under it for a directory; how many paths changed."""
    changed = 0
    for top in map(Path, paths):
        changed += _private(top)
        if top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                changed += sum(_private(Path(root, name)) for name in dirs + files)
    return changed


def secure_data_dir(data_dir: str | os.PathLike, ca_dir: str | os.PathLike | None = None) -> Path:
    """The data directory, created private, or made private if an older version left it readable to others."""
    data = Path(data_dir)
    existed = data.is_dir()
    make_private_dir(data)
    changed = _private(data) + tighten(p for p in [*(data / name for name in OURS), ca_dir] if p and Path(p).exists())
    if existed and changed:
        log.warning(
            "receipts: %s was readable by other users; made %d files and directories private to their "
            "owner (0600 files, 0700 directories)",
            data,
            changed,
        )
    return data
