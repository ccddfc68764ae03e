import sys
from pathlib import Path

# `testbed` is a top-level package of the repository (not installed): make it importable however
# pytest is started.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
