"""Decoding a canonical appointment (strict pydantic) against plain json.loads."""

from __future__ import annotations

import json

from bench.harness import Figure, compare
from common.codec import decode, encode
from schemas import AppointmentEvent
from schemas.topics import APPOINTMENTS
from tests.support.samples import sample_events

N = 20_000


def run() -> list[Figure]:
    raw = encode(sample_events()[APPOINTMENTS])

    def ours() -> int:
        for _ in range(N):
            decode(AppointmentEvent, raw)
        return N

    def baseline() -> int:
        for _ in range(N):
            json.loads(raw)
        return N

    def ours_encode() -> int:
        event = sample_events()[APPOINTMENTS]
        for _ in range(N):
            encode(event)
        return N

    def baseline_encode() -> int:
        data = json.loads(raw)
        for _ in range(N):
            json.dumps(data).encode()
        return N

    return [
        compare("codec.decode(AppointmentEvent)", ours, "json.loads", baseline),
        compare("codec.encode(AppointmentEvent)", ours_encode, "json.dumps", baseline_encode),
    ]
