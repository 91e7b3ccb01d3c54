"""The tracker's composition root: configuration, adapters and wiring live here alone."""

from __future__ import annotations

import ssl
import sys
from datetime import timedelta
from zoneinfo import ZoneInfo

from pydantic import Field

from common import logs
from common.clock import Clock
from common.config import ConfigError, Settings, load_or_exit
from common.http import OpsServer, port_taken
from common.kafka import KafkaPublisher, ensure_topics
from common.service import run, wait_for_stop_signal
from common.sites import SiteRegistry
from schemas.base import TimeZoneName
from schemas.topics import CATALOGUE, TopicNames
from services.tracker.detection import DetectionRules, Detector
from services.tracker.erasure_api import ErasureApi
from services.tracker.fhir_api import FhirApi
from services.tracker.ingest import CanonicalSink
from services.tracker.mllp import MllpLimits, MllpListener, tls_context
from services.tracker.worker import CHANGELOG, DetectionWorker

log = logs.get_logger(__name__)


class TrackerSettings(Settings):
    service: str = "tracker"
    http_port: int = Field(default=8081, ge=0, le=65535)
    # MLLP has no credentials of its own: it is bound to an address the network allows.
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    mllp_max_bytes: int = Field(default=64 * 1024, ge=1024)
    mllp_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    mllp_read_timeout_seconds: float = Field(default=30.0, gt=0)
    mllp_max_connections: int = Field(default=64, ge=1)
    mllp_store_timeout_seconds: float = Field(default=10.0, gt=0)
    # PID-3.5 identifier type of the patient id (e.g. MR); empty: PID-3's first repetition.
    hl7_patient_id_type: str = Field(default="", max_length=10)
    # MLLP over TLS: both set to turn it on; a client CA makes clients show a certificate.
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_tls_client_ca: str = ""
    # Sources whose scheduling system never reports arrivals (comma separated, e.g.
    # "tracker.hl7"): only explicit no-shows count for them.
    explicit_no_shows_only: str = ""
    fhir_max_bytes: int = Field(default=256 * 1024, ge=1024)
    ingest_token: str = ""
    clinic_timezone: TimeZoneName = "UTC"
    default_department: str = "general"
    no_show_grace_minutes: int = Field(default=15, ge=0)
    late_cancellation_hours: float = Field(default=24.0, ge=0)
    stage_lead_days: int = Field(default=7, ge=0)
    # "dental=180,physio=14": after an attended visit there, the next is due within N days.
    next_visit_days: str = Field(default="", pattern=r"^([A-Za-z0-9_.-]+=[0-9]{1,4}(,|$))*$")
    detection_tick_seconds: float = Field(default=1.0, gt=0)
    # Static membership of the detection consumer group (Kafka's group.instance.id), one per
    # replica and kept across its restarts (k8s: the pod's name): a replica restarted after
    # a crash takes its partitions back at once instead of after the broker's session
    # timeout. Empty: dynamic membership. Two live replicas with one id fence each other.
    group_instance_id: str = Field(default="", max_length=249, pattern=r"^[A-Za-z0-9._-]*$")

    def rules(self) -> DetectionRules:
        return DetectionRules(
            no_show_grace=timedelta(minutes=self.no_show_grace_minutes),
            late_cancellation_window=timedelta(hours=self.late_cancellation_hours),
            stage_lead_days=self.stage_lead_days,
            default_department=self.default_department,
            default_timezone=self.clinic_timezone,
            explicit_no_shows_only=frozenset(
                s.strip() for s in self.explicit_no_shows_only.split(",") if s.strip()
            ),
            next_visit_days={
                k: int(v)
                for k, _, v in (p.partition("=") for p in self.next_visit_days.split(",") if p)
            },
        )

    def mllp_tls(self) -> ssl.SSLContext | None:
        if not (self.mllp_tls_cert and self.mllp_tls_key):
            return None
        return tls_context(self.mllp_tls_cert, self.mllp_tls_key, self.mllp_tls_client_ca or None)


