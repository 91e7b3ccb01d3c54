"""A real FHIR R4 server for tests: HAPI FHIR's plain-server libraries (R4 structures, strict
parser) with in-memory Task/Slot/Appointment/Schedule/Subscription providers, on Jetty; Task
changes notify active rest-hook Subscriptions (see the Java source's header).

``fhir_server/pom.xml`` lists the jars; Maven fetches them from Maven Central and ``javac``
compiles ``fhir_server/src/FhirR4Server.java`` against them, once, into
``.cache/fhir-r4-server/<hash of the sources>/`` (a fresh CI machine builds it on first use;
needs Java 17 and Maven). ``FhirR4Server.start()`` runs it on a free port.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.polling import free_port

HERE = Path(__file__).parent / "fhir_server"
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "fhir-r4-server"
HAPI_VERSION = "8.6.1"  # keep in step with fhir_server/pom.xml


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for path in (HERE / "pom.xml", HERE / "src" / "FhirR4Server.java"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


DEBIAN_PACKAGES = {
    "javac": "openjdk-17-jdk-headless",
    "java": "openjdk-17-jdk-headless",
    "mvn": "maven",
}


def _ensure_tools() -> None:
    """Java 17 (a JDK: javac) and Maven; on a fresh machine, as root, from Debian's packages
    (as deploy/local/kafka.sh does for the broker)."""
    missing = sorted({pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None})
    if missing and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            check=False, capture_output=True, env=env,
        )  # fmt: skip
    for tool in DEBIAN_PACKAGES:
        if shutil.which(tool) is None:
            raise RuntimeError(f"the FHIR test server needs {tool} (Java 17 JDK and Maven)")


def build() -> Path:
    """The built server's directory (``lib/`` jars and ``classes/``), built if missing."""
    target = CACHE / _sources_hash()
    if (target / "classes" / "FhirR4Server.class").exists():
        return target
    _ensure_tools()
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "classes").mkdir(parents=True)
    log = work / "build.log"
    with log.open("wb") as out:
        steps = [
            [
                "mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(HERE / "pom.xml"),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            [
                "javac", "-cp", str(work / "lib") + "/*", "-d", str(work / "classes"),
                str(HERE / "src" / "FhirR4Server.java"),
            ],
        ]  # fmt: skip
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"building the FHIR test server failed ({step[0]}):\n{tail}")
    try:
        work.rename(target)
    except OSError:  # another test run built it meanwhile: keep theirs
        shutil.rmtree(work, ignore_errors=True)
    return target


class FhirR4Server:
    """One running server; ``base_url`` ends in ``/fhir``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> FhirR4Server:
        built = build()
        classpath = f"{built / 'classes'}{os.pathsep}{built / 'lib'}/*"
        self._log = (built / f"server-{self.port}.log").open("wb")
        self._process = subprocess.Popen(
            ["java", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
             "FhirR4Server", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the FHIR test server exited ({self._process.returncode})")
            try:
                with urllib.request.urlopen(f"{self.base_url}/metadata", timeout=5) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the FHIR test server did not answer /metadata in time")

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
