"""A second Kafka broker with TLS and SASL listeners and a second PostgreSQL with TLS only,
started by deploy/local's own scripts on free ports and in a directory of their own, so the
shared servers other tests use are never touched. Certificates are made here with openssl."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra import REPO
from tests.support.polling import free_port

SHARED_KAFKA_LIB = REPO / ".cache" / "infra" / "kafka" / "lib"
# SASL users of the broker: one per mechanism the tests exercise.
SASL_USERS = {"followup": "s3cret-followup", "operator": "s3cret-operator"}


@dataclass(frozen=True)
class Certificates:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=followup test CA", "-keyout", "ca.key", "-out", "ca.pem",
        cwd=directory,
    )  # fmt: skip
    for name, subject, extension in (
        ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "/CN=followup-client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl("genpkey", "-algorithm", "RSA", "-out", f"{name}.key", cwd=directory)
        _openssl(
            "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
            cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=directory,
        )  # fmt: skip
    # Kafka's PEM key store: the PKCS#8 key and the certificate in one file.
    (directory / "server.pem").write_text(
        (directory / "server.key").read_text() + (directory / "server.crt").read_text()
    )
    for path in directory.iterdir():
        path.chmod(0o644)  # the postgres user copies them; a throwaway test CA
    return Certificates(directory)


@dataclass(frozen=True)
class SecureKafka:
    plaintext: str  # the broker's own listener, for a test's set-up only
    sasl_ssl: str
    ssl: str
    certificates: Certificates

    def env(self, mechanism: str = "SCRAM-SHA-512", user: str = "followup") -> dict[str, str]:
        """FOLLOWUP_* variables for a client on the SASL_SSL listener."""
        return {
            "FOLLOWUP_KAFKA_BOOTSTRAP": self.sasl_ssl,
            "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FOLLOWUP_KAFKA_SSL_CAFILE": str(self.certificates.ca),
            "FOLLOWUP_KAFKA_SASL_MECHANISM": mechanism,
            "FOLLOWUP_KAFKA_SASL_USERNAME": user,
            "FOLLOWUP_KAFKA_SASL_PASSWORD": SASL_USERS[user],
        }

    def mtls_env(self) -> dict[str, str]:
        """FOLLOWUP_* variables for a client on the SSL listener (client certificate)."""
        return {
            "FOLLOWUP_KAFKA_BOOTSTRAP": self.ssl,
            "FOLLOWUP_KAFKA_SECURITY_PROTOCOL": "SSL",
            "FOLLOWUP_KAFKA_SSL_CAFILE": str(self.certificates.ca),
            "FOLLOWUP_KAFKA_SSL_CERTFILE": str(self.certificates.client_cert),
            "FOLLOWUP_KAFKA_SSL_KEYFILE": str(self.certificates.client_key),
        }


@contextmanager
def secure_kafka(workdir: Path, certificates: Certificates) -> Iterator[SecureKafka]:
    ports = {
        name: free_port()
        for name in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_SASL_SSL_PORT", "KAFKA_SSL_PORT")
    }
    env = {
        **os.environ,
        **{f"FOLLOWUP_{name}": str(port) for name, port in ports.items()},
        "FOLLOWUP_INFRA_DIR": str(workdir),
        "FOLLOWUP_KAFKA_TLS_DIR": str(certificates.directory),
        "FOLLOWUP_KAFKA_SASL_USERS": " ".join(f"{u}:{p}" for u, p in SASL_USERS.items()),
        "FOLLOWUP_KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
    }
    if "FOLLOWUP_KAFKA_VERSION" not in os.environ:
        env["FOLLOWUP_KAFKA_LIB_DIR"] = str(SHARED_KAFKA_LIB)  # the jars already fetched
    script = str(REPO / "deploy/local/kafka.sh")
    subprocess.run(["bash", script, "up"], env=env, check=True, capture_output=True)
    try:
        yield SecureKafka(
            f"127.0.0.1:{ports['KAFKA_PORT']}",
            f"127.0.0.1:{ports['KAFKA_SASL_SSL_PORT']}",
            f"127.0.0.1:{ports['KAFKA_SSL_PORT']}",
            certificates,
        )
    finally:
        subprocess.run(["bash", script, "down"], env=env, check=False, capture_output=True)


@dataclass(frozen=True)
class SecurePostgres:
    port: int
    certificates: Certificates

    def url(self, sslmode: str = "verify-full") -> str:
        return (
            f"postgresql://followup:followup@127.0.0.1:{self.port}/followup"
            f"?sslmode={sslmode}&sslrootcert={self.certificates.ca}"
        )


@contextmanager
def secure_postgres(certificates: Certificates) -> Iterator[SecurePostgres]:
    # Not under pytest's tmp dir: the server runs as the postgres user, and the script
    # makes each ancestor of its state dir traversable.
    workdir = Path(tempfile.mkdtemp(prefix="followup-pgtls-"))
    ssl_dir = workdir / "tls"
    ssl_dir.mkdir()
    for name in ("server.crt", "server.key"):
        shutil.copy(certificates.directory / name, ssl_dir / name)
    port = free_port()
    env = {
        **os.environ,
        "FOLLOWUP_INFRA_DIR": str(workdir),
        "FOLLOWUP_PG_PORT": str(port),
        "FOLLOWUP_PG_SSL_DIR": str(ssl_dir),
    }
    script = str(REPO / "deploy/local/postgres.sh")
    subprocess.run(["bash", script, "up"], env=env, check=True, capture_output=True)
    try:
        yield SecurePostgres(port, certificates)
    finally:
        subprocess.run(["bash", script, "down"], env=env, check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
