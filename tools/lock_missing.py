"""`make lock-check`'s second half: fail when pyproject.toml needs a package that requirements.lock lacks.

``pip install --dry-run --report`` of ``.[dev]`` into the installed .venv lists what pip would still add; with
.venv installed from the lock, anything but the project itself is a dependency added to pyproject.toml and not
locked yet (run ``make lock``).

    .venv/bin/python tools/lock_missing.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "aptool-assets"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report), "-e", ".[dev]"]
        subprocess.run(cmd, cwd=ROOT, check=True)
        planned = json.loads(report.read_text())["install"]
    missing = sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in planned
        if item["metadata"]["name"] != PROJECT
    )
    if missing:
        print(f"pyproject.toml needs packages requirements.lock lacks (run make lock): {' '.join(missing)}")
        return 1
    print("requirements.lock holds everything pyproject.toml needs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
