"""Throw-away TLS material for tests: a CA and server certificates signed by it.

Certificates are EC P-256, valid from now-1 day to now+30 days, and carry the
extensions strict OpenSSL verification (and mitmproxy's upstream verification)
expects: CA basicConstraints/keyUsage, SKI/AKI, serverAuth EKU and SANs.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _validity() -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now - _dt.timedelta(days=1), now + _dt.timedelta(days=30)


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(dir, common_name: str = "receipts-proxy test CA") -> tuple[str, str]:
    """Create a self-signed CA in ``dir``; returns (ca_cert_path, ca_key_path)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "receipts-proxy tests"),
        ]
    )
    not_before, not_after = _validity()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "ca.pem", d / "ca-key.pem"
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return str(cert_path), str(key_path)


def make_server_cert(
    dir,
    ca: tuple[str, str],
    hostnames: list[str] | tuple[str, ...] = ("localhost", "127.0.0.1"),
    name: str | None = None,
) -> tuple[str, str]:
    """Create a server certificate signed by ``ca`` = (ca_cert_path, ca_key_path).

    Each hostname becomes a SAN entry (IPAddress when it parses as an IP,
    DNSName otherwise).  Files are ``<name>.pem`` / ``<name>-key.pem`` in ``dir``
    (default name: ``server-<first hostname>``).  Returns (cert_path, key_path).
    """
    hostnames = list(hostnames)
    if not hostnames:
        raise ValueError("need at least one hostname")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(Path(ca[0]).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca[1]).read_bytes(), password=None)

    sans: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))

    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    base = name or "server-" + re.sub(r"[^A-Za-z0-9.-]", "_", hostnames[0])
    cert_path, key_path = d / f"{base}.pem", d / f"{base}-key.pem"
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return str(cert_path), str(key_path)
