"""The lab's report read back from its JSON, and labs run apart (a seed each) combined."""

from __future__ import annotations

from pathlib import Path

from demo.lab import render
from demo.lab.lab import LabConfig, LabResult
from demo.lab.model import PatientModel
from demo.lab.outcomes import PolicyOutcome

SAFE = dict.fromkeys(render.SAFETY, 0)


def outcome(policy: str, seed: int, recovered: int) -> PolicyOutcome:
    return PolicyOutcome(
        policy=policy,
        seed=seed,
        patients=100,
        slipped=40,
        recovered_before_deadline=recovered,
        reachable_maximum=30,
        median_days_to_rebooking=1.0,
        call_tasks=50,
        staff_minutes=200.0,
        messages=10,
        sms=8,
        sms_segments=9,
        emails=2,
        escalations=3,
        contacts_per_recovered=4.0,
        safety=dict(SAFE),
        recoveries_by_week=[recovered // 2, recovered],
        transfers=2,
        pacer={"held_real_seconds": 5.0, "looks": 10},
    )


def lab(tmp_path: Path, seed: int, quo: int, default: int) -> LabResult:
    config = LabConfig(patients=100, weeks=2, seeds=(seed,), output=tmp_path / str(seed))
    outcomes = [outcome("status quo", seed, quo), outcome("followup default", seed, default)]
    return LabResult(config, PatientModel.load(), outcomes, 0, 60.0)


def test_a_written_lab_reads_back_and_labs_run_apart_combine(tmp_path: Path) -> None:
    one, two = lab(tmp_path, 1, 8, 20), lab(tmp_path, 2, 10, 26)
    render.write(one, one.config.output)
    render.write(two, two.config.output)
    again = [render.load(r.config.output / "lab.json") for r in (one, two)]
    assert again[0].outcomes == one.outcomes
    both = render.combine(again)
    assert both.config.seeds == (1, 2)
    assert [(o.seed, o.policy) for o in both.outcomes] == [
        (1, "status quo"),
        (1, "followup default"),
        (2, "status quo"),
        (2, "followup default"),
    ]
    cells = dict(render.rows(both))
    assert cells["rebooked before their stage deadline"][:2] == ["9 (8-10)", "23 (20-26)"]
    assert cells["transfers reported (not chased)"][:2] == ["2", "2"]
