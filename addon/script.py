"""Entry point for your own mitmproxy tools:

    mitmdump -s addon/script.py --set receipts_data=./data
    mitmweb  -s addon/script.py --set receipts_stamp=false

It makes the repository importable, then loads the recorder addon (addon/recorder.py).
"""
import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addon.recorder import Recorder  # noqa: E402

addons = [Recorder()]
