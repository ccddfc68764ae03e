"""storage/authcapture.py: the escrow events' topics it writes out are the keccak256 of their signatures,
and the verifier does not load a keccak backend to start."""
import subprocess
import sys

from eth_hash.auto import keccak

from receipts.storage import authcapture


def test_each_event_topic_is_the_keccak_of_its_signature():
    assert len(authcapture.EVENTS) == 4
    for signature, topic in authcapture.EVENTS.items():
        assert topic == "0x" + keccak(signature.encode()).hex(), signature
    assert set(authcapture.AFTER) == set(authcapture.EVENTS.values())


def test_the_verifier_starts_without_a_keccak_backend():
    code = "import sys, receipts.verifier.verify; print(sorted(m for m in sys.modules if m.startswith('eth_hash')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
