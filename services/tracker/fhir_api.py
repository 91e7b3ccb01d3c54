"""FHIR R4 over HTTP: PUT/POST Appointment, Patient and CarePlan, bearer token required.

Every refusal is a 4xx with a FHIR OperationOutcome saying what is wrong (never echoing
the input); 200 means the canonical events are stored on the broker.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.clock import Clock
from common.http import bearer_token_ok
from common.logs import get_logger
from schemas.base import Envelope
from services.tracker.fhir_mapping import (
    Invalid,
    appointment_event,
    care_plan_event,
    patient_events,
)
from services.tracker.ingest import CanonicalSink
from services.tracker.metrics import INGEST_REJECTED

log = get_logger(__name__)
FHIR_JSON = "application/fhir+json"


def operation_outcome(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> web.Response:
    issue: dict[str, Any] = {
        "severity": "error" if status >= 400 else "information",
        "code": code,
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = [expression]
    return web.Response(
        status=status,
        text=json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}),
        content_type=FHIR_JSON,
    )


class FhirApi:
    def __init__(
        self,
        *,
        sink: CanonicalSink,
        clock: Clock,
        token: str,
        zone: str,
        department: str,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._token = token
        self._zone = zone
        self._department = department
        self._max_bytes = max_bytes

    def mount(self, app: web.Application) -> None:
        for kind, mapper in (
            ("Appointment", self._appointment),
            ("Patient", self._patient),
            ("CarePlan", self._care_plan),
        ):
            handler = self._endpoint(kind, mapper)
            app.router.add_post(f"/fhir/{kind}", handler)
            app.router.add_put(f"/fhir/{kind}/{{id}}", handler)

    def _endpoint(
        self, kind: str, mapper: Callable[[dict[str, Any], str | None], list[Envelope]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            refusal = self._check_request(request)
            if refusal is not None:
                return refusal
            raw = await request.read()
            if len(raw) > self._max_bytes:
                return self._refuse("too_large", 413, "too-costly", "resource too large")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return self._refuse("invalid_json", 400, "structure", "body is not JSON")
            if not isinstance(body, dict):
                return self._refuse("invalid_json", 400, "structure", "body is not a JSON object")
            try:
                events = mapper(body, request.match_info.get("id"))
            except Invalid as invalid:
                return self._refuse(
                    "invalid_resource", 422, "invalid", invalid.reason, invalid.expression
                )
            try:
                await self._sink.publish("fhir", events)
            except Exception as exc:  # the broker is away: the client may retry
                log.error("fhir_store_failed", kind=kind, error=type(exc).__name__)
                return self._refuse("unavailable", 503, "transient", "temporarily unable to store")
            log.info("fhir_accepted", kind=kind, event_id=events[0].event_id)
            return operation_outcome(200, "informational", f"accepted {events[0].event_id}")

        return handle

    def _check_request(self, request: web.Request) -> web.Response | None:
        if not bearer_token_ok(request, self._token):
            return self._refuse("unauthorized", 401, "login", "a valid bearer token is required")
        if request.content_length is not None and request.content_length > self._max_bytes:
            return self._refuse("too_large", 413, "too-costly", "resource too large")
        if request.content_type not in (FHIR_JSON, "application/json"):
            return self._refuse(
                "unsupported_media_type", 415, "not-supported", "send application/fhir+json"
            )
        return None

    def _refuse(
        self, reason: str, status: int, code: str, diagnostics: str, expression: str | None = None
    ) -> web.Response:
        INGEST_REJECTED.labels("fhir", reason).inc()
        log.warning("fhir_refused", reason=reason, status=status)
        return operation_outcome(status, code, diagnostics, expression)

    # --- resource kinds -----------------------------------------------------------------

    def _appointment(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        return [
            appointment_event(
                body,
                path_id=path_id,
                zone=self._zone,
                department=self._department,
                now=self._clock.now(),
            )
        ]

    def _patient(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        contact, status = patient_events(
            body, path_id=path_id, zone=self._zone, now=self._clock.now()
        )
        return [contact] if status is None else [contact, status]

    def _care_plan(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        return [
            care_plan_event(
                body,
                path_id=path_id,
                zone=self._zone,
                department=self._department,
                now=self._clock.now(),
            )
        ]
