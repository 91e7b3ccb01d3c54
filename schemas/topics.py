"""The topic catalogue: the one place where topic names live, and how each topic is laid out.

Topics as code: a ``TopicSpec`` states what a topic is (its contract, compaction, retention);
a ``TopicLayout`` read from the environment states how a deployment lays them out (partitions,
replication, min in-sync replicas, retention overrides, whether services may create them).
``TopicLayout.config`` combines the two into the ``TopicConfig`` a broker should hold, and
``problems`` compares that with what a broker reports (a ``TopicConfig`` too). The services
and the operator tool (``python -m followup_admin topics apply|check``) share these, so
they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from schemas.base import Envelope
from schemas.events import (
    AppointmentEvent,
    CallTaskEvent,
    ContactEvent,
    DeadLetter,
    NotificationCommand,
    OutcomeEvent,
    PatientStatusEvent,
    TreatmentPlanEvent,
    TriggerEvent,
)

# Every topic but the dead letters is keyed by patient and co-partitioned (the tracker reads
# one partition number of appointments, plans and outcomes with its changelog), so they all
# share one partition count. Six: the HPA's maximum, so no replica idles at full scale.
PARTITIONS = 6
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[Envelope]
    description: str
    compacted: bool = False
    partitions: int = PARTITIONS
    # How long records stay on a deleting topic: longer than any consumer may stay away.
    # Compacted topics keep the latest record per key for ever, whatever this says.
    retention_ms: int = 14 * DAY_MS
    # False for a topic whose partition count is its own (the dead letters): it does not
    # follow the deployment's FOLLOWUP_TOPICS_PARTITIONS.
    co_partitioned: bool = True

    @property
    def env_key(self) -> str:
        """``followup.deadletter`` -> ``DEADLETTER``: the per-topic variables' middle part."""
        tail = self.name.removeprefix("followup.")
        return tail.upper().replace(".", "_").replace("-", "_")


APPOINTMENTS = TopicSpec(
    "followup.appointments",
    AppointmentEvent,
    "Canonical appointment snapshots, from HL7, FHIR or integrators' JSON. Keyed by patient.",
)
PLANS = TopicSpec(
    "followup.plans",
    TreatmentPlanEvent,
    "Treatment plans: ordered stages and the doctor's maximum interval between them.",
)
CONTACTS = TopicSpec(
    "followup.contacts",
    ContactEvent,
    "Patient contact details and consent. Compacted; read by the notifier alone.",
    compacted=True,
)
PATIENTS = TopicSpec(
    "followup.patients",
    PatientStatusEvent,
    "Patient status without personal data: deceased or transferred out means no contact.",
    compacted=True,
)
TRIGGERS = TopicSpec(
    "followup.triggers",
    TriggerEvent,
    "What the tracker detected: no-show, unanswered call, stage window at risk, late cancellation.",
)
NOTIFICATIONS = TopicSpec(
    "followup.notifications",
    NotificationCommand,
    "Attempts the scheduler asks the notifier to make (from its transactional outbox).",
)
OUTCOMES = TopicSpec(
    "followup.outcomes",
    OutcomeEvent,
    "What came back: call results, deliveries, replies, opt-outs.",
)
CALLTASKS = TopicSpec(
    "followup.calltasks",
    CallTaskEvent,
    "Call tasks for the clinic's own tools (CRM connectors). Carries whom to call.",
)
DEADLETTER = TopicSpec(
    "followup.deadletter",
    DeadLetter,
    "Messages that did not parse or validate, with their original bytes and the reason.",
    partitions=1,
    # Kept until an operator has fixed the mapping and replayed them (followup_admin).
    retention_ms=60 * DAY_MS,
    co_partitioned=False,
)

CATALOGUE: tuple[TopicSpec, ...] = (
    APPOINTMENTS,
    PLANS,
    CONTACTS,
    PATIENTS,
    TRIGGERS,
    NOTIFICATIONS,
    OUTCOMES,
    CALLTASKS,
    DEADLETTER,
)

# Not a contract: the tracker's own state (PatientState JSON, one record per patient),
# written to the partition number of the patient's input records, hence co-partitioned.
# Listed here so an operator lays it out with the others before the first deploy.
TRACKER_STATE = TopicSpec(
    "followup.tracker.patient-state-changelog",
    Envelope,
    "The tracker's patient state, one record per patient (compacted).",
    compacted=True,
)
# Every topic a deployment runs on: what `followup_admin topics apply|check` lays out.
OPERATED: tuple[TopicSpec, ...] = (*CATALOGUE, TRACKER_STATE)


