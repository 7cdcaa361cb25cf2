"""Circuit breakers in the UI: the ``aptool/circuit_breakers`` observations and their alerts.

(Sensors that poll a service skip politely with ``GuardedResource.blocked_reason()``.)

* ``circuit_breakers_sensor`` (every minute) reads every breaker from the shared store. Its tick shows
  the current states as the skip reason (Sensors → circuit_breakers_sensor), and on any change it
  records an observation of the asset ``aptool/circuit_breakers`` whose metadata is one entry per
  breaker (Assets → aptool/circuit_breakers shows the history) and posts an alert when a breaker
  opens or closes again.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from aptool_assets.alerts.slack import Alert, AlertResource
from aptool_assets.resilience.breaker import BreakerSettings, BreakerStatus, CircuitBreaker
from aptool_assets.resources import GuardedResource
from aptool_assets.sources.aeries.client import AeriesResource
from aptool_assets.sources.iready.resources import IReadySFTPResource
from aptool_assets.storage.breakers import open_breaker_store

CIRCUIT_BREAKERS_KEY = dg.AssetKey(["aptool", "circuit_breakers"])
circuit_breakers = dg.AssetSpec(
    CIRCUIT_BREAKERS_KEY,
    group_name="operations",
    description="State of the Aeries and i-Ready circuit breakers (aptool.circuit_breakers or breakers.sqlite), "
    "observed by circuit_breakers_sensor whenever one changes: closed, open (until when, why) or half-open.",
    kinds={"python"},
    owners=["team:district-data"],
)


def _settings_for(service: str, resources: list[GuardedResource]) -> BreakerSettings:
    """The settings a stored row belongs to: a service's, or a credential block's (``svc:auth:…``)."""
    base, _, _ = service.partition(":auth:")
    for resource in resources:
        policy = resource.resilience
        if not policy.circuit_breaker or policy.service != base:
            continue
        if service == base:
            return policy.breaker()
        return BreakerSettings.block(service, policy.auth_backoff_s)
    return BreakerSettings.block(service, 60.0)


def current_states(resources: list[GuardedResource], clock=time.time) -> list[BreakerStatus]:
    """Each service's breaker (closed when never stored) plus any stored credential block."""
    store = open_breaker_store()
    try:
        stored = {row["service"] for row in store.read_all()}
        services = {"aeries", "iready"} | stored
        states = [CircuitBreaker(_settings_for(s, resources), store, clock=clock).state() for s in sorted(services)]
        # A credential block that ended is history (the credential was fixed or works again): not shown.
        return [s for s in states if ":auth:" not in s.service or s.state != "closed"]
    finally:
        store.close()


def _table(states: list[BreakerStatus]) -> str:
    lines = [
        "| breaker | state | failed of the last calls | opens at | opened | half-opens | reason |",
        "|---|---|---:|---|---|---|---|",
    ]
    for s in states:
        meta = s.as_metadata()
        lines.append(
            f"| {s.service} | {s.state} | {s.failures_in_window}/{s.calls_in_window} | {meta['opens_at']} "
            f"| {meta['opened_at']} | {meta['half_open_at']} | {meta['reason']} |"
        )
    return "\n".join(lines)


@dg.sensor(
    name="circuit_breakers_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Shows the Aeries and i-Ready circuit breakers (tick skip reasons), records an observation of "
    "aptool/circuit_breakers when one changes, and alerts when a breaker opens or closes.",
)
def circuit_breakers_sensor(
    context: dg.SensorEvaluationContext, aeries: AeriesResource, iready_sftp: IReadySFTPResource, alerts: AlertResource
) -> dg.SensorResult:
    states = current_states([aeries, iready_sftp])
    summary = "; ".join(s.describe() for s in states)
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = {s.service: s.state for s in states}
    events = []
    if now != previous:
        for s in states:
            before = previous.get(s.service, "closed")
            if s.state == "open" and before != "open":
                alerts.send(Alert(f"Circuit breaker open: {s.service}", "error", s.as_metadata()))
            elif s.state == "closed" and before != "closed":
                alerts.send(Alert(f"Circuit breaker closed again: {s.service}", "info", s.as_metadata()))
        metadata: dict[str, object] = {"breakers": dg.MetadataValue.md(_table(states))}
        metadata.update({f"{s.service}/state": s.state for s in states})
        metadata.update({f"{s.service}/failures_in_window": s.failures_in_window for s in states})
        metadata.update({f"{s.service}/calls_in_window": s.calls_in_window for s in states})
        metadata["open_breakers"] = sum(s.is_open for s in states)
        events.append(dg.AssetObservation(CIRCUIT_BREAKERS_KEY, metadata=metadata))
        context.log.info(summary)
    return dg.SensorResult(skip_reason=summary, asset_events=events, cursor=json.dumps(now, sort_keys=True))
