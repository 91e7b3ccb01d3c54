"""``POST /patients/{patient_id}/erasure``: a patient's erasure request (issue 19).

Behind the ingest token. Publishes the erasure on followup.patients and a tombstone on
followup.contacts (common.erasure); answers 202 once the broker stored both. The body is
optional: ``{"requested_by": "<operator or ticket id>"}`` for the audit trail.
"""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from common.clock import Clock
from common.erasure import erasure_request
from common.http import bearer_token_ok
from common.kafka import KafkaPublisher
from common.logs import get_logger
from schemas.topics import TopicNames

log = get_logger(__name__)
MAX_BODY = 4096


class ErasureApi:
    def __init__(
        self, publisher: KafkaPublisher, names: TopicNames, clock: Clock, token: str, source: str
    ) -> None:
        self._publisher = publisher
        self._names = names
        self._clock = clock
        self._token = token
        self._source = source

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/patients/{patient_id}/erasure", self._erase)

    async def _erase(self, request: web.Request) -> web.Response:
        if not bearer_token_ok(request, self._token):
            return _refuse(401, "a valid bearer token is required")
        requested_by = await _requested_by(request)
        if requested_by is None:
            return _refuse(400, 'the body, when given, is {"requested_by": "<id>"}')
        try:
            event = erasure_request(
                request.match_info["patient_id"],
                requested_by=requested_by,
                source=self._source,
                now=self._clock.now(),
            )
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            return _refuse(400, f"not an id: {', '.join(fields) or 'patient_id'}")
        await self._publisher.publish(self._names.patients, event)
        await self._publisher.publish_raw(self._names.contacts, None, event.key())
        log.info("erasure_requested", patient_id=event.patient_id, event_id=event.event_id)
        return web.json_response({"event_id": event.event_id, "status": "erased"}, status=202)


async def _requested_by(request: web.Request) -> str | None:
    """The body's requester, "api" without a body; None for a body that is not one."""
    if request.content_length and request.content_length > MAX_BODY:
        return None
    raw = await request.content.read(MAX_BODY + 1)
    if not raw.strip():
        return "api"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or set(body) - {"requested_by"}:
        return None
    value = body.get("requested_by", "api")
    return value if isinstance(value, str) and value else None


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)
