"""The per-site overhead of a clinic chain (issue 22): 50 sites against one implicit site.

- the tracker reading one HL7 SIU message: attributed to one of 50 sites (MSH-4 looked up,
  the site's zone and department used) against the same message without a sites file;
- detection holding ``tracked`` appointments spread over 50 sites (each with its site on
  the tracked appointment and the trigger) against the same appointments without a site;
  then ``due()`` making each one a no-show;
- the scheduler's ``rules_for`` of a case of one of 50 sites (the site's own resolution)
  against the policy file's own; and resolving 50 sites' rules (what a start-up or a
  changed sites file costs).

Pure and in memory (the per-site work is a lookup in each path; the broker and the
database do the same with or without sites). Sizes: ``FOLLOWUP_BENCH_TRACKED`` (default
100,000; ``--big`` the trend 100,000 / 250,000 / 1,000,000; or a comma-separated list).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.harness import Figure, Observation, compare
from common.sites import Sites
from schemas.events import AppointmentEvent
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from services.tracker.detection import DetectionRules, Detector
from services.tracker.hl7_siu import read

SITE_COUNT = 50
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ZONES = ("Europe/Vilnius", "Europe/Sofia", "Europe/Riga", "Europe/Warsaw", "Europe/Lisbon")
COUNTRIES = ("LT", "BG", "LV", "PL", "PT")


def chain(count: int = SITE_COUNT) -> Sites:
    """``count`` sites in five zones and countries, each with its hours and an override."""
    lines = ["sites:"]
    for n in range(count):
        lines += [
            f"  site-{n:02d}:",
            f"    facilities: [FAC{n:02d}]",
            f"    timezone: {ZONES[n % len(ZONES)]}",
            f"    holidays_country: {COUNTRIES[n % len(COUNTRIES)]}",
            '    business_hours: {mon: "08:00-18:00", tue: "08:00-18:00", wed: "08:00-18:00",'
            ' thu: "08:00-18:00", fri: "08:00-16:00", sat: null, sun: null}',
            f"    cadence: {{defaults: {{max_attempts: {3 + n % 3}}}}}",
        ]
    return Sites.from_text("\n".join(lines) + "\n", "<bench>")


def siu(control_id: str, facility: str) -> bytes:
    segments = [
        f"MSH|^~\\&|HIS|{facility}|FOLLOWUP|TRACKER|20260301120000||SIU^S12^SIU_S12|"
        f"{control_id}|P|2.5",
        "SCH|APT-1^HIS|APT-1^HIS|||||||||^^^20260302093000^20260302100000",
        "PID|1||PAT-1^^^HIS^MR||Kazlauskiene^Ona||19800101|F",
        f"PV1|1|O|DENTAL^^^{facility}||||DR-7^House^Greg",
        "AIS|1||IMPLANT^Implant visit|20260302093000",
    ]
    return ("\r".join(segments) + "\r").encode()


def _hl7(sites: Sites) -> list[Figure]:
    n = 5_000
    messages = [siu(f"C{i}", f"FAC{i % SITE_COUNT:02d}") for i in range(n)]
    zone = ZoneInfo("Europe/Vilnius")

    def with_sites() -> int:
        for raw in messages:
            read(raw, zone=zone, now=NOW, department="general", sites=sites)
        return n

    def alone() -> int:
        for raw in messages:
            read(raw, zone=zone, now=NOW, department="general")
        return n

    return [compare("hl7.read, 50 sites", with_sites, "hl7.read, no sites file", alone)]


def _appointments(tracked: int, sited: bool) -> list[AppointmentEvent]:
    start = NOW + timedelta(hours=1)
    return [
        AppointmentEvent(
            event_id=f"e{i}",
            occurred_at=NOW,
            source="bench",
            change="booked",
            appointment_id=f"a{i}",
            patient_id=f"p{i}",
            start=start,
            timezone=ZONES[i % len(ZONES)],
            department="dental",
            status="booked",
            site=f"site-{i % SITE_COUNT:02d}" if sited else None,
        )
        for i in range(tracked)
    ]


def _detection(tracked: int) -> list[Figure]:
    sited, plain = _appointments(tracked, True), _appointments(tracked, False)
    later = NOW + timedelta(hours=2)
    # A million tracked appointments take minutes per pass on a shared machine: one pass
    # each (interleaved all the same) beyond the CI-sized hundred thousand.
    repeats = 3 if tracked <= 100_000 else 1

    def run(events: list[AppointmentEvent]) -> int:
        detector = Detector(DetectionRules())
        for event in events:
            detector.on_appointment(event, NOW)
        found = detector.due(later)
        assert len(found) == len(events)
        return len(events)

    return [
        compare(
            f"detect+due, {tracked:,} over 50 sites",
            lambda: run(sited),
            "the same, no site",
            lambda: run(plain),
            repeats=repeats,
        )
    ]


def _policy(sites: Sites) -> list[Figure | Observation]:
    policy = CadencePolicy.load(DEFAULT_POLICY_PATH)
    # CPU seconds beside the wall clock: on a shared machine the wall clock of a short step
    # is mostly other processes' turns.
    started, cpu = time.perf_counter(), time.process_time()
    policy.adopt_sites(sites)
    resolved, resolved_cpu = time.perf_counter() - started, time.process_time() - cpu
    n = 200_000
    names = [f"site-{i % SITE_COUNT:02d}" for i in range(n)]

    def per_site() -> int:
        for site in names:
            policy.rules_for("dental", "no_show", site)
        return n

    def alone() -> int:
        for _ in names:
            policy.rules_for("dental", "no_show")
        return n

    return [
        compare("scheduler.rules_for, 50 sites", per_site, "rules_for, no site", alone),
        Observation("resolve 50 sites' cadence rules", resolved, "s"),
        Observation("resolve 50 sites' cadence rules, CPU", resolved_cpu, "s"),
    ]


def sizes(big: bool = False) -> list[int]:
    """``FOLLOWUP_BENCH_TRACKED``: one size or a trend (``100000,250000,1000000``)."""
    given = os.environ.get("FOLLOWUP_BENCH_TRACKED", "100000,250000,1000000" if big else "100000")
    return [int(part.replace("_", "")) for part in given.split(",") if part.strip()]


def run(big: bool = False) -> list[Figure | Observation]:
    chain(1)  # the first load imports the holidays package: not a per-site cost
    started, cpu = time.perf_counter(), time.process_time()
    sites = chain()
    loaded, loaded_cpu = time.perf_counter() - started, time.process_time() - cpu
    return [
        Observation("validate a sites file of 50 sites", loaded, "s"),
        Observation("validate a sites file of 50 sites, CPU", loaded_cpu, "s"),
        *_hl7(sites),
        *(figure for tracked in sizes(big) for figure in _detection(tracked)),
        *_policy(sites),
    ]
