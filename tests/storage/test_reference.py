"""The README's tables reference is what the code gives."""
from pathlib import Path

from receipts.storage.reference import reference


def test_the_readme_holds_the_tables_reference_of_the_code():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert reference() in readme, "run `python -m receipts.storage.reference` and paste it into the README's Tables reference"
