"""The call-task channel: a task for an administrator, fanned out to the configured sinks,
withdrawn through the same sinks, and the routes by which the call's result comes back.

The task id is the creating command's idempotency key. A withdrawal is its own command
(its own key, so it is not dropped as a repeat) and names the task by case and attempt
number; the sinks receive ``action: withdraw`` under the task's own id, so every receiver
can match it (the webhook's ``Idempotency-Key``, the VTODO's UID, the topic's task id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web

from common.audit import credential_id
from common.logs import get_logger
from schemas.events import CallTaskEvent, NotificationCommand
from schemas.vocabulary import NUMBER_WRONG
from services.notifier import localise, metrics, report_links
from services.notifier.call_reports import (
    CallReport,
    ReportError,
    parse_call_report,
    report_outcome,
    valid_id,
)
from services.notifier.calltasks import build_call_task, call_script, desk_view
from services.notifier.channels import (
    ChannelRules,
    Job,
    Parts,
    PermanentSendError,
    Route,
    Sent,
    TransientSendError,
    bearer_scope,
)
from services.notifier.contacts import Contact

log = get_logger(__name__)

# An administrator calls the number on the task, or finds one: no address is required.
RULES = ChannelRules(
    consent="call", reaches_patient=False, resend_when_unsure=True, missing=lambda _: None
)


def for_the_task(contact: Contact | None) -> Contact | None:
    """The contact as the front desk sees it: a number the carrier found wrong is not given
    (the task is then to find the right one); a landline is, a call reaches it."""
    if contact is not None and contact.phone_mark == NUMBER_WRONG:
        return replace(contact, phone=None, phone_raw=None)
    return contact


class CallTaskChannel:
    name: Literal["call_task"] = "call_task"
    rules = RULES

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self.sinks = list(parts.sinks)
        host = urlsplit(parts.public_base_url).hostname or ""
        if not parts.settings.link_secret:
            log.warning("report_links_off", setting="FOLLOWUP_LINK_SECRET")
        elif host in ("127.0.0.1", "localhost", "::1"):
            # Links nobody outside this machine can open: production must set the variable.
            log.warning("report_links_local_only", setting="FOLLOWUP_PUBLIC_BASE_URL")

    def render(
        self,
        command: NotificationCommand,
        contact: Contact | None,
        action: Literal["create", "withdraw"] = "create",
    ) -> CallTaskEvent:
        """The task ``command`` created (its key is the task id), as ``action``."""
        v = self._parts.voice.for_site(command.site)
        settings = self._parts.settings
        script = call_script(
            self._parts.book,
            command,
            contact,
            # A site's profile names its clinic; else the deployment's names, as before.
            clinic_name=v.name_for if v is not self._parts.voice else settings.clinic_name_in,
            clinic_phone=v.clinic_phone,
            rebook_url=v.rebook_url,
            default_language=v.default_language,
            view=desk_view(settings),
        )
        task_id = command.idempotency_key
        links = report_links.links_for(
            settings.link_secret,
            self._parts.public_base_url,
            task_id,
            report_links.link_expiry(
                command.window_end, timedelta(hours=settings.report_link_grace_hours)
            ),
        )
        return build_call_task(
            command,
            contact,
            task_id=task_id,
            action=action,
            script=script,
            now=self._parts.clock.now(),
            report_url=f"{self._parts.public_base_url}/calltasks/{quote(task_id, safe=':')}/result",
            default_language=v.default_language,
            report_links=links if action == "create" else {},
        )

    async def send(self, job: Job) -> Sent:
        command = job.command
        if command.purpose != "withdrawal":
            await self._deliver(job, self.render(command, for_the_task(job.contact)))
            return Sent("task_created", respond_by=command.window_end)
        found = await self._parts.ledger.withdrawn_task(command)
        if found is None:
            return Sent("withdrawn", detail="no_task")
        original, state = found
        now = self._parts.clock.now()
        if state == "pending" and await self._parts.ledger.cancel_if_unsent(original, now):
            # Never went out: cancelling it in the ledger is the whole withdrawal.
            return Sent("withdrawn", detail="never_sent")
        if state == "sending":
            # The create is at the sinks right now: withdrawing first could reach a
            # receiver before the task itself. Retried with the usual backoff.
            raise TransientSendError("ledger", "task_being_sent")
        await self._deliver(job, self.render(original, job.contact, "withdraw"))
        return Sent("withdrawn")

    async def _deliver(self, job: Job, task: CallTaskEvent) -> None:
        # Escalations go to the doctor's or supervisor's sinks (FOLLOWUP_ESCALATION_SINKS).
        wanted = self._parts.settings.sinks_for(task.purpose)
        sinks = [sink for sink in self.sinks if sink.name in wanted]
        own = self._parts.site_sinks.get(task.site or "")
        if own and task.purpose != "escalation":
            # A clinic of a chain has its own desk's tools (escalations: the doctors').
            sinks = list(own)
        if not sinks:
            raise PermanentSendError("none", "no_call_task_sink")
        registry = self._parts.voice.sites
        site = registry.current().label(task.site) if registry is not None else "none"
        for sink in sinks:
            if sink.name in job.sinks_done:
                continue  # delivered before a retry or a restart
            try:
                receipt = await sink.deliver(task)
            except (TransientSendError, PermanentSendError):
                metrics.CALL_TASKS.labels(sink.name, "error", site).inc()
                raise
            if receipt.report is not None:
                # Published before the sink is marked done: after a crash the task goes out
                # again, the receiver answers again, and the repeated report id is dropped.
                await self._parts.publish_outcome(
                    report_outcome(receipt.report, job.command, self._parts.clock.now())
                )
            result = "created" if task.action == "create" else "withdrawn"
            metrics.CALL_TASKS.labels(sink.name, result, site).inc()
            metrics.SENDS.labels(self.name, sink.name, "sent", site).inc()
            if sink is not sinks[-1]:
                # The last sink's mark is the delivery's finish (a done row is never taken
                # again): one statement less per task. A crash before the finish resends
                # to it, and the receiver dedupes on the task id, as after any crash.
                await self._parts.ledger.sink_done(job.command, sink.name)

    # --- results back --------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return (
            Route("POST", "/calltasks/{task_id}/result", self.call_result),
            Route("POST", "/call-tasks/outcomes", self.call_outcome),
            Route("GET", f"{report_links.PATH}/{{token}}", self.link_page),
            Route("POST", report_links.PATH, self.link_record),
        )

    async def close(self) -> None:
        return None  # the sinks are plug-ins of their own, closed by the composition root

    async def call_result(self, request: web.Request) -> web.Response:
        """``POST /calltasks/{task_id}/result``: the task's own report URL."""
        return await self._report(request, lambda body: request.match_info["task_id"])

    async def call_outcome(self, request: web.Request) -> web.Response:
        """``POST /call-tasks/outcomes``: the agreed route; the body names the task by its
        idempotency key (``<case_id>:<n>``, which is also the task id)."""

        def task_of(body: dict[str, Any]) -> str:
            key = body.get("idempotency_key")
            if not valid_id(key):
                raise web.HTTPBadRequest(text="idempotency_key: the call task's key is required")
            return str(key)

        return await self._report(request, task_of)

    async def _report(
        self, request: web.Request, task_of: Callable[[dict[str, Any]], str]
    ) -> web.Response:
        # A site's desk token reports its own site's call tasks only (issue 22).
        scope = bearer_scope(request, self._parts.settings.api_token, self._parts.voice.sites)
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            raise web.HTTPBadRequest(text="body is not JSON") from None
        try:
            report = parse_call_report(body)
        except ReportError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        task_id = task_of(body)
        if not isinstance(task_id, str) or not 0 < len(task_id) <= 256 or not task_id.isprintable():
            # a NUL byte cannot even reach PostgreSQL as text: the caller's mistake, not a 500
            raise web.HTTPBadRequest(text="the call task's id is missing or not printable")
        command = await self._parts.ledger.call_task(self.name, task_id)
        if command is None or (scope is not None and command.site not in scope):
            raise web.HTTPNotFound(text="unknown call task")  # another site's: as if absent
        event = report_outcome(report, command, self._parts.clock.now())
        await self._parts.publish_outcome(event)
        return web.json_response({"event_id": event.event_id, "outcome": event.outcome}, status=202)

    # --- results through the signed links (report_links.py) ------------------------------

    def _page(self, request: web.Request, html: str, status: int = 200) -> web.Response:
        response = web.Response(text=html, status=status, content_type="text/html")
        # Nothing to cache, nothing to frame, no referrer leaking the token onwards.
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
            " frame-ancestors 'none'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _language(self, request: web.Request) -> str:
        return localise.pick_language(
            request.headers.get("Accept-Language"), self._parts.settings.admin_language
        )

    async def _link(
        self, request: web.Request, token: str, language: str
    ) -> tuple[report_links.ReportLink, NotificationCommand]:
        """The link's task, or the page saying why not (400 tampered, 410 expired)."""
        try:
            link = report_links.verify(
                self._parts.settings.link_secret, token, self._parts.clock.now()
            )
        except report_links.LinkError as exc:
            status = 410 if exc.why == "expired" else 400
            html = report_links.message_page(language, exc.why)
            raise _PageError(self._page(request, html, status)) from None
        command = await self._parts.ledger.call_task(self.name, link.task_id)
        if command is None:
            html = report_links.message_page(language, "invalid")
            raise _PageError(self._page(request, html, 404))
        return link, command

    async def link_page(self, request: web.Request) -> web.Response:
        """``GET /call-tasks/report/{token}``: the page with one button; records nothing
        (mail scanners and link previews open links on their own)."""
        language = self._language(request)
        try:
            link, command = await self._link(request, request.match_info["token"], language)
        except _PageError as page:
            return page.response
        already = await self._parts.ledger.link_report(link.task_id)
        if already is not None:
            label = localise.result_label(language, already)
            return self._page(request, report_links.message_page(language, "already", result=label))
        contact = await self._parts.directory.contact(command.patient_id)
        if contact is not None and contact.given_name and self._parts.audit is not None:
            # The page names the patient: the link (its fingerprint) read their first name.
            credential = credential_id("report_link", request.match_info["token"])
            route = f"GET {report_links.PATH}/{{token}}"
            now = self._parts.clock.now()
            await self._parts.audit.read(
                credential, route, [command.patient_id], ["given_name"], now
            )
        html = report_links.form_page(
            language,
            link,
            request.match_info["token"],
            contact.given_name if contact else None,
            self._parts.settings.clinic_timezone,
        )
        return self._page(request, html)

    async def link_record(self, request: web.Request) -> web.Response:
        """``POST /call-tasks/report``: the page's form (token in the body) records the
        result, once per task, as the same OutcomeEvent the API would publish."""
        language = self._language(request)
        if not report_links.same_site(
            request.headers.get("Origin"),
            request.headers.get("Sec-Fetch-Site"),
            self._parts.public_base_url,
        ):
            return self._page(request, report_links.message_page(language, "cross_site"), 403)
        form = await request.post()
        token = form.get("token")
        try:
            link, command = await self._link(
                request, token if isinstance(token, str) else "", language
            )
        except _PageError as page:
            return page.response
        now = self._parts.clock.now()
        callback_at = None
        if link.outcome == "callback_requested":
            callback_at = _local_moment(
                form.get("callback_at"), self._parts.settings.clinic_timezone
            )
            if callback_at is None:
                return self._page(request, report_links.message_page(language, "bad_callback"), 400)
        recorded, first = await self._parts.ledger.record_link_report(
            link.task_id, link.outcome, now
        )
        label = localise.result_label(language, recorded)
        if recorded != link.outcome:
            # Another link of this task was clicked first: that result stands.
            return self._page(request, report_links.message_page(language, "already", result=label))
        report = CallReport(
            report_id=link.report_id,
            outcome=link.outcome,
            reported_by="report_link",
            reported_at=now,
            callback_at=callback_at,
        )
        # Published on every click of the recorded result: a crash between the record and
        # the publish is healed by the next click, and the repeated event id is harmless.
        await self._parts.publish_outcome(report_outcome(report, command, now))
        said = "recorded" if first else "already"
        return self._page(request, report_links.message_page(language, said, result=label))


class _PageError(Exception):
    """A link that cannot be used, carrying the page that says so."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _local_moment(value: object, zone: str) -> datetime | None:
    """A ``datetime-local`` form value read in the clinic's zone."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))
