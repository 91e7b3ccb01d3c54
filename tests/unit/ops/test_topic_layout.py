"""Topics as code: the layout a deployment reads from its environment, and the comparison
of the catalogue with what a broker reports."""

from __future__ import annotations

import pytest

from schemas.topics import (
    APPOINTMENTS,
    CATALOGUE,
    CONTACTS,
    DEADLETTER,
    TopicConfig,
    TopicLayout,
    TopicLayoutError,
    TopicNames,
    problems,
)

NAMES = TopicNames("p.")


def test_defaults_suit_one_local_broker_with_six_co_partitioned_topics() -> None:
    layout = TopicLayout.from_env({})
    assert layout.auto_create is True
    keyed = [layout.config(s, NAMES) for s in CATALOGUE if s is not DEADLETTER]
    assert {c.partitions for c in keyed} == {6}
    assert {c.replication_factor for c in keyed} == {1}
    assert layout.config(DEADLETTER, NAMES).partitions == 1


def test_production_settings_come_from_the_environment() -> None:
    layout = TopicLayout.from_env(
        {
            "FOLLOWUP_TOPICS_PARTITIONS": "12",
            "FOLLOWUP_TOPICS_REPLICATION_FACTOR": "3",
            "FOLLOWUP_TOPICS_MIN_INSYNC_REPLICAS": "2",
            "FOLLOWUP_TOPICS_AUTO_CREATE": "false",
            "FOLLOWUP_TOPIC_DEADLETTER_RETENTION_MS": "-1",
        }
    )
    assert layout.auto_create is False
    appointments = layout.config(APPOINTMENTS, NAMES)
    assert appointments.name == "p.followup.appointments"
    assert (appointments.partitions, appointments.replication_factor) == (12, 3)
    assert appointments.configs == {
        "cleanup.policy": "delete",
        "min.insync.replicas": "2",
        "retention.ms": str(APPOINTMENTS.retention_ms),
    }
    # The dead letters keep their own partition count and take their retention override.
    deadletter = layout.config(DEADLETTER, NAMES)
    assert deadletter.partitions == 1
    assert deadletter.configs["retention.ms"] == "-1"
    # Compacted topics keep the latest record per key: no retention is stated for them.
    assert layout.config(CONTACTS, NAMES).configs == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FOLLOWUP_TOPICS_PARTITIONS": "six"}, "FOLLOWUP_TOPICS_PARTITIONS: not a whole number"),
        ({"FOLLOWUP_TOPICS_REPLICATION_FACTOR": "0"}, "FOLLOWUP_TOPICS_REPLICATION_FACTOR: must"),
        ({"FOLLOWUP_TOPICS_AUTO_CREATE": "maybe"}, "FOLLOWUP_TOPICS_AUTO_CREATE: expected true"),
        (
            {"FOLLOWUP_TOPICS_REPLICATION_FACTOR": "2", "FOLLOWUP_TOPICS_MIN_INSYNC_REPLICAS": "3"},
            "FOLLOWUP_TOPICS_MIN_INSYNC_REPLICAS (3) is more than",
        ),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(TopicLayoutError) as error:
        TopicLayout.from_env(environ)
    assert str(error.value).startswith(named)
    assert "\n" not in str(error.value)


def test_problems_name_each_difference_and_a_matching_topic_has_none() -> None:
    wanted = TopicLayout(replication_factor=3, min_insync_replicas=2).config(CONTACTS, NAMES)
    assert problems(wanted, None) == ["p.followup.contacts: missing"]
    same = TopicConfig(wanted.name, 6, 3, dict(wanted.configs))
    assert problems(wanted, same) == []
    # A broker that keeps more replicas than asked is fine; fewer is not.
    assert problems(wanted, TopicConfig(wanted.name, 6, 4, dict(wanted.configs))) == []
    wrong = TopicConfig(wanted.name, 4, 1, {"cleanup.policy": "delete", "min.insync.replicas": "2"})
    assert problems(wanted, wrong) == [
        "p.followup.contacts: 4 partitions, the catalogue says 6",
        "p.followup.contacts: replication factor 1, the catalogue says 3",
        "p.followup.contacts: cleanup.policy=delete, the catalogue says compact",
    ]


def test_the_operated_topics_include_the_trackers_changelog_as_the_tracker_lays_it_out() -> None:
    from schemas.topics import OPERATED, TRACKER_STATE
    from services.tracker.worker import CHANGELOG

    assert TRACKER_STATE in OPERATED
    # The tool lays the changelog out before the tracker checks it: the two must agree.
    assert (TRACKER_STATE.name, TRACKER_STATE.compacted, TRACKER_STATE.partitions) == (
        CHANGELOG.name,
        CHANGELOG.compacted,
        CHANGELOG.partitions,
    )
    assert TRACKER_STATE.co_partitioned and CHANGELOG.co_partitioned