@dataclass(frozen=True)
class TopicNames:
    """Topic names as deployed. A prefix isolates tests (and tenants) on one broker."""

    prefix: str = ""

    def of(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.name}"

    @property
    def appointments(self) -> str:
        return self.of(APPOINTMENTS)

    @property
    def plans(self) -> str:
        return self.of(PLANS)

    @property
    def contacts(self) -> str:
        return self.of(CONTACTS)

    @property
    def patients(self) -> str:
        return self.of(PATIENTS)

    @property
    def triggers(self) -> str:
        return self.of(TRIGGERS)

    @property
    def notifications(self) -> str:
        return self.of(NOTIFICATIONS)

    @property
    def outcomes(self) -> str:
        return self.of(OUTCOMES)

    @property
    def calltasks(self) -> str:
        return self.of(CALLTASKS)

    @property
    def deadletter(self) -> str:
        return self.of(DEADLETTER)


# ---------------------------------------------------------------- layout (topics as code)

ENV = "FOLLOWUP_TOPICS_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class TopicLayoutError(ValueError):
    """A wrong FOLLOWUP_TOPIC* value; its message is one line naming the variable."""


@dataclass(frozen=True)
class TopicConfig:
    """One topic's layout, as deployed (prefix included): what the catalogue wants, or what
    a broker reports (then only the settings the catalogue states)."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class TopicLayout:
    """How a deployment lays the catalogue out. Defaults suit one local broker; production
    sets replication 3 and min in-sync 2 (deploy/k8s/overlays/prod) and turns auto-creation
    off, so a service refuses to start on a missing or different topic instead of creating
    a wrong one."""

    partitions: int = PARTITIONS
    replication_factor: int = 1
    min_insync_replicas: int = 1
    auto_create: bool = True
    retention_ms: Mapping[str, int] = field(default_factory=dict)  # by TopicSpec.env_key

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TopicLayout:
        layout = cls(
            partitions=_int(environ, f"{ENV}PARTITIONS", PARTITIONS, minimum=1),
            replication_factor=_int(environ, f"{ENV}REPLICATION_FACTOR", 1, minimum=1),
            min_insync_replicas=_int(environ, f"{ENV}MIN_INSYNC_REPLICAS", 1, minimum=1),
            auto_create=_bool(environ, f"{ENV}AUTO_CREATE", True),
        )
        if layout.min_insync_replicas > layout.replication_factor:
            raise TopicLayoutError(
                f"{ENV}MIN_INSYNC_REPLICAS ({layout.min_insync_replicas}) is more than "
                f"{ENV}REPLICATION_FACTOR ({layout.replication_factor}): no write could succeed"
            )
        retention = {}
        for spec in OPERATED:
            name = f"FOLLOWUP_TOPIC_{spec.env_key}_RETENTION_MS"
            if name in environ:
                retention[spec.env_key] = _int(environ, name, spec.retention_ms, minimum=-1)
        return replace(layout, retention_ms=retention)

    def config(self, spec: TopicSpec, names: TopicNames) -> TopicConfig:
        configs = {"min.insync.replicas": str(self.min_insync_replicas)}
        if spec.compacted:
            configs["cleanup.policy"] = "compact"
        else:
            configs["cleanup.policy"] = "delete"
            configs["retention.ms"] = str(self.retention_ms.get(spec.env_key, spec.retention_ms))
        return TopicConfig(
            names.of(spec),
            self.partitions if spec.co_partitioned else spec.partitions,
            self.replication_factor,
            configs,
        )


def problems(wanted: TopicConfig, found: TopicConfig | None) -> list[str]:
    """What differs between the catalogue and the broker, one short line each."""
    if found is None:
        return [f"{wanted.name}: missing"]
    out = []
    if found.partitions != wanted.partitions:
        # Fewer would break co-partitioning; more cannot be undone and moves keys.
        out.append(
            f"{wanted.name}: {found.partitions} partitions, the catalogue says {wanted.partitions}"
        )
    if found.replication_factor < wanted.replication_factor:
        out.append(
            f"{wanted.name}: replication factor {found.replication_factor}, "
            f"the catalogue says {wanted.replication_factor}"
        )
    for key, value in sorted(wanted.configs.items()):
        if found.configs.get(key) != value:
            out.append(f"{wanted.name}: {key}={found.configs.get(key)}, the catalogue says {value}")
    return out


def _int(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TopicLayoutError(f"{name}: not a whole number (got {raw!r})") from None
    if value < minimum:
        raise TopicLayoutError(f"{name}: must be at least {minimum} (got {value})")
    return value


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise TopicLayoutError(f"{name}: expected true or false (got {raw!r})")
