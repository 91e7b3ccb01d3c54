"""One run of the demo: infrastructure, stand-ins, services on a scaled clock, the clinic
simulator, the report, and clean-up. ``python -m demo`` and the end-to-end test use it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiokafka import ConsumerRecord

from common.clock import ScaledClock, SharedClock
from common.codec import DecodeError, decode
from common.kafka import ensure_topics
from common.topic_reader import read_events_to_end, read_to_end
from demo import chat, rebooking, report, workflow
from demo import sites as chain_of_clinics
from demo.bounds import load_policy
from demo.deployment import (
    REPO,
    SERVICES,
    Deployment,
    Ports,
    ensure_infra,
    shared_clock_env,
)
from demo.observe import Metrics, fetch_case_details, fetch_cases, fetch_text
from demo.report import Finding, Observed
from demo.scenario import Scenario, ScenarioConfig, build
from demo.simulator.clinic import Simulation
from demo.simulator.patients import Reactions
from demo.simulator.rig import ClinicRig, Endpoints, StandIns, StandInSecrets
from schemas.events import (
    AppointmentEvent,
    CallTaskEvent,
    DeadLetter,
    NotificationCommand,
    OutcomeEvent,
    TriggerEvent,
)
from schemas.topics import TopicNames
from standins.calltasks import CallTaskReceiver
from standins.mailbox import Mailbox
from standins.twilio import TwilioStandIn

SMS_FROM = "+37052000000"
FRONT_DESK = "front-desk@clinic.example"
CLINIC_NAME = "Vilnius Family Clinic"
# The clinic's name per language (FOLLOWUP_CLINIC_NAMES, JSON): no English inside lt/ru/bg.
CLINIC_NAMES = {
    "lt": "Vilniaus šeimos klinika",
    "ru": "Вильнюсская семейная клиника",
    "bg": "Вилнюска семейна клиника",
}
# The ticketing tool's webhook, the front desk's mailbox (iCalendar), the calltasks topic.
CALL_TASK_SINKS = ("webhook", "email", "kafka")


class RunHooks(Protocol):
    """What a harness adds to a run (the fault suite: proxies, kills, restarts); the demo
    itself has none."""

    async def prepared(self, standins: StandIns, env: dict[str, str]) -> dict[str, str]:
        """Before the services start: settings to change (e.g. a provider behind a proxy)."""
        ...

    async def during(
        self, deployment: Deployment, simulation: Simulation, clock: ScaledClock | SharedClock
    ) -> None:
        """Alongside the clinic, until it closes; awaited before the run settles."""
        ...

    async def finished(self) -> None:
        """After the run was read back, before the services stop."""
        ...


@dataclass
class DemoConfig:
    patients: int = 40
    days: int = 14
    seed: int = 7
    speed: float = 10800.0  # 3 virtual hours per real second: two weeks in ~2 minutes
    kafka: str = "127.0.0.1:19092"
    database_url: str = "postgresql://followup:followup@127.0.0.1:15432/followup"
    output: Path = REPO / ".cache" / "demo"
    demo_ports: bool = True  # 8081-8083 and 2575 when free (the brief's ports)
    # Ports chosen beforehand, e.g. by a test whose Prometheus scrapes them; picked when None.
    ports: Ports | None = None
    keep: bool = False  # keep topics and schemas (for inspection)
    show_progress: bool = True
    startup_lead: float = 15.0  # real seconds the services get before the clinic opens
    settle: float = 4.0  # real seconds for in-flight messages after the last virtual day
    settle_limit: float = 60.0  # then at most this long for the consumers to catch up
    sms_provider: str = "primary"
    unreported_call_share: float = 0.3
    # The instant between a service stamping a fact and acting on it, in real seconds; the
    # checks, which judge by the services' stamps, allow this much times the speed.
    tolerance_real_seconds: float = 0.5
    keep_runs: int = 3  # earlier runs' captures kept under output/
    hooks: RunHooks | None = None
    # The cadence policy file the scheduler runs with (FOLLOWUP_POLICY_PATH; None: its own).
    policy: Path | None = None
    # Issue 18's clinic workflow in the population and the deployment (``demo.workflow``):
    # on for ``python -m demo``, off for the harnesses that reuse this runner.
    workflow: bool = False
    # Issue 21 (``demo.chat``): patients who prefer a chat messenger, the stages explained,
    # and the audit query at the end; on for ``python -m demo``.
    chat: bool = False
    # A population built beforehand (the lab's); None: built from patients, days and seed.
    scenario: Scenario | None = None
    # How patients react to followup; None: as the scenario's behaviours script it.
    reactions: Reactions | None = None
    # A hook (the outcome lab's pacer) leases the shared clock forward itself, holding
    # virtual time back while the services lag; False: it runs freely once the clinic opened.
    shared_clock: bool = False
    # Issue 22: the deployment as a chain of three clinics in two countries, every check
    # per site (``demo.sites``); on for ``python -m demo``, off for the harnesses.
    sites: bool = False
    # Issue 20's rebooking by link (``demo.rebooking``): the hospital's FHIR R4 server with
    # free slots, patients who use the link; on for ``python -m demo``.
    rebooking: bool = False


@dataclass
class DemoResult:
    report: dict[str, Any]
    findings: list[Finding]
    where: dict[str, str]
    observed: Observed
    scenario: Scenario
    simulation_errors: list[str] = field(default_factory=list)
    services_alive: dict[str, bool] = field(default_factory=dict)
    real_seconds: float = 0.0


def say(config: DemoConfig, text: str) -> None:
    if config.show_progress:
        print(text, flush=True)


async def run_demo(config: DemoConfig) -> DemoResult:
    began = time.monotonic()
    ensure_infra(config.kafka, config.database_url)
    run_id = uuid.uuid4().hex[:8]
    run_dir = config.output / f"run-{run_id}"
    prune_runs(config.output, keep=config.keep_runs)
    scenario = config.scenario or build(
        config=ScenarioConfig(
            patients=config.patients,
            days=config.days,
            seed=config.seed,
            unreported_call_share=config.unreported_call_share,
            workflow=config.workflow,
        )
    )
    if config.sites and config.scenario is None:
        scenario = chain_of_clinics.population(scenario)  # the patients spread over the chain
    if config.rebooking and config.scenario is None:
        scenario = rebooking.rebooking_population(scenario)  # some patients use the link
    if config.chat and config.scenario is None:
        chat.population(scenario)  # chat-preferring patients, stages explained
    policy_path = config.policy
    if policy_path is None and config.workflow:
        policy_path = workflow.demo_policy(run_dir)  # a desk at capacity
    if config.chat:
        policy_path = chat.demo_policy(run_dir, policy_path)  # messengers in the fallback
    token = secrets.token_urlsafe(24)
    webhook_secret = secrets.token_urlsafe(24)
    twilio_sid = "AC" + uuid.uuid4().hex
    twilio_token = secrets.token_hex(16)
    ports = config.ports or Ports.pick(config.demo_ports)

    # One virtual clock for everyone: the clinic opens startup_lead seconds from now.
    lead = config.startup_lead + (rebooking.STARTUP_LEAD if config.rebooking else 0.0)
    anchor_real = datetime.now(UTC) + timedelta(seconds=lead)
    anchor_virtual = scenario.start - timedelta(hours=1)
    # One clock file for everyone. Without a pacer (the lab's) it stands still at the
    # clinic's opening until the services are ready and the opening's actions are done
    # (``open_the_clinic``), then runs freely: a busy machine must not make day one late.
    clock = SharedClock.create(run_dir / "clock", anchor_real, anchor_virtual, config.speed)
    clock_env = shared_clock_env(clock.path)
    if not config.shared_clock:
        clock.lease_until(scenario.start)
    run_began = clock.now()  # on the services' clock: the audit query's "since"

    standins = StandIns(clock, run_dir, StandInSecrets(webhook_secret, twilio_sid, twilio_token))
    hospital = (
        rebooking.Hospital(
            scenario, clock, run_dir / "logs", rebooking.closed_days(load_policy(policy_path))
        )
        if config.rebooking
        else None
    )
    # The hospital's FHIR server starts (a JVM, then its seeding) beside everything else.
    if hospital is not None:
        hospital.begin()
    await standins.start()
    mailbox, calltasks, sms = standins.mailbox, standins.calltasks, standins.sms
    chain = None
    if config.sites:
        chain = chain_of_clinics.ChainRun(clock, run_dir, calltasks, webhook_secret)
        await chain.start()

    deployment = Deployment(
        run_id=run_id,
        kafka=config.kafka,
        database_url=config.database_url,
        ports=ports,
        env={
            **clock_env,
            # The names the services read (their Settings; see each service's README).
            "FOLLOWUP_API_TOKEN": token,
            "FOLLOWUP_INGEST_TOKEN": token,
            "FOLLOWUP_CLINIC_TIMEZONE": "Europe/Vilnius",
            # The clinic as each language's patients know it (a profile, not "the clinic").
            "FOLLOWUP_CLINIC_NAME": CLINIC_NAME,
            "FOLLOWUP_CLINIC_NAMES": json.dumps(CLINIC_NAMES, ensure_ascii=False),
            "FOLLOWUP_SMS_PRIMARY_URL": sms.base_url,
            "FOLLOWUP_SMS_PRIMARY_SID": twilio_sid,
            "FOLLOWUP_SMS_PRIMARY_TOKEN": twilio_token,
            "FOLLOWUP_SMS_PRIMARY_FROM": SMS_FROM,
            # Every kind of sink a withdrawal must reach: the report counts each.
            "FOLLOWUP_CALL_TASK_SINKS": ",".join(CALL_TASK_SINKS),
            "FOLLOWUP_WEBHOOK_URL": calltasks.url,
            "FOLLOWUP_WEBHOOK_SECRET": webhook_secret,
            "FOLLOWUP_SMTP_HOST": "127.0.0.1",
            "FOLLOWUP_SMTP_PORT": str(mailbox.port),
            "FOLLOWUP_SMTP_SECURITY": "none",
            "FOLLOWUP_SMTP_SENDER": "followup@clinic.example",
            "FOLLOWUP_FRONT_DESK_EMAIL": FRONT_DESK,
            "FOLLOWUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports.notifier}",
            "FOLLOWUP_LINK_SECRET": secrets.token_urlsafe(24),
            # Polling cadences are real seconds: at thousands of virtual seconds per real
            # second they decide how late a due step fires, so the demo polls often.
            "FOLLOWUP_POLL_SECONDS": "0.1",
            "FOLLOWUP_DETECTION_TICK_SECONDS": "0.1",
            **({"FOLLOWUP_POLICY_PATH": str(policy_path)} if policy_path else {}),
            **(workflow.deployment_env() if config.workflow else {}),
            **(chain.env() if chain is not None else {}),
            **(rebooking.deployment_env(hospital.base_url) if hospital else {}),
        },
        log_dir=run_dir / "logs",
    )
    if config.chat:
        deployment.env.update(
            chat.deployment_env(
                chat_endpoints(standins),
                deployment.schema("audit"),
                tuple(sorted({p.department for p in scenario.patients})),
                CLINIC_NAME,
            )
        )
    if config.hooks is not None:
        deployment.env.update(await config.hooks.prepared(standins, dict(deployment.env)))
    topics = TopicNames(prefix=deployment.topic_prefix)
    rig = ClinicRig(
        scenario,
        clock,
        Endpoints(
            tracker_url=deployment.url("tracker"),
            mllp_host="127.0.0.1",
            mllp_port=ports.mllp,
            notifier_url=deployment.url("notifier"),
            token=token,
            kafka=config.kafka,
            topics=topics,
            sms_provider=config.sms_provider,
        ),
        standins,
        run_id,
        reactions=config.reactions,
    )
    where = {
        "report (JSON)": str(config.output / "report.json"),
        "captured mailbox": str(mailbox.directory),
        "received call tasks": str(calltasks.capture_file),
        "SMS sent (stand-in)": str(sms.capture),
        "service logs": str(deployment.log_dir),
        "events read back": str(run_dir / "events"),
        **(
            {
                f"{name} (stand-in)": str(run_dir / f"{name}.jsonl")
                for name in ("whatsapp", "telegram", "viber")
            }
            if config.chat
            else {}
        ),
        **{
            f"{s} /metrics": f"{deployment.url(s)}/metrics (snapshot: metrics-{s}.txt)"
            for s in SERVICES
        },
        "topic prefix": deployment.topic_prefix,
    }
    if chain is not None:
        where.update(chain.where())
    session = aiohttp.ClientSession()
    result: DemoResult | None = None
    phones: rebooking.LinkPatients | None = None
    try:
        await ensure_topics(config.kafka, topics)
        say(
            config,
            f"run {run_id}: {len(scenario.patients)} patients over {scenario.days} days "
            f"at {config.speed:g}x; topics {deployment.topic_prefix}*",
        )
        deployment.start()
        ready = await deployment.wait_ready()
        late = clock.now() > scenario.start
        say(
            config,
            f"services after {time.monotonic() - began:.0f} s: "
            + ", ".join(
                f"{s} {'ready' if ok else 'NOT READY'} {deployment.url(s)}"
                for s, ok in ready.items()
            )
            + (" (later than the clinic's opening: raise startup_lead)" if late else ""),
        )
        if hospital is not None:
            say(config, hospital.progress())
        simulation = await rig.open()
        opening = None
        if not config.shared_clock:
            opening = asyncio.create_task(open_the_clinic(clock, simulation, scenario.start))
        if chain is not None:
            chain.attach(simulation.on_call_task, config.kafka, topics.calltasks)
        if hospital is not None:
            phones = rebooking.LinkPatients(hospital, session)
            simulation.links = phones
            hospital.open(simulation)
        progress = asyncio.create_task(
            show_progress(config, clock, scenario, simulation, sms, mailbox, calltasks)
        )
        hooked = None
        if config.hooks is not None:
            hooked = asyncio.create_task(config.hooks.during(deployment, simulation, clock))
        try:
            await simulation.run(until=scenario.end)
            if hooked is not None:
                await hooked
            await settle(config, deployment, session)
        finally:
            for task in (progress, hooked, opening):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        say(config, "\nreading back what happened ...")
        everything = await observe(
            config, run_dir, deployment, topics, session, token, sms, mailbox, calltasks, clock
        )
        if chain is not None:
            everything = chain.observed(everything)  # the other desks' tasks
        dump_events(run_dir / "events", everything)
        observed = report.within(everything, scenario.end)
        tolerance = timedelta(seconds=config.tolerance_real_seconds * config.speed)
        policy = load_policy(policy_path)
        computed = report.compute(observed, scenario)
        if chain is None:
            findings = report.check(observed, scenario, policy, tolerance)
            if config.workflow:
                findings += workflow.check(observed, scenario, policy)
        else:  # every check per site, then the chain's own
            findings, computed["sites"] = await chain_of_clinics.report_part(
                chain,
                session,
                (deployment.url("scheduler"), deployment.url("notifier")),
                observed,
                scenario,
                load_policy(policy_path),
                tolerance,
                with_workflow=config.workflow,
                front_desk=FRONT_DESK,
            )
        if config.workflow:
            computed["workflow"] = workflow.counts(observed, scenario, policy)
        if config.chat and rig.chat is not None:
            # The breach protocol's question, while the services still run.
            audit = await chat.ask_audit(
                config.database_url, deployment.schema("audit"), token, run_began
            )
            records = rig.chat.final_records()
            findings += chat.check(observed, scenario, records, audit, tolerance)
            computed["chat"] = chat.counts(observed, scenario, records, audit)
            where["audit answer (ids only)"] = str(chat.save_audit(run_dir, audit))
        if hospital is not None and phones is not None:
            findings += rebooking.check(observed, scenario, hospital, phones.pages)
            computed["rebooking"] = rebooking.counts(observed, hospital, phones)
        computed["run"] = {
            "run_id": run_id,
            "speed": config.speed,
            "real_seconds": round(time.monotonic() - began, 1),
            "clinic_actions_failed": len(simulation.progress.errors),
            "simulation_errors": simulation.progress.errors[:50],
            "services_alive": deployment.alive(),
            # The longest trigger -> case delay: how far CPU load stretched the pipeline.
            "pipeline_hop_virtual_minutes": round(
                report.hop_delay(observed).total_seconds() / 60, 1
            ),
        }
        report.write_json(config.output / "report.json", computed, findings, where)
        report.write_json(run_dir / "report.json", computed, findings, where)
        result = DemoResult(
            report=computed,
            findings=findings,
            where=where,
            observed=observed,
            scenario=scenario,
            simulation_errors=simulation.progress.errors,
            services_alive=deployment.alive(),
            real_seconds=time.monotonic() - began,
        )
        return result
    finally:
        if config.hooks is not None:
            await config.hooks.finished()
        await deployment.stop()
        if hospital is not None:
            await hospital.stop()
        await rig.close()
        await session.close()
        if chain is not None:
            await chain.stop()
        await standins.stop()
        if not config.keep:
            try:
                await deployment.clean_up()
            except Exception as exc:  # clean-up must not hide the run's own result
                print(f"clean-up incomplete: {type(exc).__name__}", file=sys.stderr)


def chat_endpoints(standins: StandIns) -> chat.ChatEndpoints:
    """The messengers' stand-ins as the notifier is configured to reach them."""
    s = standins.secrets
    return chat.ChatEndpoints(
        whatsapp_url=f"{standins.whatsapp.base_url}/v21.0",
        whatsapp_phone_number_id=standins.whatsapp.phone_number_id,
        whatsapp_token=s.whatsapp_token,
        whatsapp_app_secret=s.whatsapp_app_secret,
        whatsapp_verify_token=s.whatsapp_verify_token,
        telegram_url=standins.telegram.base_url,
        telegram_bot_token=s.telegram_bot_token,
        telegram_secret=s.telegram_secret,
        viber_url=standins.viber.base_url,
        viber_token=s.viber_token,
    )


