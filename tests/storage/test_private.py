"""receipts.storage.private: what the project writes is private to its owner, also a data directory an older version left open."""
import logging
import os
import stat

from receipts.storage.private import make_private_dir, secure_data_dir, tighten


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def old_data_dir(root):
    """A data directory as an older version left it: 0755 directories, 0644 files."""
    data = root / "data"
    for d in ("journal/open", "journal/parquet/date=2026-01-01", "ca"):
        (data / d).mkdir(parents=True)
    for f in ("journal/proxy-000001.jsonl", "journal/open/proxy.state", "journal/parquet/date=2026-01-01/a.parquet",
              "receipts.duckdb", "ca/mitmproxy-ca.pem", "notes.txt"):
        (data / f).write_text("x")
    for p in [data, *data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return data


def test_an_old_data_directory_is_made_private(tmp_path, caplog):
    data = old_data_dir(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (data / "journal" / "link").symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="receipts"):
        secure_data_dir(data)
    ours = [data, *(p for p in data.rglob("*") if p.name != "notes.txt" and not p.is_symlink())]
    assert {str(p.relative_to(data)): mode(p) for p in ours if mode(p) & 0o077} == {}
    assert all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in ours)
    assert mode(data / "notes.txt") == 0o644, "a file the project did not write is left alone"
    assert mode(outside) == 0o644, "a link is not followed"
    (message,) = [r.getMessage() for r in caplog.records]
    assert "made 11 files and directories private" in message and str(data) in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="receipts"):
        secure_data_dir(data)
    assert caplog.records == [], "said once: an already private directory is not reported again"


def test_new_directories_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        made = make_private_dir(tmp_path / "a" / "data")
        assert mode(made) == 0o700
        assert secure_data_dir(tmp_path / "fresh") == tmp_path / "fresh" and mode(tmp_path / "fresh") == 0o700
    finally:
        os.umask(old)


def test_tighten_counts_what_it_changed(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o640)
    assert tighten([f, tmp_path / "missing"]) == 1 and mode(f) == 0o600
    assert tighten([f]) == 0
