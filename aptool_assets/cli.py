"""The ``aptool`` command (contract §6)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

DEMO_HOME = Path(".aptool") / "demo"


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _fail(message: str) -> int:
    print(f"aptool: error: {message}", file=sys.stderr)
    return 1


def _report_failures(summary, debug: bool) -> int:
    """One line naming the first failed step, its reason and the fix; --debug adds each full error."""
    if debug:
        for step in summary.failures:
            if step.error:
                print(f"--- {step.label or step.step}: full error\n{step.error}", file=sys.stderr)
    first = summary.failures[0]
    more = f" (and {len(summary.failures) - 1} more failed step(s))" if len(summary.failures) > 1 else ""
    return _fail(f"{first.label or first.step}{more}: {first.detail.rstrip('.')}. Fix: {first.fix}")


def cmd_run(args: argparse.Namespace) -> int:
    from aptool_assets.runner import DEFAULT_FIX, PipelineError, fix_for, run_pipeline
    from aptool_assets.settings import ConfigurationError

    try:
        with _instance() as instance:
            summary = run_pipeline(only=args.only, year=args.year, instance=instance)
    except (PipelineError, ConfigurationError) as exc:
        return _fail(str(exc))  # these already say which setting to fix
    except Exception as exc:
        if args.debug:
            raise
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        fix = fix_for(reason)
        return _fail(f"{reason}. Fix: {fix if fix != DEFAULT_FIX else 'run again with --debug for the traceback'}")
    print("\nSummary")
    print(summary.table())
    if not summary.ok:
        return _report_failures(summary, args.debug)
    print(f"aptool: done ({len(summary.steps)} steps, school year {summary.school_year})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from aptool_demo.run import run_demo  # demo tooling, not part of the product: only this command loads it

    return run_demo(args, open_instance=_instance, report_failures=_report_failures)


def cmd_webhooks_serve(args: argparse.Namespace) -> int:
    from aptool_assets.events.app import serve
    from aptool_assets.settings import ConfigurationError

    try:
        serve(host=args.host, port=args.port)
    except ConfigurationError as exc:
        return _fail(str(exc))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """Inspect and replay dead letters (IDs, types, reasons; payloads only with `show`)."""
    import json

    from aptool_assets.storage.inbox import open_inbox

    with open_inbox() as inbox:
        inbox.setup()
        if args.action == "list":
            rows = inbox.dead_letters(include_replayed=args.all)
            if not rows:
                print("no dead letters")
            for r in rows:
                replayed = f"  replayed {r['replayed_at']}" if r.get("replayed_at") else ""
                print(
                    f"{r['event_id']}  {r['event_type']}  attempts={r['attempts']}  "
                    f"last_failed={r['last_failed_at']}  reason: {r['reason']}{replayed}"
                )
            return 0
        if args.action == "show":
            if len(args.ids) != 1:
                return _fail("dead-letters show takes exactly one event ID")
            detail = inbox.dead_letter_detail(args.ids[0])
            if detail is None:
                return _fail(f"no dead letter with event ID {args.ids[0]}")
            print(json.dumps(detail, indent=2, default=str))
            return 0
        requeued = inbox.replay(args.ids or None)
        print(
            f"requeued {len(requeued)} event(s) for the next apply run"
            + (f": {', '.join(requeued)}" if requeued else "")
        )
        return 0


def _breaker(name: str, store):
    """The breaker ``name`` with its configured settings (a credential block: only a refusal opens it)."""
    from aptool_assets.resilience.breaker import BreakerSettings, CircuitBreaker
    from aptool_assets.resilience.policy import aeries_policy, iready_policy

    configured = {policy.service: policy.breaker() for policy in (aeries_policy(), iready_policy())}
    return CircuitBreaker(configured.get(name) or BreakerSettings.block(name, 60.0), store)


def cmd_breakers(args: argparse.Namespace) -> int:
    """Show the circuit breakers (shared by every run and sensor), or close some by hand after a fix."""
    from aptool_assets.storage.breakers import open_breaker_store

    store = open_breaker_store()
    try:
        if args.action == "list":
            names = sorted({"aeries", "iready", *(row["service"] for row in store.read_all())})
            for name in names:
                print(_breaker(name, store).state().describe())
            return 0
        if not args.services:
            return _fail("breakers reset takes the service(s) to close, e.g. aeries (see: aptool breakers list)")
        for name in args.services:
            print(_breaker(name, store).reset().describe())
        return 0
    finally:
        store.close()


def cmd_failed_operations(args: argparse.Namespace) -> int:
    """Source calls that failed for good (neither transient, nor auth, nor not-found), with their context."""
    from aptool_assets.storage.breakers import open_breaker_store

    store = open_breaker_store()
    try:
        if args.action == "list":
            rows = store.failed_operations(pending_only=not args.all)
            if not rows:
                print("no failed operations" + ("" if args.all else " pending"))
            for op in rows:
                done = "  resolved" if op.get("resolved_at") else ""
                print(
                    f"{op['id']}  {op['service']}  {op['operation']}  {op['error_type']}  "
                    f"x{op['occurrences']}: {op['message']}{done}"
                )
            return 0
        ids = [int(i) for i in args.ids] if args.ids else None
        print(f"marked {store.resolve_failed_operations(ids)} failed operation(s) resolved")
        return 0
    finally:
        store.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aptool", description="AP Tool data platform")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run everything on a synthetic district, no configuration needed")
    demo.add_argument("--ui", action="store_true", help="then open the Dagster UI on the same instance")
    demo.add_argument("--home", default=str(DEMO_HOME), help="where the demo keeps its state (default .aptool/demo)")
    demo.add_argument("--year", type=int, default=None, help="school year (start year); default: the current one")
    demo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as `aptool --debug demo`")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="materialize everything for the school year from the configured sources")
    run.add_argument("--only", choices=["iready", "aeries"], default=None)
    run.add_argument("--year", type=int, default=None, help="school year as its start year (2025 = 2025-26)")
    run.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="as `aptool --debug run`: Dagster's log, and the full error of a failed step",
    )
    run.set_defaults(func=cmd_run)

    webhooks = sub.add_parser("webhooks", help="the signed webhook receiver (contract §5)")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = webhooks_sub.add_parser("serve", help="run the receiver (needs APTOOL_WEBHOOK_SECRET)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.set_defaults(func=cmd_webhooks_serve)

    dead = sub.add_parser("dead-letters", help="inspect and replay events that could not be applied")
    dead.add_argument("action", choices=["list", "show", "replay"])
    dead.add_argument("ids", nargs="*", help="event IDs (show: one; replay: none = every dead letter not yet replayed)")
    dead.add_argument("--all", action="store_true", help="list: include dead letters already replayed")
    dead.set_defaults(func=cmd_dead_letters)

    breakers = sub.add_parser("breakers", help="circuit breaker states; close one by hand after fixing the cause")
    breakers.add_argument("action", nargs="?", default="list", choices=["list", "reset"])
    breakers.add_argument("services", nargs="*", help="reset: e.g. aeries, iready, or an aeries:auth:… block")
    breakers.set_defaults(func=cmd_breakers)

    failed = sub.add_parser("failed-operations", help="source calls that failed for good, with their context")
    failed.add_argument("action", nargs="?", default="list", choices=["list", "resolve"])
    failed.add_argument("ids", nargs="*", help="resolve: IDs (none = every pending one)")
    failed.add_argument("--all", action="store_true", help="list: include resolved ones")
    failed.set_defaults(func=cmd_failed_operations)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.filterwarnings("ignore", message=r".*(beta|preview).*", category=Warning)
    level = logging.DEBUG if args.debug else logging.WARNING
    if args.command in ("run", "demo") and not args.debug:
        # Warnings are part of the progress on stdout; stderr carries only the one-line error.
        logging.basicConfig(level=level, format="  [warning] %(message)s", stream=sys.stdout)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # Dagster's loggers are DEBUG-level and propagate here
        handler.setLevel(level)
    if args.debug:
        from aptool_assets import runner

        runner.CONSOLE_LOG_LEVEL = "DEBUG"
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