async def observe(
    config: DemoConfig,
    run_dir: Path,
    deployment: Deployment,
    topics: TopicNames,
    session: aiohttp.ClientSession,
    token: str,
    sms: TwilioStandIn,
    mailbox: Mailbox,
    calltasks: CallTaskReceiver,
    clock: SharedClock,
) -> Observed:
    appointments, received = received_appointments(
        await read_to_end(config.kafka, topics.appointments), clock
    )
    triggers, _ = await read_events_to_end(config.kafka, topics.triggers, TriggerEvent)
    notifications, _ = await read_events_to_end(
        config.kafka, topics.notifications, NotificationCommand
    )
    outcomes, _ = await read_events_to_end(config.kafka, topics.outcomes, OutcomeEvent)
    dead, _ = await read_events_to_end(config.kafka, topics.deadletter, DeadLetter)
    topic_tasks, _ = await read_events_to_end(config.kafka, topics.calltasks, CallTaskEvent)
    metrics = {}
    for service in SERVICES:
        text = await fetch_text(session, f"{deployment.url(service)}/metrics")
        # The services stop with the demo: a snapshot of each /metrics stays with the run.
        (run_dir / f"metrics-{service}.txt").write_text(text)
        metrics[service] = Metrics.parse(text)
    cases = await fetch_cases(session, deployment.url("scheduler"), token)
    details = await fetch_case_details(session, deployment.url("scheduler"), token, cases or [])
    return Observed(
        appointments=appointments,
        appointments_received=received,
        triggers=triggers,
        notifications=notifications,
        outcomes=outcomes,
        dead_letters=len(dead),
        sms=list(sms.records),
        replies=list(sms.replies),
        mail=list(mailbox.records),
        call_tasks=list(calltasks.captured),
        call_tasks_refused=calltasks.refused,
        topic_call_tasks=topic_tasks,
        sinks=CALL_TASK_SINKS,
        metrics=metrics,
        cases=cases,
        case_details=details,
    )


