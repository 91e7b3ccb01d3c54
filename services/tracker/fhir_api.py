"""FHIR R4 over HTTP: Appointment, Patient and CarePlan, one at a time or in a Bundle.

- ``PUT /fhir/{type}/{id}``, ``POST /fhir/{type}``: one resource (an R4 Subscription
  rest-hook with a payload sends exactly this: an update to ``[endpoint]/[type]/[id]``).
- ``POST /fhir``: a ``batch`` (each entry on its own, a ``batch-response`` back), a
  ``transaction`` (every entry valid or nothing stored), a ``history`` /
  ``subscription-notification`` Bundle (the Subscriptions backport's notification); an empty
  POST is a rest-hook without payload (a ping) and stores nothing.
- ``GET /fhir/metadata``: the CapabilityStatement, built from the table below, so it says
  exactly what this endpoint does. No token needed, as FHIR clients expect.

Every other answer under /fhir, errors and unknown routes included, is an OperationOutcome
in ``application/fhir+json`` saying what is wrong without echoing the input; 200 means the
canonical events are stored on the broker. A bearer token is required for writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from common.clock import Clock
from common.http import bearer_token_ok
from common.logs import get_logger
from common.sites import SiteProfile, SiteRegistry, UnknownSite
from schemas.base import Envelope
from services.tracker.fhir_mapping import (
    Invalid,
    appointment_event,
    care_plan_event,
    patient_events,
    site_names,
)
from services.tracker.ingest import CanonicalSink
from services.tracker.metrics import INGEST_REJECTED

log = get_logger(__name__)
FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
# FHIR's id datatype; anything else in a URL (a NUL byte, a slash) is refused up front.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Deeper JSON than any FHIR resource needs; refused before it reaches a recursive parser.
MAX_DEPTH = 64
BUNDLE_TYPES = ("batch", "transaction", "history", "subscription-notification")
# Entries of a notification Bundle that carry the notification's own status, not data.
NOTIFICATION_STATUS = ("Parameters", "SubscriptionStatus")  # a tuple: a list as key is no error

Mapper = Callable[[dict[str, Any], str | None], list[Envelope]]


class Refused(Exception):
    """A request we answer with a 4xx/5xx OperationOutcome."""

    def __init__(
        self,
        reason: str,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.reason = reason  # the metric label
        self.status = status
        self.code = code  # OperationOutcome.issue.code (IssueType)
        self.diagnostics = diagnostics
        self.expression = expression


def outcome_body(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error" if status >= 400 else "information",
        "code": code,
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fhir_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type=FHIR_JSON, headers=headers
    )


def operation_outcome(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> web.Response:
    return fhir_response(status, outcome_body(status, code, diagnostics, expression))


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON nests deeper than ``limit``, without recursion (so without a stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def resolve_local_references(entries: list[dict[str, Any]]) -> None:
    """Inside a Bundle, a reference may name another entry by its ``fullUrl``
    (``urn:uuid:...``); it becomes that entry's ``<type>/<id>``, as a FHIR server resolves it.
    An entry without an id cannot be named (we keep no server-assigned ids)."""
    local: dict[str, str] = {}
    for entry in entries:
        resource, full_url = entry.get("resource"), entry.get("fullUrl")
        if isinstance(resource, dict) and isinstance(full_url, str):
            kind, resource_id = resource.get("resourceType"), resource.get("id")
            if (
                full_url.startswith("urn:")
                and isinstance(kind, str)
                and isinstance(resource_id, str)
            ):
                local[full_url] = f"{kind}/{resource_id}"
    if not local:
        return
    stack: list[Any] = [entry.get("resource") for entry in entries]
    while stack:  # no recursion: the depth was bounded, but a stack costs nothing here
        item = stack.pop()
        if isinstance(item, dict):
            reference = item.get("reference")
            if isinstance(reference, str) and reference in local:
                item["reference"] = local[reference]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


@dataclass(frozen=True)
class Entry:
    """One resource to store, from a URL or from a Bundle entry."""

    kind: str
    body: dict[str, Any]
    path_id: str | None
    where: str  # FHIRPath of the resource in the request, for refusals


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
        sites: SiteRegistry | None = None,
    ) -> None:
        self._sites = sites
        self._sink = sink
        self._clock = clock
        self._token = token
        self._zone = zone
        self._department = department
        self._max_bytes = max_bytes
        # What the endpoint supports: the routes and the CapabilityStatement both read it.
        self._mappers: dict[str, Mapper] = {
            "Appointment": self._appointment,
            "Patient": self._patient,
            "CarePlan": self._care_plan,
        }

    def mount(self, app: web.Application) -> None:
        app.middlewares.append(self._outcomes)
        app.router.add_get("/fhir/metadata", self._metadata)
        app.router.add_post("/fhir", self._bundle)
        for kind in self._mappers:
            app.router.add_post(f"/fhir/{kind}", self._single(kind))
            app.router.add_put(f"/fhir/{kind}/{{id}}", self._single(kind))

    # --- the edges every request passes -------------------------------------------------

    @web.middleware
    async def _outcomes(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Under /fhir every answer is FHIR: routing errors and surprises become outcomes."""
        if request.path != "/fhir" and not request.path.startswith("/fhir/"):
            return await handler(request)
        try:
            if CONTROL.search(request.path) or CONTROL.search(request.query_string):
                raise Refused("invalid_request", 400, "value", "control characters in the URL")
            return await handler(request)
        except Refused as refused:
            return self._refuse(refused)
        except web.HTTPNotFound:
            return self._refuse(
                Refused("not_found", 404, "not-supported", self._routes_hint("no such route"))
            )
        except web.HTTPMethodNotAllowed as exc:
            response = self._refuse(
                Refused(
                    "method_not_allowed",
                    405,
                    "not-supported",
                    self._routes_hint(f"{exc.method} is not supported here"),
                )
            )
            response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
            return response
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(Refused("too_large", 413, "too-costly", "resource too large"))
        except web.HTTPException as exc:
            return self._refuse(Refused("http_error", exc.status, "processing", exc.reason))
        except Exception as exc:
            # A bug of ours, never the sender's fault; the type only (the input may be personal).
            log.error("fhir_failed", error=type(exc).__name__, path=request.path[:64])
            return operation_outcome(500, "exception", "internal error; the request was not stored")

    def _routes_hint(self, what: str) -> str:
        kinds = "|".join(self._mappers)
        return (
            f"{what}; supported: GET /fhir/metadata, POST /fhir (Bundle),"
            f" PUT /fhir/{{{kinds}}}/{{id}}, POST /fhir/{{{kinds}}}"
        )

    def _authorise(self, request: web.Request) -> None:
        if not bearer_token_ok(request, self._token):
            raise Refused("unauthorized", 401, "login", "a valid bearer token is required")
        if request.content_length is not None and request.content_length > self._max_bytes:
            raise Refused("too_large", 413, "too-costly", "resource too large")

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        return self._parse(request, await self._read(request))

    def _parse(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        if request.content_type not in (FHIR_JSON, "application/json"):
            raise Refused(
                "unsupported_media_type", 415, "not-supported", "send application/fhir+json"
            )
        try:
            body = json.loads(raw)
        except RecursionError:
            raise Refused("invalid_json", 400, "structure", "JSON nests too deep") from None
        except (ValueError, UnicodeDecodeError):
            raise Refused("invalid_json", 400, "structure", "body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused("invalid_json", 400, "structure", "body is not a JSON object")
        if too_deep(body):
            raise Refused(
                "invalid_json", 400, "structure", f"JSON nests deeper than {MAX_DEPTH} levels"
            )
        return body

    async def _read(self, request: web.Request) -> bytes:
        # Read in pieces so a body without Content-Length (chunked) is bounded too.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise Refused("too_large", 413, "too-costly", "resource too large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _refuse(self, refused: Refused) -> web.Response:
        INGEST_REJECTED.labels("fhir", refused.reason).inc()
        log.warning("fhir_refused", reason=refused.reason, status=refused.status)
        return operation_outcome(
            refused.status, refused.code, refused.diagnostics, refused.expression
        )

    # --- one resource -------------------------------------------------------------------

    def _single(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self._authorise(request)
            path_id = request.match_info.get("id")
            if path_id is not None and not FHIR_ID.fullmatch(path_id):
                raise Refused(
                    "invalid_resource",
                    400,
                    "value",
                    "the id in the URL is not a FHIR id",
                    f"{kind}.id",
                )
            body = await self._read_json(request)
            events = self._map(Entry(kind, body, path_id, kind))
            await self._store(kind, events)
            log.info("fhir_accepted", kind=kind, event_id=events[0].event_id)
            return operation_outcome(200, "informational", f"accepted {events[0].event_id}")

        return handle

    def _map(self, entry: Entry) -> list[Envelope]:
        mapper = self._mappers.get(entry.kind)
        if mapper is None:
            raise Refused(
                "unsupported_type",
                422,
                "not-supported",
                f"resourceType {entry.kind[:40]} is not read here",
                f"{entry.where}.resourceType",
            )
        try:
            return mapper(entry.body, entry.path_id)
        except Invalid as invalid:
            expression = invalid.expression
            if entry.where != entry.kind:  # inside a Bundle: say which entry
                expression = f"{entry.where}.{expression}"
            raise Refused("invalid_resource", 422, "invalid", invalid.reason, expression) from None

    async def _store(self, kind: str, events: list[Envelope]) -> None:
        try:
            await self._sink.publish("fhir", events)
        except Exception as exc:  # the broker is away: the client may retry
            log.error("fhir_store_failed", kind=kind, error=type(exc).__name__)
            raise Refused(
                "unavailable", 503, "transient", "temporarily unable to store; retry"
            ) from None

    # --- Bundles and notifications ------------------------------------------------------

    async def _bundle(self, request: web.Request) -> web.Response:
        self._authorise(request)
        raw = await self._read(request)
        if not raw.strip():
            # An R4 rest-hook without payload: a ping that something matched.
            log.info("fhir_notification_without_payload")
            return operation_outcome(
                200,
                "informational",
                "notification without payload: nothing stored (set channel.payload to"
                " application/fhir+json)",
            )
        body = self._parse(request, raw)
        kind = body.get("resourceType")
        if kind != "Bundle":
            raise Refused(
                "invalid_resource",
                422,
                "not-supported",
                "POST to the base takes a Bundle; send one resource to /fhir/{type}",
                "resourceType",
            )
        bundle_type = body.get("type")
        if bundle_type not in BUNDLE_TYPES:
            raise Refused(
                "invalid_resource",
                422,
                "not-supported",
                "Bundle.type must be one of " + ", ".join(BUNDLE_TYPES),
                "Bundle.type",
            )
        entries = body.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise Refused(
                "invalid_resource", 422, "structure", "entry must be a list", "Bundle.entry"
            )
        resolve_local_references(entries)
        if bundle_type == "transaction":
            return await self._transaction(entries)
        return await self._batch(entries, notification=bundle_type != "batch")

    def _entry(self, number: int, entry: dict[str, Any]) -> Entry:
        where = f"Bundle.entry[{number}]"
        resource = entry.get("resource")
        request = entry.get("request")
        if not isinstance(request, dict):
            request = {}
        method, url = request.get("method"), request.get("url")
        if method is not None and method not in ("PUT", "POST"):
            raise Refused(
                "unsupported_interaction",
                422,
                "not-supported",
                "only PUT (update) and POST (create) entries are read",
                f"{where}.request.method",
            )
        if not isinstance(resource, dict):
            raise Refused("invalid_resource", 422, "required", "entry needs a resource", where)
        kind = resource.get("resourceType")
        if not isinstance(kind, str):
            raise Refused(
                "invalid_resource",
                422,
                "required",
                "resource needs a resourceType",
                f"{where}.resource.resourceType",
            )
        path_id = None
        if method == "PUT" and isinstance(url, str):
            # "Patient/p-1" or "Patient/p-1?...": the id the update is for.
            parts = url.split("?", 1)[0].strip("/").split("/")
            if len(parts) != 2 or parts[0] != kind or not FHIR_ID.fullmatch(parts[1]):
                raise Refused(
                    "invalid_resource",
                    422,
                    "value",
                    "request.url must be <type>/<id>",
                    f"{where}.request.url",
                )
            path_id = parts[1]
        return Entry(kind, resource, path_id, f"{where}.resource")

    async def _transaction(self, entries: list[dict[str, Any]]) -> web.Response:
        """All or nothing: one refused entry refuses the Bundle and nothing is stored."""
        events: list[Envelope] = []
        for number, raw in enumerate(entries):
            events += self._map(self._entry(number, raw))
        if events:
            # Event ids are deterministic: if the broker fails half-way, resending the same
            # transaction completes it without doubling anything.
            await self._store("Bundle", events)
        log.info("fhir_transaction_accepted", entries=len(entries), events=len(events))
        return fhir_response(
            200,
            self._response_bundle(
                "transaction-response", [{"response": {"status": "200 OK"}} for _ in entries]
            ),
        )

    async def _batch(self, entries: list[dict[str, Any]], *, notification: bool) -> web.Response:
        """Each entry on its own; the answer says, entry by entry, what happened."""
        answers: list[dict[str, Any]] = []
        for number, raw in enumerate(entries):
            resource = raw.get("resource")
            if (
                notification
                and isinstance(resource, dict)
                and (resource.get("resourceType") in NOTIFICATION_STATUS)
            ):
                answers.append({"response": {"status": "200 OK"}})
                continue
            try:
                entry = self._entry(number, raw)
                events = self._map(entry)
                await self._store(entry.kind, events)
            except Refused as refused:
                INGEST_REJECTED.labels("fhir", refused.reason).inc()
                answers.append(
                    {
                        "response": {
                            "status": str(refused.status),
                            "outcome": outcome_body(
                                refused.status,
                                refused.code,
                                refused.diagnostics,
                                refused.expression,
                            ),
                        }
                    }
                )
                continue
            answers.append({"response": {"status": "200 OK"}})
        refused_count = sum(1 for a in answers if a["response"]["status"] != "200 OK")
        log.info("fhir_batch", entries=len(entries), refused=refused_count)
        return fhir_response(200, self._response_bundle("batch-response", answers))

    def _response_bundle(self, kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": kind,
            "timestamp": self._clock.now().isoformat(),
            "entry": entries,
        }

    # --- what we support ----------------------------------------------------------------

    async def _metadata(self, _request: web.Request) -> web.Response:
        return fhir_response(200, capability_statement(list(self._mappers), self._clock.now()))

    # --- resource kinds -----------------------------------------------------------------

    def _site(self, kind: str, body: dict[str, Any]) -> SiteProfile | None:
        """The resource's site (None without a sites file); an unknown one is an Invalid
        naming where it was looked for (422)."""
        if self._sites is None:
            return None
        try:
            return self._sites.current().attribute(site_names(kind, body))
        except UnknownSite as exc:
            raise Invalid(exc.field, "names no configured site") from None

    def _appointment(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        site = self._site("Appointment", body)
        event = appointment_event(
            body,
            path_id=path_id,
            zone=site.timezone if site is not None else self._zone,
            department=(site.default_department if site is not None else None) or self._department,
            now=self._clock.now(),
        )
        return [event if site is None else event.model_copy(update={"site": site.id})]

    def _patient(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        contact, status = patient_events(
            body, path_id=path_id, zone=self._zone, now=self._clock.now()
        )
        return [contact] if status is None else [contact, status]

    def _care_plan(self, body: dict[str, Any], path_id: str | None) -> list[Envelope]:
        site = self._site("CarePlan", body)
        plan = care_plan_event(
            body,
            path_id=path_id,
            zone=site.timezone if site is not None else self._zone,
            department=(site.default_department if site is not None else None) or self._department,
            now=self._clock.now(),
        )
        return [plan if site is None else plan.model_copy(update={"site": site.id})]


def capability_statement(kinds: list[str], now: datetime) -> dict[str, Any]:
    """An R4 CapabilityStatement of this endpoint: write-only (update, create) for ``kinds``,
    batch and transaction at the base, JSON only, bearer token."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.isoformat(),
        "publisher": "followup",
        "kind": "instance",
        "software": {"name": "followup tracker"},
        "implementation": {
            "description": "followup tracker: FHIR ingest of appointments, patients and care"
            " plans; resources are translated to events, not kept, so nothing can be read back"
        },
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Resources sent here become canonical events; see"
                " docs/integration/fhir.md.",
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <token> on every write",
                },
                "resource": [
                    {
                        "type": kind,
                        "profile": f"http://hl7.org/fhir/StructureDefinition/{kind}",
                        "interaction": [{"code": "update"}, {"code": "create"}],
                        "versioning": "no-version",
                        "readHistory": False,
                        "updateCreate": True,
                    }
                    for kind in kinds
                ],
                "interaction": [{"code": "batch"}, {"code": "transaction"}],
            }
        ],
    }
