"""TLS for the control connection (stdlib ``ssl``): the relay's identity and both contexts.

The relay uses the operator's certificate and key if given; otherwise it creates a
self-signed one (ECDSA P-256) on first start and keeps it in its data directory,
key and certificate in one file written whole (mode 0600), so two relays starting
at once on the same directory both end up with one identity. Clients pin the
SHA-256 fingerprint of the certificate on first use (:mod:`pipeline.core.pins`).

Only TLS 1.3, or 1.2 with ECDHE and an AEAD cipher (AES-GCM, ChaCha20-Poly1305).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import ssl
import tempfile
from pathlib import Path

IDENTITY_FILE = "relay-identity.pem"  # in the data directory: the key, then the certificate
# TLS 1.2 suites: forward secrecy (ECDHE) and an AEAD only; TLS 1.3's are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
AEAD_CIPHERS = ("AES_128_GCM", "AES_256_GCM", "CHACHA20_POLY1305", "AES128-GCM", "AES256-GCM",
                "CHACHA20-POLY1305")  # fmt: skip


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/voicechat-relay`` (``~/.local/share/voicechat-relay``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voicechat-relay"


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``AB:CD:...`` (what SSH and
    Mumble show, and what clients pin)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def create_self_signed(path: Path, common_name: str = "voicechat-relay") -> None:
    """Write a new key and self-signed certificate (10 years) to ``path``, atomically."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".identity-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        with contextlib.suppress(FileExistsError):  # another relay won the race: keep its
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def identity(cert: str | None, key: str | None, data_dir: Path | None) -> tuple[str, str, bool]:
    """``(cert file, key file, created)``: the operator's, or the data directory's
    self-signed one (created now if it is not there)."""
    if cert:
        return cert, key or cert, False
    path = (data_dir or default_data_dir()) / IDENTITY_FILE
    created = not path.exists()
    if created:
        create_self_signed(path)
    return str(path), str(path), created


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The relay's context: TLS 1.2+ with AEAD suites only; no client certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def certificate_fingerprint(cert_file: str) -> str:
    """The fingerprint of the (first) certificate in a PEM file."""
    text = Path(cert_file).read_text()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return fingerprint(ssl.PEM_cert_to_DER_cert(text[start:end]))


def client_context() -> ssl.SSLContext:
    """A client's context: the relay is authenticated by its pinned fingerprint (trust on
    first use), not by a CA, so the chain is not verified here; the caller checks the
    pin before sending anything."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx


def is_modern(sock: ssl.SSLSocket | ssl.SSLObject) -> bool:
    """Whether a connection runs TLS 1.3, or 1.2 with an AEAD suite."""
    version = sock.version()
    cipher = sock.cipher()
    if version == "TLSv1.3":
        return True
    return version == "TLSv1.2" and cipher is not None and any(a in cipher[0] for a in AEAD_CIPHERS)