class Tracker:
    """The running service: ingest (MLLP, FHIR over HTTP), detection worker, ops endpoint."""

    def __init__(
        self, settings: TrackerSettings, clock: Clock, sites: SiteRegistry | None = None
    ) -> None:
        self.settings = settings
        # Which clinic of a chain each message is about (none without a sites file).
        self.sites = sites if sites is not None else settings.site_registry()
        self.names = TopicNames(prefix=settings.topic_prefix)
        self.publisher = KafkaPublisher(settings.kafka_bootstrap, client_id=settings.service)
        sink = CanonicalSink(self.publisher, self.names)
        self.worker = DetectionWorker(
            bootstrap=settings.kafka_bootstrap,
            names=self.names,
            group_id=f"{settings.topic_prefix}{settings.service}",
            detector=Detector(settings.rules()),
            clock=clock,
            service=settings.service,
            tick_seconds=settings.detection_tick_seconds,
            max_original_bytes=settings.deadletter_max_original_bytes,
            sites=self.sites if self.sites.current().explicit else None,
            group_instance_id=settings.group_instance_id or None,
        )
        self.mllp = MllpListener(
            sink=sink,
            clock=clock,
            zone=ZoneInfo(settings.clinic_timezone),
            department=settings.default_department,
            limits=MllpLimits(
                max_bytes=settings.mllp_max_bytes,
                idle_timeout=settings.mllp_idle_timeout_seconds,
                read_timeout=settings.mllp_read_timeout_seconds,
                max_connections=settings.mllp_max_connections,
                store_timeout=settings.mllp_store_timeout_seconds,
            ),
            tls=settings.mllp_tls(),
            patient_id_type=settings.hl7_patient_id_type,
            sites=self.sites,
        )
        self.ops = OpsServer(settings.service)
        FhirApi(
            sink=sink,
            clock=clock,
            token=settings.ingest_token,
            zone=settings.clinic_timezone,
            department=settings.default_department,
            max_bytes=settings.fhir_max_bytes,
            sites=self.sites,
        ).mount(self.ops.app)
        ErasureApi(
            self.publisher, self.names, clock, settings.ingest_token, settings.service
        ).mount(self.ops.app)
        self.ops.add_readiness_check("detection", self._detection_ready)
        self.ops.add_readiness_check("kafka", self.publisher.broker_ready)

    async def _detection_ready(self) -> bool:
        return self.worker.ready.is_set()

    async def start(self) -> None:
        s = self.settings
        # One admin round trip for the contract topics and the detection's own changelog.
        await ensure_topics(s.kafka_bootstrap, self.names, (*CATALOGUE, CHANGELOG))
        await self.publisher.start()
        await self.worker.start()
        self.ops.supervisor.watch(self.worker.tasks)
        try:
            await self.mllp.start(s.mllp_host, s.mllp_port)
        except OSError as exc:
            raise port_taken(exc, s.mllp_host, s.mllp_port, "FOLLOWUP_MLLP_PORT") from None
        await self.ops.start(s.http_host, s.http_port)
        if not s.ingest_token:
            log.warning("no_ingest_token", detail="FHIR ingest refuses every request")
        log.info("started", http_port=self.ops.port, mllp_port=self.mllp.port)

    async def stop(self) -> None:
        # Inputs first, so nothing is acknowledged that can no longer be stored.
        self.ops.supervisor.closing()
        await self.mllp.stop()
        await self.ops.stop()
        await self.worker.stop()
        await self.publisher.stop()


async def serve(settings: TrackerSettings, sites: SiteRegistry) -> None:
    tracker = Tracker(settings, settings.make_clock(), sites)
    await tracker.start()
    try:
        await wait_for_stop_signal(tracker.ops.supervisor)
    finally:
        await tracker.stop()


def main() -> None:
    settings = load_or_exit(TrackerSettings)
    logs.configure(settings.service, settings.log_level, settings.log_format)
    try:
        # A wrong sites file stops the tracker here, naming the file and the line.
        sites = settings.site_registry()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run(lambda: serve(settings, sites))
