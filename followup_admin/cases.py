"""`cases`: a summary of the follow-up cases, read through the scheduler's case API
(GET /cases, bearer token FOLLOWUP_API_TOKEN), never from its tables."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PAGE = 500  # the API's largest page


class CaseApiError(Exception):
    """The case API refused or could not be reached; one line fit for an operator."""


@dataclass
class CaseSummary:
    total: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_resolution: Counter[str] = field(default_factory=Counter)
    oldest_open_case: str | None = None
    oldest_open_since: datetime | None = None
    nearest_deadline_case: str | None = None
    nearest_deadline: datetime | None = None

    def add(self, case: dict[str, Any]) -> None:
        self.total += 1
        self.by_state[case["state"]] += 1
        self.by_reason[case["reason"]] += 1
        if case.get("resolution"):
            self.by_resolution[case["resolution"]] += 1
        if case["state"] == "closed":
            return
        opened = datetime.fromisoformat(case["opened_at"])
        if self.oldest_open_since is None or opened < self.oldest_open_since:
            self.oldest_open_since, self.oldest_open_case = opened, case["case_id"]
        if case.get("stage_deadline"):
            deadline = datetime.fromisoformat(case["stage_deadline"])
            if self.nearest_deadline is None or deadline < self.nearest_deadline:
                self.nearest_deadline, self.nearest_deadline_case = deadline, case["case_id"]

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_state": dict(sorted(self.by_state.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_resolution": dict(sorted(self.by_resolution.items())),
            "oldest_open_case": self.oldest_open_case,
            "oldest_open_since": _iso(self.oldest_open_since),
            "nearest_deadline_case": self.nearest_deadline_case,
            "nearest_deadline": _iso(self.nearest_deadline),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def summarise(
    base_url: str, token: str, filters: dict[str, str], timeout_s: float = 10.0
) -> CaseSummary:
    """Reads every page of GET /cases (keyset paging with ``after``)."""
    if not token:
        raise CaseApiError("FOLLOWUP_API_TOKEN is not set: the case API refuses every request")
    summary = CaseSummary()
    after: str | None = None
    while True:
        query = {**filters, "limit": str(PAGE), **({"after": after} if after else {})}
        page = _get(
            f"{base_url.rstrip('/')}/cases?{urllib.parse.urlencode(query)}", token, timeout_s
        )
        for case in page["cases"]:
            summary.add(case)
        after = page.get("next")
        if not after:
            return summary


def _get(url: str, token: str, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: dict[str, Any] = json.load(response)
            return body
    except urllib.error.HTTPError as error:
        try:
            reason = json.load(error).get("error", "")
        except ValueError:
            reason = ""
        raise CaseApiError(f"case API answered {error.code} {reason}".rstrip()) from None
    except (urllib.error.URLError, OSError) as error:
        where = url.split("/cases")[0]
        raise CaseApiError(
            f"case API at {where} unreachable ({error}): set FOLLOWUP_SCHEDULER_URL"
        ) from None
