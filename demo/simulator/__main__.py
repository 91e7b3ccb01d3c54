"""`python -m demo.simulator`: play a clinic against a running followup deployment.

The clinic's data goes in through the deployment's real ingest paths (MLLP, FHIR, Kafka);
the stand-ins listen on the given ports, so point the deployment's notifier at them:
FOLLOWUP_SMS_PRIMARY_URL=http://127.0.0.1:<sms-port> (with the same account sid and auth
token), the call-task webhook at http://127.0.0.1:<calltask-port>/call-tasks (same secret)
and SMTP at 127.0.0.1:<smtp-port>. Time comes from the same FOLLOWUP_CLOCK* variables the
services use (a scaled clock, or the system clock: then the clinic runs in real time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from common.config import Settings, load_or_exit
from demo.scenario import CLINIC_ZONE, ScenarioConfig, build
from demo.simulator.rig import ClinicRig, Endpoints, StandIns, StandInSecrets
from schemas.topics import TopicNames


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m demo.simulator", description=__doc__)
    parser.add_argument("--tracker-url", default=env("SIM_TRACKER_URL", "http://127.0.0.1:8081"))
    parser.add_argument("--mllp", default=env("SIM_MLLP", "127.0.0.1:2575"), help="host:port")
    parser.add_argument("--notifier-url", default=env("SIM_NOTIFIER_URL", "http://127.0.0.1:8083"))
    parser.add_argument("--token", default=env("FOLLOWUP_API_TOKEN", ""), help="bearer token")
    parser.add_argument("--sms-provider", default="primary")
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--sms-port", type=int, default=8090)
    parser.add_argument("--calltask-port", type=int, default=8091)
    parser.add_argument("--webhook-secret", default=env("FOLLOWUP_WEBHOOK_SECRET", ""))
    parser.add_argument("--twilio-sid", default=env("FOLLOWUP_SMS_PRIMARY_SID", ""))
    parser.add_argument("--twilio-token", default=env("FOLLOWUP_SMS_PRIMARY_TOKEN", ""))
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", help="ISO datetime; default: the clock's next hour")
    parser.add_argument("--output", type=Path, default=Path(".cache/demo/simulator"))
    return parser.parse_args(argv)


async def simulate(args: argparse.Namespace) -> int:
    settings = load_or_exit(Settings)  # FOLLOWUP_KAFKA_BOOTSTRAP, _TOPIC_PREFIX, _CLOCK*
    clock = settings.make_clock()
    now = clock.now().astimezone(ZoneInfo(CLINIC_ZONE))
    start = (
        datetime.fromisoformat(args.start)
        if args.start
        else now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    )
    scenario = build(
        config=ScenarioConfig(patients=args.patients, days=args.days, seed=args.seed, start=start)
    )
    host, port = args.mllp.rsplit(":", 1)
    run_id = uuid.uuid4().hex[:8]
    standins = StandIns(
        clock, args.output, StandInSecrets(args.webhook_secret, args.twilio_sid, args.twilio_token)
    )
    await standins.start(args.smtp_port, args.sms_port, args.calltask_port)
    endpoints = Endpoints(
        tracker_url=args.tracker_url,
        mllp_host=host,
        mllp_port=int(port),
        notifier_url=args.notifier_url,
        token=args.token,
        kafka=settings.kafka_bootstrap,
        topics=TopicNames(prefix=settings.topic_prefix),
        sms_provider=args.sms_provider,
    )
    rig = ClinicRig(scenario, clock, endpoints, standins, run_id)
    try:
        simulation = await rig.open()
        print(f"clinic of {len(scenario.patients)} patients from {start.isoformat()}", flush=True)
        await simulation.run(until=scenario.end)
        p = simulation.progress
        summary = {
            "clinic_actions": dict(p.actions),
            "call_tasks_received": len(standins.calltasks.captured),
            "call_results_reported": dict(p.call_reports),
            "sms_received": len(standins.sms.records),
            "replies_sent": p.replies,
            "mail_received": len(standins.mailbox.records),
            "rebookings": p.rebookings,
            "errors": p.errors[:20],
        }
        print(json.dumps(summary, indent=2))
        return 0 if not p.errors else 1
    finally:
        await rig.close()
        await standins.stop()


def main() -> int:
    return asyncio.run(simulate(parse_args(sys.argv[1:])))


if __name__ == "__main__":
    sys.exit(main())
