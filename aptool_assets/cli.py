"""The ``aptool`` command (contract §6).

Everything it prints goes through :mod:`aptool_assets.redaction`: a failure is one scrubbed line on
stderr (a traceback, scrubbed too, only with ``--debug``), and its log handlers scrub every record, so
no password or token reaches the terminal or a cron mail.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from aptool_assets.redaction import scrub, scrub_logs
from aptool_assets.rules.student_ids import DEFAULT_ID_FIELD, ID_FIELDS

DEMO_HOME = Path(".aptool") / "demo"


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _fail(message: str) -> int:
    print(scrub(f"aptool: error: {message}"), file=sys.stderr)
    return 1


def _print_traceback(exc: BaseException) -> None:
    """The full traceback (``--debug``), scrubbed of secrets."""
    print(scrub("".join(traceback.format_exception(exc))), file=sys.stderr, end="")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unexpected(exc: Exception, debug: bool) -> int:
    """Any error a command did not handle: one scrubbed line (the traceback too with --debug)."""
    from aptool_assets.settings import ConfigurationError

    if isinstance(exc, ConfigurationError):  # names the setting and the fix
        return _fail(str(exc))
    if debug:
        _print_traceback(exc)
        return _fail(_first_line(exc))
    return _fail(f"{_first_line(exc)}. Fix: run again with --debug for the traceback")


def _report_failures(summary, debug: bool) -> int:
    """One line naming the first failed step, its reason and the fix; --debug adds each full error."""
    if debug:
        for step in summary.failures:
            if step.error:
                print(scrub(f"--- {step.label or step.step}: full error\n{step.error}"), file=sys.stderr)
    first = summary.failures[0]
    more = f" (and {len(summary.failures) - 1} more failed step(s))" if len(summary.failures) > 1 else ""
    return _fail(f"{first.label or first.step}{more}: {first.detail.rstrip('.')}. Fix: {first.fix}")


def _run_with_one_line_errors(args: argparse.Namespace, work):
    """``work(instance)`` on the configured instance; (result, None), or (None, exit status) after printing one
    line with the reason and its fix (the scrubbed traceback only with --debug)."""
    from aptool_assets.runner import DEFAULT_FIX, PipelineError, fix_for
    from aptool_assets.settings import ConfigurationError

    try:
        with _instance() as instance:
            return work(instance), None
    except (PipelineError, ConfigurationError) as exc:
        return None, _fail(str(exc))  # these already say which setting to fix
    except Exception as exc:  # noqa: BLE001 - one line with a fix; the scrubbed traceback only with --debug
        if args.debug:
            _print_traceback(exc)
        reason = scrub(_first_line(exc))
        fix = fix_for(reason)
        return None, _fail(
            f"{reason}. Fix: {fix if fix != DEFAULT_FIX else 'run again with --debug for the traceback'}"
        )


def cmd_run(args: argparse.Namespace) -> int:
    from aptool_assets.runner import run_pipeline

    summary, failed = _run_with_one_line_errors(
        args, lambda instance: run_pipeline(only=args.only, year=args.year, instance=instance)
    )
    if summary is None:
        return failed
    print("\nSummary")
    print(summary.table())
    if not summary.ok:
        return _report_failures(summary, args.debug)
    print(f"aptool: done ({len(summary.steps)} steps, school year {summary.school_year})")
    return 0


def school_years_arg(text: str) -> list[int]:
    """``2021-2025`` (a range, both ends included), ``2021,2023`` or ``2024``: start years of school years."""
    years: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            a, b = int(first), int(last or first)
            if not (1900 < a <= b < 2200):
                raise ValueError(part)
            years.update(range(a, b + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of school years: write start years, e.g. 2021-2025 or 2021,2023"
        ) from None
    return sorted(years)


def cmd_backfill(args: argparse.Namespace) -> int:
    from aptool_assets.runner import backfill

    summaries, failed = _run_with_one_line_errors(
        args, lambda instance: backfill(args.years, only=args.only, instance=instance)
    )
    if summaries is None:
        return failed
    for summary in summaries:
        print(f"\nSummary {summary.school_year}-{str(summary.school_year + 1)[-2:]}")
        print(summary.table())
    failed = next((s for s in summaries if not s.ok), None)
    if failed is not None:
        later = [y for y in args.years if y > failed.school_year]
        if later:
            print(f"aptool: not loaded after the failure: {', '.join(map(str, later))}", file=sys.stderr)
        return _report_failures(failed, args.debug)
    print(f"aptool: done ({len(summaries)} school year(s): {', '.join(str(s.school_year) for s in summaries)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from aptool_demo.run import run_demo  # demo tooling, not part of the product: only this command loads it

    return run_demo(args, open_instance=_instance, report_failures=_report_failures)


def cmd_webhooks_serve(args: argparse.Namespace) -> int:
    from aptool_assets.events.app import serve
    from aptool_assets.settings import ConfigurationError

    try:
        serve(
            host=args.host,
            port=args.port,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    except ConfigurationError as exc:
        return _fail(str(exc))
    return 0


def cmd_export_dashboard_preview(args: argparse.Namespace) -> int:
    """The Chronic Absenteeism Indicator preview as CDE's downloadable file lays it out (CSV)."""
    from aptool_assets.metrics.dashboard import dashboard_preview
    from aptool_assets.settings import Settings
    from aptool_assets.storage.backends import configured_database_url, database_target, default_database_url
    from aptool_assets.storage.warehouse import open_warehouse

    url = configured_database_url() or default_database_url()
    target = database_target(url)
    if target.kind != "postgres" and not Path(target.duckdb_path).exists():
        return _fail(f"no warehouse at {url}: set APTOOL_DATABASE_URL, or run `aptool run` first")
    year = args.year or Settings.from_env().school_year
    preview = dashboard_preview(open_warehouse(url), year)
    if preview.height == 0:
        return _fail(f"no chronic absenteeism indicator for {year}-{year + 1} yet. Fix: run `aptool run --year {year}`")
    if args.out:
        preview.write_csv(args.out, null_value="")
        print(f"aptool: {preview.height} rows for {year}-{year + 1} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(preview.write_csv(null_value=""))
    return 0


def _existing_inbox():
    """The inbox the environment points at, or (None, why) when its store does not exist: `dead-letters`
    reads an inbox, it never creates one (a wrong DAGSTER_HOME must not look like an empty inbox)."""
    from aptool_assets.storage.inbox import open_inbox

    inbox = open_inbox()
    print(f"aptool: inbox {inbox.describe()}", file=sys.stderr)
    try:
        present = inbox.exists()
    except Exception as exc:  # noqa: BLE001 - one line naming the cause, e.g. an unreachable database
        inbox.close()
        return None, f"cannot reach the inbox ({type(exc).__name__}); nothing created"
    if not present:
        inbox.close()
        where = "this file" if inbox.backend == "sqlite" else "this database"
        return None, (
            f"no webhook inbox in {where} (nothing created): check APTOOL_DATABASE_URL, APTOOL_INBOX_PATH and "
            "DAGSTER_HOME are those the receiver runs with"
        )
    return inbox, None


def _print_dead_letters(rows: list[dict]) -> None:
    if not rows:
        print("no dead letters")
    for r in rows:
        replayed = f"  replayed {r['replayed_at']}" if r.get("replayed_at") else ""
        print(
            f"{r['event_id']}  {r['event_type']}  attempts={r['attempts']}  "
            f"last_failed={r['last_failed_at']}  reason: {r['reason']}{replayed}"
        )


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """Inspect and replay dead letters (IDs, types, reasons; payloads only with `show`)."""
    import json

    if args.action == "replay" and bool(args.ids) == bool(args.all):
        return _fail("dead-letters replay takes event IDs or --all (not both): see `aptool dead-letters list`")
    if args.action == "show" and len(args.ids) != 1:
        return _fail("dead-letters show takes exactly one event ID")
    if args.action == "list" and args.ids:
        return _fail("dead-letters list takes no event IDs (show ID prints one)")
    if args.dry_run and args.action != "replay":
        return _fail("--dry-run goes with replay")
    inbox, problem = _existing_inbox()
    if inbox is None:
        return _fail(problem)
    with inbox:
        if args.action == "list":
            _print_dead_letters(inbox.dead_letters(include_replayed=args.all))
            return 0
        if args.action == "show":
            detail = inbox.dead_letter_detail(args.ids[0])
            if detail is None:
                return _fail(f"no dead letter with event ID {args.ids[0]}")
            print(json.dumps(detail, indent=2, default=str))
            return 0
        requeued = inbox.replay(None if args.all else args.ids, dry_run=args.dry_run)
        verb = "would requeue" if args.dry_run else "requeued"
        print(
            f"{verb} {len(requeued)} event(s) for the next apply run"
            + (f": {', '.join(requeued)}" if requeued else "")
            + (" (dry run: nothing changed)" if args.dry_run else "")
        )
        return 0


def cmd_db_grant_receiver(args: argparse.Namespace) -> int:
    """Create the inbox tables (as the publisher) and give the receiver's role exactly what it needs."""
    import psycopg

    from aptool_assets.storage.backends import redact_url, uses_postgres
    from aptool_assets.storage.inbox import InboxMissing, PostgresInbox, open_inbox

    if not uses_postgres():
        return _fail("db grant-receiver is for a PostgreSQL APTOOL_DATABASE_URL (the embedded inbox has no roles)")
    inbox = open_inbox()
    assert isinstance(inbox, PostgresInbox)
    print(f"aptool: database {redact_url(inbox.url)}", file=sys.stderr)
    try:
        warnings_found = inbox.grant_receiver(args.role)
    except (ValueError, InboxMissing) as exc:
        return _fail(str(exc))
    except psycopg.Error as exc:  # e.g. the publisher's role does not own the schema
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(f"granting failed ({type(exc).__name__}): {first_line}")
    finally:
        inbox.close()
    print(
        f"granted {args.role}: USAGE on schema aptool; INSERT on aptool.webhook_events and aptool.dead_letter_events; "
        "SELECT on their seq/event_id columns only; USAGE on the seq sequence. Nothing else."
    )
    for warning in warnings_found:
        print(f"warning: {warning}", file=sys.stderr)
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


def _add_webhook_commands(sub) -> None:
    """`webhooks serve`, `dead-letters` and `db grant-receiver`."""
    webhooks = sub.add_parser("webhooks", help="the signed webhook receiver (contract §5)")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = webhooks_sub.add_parser("serve", help="run the receiver (needs APTOOL_WEBHOOK_SECRET)")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; anything else warns: use a TLS proxy")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take the client address from X-Forwarded-For of a trusted proxy (default: on)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies trusted for X-Forwarded-* (comma-separated; default 127.0.0.1,::1 or $FORWARDED_ALLOW_IPS)",
    )
    serve.set_defaults(func=cmd_webhooks_serve)

    dead = sub.add_parser("dead-letters", help="inspect and replay events that could not be applied")
    dead.add_argument("action", choices=["list", "show", "replay"])
    dead.add_argument("ids", nargs="*", help="event IDs (show: exactly one; replay: the ones to requeue)")
    dead.add_argument(
        "--all", action="store_true", help="list: include dead letters already replayed; replay: every dead letter"
    )
    dead.add_argument("--dry-run", action="store_true", help="replay: list what would be requeued, change nothing")
    dead.set_defaults(func=cmd_dead_letters)

    db = sub.add_parser("db", help="database administration for a PostgreSQL deployment")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    grant = db_sub.add_parser(
        "grant-receiver",
        help="create the webhook inbox tables and give ROLE only what the receiver needs (run as the publisher)",
    )
    grant.add_argument("role", help="an existing login role, e.g. aptool_receiver")
    grant.set_defaults(func=cmd_db_grant_receiver)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aptool", description="AP Tool data platform")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run everything on a synthetic district, no configuration needed")
    demo.add_argument("--ui", action="store_true", help="then open the Dagster UI on the same instance")
    demo.add_argument("--home", default=str(DEMO_HOME), help="where the demo keeps its state (default .aptool/demo)")
    demo.add_argument("--year", type=int, default=None, help="school year (start year); default: the current one")
    demo.add_argument(
        "--iready-id-field",
        choices=ID_FIELDS,
        default=DEFAULT_ID_FIELD,
        help="key the i-Ready files by this Aeries identifier and set APTOOL_IREADY_ID_FIELD to it",
    )
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

    backfill = sub.add_parser(
        "backfill",
        help="load past school years in order (each with its DatabaseYear) without touching the current year's roster",
    )
    backfill.add_argument(
        "--years", type=school_years_arg, required=True, help="start years, e.g. 2021-2025 (2021-22 through 2025-26)"
    )
    backfill.add_argument("--only", choices=["iready", "aeries"], default=None, help="one source and its metrics")
    backfill.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="as `aptool --debug backfill`"
    )
    backfill.set_defaults(func=cmd_backfill)

    _add_webhook_commands(sub)

    breakers = sub.add_parser("breakers", help="circuit breaker states; close one by hand after fixing the cause")
    breakers.add_argument("action", nargs="?", default="list", choices=["list", "reset"])
    breakers.add_argument("services", nargs="*", help="reset: e.g. aeries, iready, or an aeries:auth:… block")
    breakers.set_defaults(func=cmd_breakers)

    failed = sub.add_parser("failed-operations", help="source calls that failed for good, with their context")
    failed.add_argument("action", nargs="?", default="list", choices=["list", "resolve"])
    failed.add_argument("ids", nargs="*", help="resolve: IDs (none = every pending one)")
    failed.add_argument("--all", action="store_true", help="list: include resolved ones")
    failed.set_defaults(func=cmd_failed_operations)

    export = sub.add_parser("export", help="write a published table in another system's layout")
    export_sub = export.add_subparsers(dest="export_command", required=True)
    preview = export_sub.add_parser(
        "dashboard-preview",
        help="the Chronic Absenteeism Indicator preview in CDE's downloadable-file layout (CSV), to diff with CDE's",
    )
    preview.add_argument("--year", type=int, default=None, help="school year as its start year (default: current)")
    preview.add_argument("--out", default=None, help="CSV file to write (default: standard output)")
    preview.set_defaults(func=cmd_export_dashboard_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.filterwarnings("ignore", message=r".*(beta|preview).*", category=Warning)
    # A server's INFO lines (the receiver's startup line with its inbox, its periodic summary) are its output.
    level = logging.DEBUG if args.debug else logging.INFO if args.command == "webhooks" else logging.WARNING
    if args.command in ("run", "demo") and not args.debug:
        # Warnings are part of the progress on stdout; stderr carries only the one-line error.
        logging.basicConfig(level=level, format="  [warning] %(message)s", stream=sys.stdout)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # Dagster's loggers are DEBUG-level and propagate here
        handler.setLevel(level)
        scrub_logs(handler)
    if args.debug:
        from aptool_assets import runner

        runner.CONSOLE_LOG_LEVEL = "DEBUG"
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - the command's one line (module docstring), never a raw traceback
        return _unexpected(exc, args.debug)


if __name__ == "__main__":
    sys.exit(main())
