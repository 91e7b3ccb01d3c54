"""Children who were not brought (issue 18), through the three real services as processes on
the real broker and database: a child's record and two missed visits, either over FHIR (the
R4 specification's own infant example, her mother as contact; Appointments marked noshow)
or over HL7 v2 on MLLP (an ADT^A28 with PID-7 and the mother in NK1, then two SIU^S26 in the
shape of the HL7 v2.5 sample of tests/corpus/hl7/07-hl7v25-s26-noshow.hl7). The
first no-show's call task asks for a parent or guardian; the second makes the case a
safeguarding case whose call task reaches the named lead. The birth date reaches the
scheduler's patient record and nothing else: no command, call task or log."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from common.kafka import ensure_topics
from common.launcher import ServiceProcess
from schemas.events import CallTaskEvent, NotificationCommand
from schemas.topics import TopicNames
from services.scheduler.policy import DEFAULT_POLICY_PATH
from tests.support import infra
from tests.support.kafka import read_all
from tests.support.mllp import connect, msa
from tests.support.polling import eventually, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INFANT = REPO / "tests/unit/tracker/fhir_r4_examples/patient-example-infant-twin-1.json"
PATIENT = "infant-twin-1"
TOKEN = "test-token"


def always_open_policy(tmp_path: Path) -> Path:
    """The shipped policy, open every hour of every day and without public holidays, so the
    safeguarding lead's task goes out whenever the test runs."""
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    start, end = text.index("  business_hours:"), text.index("  call_window:")
    days = "".join(f'    {d}: "00:00-23:59"\n' for d in ("mon", "tue", "wed", "thu", "fri"))
    days += "".join(f'    {d}: "00:00-23:59"\n' for d in ("sat", "sun"))
    hours = f'  business_hours:\n{days}  call_slots:\n    day: "00:00-23:59"\n'
    text = text[:start] + hours + text[end:]
    text = text.replace("  country: LT\n", "  country: null\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    names = TopicNames(prefix=f"t{unique}.")
    policy = always_open_policy(tmp_path)
    processes: dict[str, ServiceProcess] = {}
    mllp = free_port()
    for service in ("tracker", "scheduler", "notifier"):
        port = free_port()
        env = {
            "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
            "FOLLOWUP_DATABASE_URL": infra.DATABASE_URL,
            "FOLLOWUP_TOPIC_PREFIX": names.prefix,
            "FOLLOWUP_DB_SCHEMA": f"t_{unique}_{service}",
            "FOLLOWUP_CONSUMER_GROUP": f"{names.prefix}{service}",
            "FOLLOWUP_MLLP_PORT": str(mllp),
            "FOLLOWUP_API_TOKEN": TOKEN,
            "FOLLOWUP_INGEST_TOKEN": TOKEN,
            "FOLLOWUP_LINK_SECRET": "test-link-secret",
            "FOLLOWUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "FOLLOWUP_POLICY_PATH": str(policy),
            "FOLLOWUP_QUIET_START": "00:00",
            "FOLLOWUP_QUIET_END": "00:00",
            "FOLLOWUP_LOG_FORMAT": "json",
        }
        log = tmp_path / f"{service}.log"
        processes[service] = ServiceProcess(service, port, env, log=log)
    world = {"names": names, "processes": processes, "unique": unique, "logs": tmp_path}
    yield world | {"mllp": mllp}
    for process in processes.values():
        process.terminate(timeout=30)


def post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def missed_visit(appointment: str, start: datetime) -> dict[str, Any]:
    """A FHIR Appointment the scheduling system marks ``noshow`` after the visit."""
    return {
        "resourceType": "Appointment",
        "id": appointment,
        "meta": {"versionId": "2", "lastUpdated": (start + timedelta(hours=1)).isoformat()},
        "status": "noshow",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": f"Patient/{PATIENT}"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-7"}, "status": "accepted"},
            {"actor": {"reference": "Location/paediatrics"}, "status": "accepted"},
        ],
    }


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def adt_a28(now: datetime) -> str:
    """The child's record (ADT^A28, v2.5): PID-7 her birth date, NK1 her mother."""
    return "\r".join(
        [
            f"MSH|^~\\&|HIS|MAIN|FOLLOWUP|TRACKER|{ts(now)}||ADT^A28^ADT_A05|R-1|P|2.5",
            f"EVN|A28|{ts(now)}",
            f"PID|1||{PATIENT}^^^MAIN^MR||SOLO^JAINA||20170515|F",
            "NK1|1|ORGANA^LEIA|MTH^Mother^HL70063||+31201234567",
        ]
    )


def siu_s26(control: str, appointment: str, start: datetime, now: datetime) -> str:
    """A no-show as the HL7 v2.5 sample reports one (SIU^S26, SCH-25 Noshow)."""
    begin, end = ts(start), ts(start + timedelta(minutes=30))
    return "\r".join(
        [
            f"MSH|^~\\&|SCHEDULER|MAIN|FOLLOWUP|TRACKER|{ts(now)}||SIU^S26^SIU_S12|{control}|P|2.5",
            f"SCH|{appointment}^{appointment}|{appointment}^{appointment}|||{appointment}|"
            f"NORMAL^Routine^HL70276|EXAM^Physical exam|NORMAL|30|min|^^30^{begin}^{end}|||||"
            "JSMITH^SMITH^JOHN|555-1212|||JSMITH^SMITH^JOHN|||||Noshow",
            f"PID|1||{PATIENT}^^^MAIN^MR||SOLO^JAINA||20170515|F",
            "RGS|1|A",
            "AIL|1|A|paediatrics^^^MAIN|",
            f"AIP|1|A|dr-7^SMITH^ELLEN|4^Physician||{begin}|0|min|30|min",
        ]
    )


