"""Landing-area retention: which landed and quarantined i-Ready files may go, as plain functions.

Every download lands a file (content-addressed by sha256) under ``<landing>/iready/<year>/<subject>/``
and every refused file is copied to ``<landing>/quarantine/iready/``; without pruning the area grows
with every nightly rewrite of the vendor's files. The nightly job ``iready_landing_retention`` removes
files whose modification time (when they were landed or quarantined) is older than
``APTOOL_LANDING_RETENTION_DAYS``, except the files a published version came from: the *current
selection* of each partition, i.e. the ``selected`` rows of the partition's latest landing that
selected any (what ``aptool/iready_diagnostic_results`` parses). Only regular files under those two
folders are touched; symlinks and anything else in the landing directory are left alone. Directories
stay (a landing may be about to write into one).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

LANDED_SUBDIR = ("iready",)
QUARANTINE_SUBDIR = ("quarantine", "iready")


def current_selection(landed: pl.DataFrame) -> pl.DataFrame:
    """The ``selected`` rows of each partition's (school year × subject) latest landing run that selected any."""
    selected = landed.filter(pl.col("status") == "selected")
    if selected.height == 0:
        return selected
    latest = selected.group_by("school_year", "subject").agg(pl.col("run_id").sort_by("landed_at").last())
    return selected.join(latest, on=["school_year", "subject", "run_id"], how="semi")


def _canonical(path: str | Path) -> str:
    return os.path.realpath(path)


@dataclass(frozen=True)
class Protected:
    """The current selection, never pruned however old: by canonical local path, and by content (the
    sha256 a landed file is named after), so a landing directory moved or copied elsewhere keeps it too."""

    paths: frozenset[str] = frozenset()
    sha256s: frozenset[str] = frozenset()

    @classmethod
    def of(cls, landed: pl.DataFrame) -> Protected:
        rows = current_selection(landed)
        return cls(
            paths=frozenset(_canonical(p) for p in rows.get_column("local_path").drop_nulls().to_list()),
            sha256s=frozenset(rows.get_column("sha256").drop_nulls().to_list()),
        )

    def __contains__(self, path: Path) -> bool:
        return path.name.split(".", 1)[0] in self.sha256s or _canonical(path) in self.paths


@dataclass
class AreaCount:
    """What happened to the files of one folder: pruned, kept because current, kept because recent."""

    files_pruned: int = 0
    bytes_pruned: int = 0
    kept_current: int = 0
    kept_recent: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass
class PruneReport:
    landed: AreaCount
    quarantine: AreaCount
    cutoff: dt.datetime
    dry_run: bool = False

    @property
    def failed(self) -> list[str]:
        return self.landed.failed + self.quarantine.failed

    def metadata(self) -> dict[str, object]:
        """Counts and bytes only (file names carry no student data, but the counts are what matter)."""
        out: dict[str, object] = {"cutoff": self.cutoff.isoformat(timespec="seconds"), "dry_run": self.dry_run}
        for name, area in (("landed", self.landed), ("quarantine", self.quarantine)):
            out[f"{name}_files_pruned"] = area.files_pruned
            out[f"{name}_bytes_pruned"] = area.bytes_pruned
            out[f"{name}_files_kept_recent"] = area.kept_recent
        out["landed_files_kept_current"] = self.landed.kept_current
        out["files_not_removed"] = len(self.failed)
        return out


def _regular_files(top: Path):
    """``(path, lstat)`` of every regular file below ``top``; symlinks are neither followed nor returned."""
    for dirpath, _dirnames, filenames in os.walk(top, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _prune_area(top: Path, cutoff: float, protected: Protected, dry_run: bool) -> AreaCount:
    count = AreaCount()
    if not top.is_dir():
        return count
    for path, st in _regular_files(top):
        if st.st_mtime >= cutoff:
            count.kept_recent += 1
            continue
        if path in protected:
            count.kept_current += 1
            continue
        if not dry_run:
            try:
                path.unlink()
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # removed meanwhile
                    continue
                log.warning("could not remove %s: %s", path, exc.strerror)  # the job names them in its log too
                count.failed.append(str(path))
                continue
        count.files_pruned += 1
        count.bytes_pruned += st.st_size
    return count


def prune_landing_area(
    landing_dir: Path,
    landed: pl.DataFrame,
    retention_days: int,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Remove landed and quarantined files older than ``retention_days``, except the current selection in
    ``landed`` (rows of ``aptool.iready_landed_files``). ``dry_run`` counts without removing."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=retention_days)
    edge = cutoff.timestamp()
    return PruneReport(
        landed=_prune_area(landing_dir.joinpath(*LANDED_SUBDIR), edge, Protected.of(landed), dry_run),
        quarantine=_prune_area(landing_dir.joinpath(*QUARANTINE_SUBDIR), edge, Protected(), dry_run),
        cutoff=cutoff,
        dry_run=dry_run,
    )
