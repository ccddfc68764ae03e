"""Entry point for your own mitmproxy tools:

    mitmdump -s addon/script.py --set receipts_data=./data
    mitmweb  -s addon/script.py --set receipts_stamp=false

It makes the repository importable, then loads the recorder addon (addon/recorder.py). The addon's
`load()` sets this mitmdump's umask to 077: everything written afterwards (the journal, and mitmproxy's
own files, such as a new CA in its confdir) is private to you (storage/private.py).
"""
import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addon.recorder import Recorder  # noqa: E402

addons = [Recorder()]
