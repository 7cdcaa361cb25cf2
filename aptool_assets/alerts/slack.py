"""Post alerts as Slack-compatible JSON to ``APTOOL_ALERT_WEBHOOK_URL`` (or only log them).

Slack incoming webhooks, Mattermost and Teams' Slack-compatible connectors all take
``{"text": …, "blocks": […]}``. Alerts carry IDs, counts, job and step names and error class
names only: callers build them from metadata, never from source rows. Every string of an alert is
scrubbed of secrets (:func:`aptool_assets.redaction.scrub`) before it is posted or logged, whoever
built it. The webhook URL is itself a secret (it embeds a token): it arrives as ``dagster.EnvVar`` and
never appears in logs or errors. A failed post is logged and swallowed: alerting must never fail a
sensor tick or a run.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg
from pydantic import Field

from aptool_assets.redaction import remember, scrub
from aptool_assets.resilience.retry import RetrySettings, call_with_retry

log = logging.getLogger("aptool_assets.alerts")

Severity = Literal["info", "warning", "error"]
_ICON = {"info": ":white_check_mark:", "warning": ":warning:", "error": ":rotating_light:"}
ALERT_RETRY = RetrySettings(max_attempts=3, base_delay_s=1.0, max_delay_s=5.0, backoff="linear")


@dataclass(frozen=True)
class Alert:
    """One message: a title, a few ``name: value`` fields (counts, IDs) and optional lines."""

    title: str
    severity: Severity = "info"
    fields: dict[str, object] = field(default_factory=dict)
    lines: tuple[str, ...] = ()
    link: str | None = None

    def scrubbed(self) -> Alert:
        """This alert with every string scrubbed of secrets (a URL's password, a token)."""
        return Alert(
            title=scrub(self.title),
            severity=self.severity,
            fields={scrub(str(k)): scrub(str(v)) for k, v in self.fields.items()},
            lines=tuple(scrub(line) for line in self.lines),
            link=self.link,
        )

    def text(self) -> str:
        """The plain-text form (Slack's notification text and the log line)."""
        parts = [f"[{self.severity.upper()}] {self.title}"]
        parts += [f"{k}: {v}" for k, v in self.fields.items()]
        parts += list(self.lines)
        return " | ".join(parts)

    def slack_payload(self) -> dict:
        blocks: list[dict] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{_ICON[self.severity]} *{self.title}*"}}
        ]
        if self.fields:
            items = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in self.fields.items()]
            for i in range(0, len(items), 10):  # Slack allows at most 10 fields per section
                blocks.append({"type": "section", "fields": items[i : i + 10]})
        if self.lines:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(self.lines)[:2900]}})
        if self.link:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.link}|Open in Dagster>"}]}
            )
        return {"text": self.text()[:3000], "blocks": blocks}


class AlertPostError(RuntimeError):
    """The webhook refused the alert or could not be reached (status and class only, never the URL)."""


class AlertResource(dg.ConfigurableResource):
    """Where alerts go: ``webhook_url`` (from ``APTOOL_ALERT_WEBHOOK_URL``) or, unset, the log only."""

    webhook_url: str | None = Field(default=None, repr=False, description="APTOOL_ALERT_WEBHOOK_URL (secret)")
    timeout_s: float = 10.0
    reports: Literal["every_run", "issues_only"] = Field(
        default="every_run",
        description="APTOOL_ALERT_REPORTS: post a processing report after every successful run, or only "
        "when rows were rejected, checks failed or dead letters are pending",
    )
    ui_url: str | None = Field(default=None, description="APTOOL_DAGSTER_UI_URL, for links to runs")

    def run_link(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None

    def send(self, alert: Alert) -> bool:
        """Post (or log) one alert, scrubbed of secrets; True when the webhook accepted it. Never raises."""
        remember(self.webhook_url)
        alert = alert.scrubbed()
        if not self.webhook_url:
            log.warning("alert (APTOOL_ALERT_WEBHOOK_URL not set): %s", alert.text())
            return False
        try:
            call_with_retry(
                lambda: self._post(alert.slack_payload()),
                policy=ALERT_RETRY,
                is_retryable=lambda exc: isinstance(exc, AlertPostError) and getattr(exc, "transient", False),
                what="alert webhook POST",
                logger=log,
            )
        except Exception as exc:  # noqa: BLE001 - alerting must not break the caller
            log.warning("could not post the alert %r: %s", alert.title, _describe(exc))
            return False
        log.info("alert posted: %s", alert.title)
        return True

    def _post(self, payload: dict) -> None:
        """urllib, not httpx: httpx logs every request URL at INFO, and this URL carries a token."""
        assert self.webhook_url is not None
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "aptool-alerts"},
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed URL
            error = AlertPostError(f"webhook not reachable ({type(exc).__name__})")
            error.transient = not isinstance(exc, ValueError)  # type: ignore[attr-defined]
            raise error from None  # the library's message could name the URL
        if status >= 300:
            error = AlertPostError(f"webhook answered HTTP {status}")
            error.transient = status == 429 or status >= 500  # type: ignore[attr-defined]
            raise error


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be replayed as GET elsewhere; report the 3xx instead."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _describe(exc: BaseException) -> str:
    """Our own messages name a status or an exception class only; anything else could quote the URL."""
    from aptool_assets.resilience.retry import RetryExhausted

    return str(exc) if isinstance(exc, (AlertPostError, RetryExhausted)) else type(exc).__name__
