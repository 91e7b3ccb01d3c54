"""The hospital's FHIR R4 server, for the demo and the tests: HAPI FHIR's plain-server
libraries (R4 structures, strict parser) with in-memory Task/Slot/Appointment/Schedule/
Subscription providers, on Jetty; Task changes notify active rest-hook Subscriptions (see
the Java source's header). Not a stand-in written here: HAPI's own server parts.

``deploy/local/fhir-r4/pom.xml`` lists the jars; Maven fetches them from Maven Central and
``javac`` compiles ``deploy/local/fhir-r4/src/FhirR4Server.java`` against them, once, into
``.cache/fhir-r4-server/<hash of the sources>/`` (a fresh machine builds it on first use, or
``python -m standins.fhir_r4_server build`` as ``make demo`` and ``make integration`` do;
needs Java 17 and Maven, installed from Debian's packages as root or through password-less
sudo when missing). ``FhirR4Server.start()`` runs it on a free port.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "deploy" / "local" / "fhir-r4"
CACHE = ROOT / ".cache" / "fhir-r4-server"
HAPI_VERSION = "8.6.1"  # keep in step with deploy/local/fhir-r4/pom.xml


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for path in (SOURCES / "pom.xml", SOURCES / "src" / "FhirR4Server.java"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


DEBIAN_PACKAGES = {
    "javac": "openjdk-17-jdk-headless",
    "java": "openjdk-17-jdk-headless",
    "mvn": "maven",
}


def _as_root() -> list[str] | None:
    """The prefix that runs a command as root (as deploy/local/as_root.sh), None: cannot."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    return None


def _ensure_tools() -> None:
    """Java 17 (a JDK: javac) and Maven; on a fresh machine from Debian's packages (as
    deploy/local/kafka.sh does for the broker)."""
    missing = sorted({pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None})
    root = _as_root() if missing and shutil.which("apt-get") else None
    if missing and root is not None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*root, "apt-get", "update"], check=False, capture_output=True)
        subprocess.run(
            [*root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
             "--no-install-recommends", *missing],
            check=False, capture_output=True, env=env,
        )  # fmt: skip
    for tool in DEBIAN_PACKAGES:
        if shutil.which(tool) is None:
            raise RuntimeError(f"the FHIR R4 server needs {tool} (Java 17 JDK and Maven)")


def built() -> Path | None:
    """The built server's directory when it is built already."""
    target = CACHE / _sources_hash()
    return target if (target / "classes" / "FhirR4Server.class").exists() else None


def build() -> Path:
    """The built server's directory (``lib/`` jars and ``classes/``), built if missing."""
    target = CACHE / _sources_hash()
    if built() is not None:
        return target
    _ensure_tools()
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "classes").mkdir(parents=True)
    log = work / "build.log"
    with log.open("wb") as out:
        steps = [
            [
                "mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(SOURCES / "pom.xml"),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            [
                "javac", "-cp", str(work / "lib") + "/*", "-d", str(work / "classes"),
                str(SOURCES / "src" / "FhirR4Server.java"),
            ],
        ]  # fmt: skip
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"building the FHIR R4 server failed ({step[0]}):\n{tail}")
    try:
        work.rename(target)
    except OSError:  # another run built it meanwhile: keep theirs
        shutil.rmtree(work, ignore_errors=True)
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FhirR4Server:
    """One running server; ``base_url`` ends in ``/fhir``. Its log goes to ``log_dir`` (by
    default beside the built server)."""

    def __init__(self, port: int = 0, log_dir: Path | None = None, find: bool = False) -> None:
        """``find``: a server with the Appointment ``$find`` operation (in its
        CapabilityStatement), as some hospitals' scheduling servers have."""
        self.port = port or _free_port()
        self._find = find
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> FhirR4Server:
        target = build()
        classpath = f"{target / 'classes'}{os.pathsep}{target / 'lib'}/*"
        log_dir = self._log_dir or target
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = (log_dir / f"fhir-r4-server-{self.port}.log").open("wb")
        self._process = subprocess.Popen(
            ["java", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
             "FhirR4Server", str(self.port), *(["--find"] if self._find else [])],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the FHIR R4 server exited ({self._process.returncode})")
            try:
                with urllib.request.urlopen(f"{self.base_url}/metadata", timeout=5) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("the FHIR R4 server did not answer /metadata in time")

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            self._log.close()


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m standins.fhir_r4_server build", file=sys.stderr)
        return 2
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
