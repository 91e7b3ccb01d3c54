"""The lab's patient model: its file, the population it gives, and reactions that depend on
the seed, the patient and the attempt alone (so policies meet the very same people)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from demo.lab.model import ModelError, ModelReactions, PatientModel
from demo.lab.outcomes import reachable_maximum
from demo.scenario import REBOOKS
from services.scheduler.policy import CadencePolicy

LAB = Path(__file__).resolve().parents[3] / "demo" / "lab"


def test_the_shares_describe_everyone() -> None:
    model = PatientModel.load()
    shares = dict(model.shares())
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in shares.values())


def test_the_population_is_the_same_for_the_same_seed() -> None:
    model = PatientModel.load()
    one, two = model.population(300, 56, 5), model.population(300, 56, 5)
    assert [p.behaviour for p in one.patients] == [p.behaviour for p in two.patients]
    assert reachable_maximum(one) == sum(1 for p in one.patients if p.behaviour in REBOOKS) > 0
    assert len({p.department for p in one.patients}) == 6


def test_a_call_is_answered_the_same_way_whatever_happened_before() -> None:
    model = PatientModel.load()
    scenario = model.population(200, 56, 5)
    willing = [p for p in scenario.patients if p.behaviour == "recovers"]
    at = datetime(2026, 3, 10, 7, 30, tzinfo=UTC)  # 09:30 in Vilnius: the morning slot
    reactions = ModelReactions(model, seed=5)
    first = [reactions.call(p, 1, at, random.Random(1)).result for p in willing]
    again = [
        reactions.call(p, 1, at, random.Random(99)).result == "answered_rebooked" for p in willing
    ]
    assert [r == "answered_rebooked" for r in first] == again
    answered = sum(again) / len(willing)
    assert 0.1 < answered < 0.6  # about the morning's 30%


def test_later_calls_are_answered_less_often() -> None:
    model = PatientModel.load()
    morning = datetime(2026, 3, 10, 7, 30, tzinfo=UTC)
    assert model.answer_chance(1, morning) > model.answer_chance(4, morning)


def test_a_wrong_share_is_named(tmp_path: Path) -> None:
    text = (LAB / "patients.yaml").read_text().replace("would_continue: 0.8", "would_continue: 1.8")
    (tmp_path / "patients.yaml").write_text(text)
    with pytest.raises(ModelError, match=r"slipped\.would_continue"):
        PatientModel.load(tmp_path / "patients.yaml")


def test_the_status_quo_is_one_call_and_nothing_else() -> None:
    policy = CadencePolicy.load(LAB / "policies" / "status_quo.yaml")
    for reason in ("no_show", "unanswered_call", "late_cancellation", "stage_window_at_risk"):
        rules = policy.rules_for("dental", reason)
        assert rules.max_attempts == 1
        assert [s.channel for s in rules.steps] == ["call_task"]


def test_transfers_come_from_those_who_would_not_continue_and_are_told_once() -> None:
    model = PatientModel.load()
    scenario = model.population(1000, 56, 5)
    transfers = model.transfers_in(scenario)
    assert transfers == model.transfers_in(scenario)  # the seed decides, not the run
    assert len(transfers) == round(model.transfers * 1000) > 0
    by_id = {p.patient_id: p for p in scenario.patients}
    assert {by_id[pid].behaviour for pid in transfers} == {"declines"}
    told = {t.told_by for t in transfers.values()}
    assert told == {"hospital", "patient"}
    for t in transfers.values():
        appt = by_id[t.patient_id].first_appointment
        assert appt is not None
        if t.told_by == "hospital":
            assert t.reported_at is not None and t.reported_at > appt.start
        else:
            assert t.reported_at is None
    # A patient who says so on a call is heard (the lab reports it through the feed).
    heard: list[str] = []
    reactions = ModelReactions(
        model, 5, transfers, on_told_transfer=lambda p, at: heard.append(p.patient_id)
    )
    evening = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    for t in transfers.values():
        for call in range(1, 6):
            reactions.call(by_id[t.patient_id], call, evening, random.Random(1))
    assert heard and set(heard) <= {
        t.patient_id for t in transfers.values() if t.told_by == "patient"
    }


def test_more_transfers_than_patients_who_would_not_continue_is_named(tmp_path: Path) -> None:
    text = (LAB / "patients.yaml").read_text().replace("transfers: 0.02", "transfers: 0.5")
    (tmp_path / "patients.yaml").write_text(text)
    with pytest.raises(ModelError, match=r"population\.transfers"):
        PatientModel.load(tmp_path / "patients.yaml")
