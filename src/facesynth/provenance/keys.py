"""The key that signs Content Credentials: the user's own certificate, or a local one made on first use.

A key made here proves that a file is unchanged since this installation signed it (integrity), not who
signed it (identity): its certificate chains to a CA made on the same machine that nobody else trusts.
To sign as yourself, point FACESYNTH_C2PA_CERT at a PEM certificate chain (signing certificate first) and
FACESYNTH_C2PA_KEY at its PEM private key; `facesynth detect` trusts the CA in FACESYNTH_C2PA_TRUST too.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FacesynthError

CONFIG_ENV = "FACESYNTH_CONFIG_DIR"
CERT_ENV = "FACESYNTH_C2PA_CERT"
KEY_ENV = "FACESYNTH_C2PA_KEY"
TRUST_ENV = "FACESYNTH_C2PA_TRUST"
FOLDER = "c2pa"
CA_FILE, CHAIN_FILE, KEY_FILE = "local-ca.pem", "signer-chain.pem", "signer-key.pem"
VALID_YEARS = 10


@dataclass(frozen=True)
class SigningKey:
    chain_pem: bytes  # the signing certificate, then its issuers
    key_pem: bytes
    algorithm: str  # a c2pa.C2paSigningAlg name
    local: bool  # made by facesynth on this machine
    ca_pem: bytes | None  # the local CA, trusted when reading


def config_dir() -> Path:
    """$FACESYNTH_CONFIG_DIR, else $XDG_CONFIG_HOME/facesynth, else ~/.config/facesynth."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "facesynth"


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise FacesynthError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def _algorithm(key_pem: bytes, path) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise FacesynthError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ED25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "")
    raise FacesynthError(f"{path}: a {type(key).__name__} cannot sign Content Credentials (use EC, RSA or Ed25519)")


def signing_key() -> SigningKey:
    """The user's certificate (both variables set), else the local key, made now if there is none."""
    cert, key = os.environ.get(CERT_ENV), os.environ.get(KEY_ENV)
    if cert or key:
        if not (cert and key):
            raise FacesynthError(f"set both {CERT_ENV} (PEM certificate chain) and {KEY_ENV} (PEM private key), "
                                 "or neither")
        key_pem = _read(key, "signing key")
        return SigningKey(_read(cert, "certificate chain"), key_pem, _algorithm(key_pem, key), False, None)
    folder = config_dir() / FOLDER
    if not (folder / KEY_FILE).is_file():
        _make_local_key(folder)
    return SigningKey((folder / CHAIN_FILE).read_bytes(), (folder / KEY_FILE).read_bytes(), "ES256", True,
                      (folder / CA_FILE).read_bytes())


def trust_anchors() -> bytes:
    """PEM CAs whose signatures `detect` calls trusted: the local CA (if made) and $FACESYNTH_C2PA_TRUST."""
    pems = []
    local = config_dir() / FOLDER / CA_FILE
    if local.is_file():
        pems.append(local.read_bytes())
    if os.environ.get(TRUST_ENV):
        pems.append(_read(os.environ[TRUST_ENV], "trusted CA certificates"))
    return b"".join(pems)


def _make_local_key(folder: Path) -> None:
    """A CA and a signing certificate it issues (C2PA validators refuse a self-signed signer), written into a
    temporary folder that is renamed into place: two processes starting at once both end with one key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = serialization.Encoding.PEM
    ca_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("facesynth local CA", ca_key, ca_key, None, is_ca=True)
    signer = _certificate("facesynth local signer", signer_key, ca_key, ca, is_ca=False)
    key_bytes = signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=folder.parent))  # mode 0700
        try:
            (tmp / CA_FILE).write_bytes(ca.public_bytes(pem))
            (tmp / CHAIN_FILE).write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
            fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_bytes)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / KEY_FILE).is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise FacesynthError(f"{folder}: cannot create the local signing key ({e.strerror or e}); set "
                             f"{CONFIG_ENV} to a writable folder, or pass --no-mark") from None


def _certificate(name: str, key, issuer_key, issuer, is_ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facesynth (self-made, unverified)")])
    usage = dict(digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
                 encipher_only=False, decipher_only=False)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=365 * VALID_YEARS))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
         .add_extension(x509.KeyUsage(**usage), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if not is_ca:  # C2PA asks signing certificates for an extended key usage such as e-mail protection
        b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False))
    return b.sign(issuer_key, hashes.SHA256())
