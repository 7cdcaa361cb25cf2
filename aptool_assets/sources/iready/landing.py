"""Landing: download a partition's candidate files and choose deliberately which one to load.

A partition (school year × subject) may have several candidate files: one per region of a
multi-region account, an old-name and a new-name file after a vendor rename, last year's copy
still sitting in ``Current_Year`` in July (reference §9). Per region we take the newest file
whose own ``Academic Year`` is the partition's; everything else is recorded with the reason it
was not loaded. A region whose newest file cannot be loaded (stale only, unreadable) fails the
partition, so the previously published data stays in place.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aptool_assets.sources.iready.files import DiagnosticFile, newest_first
from aptool_assets.sources.iready.parser import DiagnosticFileError, StaleFileError, parse_diagnostic_file
from aptool_assets.sources.iready.resources import LandedFile
from aptool_assets.storage.private_files import private_dir, private_opener

SNIFF_BYTES = 256 * 1024


class _Downloader(Protocol):
    def download(self, remote_path: str, landing_dir: Path) -> LandedFile: ...


@dataclass(frozen=True)
class LandingDecision:
    file: DiagnosticFile
    landed: LandedFile | None  # None when the file was not downloaded (empty, or an older copy)
    status: str  # selected | superseded | stale | unreadable | empty
    detail: str

    @property
    def loadable(self) -> bool:
        return self.status == "selected"


@dataclass(frozen=True)
class PartitionLanding:
    school_year: int
    subject: str
    decisions: list[LandingDecision]

    @property
    def selected(self) -> list[LandingDecision]:
        return [d for d in self.decisions if d.loadable]

    @property
    def problems(self) -> list[str]:
        """Why this partition must not be loaded; empty when every region has a loadable file."""
        if not self.decisions:
            return [f"no i-Ready {self.subject} diagnostic file for school year {self.school_year} on the server"]
        out = []
        by_region: dict[str, list[LandingDecision]] = defaultdict(list)
        for d in self.decisions:
            by_region[d.file.region].append(d)
        for _region, decisions in sorted(by_region.items()):
            if any(d.loadable for d in decisions):
                continue
            blocking = [d for d in decisions if d.status in ("unreadable", "stale")] or decisions
            out.extend(f"{d.file.remote.path}: {d.detail}" for d in blocking)
        return out

    @property
    def refused(self) -> list[LandingDecision]:
        """Files to quarantine: those that make the partition fail."""
        loaded_regions = {d.file.region for d in self.selected}
        return [
            d
            for d in self.decisions
            if d.file.region not in loaded_regions and d.status in ("unreadable", "stale") and d.landed
        ]


def sniff(path: Path, subject: str, source_file: str, school_year: int) -> tuple[str, str]:
    """Parse the head of a landed file: ``("selected", "")``, ``("stale", why)`` or ``("unreadable", why)``."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if len(head) == SNIFF_BYTES:  # cut at the last complete record
        head = head[: head.rfind(b"\n") + 1] or head
    try:
        parse_diagnostic_file(head, subject=subject, source_file=source_file, expected_academic_year=school_year)
    except StaleFileError as exc:
        return "stale", str(exc)
    except DiagnosticFileError as exc:
        return "unreadable", str(exc)
    return "selected", ""


def land_partition(
    downloader: _Downloader,
    files: Iterable[DiagnosticFile],
    landing_dir: Path,
    school_year: int,
    subject: str,
) -> PartitionLanding:
    """Download and judge the candidates of one partition (``files`` may hold other partitions' too)."""
    candidates = [f for f in files if f.school_year == school_year and f.subject == subject]
    target = private_dir(landing_dir / "iready" / str(school_year) / subject)
    by_region: dict[str, list[DiagnosticFile]] = defaultdict(list)
    for f in candidates:
        by_region[f.region].append(f)

    decisions: list[LandingDecision] = []
    for region in sorted(by_region):
        chosen = False
        for f in newest_first(by_region[region]):
            if f.remote.size == 0:
                decisions.append(LandingDecision(f, None, "empty", "zero-byte file (vendor still writing, or no data)"))
                continue
            if chosen:
                decisions.append(
                    LandingDecision(f, None, "superseded", "a newer file for the same partition was loaded")
                )
                continue
            landed = downloader.download(f.remote.path, target)
            status, detail = sniff(landed.local_path, subject, f.remote.path, school_year)
            decisions.append(LandingDecision(f, landed, status, detail))
            if status == "selected":
                chosen = True
            elif status == "unreadable":
                # The newest file of the right name is broken: do not fall back to an older copy
                # silently; fail so that someone looks.
                break
    return PartitionLanding(school_year, subject, decisions)


def quarantine(decision: LandingDecision, quarantine_dir: Path) -> Path:
    """Keep a refused file, with its reason beside it, out of the landing area."""
    assert decision.landed is not None
    private_dir(quarantine_dir)
    dest = quarantine_dir / decision.landed.local_path.name
    # Copied into a file created 0600 (shutil.copy2 would create it with the default mode first); its
    # modification time is the quarantine time, from which the landing retention counts.
    with open(decision.landed.local_path, "rb") as src, open(dest, "wb", opener=private_opener) as out:
        shutil.copyfileobj(src, out)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with open(dest.with_suffix(dest.suffix + ".reason.txt"), "w", opener=private_opener) as reason:
        reason.write(
            f"{stamp}\nremote: {decision.file.remote.path}\nsha256: {decision.landed.sha256}\n"
            f"reason: {decision.detail}\n"
        )
    return dest
