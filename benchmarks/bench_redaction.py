"""What scrubbing costs: every log line of ``aptool`` and of the webhook receiver passes a ScrubFilter,
and every error leaving the PostgreSQL stores is scrubbed.

Scrubs, with the secrets a production process knows (a database URL with a password, the Aeries
certificate, the webhook secret, the alert webhook URL, all in the environment): a typical log line
(the receiver's rejection line), a 2.5 kB driver error full of quoted tokens, and a line that does
carry the password (percent-encoded), which must come out clean.

Targets: ≤ 50 µs per log line (the receiver answers in about a millisecond, and logs every rejection:
its line may not cost a noticeable share of that) and ≤ 5 ms per 2.5 kB error (errors come once per
failed operation, never per row or request). Exit status 1 when a target is missed.

    .venv/bin/python benchmarks/bench_redaction.py [--repeat 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PASSWORD = "p#ss?w%rd with space"
ENCODED = "p%23ss%3Fw%25rd%20with%20space"
os.environ.update(
    APTOOL_DATABASE_URL=f"postgresql://aptool:{ENCODED}@db.example:5432/aptool?sslmode=require",
    AERIES_CERT="0123456789abcdef0123456789abcdef",
    APTOOL_WEBHOOK_SECRET="bench-webhook-secret-" + "x" * 24,
    APTOOL_ALERT_WEBHOOK_URL="https://hooks.example/services/T000/B000/bench-token",
)

from aptool_assets.redaction import scrub  # noqa: E402 - the module puts the repository on sys.path first

TARGET_LINE_US = 50.0
TARGET_ERROR_US = 5000.0


def per_call_us(text: str, repeat: int) -> float:
    return min(timeit.repeat(lambda: scrub(text), number=repeat, repeat=3)) / repeat * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    line = "webhook rejected: bad or missing signature (client 127.0.0.1)"
    error = " ".join(f'invalid value "{i:04d}" for option "opt{i}"' for i in range(60))[:2500]
    leaking = f"could not connect to postgresql://aptool:{ENCODED}@db.example:5432/aptool ({PASSWORD!r})"
    clean = scrub(leaking)
    if PASSWORD in clean or ENCODED in clean:
        print(f"FAILED: the password survived scrubbing: {clean}")
        return 1
    line_us = per_call_us(line, args.repeat)
    error_us = per_call_us(error, max(1, args.repeat // 10))
    leaking_us = per_call_us(leaking, args.repeat)
    print(f"log line            {line_us:8.1f} µs   (target ≤ {TARGET_LINE_US:.0f} µs)")
    print(f"2.5 kB driver error {error_us:8.1f} µs   (target ≤ {TARGET_ERROR_US:.0f} µs)")
    print(f"line with the URL   {leaking_us:8.1f} µs   → {clean}")
    ok = line_us <= TARGET_LINE_US and error_us <= TARGET_ERROR_US
    print("targets met" if ok else "target missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
