"""Where DuckDB spills (storage/db.py `spill_dir`): one private directory per user, a directory per
connection inside it, nothing left behind by a process that is gone."""
import os
import stat

import pytest

from receipts.storage import db


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """The system's temporary directory is `tmp_path`; the process has not chosen its spill root yet."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(db, "_spill_root", None)
    return tmp_path / f"receipts-duckdb-{os.getuid()}"


def test_spill_directories_are_private_and_per_process(tmp_root):
    path = db.spill_dir()
    assert os.path.dirname(path) == str(tmp_root)
    st = os.lstat(tmp_root)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert os.path.basename(path).startswith(f"{os.getpid()}-") and db.spill_dir() != path


def test_what_a_dead_process_left_is_removed_and_a_live_ones_is_kept(tmp_root):
    tmp_root.mkdir(mode=0o700)
    # a pid no process has: above the kernel's largest (an exited child's pid may be taken again at once
    # on a busy machine, which made this test fail once)
    gone = int(open("/proc/sys/kernel/pid_max").read()) + 1
    (tmp_root / f"{gone}-dead" / "sub").mkdir(parents=True)
    (tmp_root / f"{gone}-dead" / "sub" / "spill.block").write_bytes(b"x" * 10)
    (tmp_root / f"{os.getppid()}-alive").mkdir()
    db.spill_dir()
    assert sorted(os.listdir(tmp_root)) == [f"{os.getppid()}-alive"]


@pytest.mark.parametrize("taken", ["symlink", "loose"])
def test_a_root_name_taken_by_something_else_is_not_used(tmp_root, tmp_path, taken):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    if taken == "symlink":
        tmp_root.symlink_to(elsewhere)
    else:
        tmp_root.mkdir(mode=0o755)
        os.chmod(tmp_root, 0o755)
    path = db.spill_dir()
    root = os.path.dirname(path)
    assert root not in (str(tmp_root), str(elsewhere))
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o700


def test_a_connection_that_spilled_leaves_nothing(tmp_root, tmp_path):
    con = db.connect(_data(tmp_path), views=False, settings={"memory_limit": "60MB", "threads": 1})
    # a sort of ~200 MB of text within 60 MB: done only by spilling into the connection's directory
    n = con.execute("SELECT count(*) FROM (SELECT md5(i::VARCHAR) || md5((i * 7)::VARCHAR) AS s "
                    "FROM range(3000000) t(i) ORDER BY s)").fetchone()[0]
    assert n == 3_000_000
    assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0].startswith(f"{tmp_root}/{os.getpid()}-")
    con.close()
    assert os.listdir(tmp_root) == []


def _data(tmp_path):
    from receipts.storage.journal import Journal

    data = tmp_path / "data"
    with Journal(data, seal_interval=3600):
        pass
    return data