async def open_the_clinic(clock: SharedClock, simulation: Simulation, opening: datetime) -> None:
    """Let virtual time run on once the clinic's opening actions (every registration, plan
    and booking due at the opening) are acknowledged: on a busy machine that burst takes
    real seconds, which at the demo's speed would land it virtual hours late."""
    while clock.now() < opening or simulation.behind(opening):
        await asyncio.sleep(0.05)
    clock.lease_until(None)


def received_appointments(
    records: list[ConsumerRecord[bytes, bytes]], clock: SharedClock
) -> tuple[list[AppointmentEvent], dict[str, datetime]]:
    """The appointment events, and when the tracker wrote each (the record's timestamp, its
    producer's wall clock, in virtual time): what the tracker could know at a no-show
    moment, whatever the clinic's message was stamped."""
    events: list[AppointmentEvent] = []
    received: dict[str, datetime] = {}
    for record in records:
        try:
            event = decode(AppointmentEvent, record.value)
        except DecodeError:
            continue
        events.append(event)
        at = clock.virtual_at(datetime.fromtimestamp(record.timestamp / 1000, UTC))
        if at is not None:
            received.setdefault(event.event_id, at)
    return events, received


async def settle(
    config: DemoConfig, deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """Let in-flight messages land: ``config.settle`` seconds, then until every service's
    consumers have caught up (lag 0 twice in a row), however long a busy machine needs,
    up to ``config.settle_limit``."""
    await asyncio.sleep(config.settle)
    deadline = time.monotonic() + config.settle_limit
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        lag = 0.0
        for service in SERVICES:
            text = await fetch_text(session, f"{deployment.url(service)}/metrics")
            lag += Metrics.parse(text).total("followup_kafka_consumer_lag")
        quiet = quiet + 1 if lag == 0 else 0
        await asyncio.sleep(0.5)


def prune_runs(output: Path, keep: int) -> None:
    """Keep the captures of the last ``keep`` runs (the new one makes keep + 1)."""
    runs = sorted(output.glob("run-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def dump_events(directory: Path, observed: Observed) -> None:
    """What was read back from the topics, one JSON line per event (ids, no contact data)."""
    directory.mkdir(parents=True, exist_ok=True)
    streams: dict[str, list[Any]] = {
        "appointments": observed.appointments,
        "triggers": observed.triggers,
        "notifications": observed.notifications,
        "outcomes": observed.outcomes,
    }
    for name, events in streams.items():
        lines = [e.model_dump_json() for e in events]
        (directory / f"{name}.jsonl").write_text("".join(f"{line}\n" for line in lines))
    if observed.cases is not None:
        (directory / "cases.json").write_text(json.dumps(observed.cases, indent=1, default=str))


async def show_progress(
    config: DemoConfig,
    clock: ScaledClock | SharedClock,
    scenario: Scenario,
    simulation: Simulation,
    sms: TwilioStandIn,
    mailbox: Mailbox,
    calltasks: CallTaskReceiver,
) -> None:
    if not config.show_progress:
        return
    tty = sys.stdout.isatty()
    while True:
        now = clock.now().astimezone(scenario.start.tzinfo)
        day = max(0.0, (now - scenario.start).total_seconds() / 86400)
        p = simulation.progress
        if now < scenario.start:
            wait = (scenario.start - now).total_seconds() / clock.speed
            line = f"the clinic opens in {wait:.0f} s"
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            await asyncio.sleep(1.0 if tty else 5.0)
            continue
        line = (
            f"day {day:5.1f}/{scenario.days} {now:%a %d %b %H:%M}  "
            f"clinic actions {sum(p.actions.values()):4d}  "
            f"call tasks {len(calltasks.captured):3d}  "
            f"sms {len(sms.records):3d}  mail {len(mailbox.records):3d}  "
            f"reported {sum(p.call_reports.values()):3d}  rebooked {p.rebookings:3d}  "
            f"STOP {p.replies:2d}  errors {len(p.errors)}"
        )
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        await asyncio.sleep(1.0 if tty else 5.0)