async def over_mllp(port: int, text: str) -> None:
    sender = await connect(port)
    try:
        await sender.send(text.encode())
        assert msa(await sender.ack())[0] == "AA"
    finally:
        sender.writer.close()


async def call_tasks(names: TopicNames) -> list[CallTaskEvent]:
    records = await read_all(infra.KAFKA_BOOTSTRAP, names.calltasks, quiet=0.5)
    return [CallTaskEvent.model_validate_json(r.value) for r in records if r.value]


@pytest.mark.parametrize("path", ["fhir", "hl7"])
async def test_a_childs_repeated_no_show_reaches_the_safeguarding_lead(
    world: dict[str, Any], path: str
) -> None:
    names: TopicNames = world["names"]
    processes: dict[str, ServiceProcess] = world["processes"]
    await ensure_topics(infra.KAFKA_BOOTSTRAP, names)
    for process in processes.values():
        process.start()
    for process in processes.values():
        await process.wait_ready(timeout=120)
    tracker = processes["tracker"].url
    scheduler_schema = f"t_{world['unique']}_scheduler"
    db = await asyncpg.connect(infra.DATABASE_URL)
    try:
        now = datetime.now(UTC).replace(microsecond=0)

        async def missed(number: int, start: datetime) -> None:
            if path == "fhir":
                assert post(f"{tracker}/fhir/Appointment", missed_visit(f"v-{number}", start))
            else:
                await over_mllp(world["mllp"], siu_s26(f"S-{number}", f"v-{number}", start, now))

        if path == "fhir":
            assert post(f"{tracker}/fhir/Patient", json.loads(INFANT.read_text())) in (200, 201)
        else:
            await over_mllp(world["mllp"], adt_a28(now))

        async def child_known() -> bool:
            found = await db.fetchval(
                f"SELECT birth_date FROM {scheduler_schema}.patient_status WHERE patient_id = $1",
                PATIENT,
            )
            return found is not None

        await eventually(child_known, timeout=60)
        await missed(1, now - timedelta(days=7))

        async def family_task() -> list[CallTaskEvent]:
            return [t for t in await call_tasks(names) if t.purpose == "follow_up"]

        (first,) = await eventually(family_task, timeout=60)
        # The number is the mother's (FHIR Patient.contact); the caller asks for a parent or
        # guardian and greets nobody by the child's name.
        assert [line.lower() for line in first.script.splitlines()[:2]] == [
            "call the patient's contact person: leia organa.",
            "the patient is a child: speak with a parent or guardian.",
        ]
        assert "jaina" not in first.script.lower()
        assert not first.safeguarding

        await missed(2, now - timedelta(hours=3))

        async def lead_task() -> list[CallTaskEvent]:
            return [
                t
                for t in await call_tasks(names)
                if t.purpose == "escalation" and t.action == "create"
            ]

        (lead,) = await eventually(lead_task, timeout=60)
        assert lead.owner == "safeguarding_lead" and lead.safeguarding
        assert lead.practitioner_id == "safeguarding_lead"
        assert lead.case_id == first.case_id  # the second missed visit joined the case
        assert "SAFEGUARDING" in lead.script
        # The family's call task still out was withdrawn: the lead decides what follows.
        withdrawn = [t for t in await call_tasks(names) if t.action == "withdraw"]
        assert [t.task_id for t in withdrawn] == [first.task_id]

        records = await read_all(infra.KAFKA_BOOTSTRAP, names.notifications)
        commands = [NotificationCommand.model_validate_json(r.value) for r in records if r.value]
        assert {c.audience for c in commands} == {"guardian"}
        assert any(c.safeguarding and c.escalate_to == "safeguarding_lead" for c in commands)
        row = await db.fetchrow(
            f"SELECT child, safeguarding_at, state FROM {scheduler_schema}.cases"
            " WHERE case_id = $1",
            first.case_id,
        )
        assert row is not None and row["child"] and row["safeguarding_at"] is not None
        assert row["state"] == "escalating"
        # The supervisor's worklist shows it among the safeguarding cases.
        request = urllib.request.Request(
            f"{processes['scheduler'].url}/cases?safeguarding=true",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            listed = json.load(response)["cases"]
        assert [(c["case_id"], c["child"]) for c in listed] == [(first.case_id, True)]
    finally:
        await db.close()
    # The birth date (2017-05-15) is on no command, no call task and in no log.
    every = [r.value or b"" for r in await read_all(infra.KAFKA_BOOTSTRAP, names.notifications)]
    every += [r.value or b"" for r in await read_all(infra.KAFKA_BOOTSTRAP, names.calltasks)]
    for process in processes.values():
        process.terminate(timeout=30)
    logs = "".join((world["logs"] / f"{s}.log").read_text() for s in processes)
    for text in [*(v.decode() for v in every), logs]:
        assert "2017-05-15" not in text and "20170515" not in text
