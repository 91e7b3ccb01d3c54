"""Reading back what really happened: the services' /metrics and the scheduler's cases (topics
are read to their end by ``common.topic_reader``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from schemas.base import Envelope

M = TypeVar("M", bound=Envelope)


@dataclass
class Metrics:
    """Samples of one service's /metrics: name -> list of (labels, value)."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name].append((dict(sample.labels), float(sample.value)))
        return cls(dict(out))

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for got, value in self.samples.get(name, [])
            if all(got.get(k) == v for k, v in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for got, value in self.samples.get(name, []):
            if label in got:
                out[got[label]] += value
        return dict(out)


async def fetch_text(session: aiohttp.ClientSession, url: str) -> str:
    """A service's /metrics text ('' when it does not answer)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.text() if resp.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError):
        return ""


async def fetch_cases(
    session: aiohttp.ClientSession, base_url: str, token: str
) -> list[dict[str, Any]] | None:
    """Every case of the scheduler's GET /cases, page by page (None when not available)."""
    headers = {"Authorization": f"Bearer {token}"}
    cases: list[dict[str, Any]] = []
    after: str | None = None
    for _page in range(1000):
        params = {"limit": "500"} | ({"after": after} if after else {})
        try:
            async with session.get(
                f"{base_url}/cases",
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    return cases or None
                body = json.loads(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return cases or None
        page = body.get("cases") if isinstance(body, Mapping) else None
        if not isinstance(page, list):
            return cases or None
        cases += [c for c in page if isinstance(c, dict)]
        after = body.get("next")
        if not after or not page:
            break
    return cases


async def fetch_case_details(
    session: aiohttp.ClientSession, base_url: str, token: str, cases: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """GET /cases/{id} (attempts and history) of each case that answers."""
    headers = {"Authorization": f"Bearer {token}"}
    details: dict[str, dict[str, Any]] = {}
    for case in cases:
        case_id = case.get("case_id")
        if not isinstance(case_id, str):
            continue
        try:
            async with session.get(
                f"{base_url}/cases/{quote(case_id, safe='')}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                body = json.loads(await resp.text()) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        if isinstance(body, dict):
            details[case_id] = body
    return details
