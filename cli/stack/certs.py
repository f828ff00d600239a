"""Certificates for the secured local stack, made with the ``openssl`` command line: a private CA, server
certificates for loopback (``localhost`` and the stack's IP as subject alternative names) and client
certificates for mutual TLS.

Contract: every file is PEM, keys are unencrypted PKCS#8 written with mode 0600, and a certificate is made again
when it is missing or expires within a day (:meth:`LocalCA.server` / :meth:`LocalCA.client`). ``expired=True``
makes a certificate whose validity ended yesterday (tests of the refusal a client must give). The CA itself
lives for a year; servers and clients trust it through ``ca.pem``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path

from vatic.schemas.errors import ConfigError, MissingDependency

#: days a server or client certificate is valid
CERT_DAYS = 30
_CA_DAYS = 365


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise MissingDependency(
            "openssl not found: `apt-get install -y openssl` (the secured stack makes its certificates)"
        )
    return found


def _run(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [openssl(), *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise ConfigError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def expires_within(cert: Path, seconds: int) -> bool:
    """True when ``cert`` is missing or its validity ends within ``seconds``."""
    if not cert.is_file():
        return True
    done = subprocess.run(
        [openssl(), "x509", "-checkend", str(seconds), "-noout", "-in", str(cert)], capture_output=True, check=False
    )
    return done.returncode != 0


class LocalCA:
    """A certificate authority in ``folder`` (``ca.pem``, ``ca.key``) that signs the stack's certificates."""

    def __init__(self, folder: Path, name: str = "vatic local CA") -> None:
        self.folder = folder
        self.name = name

    @property
    def cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def key(self) -> Path:
        return self.folder / "ca.key"

    def ensure(self) -> LocalCA:
        """Create the CA unless a valid one is there (a new CA invalidates every certificate it signed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not expires_within(self.cert, 86_400) and self.key.is_file():
            return self
        for stale in self.folder.glob("*.pem"):
            stale.unlink()
        _run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(_CA_DAYS),
            "-subj", f"/CN={self.name}", "-keyout", str(self.key), "-out", str(self.cert),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        _private(self.key)
        return self

    def server(self, name: str, hosts: list[str], *, expired: bool = False) -> tuple[Path, Path]:
        """``(<name>.pem, <name>.key)``: a certificate for a server reachable as any of ``hosts`` (DNS names
        or IP addresses); it may also authenticate as a client (a broker talks to its controller)."""
        names = []
        for host in dict.fromkeys(hosts):
            try:
                ipaddress.ip_address(host)
                names.append(f"IP:{host}")
            except ValueError:
                names.append(f"DNS:{host}")
        return self._issue(
            name, f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth,clientAuth\n", expired=expired
        )

    def client(self, name: str, *, expired: bool = False) -> tuple[Path, Path]:
        """``(<name>.pem, <name>.key)``: a client certificate whose subject is ``CN=<name>``."""
        return self._issue(name, "extendedKeyUsage=clientAuth\n", expired=expired)

    def _issue(self, name: str, extensions: str, *, expired: bool) -> tuple[Path, Path]:
        cert, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        if not expired and key.is_file() and not expires_within(cert, 86_400):
            return cert, key
        csr, ext = self.folder / f"{name}.csr", self.folder / f"{name}.ext"
        ext.write_text(extensions + "basicConstraints=CA:FALSE\n", encoding="utf-8")
        _run("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", f"/CN={name}", "-keyout", str(key),
             "-out", str(csr))  # fmt: skip
        _private(key)
        if expired:
            self._sign_expired(csr, cert, ext)
        else:
            _run(
                "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
                "-sha256", "-days", str(CERT_DAYS), "-extfile", str(ext), "-out", str(cert),
            )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return cert, key

    def _sign_expired(self, csr: Path, cert: Path, ext: Path) -> None:
        """Sign with a validity that ended a day ago (``openssl ca`` is the command that takes explicit dates)."""
        db = self.folder / "ca-db"
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir()
        (db / "index.txt").write_text("", encoding="utf-8")
        (db / "serial").write_text(f"{int(time.time() * 1000):016X}\n", encoding="utf-8")
        conf = db / "ca.cnf"
        conf.write_text(
            "[ca]\ndefault_ca=local\n[local]\n"
            f"dir={db}\ndatabase=$dir/index.txt\nserial=$dir/serial\nnew_certs_dir=$dir\n"
            f"certificate={self.cert}\nprivate_key={self.key}\ndefault_md=sha256\npolicy=any\n"
            "unique_subject=no\ncopy_extensions=none\n[any]\ncommonName=supplied\n",
            encoding="utf-8",
        )
        day = 86_400
        start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 3 * day))
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - day))
        _run(
            "ca", "-batch", "-config", str(conf), "-in", str(csr), "-out", str(cert), "-extfile", str(ext),
            "-startdate", start, "-enddate", end, "-notext",
        )  # fmt: skip
        shutil.rmtree(db, ignore_errors=True)

    def pkcs12(self, cert: Path, key: Path, password: str) -> Path:
        """A PKCS#12 keystore of ``cert`` + ``key`` (+ the CA), for a JVM server."""
        store = cert.with_suffix(".p12")
        _run("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile", str(self.cert),
             "-name", cert.stem, "-out", str(store), "-passout", "env:VATIC_KEYSTORE_PASSWORD",
             env={"VATIC_KEYSTORE_PASSWORD": password})  # fmt: skip
        _private(store)
        return store
