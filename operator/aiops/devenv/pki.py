"""The local cluster's certificates: one CA, and certificates it signs for the API server, the
kubelet and kube-proxy, made with the `openssl` command (OpenSSL 3).

Why a CA of our own instead of the API server's self-signed certificate: a real node needs
certificates that several parties check against one root. The kubelet authenticates to the API
server with a client certificate (user `system:node:<name>`, group `system:nodes`, which the Node
authorizer expects), the API server to the kubelet with another (for logs and exec), pods verify
the API server through the `kubernetes` Service's address, and the kubelet's serving certificate
is checked by the API server. Each certificate is written to a temporary name and renamed, so a
half-written pair is never used; existing ones are kept while they still name what is asked.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DAYS = 3650


class PkiError(RuntimeError):
    """openssl failed; the message quotes it."""


@dataclass(frozen=True)
class CertRequest:
    """What one certificate says: its subject and, for a server, the names it answers to."""

    name: str  # file stem: <name>.crt / <name>.key
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    client: bool = True
    server: bool = False

    def subject(self) -> str:
        return "".join(f"/O={o}" for o in self.organizations) + f"/CN={self.common_name}"

    def extensions(self) -> list[str]:
        usages = [u for u, on in (("clientAuth", self.client), ("serverAuth", self.server)) if on]
        exts = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=" + ",".join(usages)]
        sans = [f"DNS:{d}" for d in self.dns_names] + [f"IP:{ipaddress.ip_address(i)}" for i in self.ip_addresses]
        if sans:
            exts.append("subjectAltName=" + ",".join(sans))
        return exts


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")


class LocalCA:
    """A CA in `directory` (ca.crt, ca.key) and the certificates it issued beside it."""

    def __init__(self, directory: Path, common_name: str = "aiops-local-ca"):
        self.directory = Path(directory)
        self.common_name = common_name

    @property
    def cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> LocalCA:
        if self.cert.exists() and self.key.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            key, crt = Path(tmp) / "ca.key", Path(tmp) / "ca.crt"
            _openssl("genrsa", "-out", str(key), "2048")
            _openssl("req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={self.common_name}",
                     "-days", str(DAYS), "-out", str(crt),
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
            key.chmod(0o600)
            key.rename(self.key)
            crt.rename(self.cert)
        return self

    def paths(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def issue(self, request: CertRequest) -> tuple[Path, Path]:
        """(certificate, key) for `request`, issued now unless an identical one exists."""
        crt, key = self.paths(request.name)
        stamp = self.directory / f".{request.name}.request"
        wanted = repr((request.subject(), request.extensions()))
        if crt.exists() and key.exists() and stamp.exists() and stamp.read_text() == wanted:
            return crt, key
        self.ensure()
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            t_key, t_csr, t_crt = (Path(tmp) / f"x.{s}" for s in ("key", "csr", "crt"))
            ext_file = Path(tmp) / "ext.cnf"
            ext_file.write_text("\n".join(request.extensions()) + "\n")
            _openssl("genrsa", "-out", str(t_key), "2048")
            _openssl("req", "-new", "-key", str(t_key), "-subj", request.subject(), "-out", str(t_csr))
            _openssl("x509", "-req", "-in", str(t_csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                     "-CAcreateserial", "-days", str(DAYS), "-extfile", str(ext_file), "-out", str(t_crt))
            t_key.chmod(0o600)
            t_key.rename(key)
            t_crt.rename(crt)
        stamp.write_text(wanted)
        return crt, key
