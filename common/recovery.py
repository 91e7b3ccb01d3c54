"""The recovery rate, defined once: the clinic dashboard's panels and the demo report both
take it from here.

**Recovery rate = of the follow-up cases closed, the share closed `recovered`** (the patient
rebooked after followup reached them). Counted in cases, not patients: each missed visit is
one follow-up, and a patient who missed two visits is two. Only closed cases count (an open
case has no result yet), and `cleared` ones do not (the no-show or cancellation turned out
false: there was nothing to recover). Every other resolution (`declined`, `unreachable`,
`superseded` — rebooked before any contact —, `escalated`, `opted_out`, ...) counts as not
recovered. Over a period: the cases closed in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

RECOVERED = "recovered"
NOT_COUNTED = frozenset({"cleared"})
CLOSED_METRIC = "followup_scheduler_cases_closed_total"  # label `resolution`


def recovery_rate(closed: Mapping[str, float]) -> float | None:
    """The rate from how many cases closed with each resolution; None when none counts."""
    counted = sum(n for resolution, n in closed.items() if resolution not in NOT_COUNTED)
    return closed.get(RECOVERED, 0) / counted if counted else None


def recovery_rate_of(resolutions: Iterable[str]) -> float | None:
    """The rate of these closed cases' resolutions."""
    closed: dict[str, float] = {}
    for resolution in resolutions:
        closed[resolution] = closed.get(resolution, 0) + 1
    return recovery_rate(closed)


def recovery_rate_promql(
    matchers: str, window: str, *, metric: str = CLOSED_METRIC, by: str = ""
) -> str:
    """The same rate in PromQL over the cases closed in ``window`` (``matchers``: extra label
    matchers such as the namespace's; ``by``: a grouping such as ``department``)."""
    group = f" by ({by})" if by else ""
    extra = f"{matchers}, " if matchers else ""
    skipped = "|".join(sorted(NOT_COUNTED))
    recovered = f'sum{group} (increase({metric}{{{extra}resolution="{RECOVERED}"}}[{window}]))'
    counted = f'sum{group} (increase({metric}{{{extra}resolution!~"{skipped}"}}[{window}]))'
    # No recovered series yet (none closed so) is a rate of 0, as in the report, not no data.
    return f"({recovered} or 0 * {counted}) / {counted}"
