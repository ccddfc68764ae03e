"""Entry point for your own mitmproxy tools:

    mitmdump -s addon/script.py --set receipts_data=./data
    mitmweb  -s addon/script.py --set receipts_stamp=false

It makes the package importable (the checkout, or the installed `receipts` package), then loads the recorder addon (addon/recorder.py). The addon's
`load()` sets this mitmdump's umask to 077, so everything written afterwards (the journal, its Parquet
files, receipts.duckdb) is private to you, and it makes the data directory (and `<data>/ca`) private when
it starts (storage/private.py). mitmproxy creates its confdir's CA before scripts load: that directory is
mitmproxy's (its CA key is private already; `receipts proxy` keeps its CA in `<data>/ca`).
"""

import sys
from pathlib import Path

# addon/ in a checkout (its root holds receipts/); receipts/addon/ when installed
_here = Path(__file__).resolve().parent
_root = str(_here.parent if (_here.parent / "receipts").is_dir() else _here.parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from receipts.addon.recorder import Recorder  # noqa: E402

addons = [Recorder()]
