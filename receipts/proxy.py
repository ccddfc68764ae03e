"""`receipts proxy`: mitmdump with the recorder addon, configured from mitm_config.yaml and flags."""
from __future__ import annotations

import sys
from pathlib import Path

from storage.config import Settings

SCRIPT = Path(__file__).resolve().parent.parent / "addon" / "script.py"


def mitmdump_args(settings: Settings, config_path: str | None, mode: str = "regular") -> list[str]:
    """The mitmdump command line that runs the recorder with exactly these settings."""
    ca = settings.ca_path
    sets = {
        "confdir": str(ca),
        "receipts_data": settings.data_dir,
        "receipts_bodies": settings.bodies,
        "receipts_durability": settings.durability,
        "receipts_stamp": str(settings.stamp_receipt_id).lower(),
        "receipts_capture_x402": str(settings.capture_x402).lower(),
        "receipts_seal_interval": str(settings.seal_interval),
        "receipts_body_max_bytes": str(settings.body_max_bytes),
        "receipts_compact_after": str(settings.compact_after),
        "receipts_compact_grace": str(settings.compact_grace),
        "flow_detail": "0",
    }
    if config_path:
        sets["receipts_config"] = str(config_path)
    if settings.upstream_ca:
        sets["ssl_verify_upstream_trusted_ca"] = settings.upstream_ca
    args = ["--mode", mode, "--listen-host", settings.listen_host, "--listen-port", str(settings.listen_port),
            "-s", str(SCRIPT)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for path in settings.ai_paths:
        args += ["--set", f"receipts_ai_paths={path}"]
    for rule in settings.rules:
        args += ["--set", f"receipts_rules={rule.host}{rule.path if rule.path.startswith('/') else '/' + rule.path}"]
    return args


def run(settings: Settings, config_path: str | None) -> int:
    """Run the proxy in this process until interrupted."""
    from mitmproxy.tools.main import mitmdump

    Path(settings.ca_path).mkdir(parents=True, exist_ok=True)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    ca_file = Path(settings.ca_path).resolve() / "mitmproxy-ca-cert.pem"
    print(f"receipts: recording into {Path(settings.data_dir).resolve()}\n"
          f"receipts: point apps at it with\n"
          f"  export HTTPS_PROXY=http://{settings.listen_host}:{settings.listen_port} "
          f"SSL_CERT_FILE={ca_file} REQUESTS_CA_BUNDLE={ca_file} NODE_EXTRA_CA_CERTS={ca_file}",
          file=sys.stderr, flush=True)
    mitmdump(mitmdump_args(settings, config_path))
    return 0
