"""A throw-away PKI for TLS tests: a CA, the nodes' certificate and client certificates,
valid for ``localhost`` and 127.0.0.1, written as PEM files (the ``cryptography`` package,
installed by scripts/setup.sh)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import quiver

SERVER_NAME = "localhost"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


class Ca:
    """A self-signed certificate authority that issues leaf certificates."""

    def __init__(self, dir: Path, name: str) -> None:
        self.dir = dir
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.slug = name.replace(" ", "-")
        self.file = dir / f"{self.slug}.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str) -> Tuple[str, str]:
        """A certificate with common name ``cn`` for server and client use; its PEM paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.dir / f"{self.slug}.{cn}.crt", self.dir / f"{self.slug}.{cn}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        return str(cert_file), str(key_file)


class Pki:
    """The cluster's CA, the members' certificate (identity ``quiver-node``, role node), an
    administrator's (``quiver-tool``) and a reader's (``ranker``, view ``card_stats``); and
    a second CA that nobody trusts."""

    def __init__(self, dir: Path) -> None:
        dir.mkdir(parents=True)
        self.ca = Ca(dir, "quiver python test CA")
        self.rogue = Ca(dir, "rogue CA")
        node_cert, node_key = self.ca.issue("quiver-node")
        self.certs = {cn: self.ca.issue(cn) for cn in ("quiver-tool", "ranker")}
        self.rogue_cert = self.rogue.issue("quiver-tool")
        self.node_toml = f"""[tls]
cert_file = "{node_cert}"
key_file = "{node_key}"
ca_file = "{self.ca.file}"
client_auth = "required"
server_name = "{SERVER_NAME}"
[auth]
enabled = true
[[auth.identities]]
name = "quiver-node"
role = "node"
[[auth.identities]]
name = "quiver-tool"
role = "admin"
[[auth.identities]]
name = "ranker"
role = "reader"
views = ["card_stats"]
"""

    def client_tls(self, cn: str) -> quiver.TLS:
        """Settings for a client presenting the certificate of ``cn``."""
        cert, key = self.certs[cn]
        return quiver.TLS(ca=str(self.ca.file), cert=cert, key=key, server_name=SERVER_NAME)
