"""The command line: argparse, one sub-command per operator task, one line per failure."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from kafka.errors import KafkaError, KafkaTimeoutError
from pydantic import ValidationError

from common.config import ConfigError, load
from followup_admin import audit, cases, deadletters, erasure, lag, topics
from followup_admin.config import AdminSettings, Deployment

EPILOG = """Configuration comes from the services' own variables: FOLLOWUP_KAFKA_BOOTSTRAP,
FOLLOWUP_TOPIC_PREFIX, FOLLOWUP_TOPICS_* (the topic layout), FOLLOWUP_SCHEDULER_URL and
FOLLOWUP_API_TOKEN (cases), FOLLOWUP_DATABASE_URL and FOLLOWUP_AUDIT_SCHEMA (audit). See
docs/runbook.md."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m followup_admin",
        description="followup's operator tool: topics, dead letters, consumer lag, cases.",
        epilog=EPILOG,
    )
    top.add_argument("--bootstrap", help="Kafka bootstrap servers (FOLLOWUP_KAFKA_BOOTSTRAP)")
    top.add_argument("--prefix", help="topic prefix of the deployment (FOLLOWUP_TOPIC_PREFIX)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("topics", help="lay the topic catalogue out on the broker, or check it")
    t_sub = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = t_sub.add_parser(
        "apply",
        help="create missing topics, set the catalogue's settings on existing ones",
        description="Create missing topics and set cleanup.policy, min.insync.replicas and "
        "retention.ms as the catalogue says. Partition counts and replication factors are "
        "reported, never changed in place. Exit 1 when something needs a person.",
    )
    apply.add_argument(
        "--dry-run", action="store_true", help="say what would change, change nothing"
    )
    t_sub.add_parser(
        "check",
        help="compare the broker with the catalogue",
        description="Print every topic that is missing or differs; exit 1 when one does.",
    )

    d = sub.add_parser("deadletters", help="list, show or replay dead letters")
    d_sub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = d_sub.add_parser(
        "list",
        help="one line per dead letter: position, time, error type, source, reason",
        description="Reasons name fields, never values: the list holds no personal data.",
    )
    _selection_arguments(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = d_sub.add_parser("show", help="one dead letter in full")
    show.add_argument("position", help="PARTITION:OFFSET on the dead-letter topic (from `list`)")
    show.add_argument(
        "--original",
        action="store_true",
        help="also print the original record (it may hold personal data)",
    )
    replay = d_sub.add_parser(
        "replay",
        help="publish the selected letters' original records to their source topics",
        description="After fixing what refused them: sends each selected letter's original "
        "bytes and key back to its source topic. Letters from HTTP or MLLP input have no "
        "topic and are skipped. Consumers are idempotent, so a second replay changes nothing.",
    )
    _selection_arguments(replay)
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be replayed, publish nothing"
    )
    replay.add_argument(
        "--all", action="store_true", help="replay every letter when no filter is given"
    )

    lag_cmd = sub.add_parser(
        "lag",
        help="consumer lag by group and topic",
        description="Latest offset minus committed offset, per group and topic. Without "
        "--group: every group whose id starts with the topic prefix.",
    )
    lag_cmd.add_argument("--group", action="append", default=[], help="a group id (repeatable)")
    lag_cmd.add_argument("--json", action="store_true", help="JSON instead of a table")

    c = sub.add_parser(
        "cases",
        help="a summary of the follow-up cases from the scheduler's case API",
        description="Counts by state, reason and resolution, the oldest open case and the "
        "nearest stage deadline, read through GET /cases with FOLLOWUP_API_TOKEN.",
    )
    c.add_argument("--url", help="the scheduler's base URL (FOLLOWUP_SCHEDULER_URL)")
    c.add_argument("--state", choices=("open", "contacting", "escalating", "closed"))
    c.add_argument("--reason", help="trigger kind, e.g. no_show")
    c.add_argument("--department")
    c.add_argument("--json", action="store_true", help="JSON instead of text")

    e = sub.add_parser(
        "erase",
        help="erase a patient's personal data everywhere (a GDPR erasure request)",
        description="Publishes an erasure (status erased on followup.patients) and a "
        "tombstone on followup.contacts: the notifier, scheduler and topic compaction remove "
        "the patient's names, phone, email and notes; ids stay, and each service records "
        "the erasure. The patient is not contacted again until the hospital sends them anew.",
    )
    e.add_argument("patient_id", help="the hospital's patient id")
    e.add_argument("--requested-by", default="followup-admin", help="who asked (an id)")
    e.add_argument("--dry-run", action="store_true", help="print what would be sent, send nothing")

    a = sub.add_parser(
        "audit",
        help="what could a credential have seen since a moment (the breach protocol)",
        description="Reads the audit log of reads of personal data (PostgreSQL, "
        "FOLLOWUP_AUDIT_SCHEMA): per patient id the fields shown, the reads, first and last, "
        "and the routes. Ids only. Name the credential by its id (--credential, as the log "
        "writes it), or give the leaked secret on standard input (--secret-stdin) and its "
        "kind: the tool computes the fingerprint and never prints the secret.",
    )
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--credential", help="a credential id, e.g. api_token:1a2b3c4d5e6f")
    who.add_argument(
        "--secret-stdin", action="store_true", help="read the leaked token or link on stdin"
    )
    a.add_argument(
        "--kind",
        default="api_token",
        choices=("api_token", "report_link"),
        help="what the secret on stdin is (a service's API token, a report link's token)",
    )
    a.add_argument("--since", required=True, help="ISO 8601 with an offset, e.g. 2026-12-01T00:00Z")
    a.add_argument("--json", action="store_true", help="JSON instead of a table")
    return top


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", help="only letters whose reason contains this text (any case)")
    p.add_argument("--error-type", help="only this error type (invalid_event, invalid_json, ...)")
    p.add_argument("--source-topic", help="only letters from this topic (with or without prefix)")
    p.add_argument(
        "--position", action="append", default=[], help="only PARTITION:OFFSET (repeatable)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load(AdminSettings)
        if args.bootstrap:
            settings = settings.model_copy(update={"kafka_bootstrap": args.bootstrap})
        if args.prefix is not None:
            settings = settings.model_copy(update={"topic_prefix": args.prefix})
        return _run(args, settings, Deployment.of(settings))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
    except cases.CaseApiError as error:
        print(f"error: {error}", file=sys.stderr)
    except KafkaTimeoutError as error:
        print(
            f"error: no Kafka broker answered at {settings.kafka_bootstrap} ({error}): "
            "set FOLLOWUP_KAFKA_BOOTSTRAP or --bootstrap",
            file=sys.stderr,
        )
    except KafkaError as error:
        print(f"error: Kafka refused: {type(error).__name__}: {error}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, settings: AdminSettings, deployment: Deployment) -> int:
    if args.command == "topics":
        return _topics(args, deployment)
    if args.command == "deadletters":
        return _deadletters(args, deployment)
    if args.command == "erase":
        return _erase(args, deployment)
    if args.command == "audit":
        return _audit(args, settings)
    if args.command == "lag":
        rows = lag.lag(deployment, lag.groups_of(deployment, args.group))
        if args.json:
            print(json.dumps([row.__dict__ for row in rows], indent=2))
        else:
            print(f"{'group':<48} {'topic':<48} {'parts':>5} {'lag':>9}")
            for row in rows:
                note = f"  ({row.uncommitted} never committed)" if row.uncommitted else ""
                print(f"{row.group:<48} {row.topic:<48} {row.partitions:>5} {row.lag:>9}{note}")
        return 0
    filters = {k: v for k in ("state", "reason", "department") if (v := getattr(args, k))}
    summary = cases.summarise(
        args.url or settings.scheduler_url,
        settings.api_token,
        filters,
        settings.request_timeout_seconds,
    )
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        _print_cases(summary)
    return 0


def _audit(args: argparse.Namespace, settings: AdminSettings) -> int:
    try:
        since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    except ValueError:
        print("error: --since is not an ISO 8601 moment", file=sys.stderr)
        return 2
    if since.tzinfo is None:
        print("error: --since needs an offset (Z or +02:00)", file=sys.stderr)
        return 2
    if args.secret_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            print("error: no secret on standard input", file=sys.stderr)
            return 2
        # A report link is given whole: its token is the last part of the path.
        if args.kind == "report_link":
            secret = secret.rstrip("/").rsplit("/", 1)[-1]
        credential = audit.credential_of(args.kind, secret)
    else:
        credential = args.credential
    found = audit.seen(str(settings.database_url), settings.audit_schema, credential, since)
    if args.json:
        print(json.dumps(audit.as_json(found, credential, since), indent=2))
        return 0
    print(f"{credential} since {since.isoformat()}: {len(found)} patient(s)")
    for s in found:
        print(
            f"  {s.patient_id:<24} {s.reads:>5} read(s) {s.first_at.isoformat()} .. "
            f"{s.last_at.isoformat()}  fields: {', '.join(s.fields)}  via: {', '.join(s.routes)}"
        )
    return 0


def _erase(args: argparse.Namespace, deployment: Deployment) -> int:
    try:
        event = erasure.plan(args.patient_id, args.requested_by)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
        print(f"error: not an id: {', '.join(fields)}", file=sys.stderr)
        return 2
    names = deployment.names
    print(f"erasure {event.event_id} of patient {event.patient_id}:")
    print(f"  {names.patients}: status erased, requested by {event.requested_by}")
    print(f"  {names.contacts}: tombstone (the contact leaves the topic at compaction)")
    if args.dry_run:
        print("dry run: nothing sent")
        return 0
    erasure.erase(deployment, event)
    print("sent")
    return 0


def _topics(args: argparse.Namespace, deployment: Deployment) -> int:
    if args.action == "check":
        found = topics.check(deployment)
        for line in found:
            print(line)
        if not found:
            print(f"all {len(topics.wanted(deployment))} topics as the catalogue says")
        return 1 if found else 0
    done, refused = topics.apply(deployment, dry_run=args.dry_run)
    for line in done:
        print(line)
    for line in refused:
        print(f"needs a person: {line}")
    if not done and not refused:
        print("nothing to do: every topic is as the catalogue says")
    return 1 if refused else 0


def _deadletters(args: argparse.Namespace, deployment: Deployment) -> int:
    if args.action == "show":
        wanted = deadletters.Selection(positions=frozenset({args.position}))
        for item in deadletters.read(deployment):
            if wanted.matches(item, deployment):
                print(json.dumps(deadletters.details(item, original=args.original), indent=2))
                return 0
        print(f"error: no dead letter at {args.position}", file=sys.stderr)
        return 1
    selection = deadletters.Selection(
        reason=args.reason,
        error_type=args.error_type,
        source_topic=args.source_topic,
        positions=frozenset(args.position),
    )
    if args.action == "list":
        everything = selection == deadletters.Selection()
        for item in deadletters.read(deployment):
            if not (everything or selection.matches(item, deployment)):
                continue
            if not args.json:
                print(deadletters.summary_line(item))
            elif item.letter is None:
                print(json.dumps({"position": item.position, "dead_letter": False}))
            else:
                print(json.dumps(deadletters.details(item, original=False)))
        return 0
    if selection == deadletters.Selection() and not args.all:
        print(
            "error: give a filter (--reason, --error-type, --source-topic, --position) or --all",
            file=sys.stderr,
        )
        return 2
    report = deadletters.replay(deployment, selection, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    for line in report.replayed:
        print(f"{verb} {line}")
    for line in report.skipped:
        print(f"skipped {line}")
    print(f"{verb} {len(report.replayed)}, skipped {len(report.skipped)}")
    return 0


def _print_cases(summary: cases.CaseSummary) -> None:
    print(f"cases: {summary.total}")
    for title, counts in (
        ("by state", summary.by_state),
        ("by reason", summary.by_reason),
        ("by resolution", summary.by_resolution),
    ):
        if counts:
            print(f"  {title}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    if summary.oldest_open_since is not None:
        age = datetime.now(UTC) - summary.oldest_open_since
        print(
            f"  oldest open case: {summary.oldest_open_case}, opened "
            f"{summary.oldest_open_since.isoformat()} ({age.days} d ago)"
        )
    if summary.nearest_deadline is not None:
        print(
            f"  nearest stage deadline: {summary.nearest_deadline_case}, "
            f"{summary.nearest_deadline.isoformat()}"
        )
