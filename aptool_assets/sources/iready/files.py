"""Which files on the i-Ready SFTP server are diagnostic results, for which subject and year.

File names changed over the years (reference §3) and the folder a file sits in is only a hint
for its year (reference §4, §9): the parser later checks the file's own ``Academic Year``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aptool_assets.sources.iready.sftp_tree import RemoteFile

_DIAGNOSTIC_NAME = re.compile(
    r"""^(?:
        comprehensive_student_diagnostic_activity_(?P<old>ela|math)           # before Aug 2020
      | diagnostic_results_(?P<mid>ela|math)(?:_confidential)?                # Aug 2020 on
      | i-ready_inform_results_(?P<fy27>reading_english|math)(?:_confidential)?  # 2026-27 on
    )\.csv$""",
    re.IGNORECASE | re.VERBOSE,
)
_SUBJECT_BY_TOKEN = {"ela": "ela", "reading": "ela", "reading_english": "ela", "math": "math"}
_START_YEAR_FOLDER = re.compile(r"^(?P<year>(19|20)\d{2})(?:-(?:\d{2}|\d{4}))?$")
CURRENT_YEAR_FOLDER = "current_year"


def subject_of(filename: str) -> str | None:
    """``ela``/``math`` for a diagnostic-results file name, ``None`` for any other export."""
    m = _DIAGNOSTIC_NAME.match(filename)
    if not m:
        return None
    token = next(t for t in m.groupdict().values() if t)
    return _SUBJECT_BY_TOKEN[token.lower()]


@dataclass(frozen=True)
class DiagnosticFile:
    """A diagnostic-results file on the server and the partition its folder points to."""

    remote: RemoteFile
    subject: str
    school_year: int
    year_folder: str | None  # "Current_Year", "2024", or None when the file sits outside a year folder
    region: str  # the folder above the year folder: one district (or KIPP region) per value

    @property
    def fingerprint(self) -> tuple[str, int, int]:
        return (self.remote.path, self.remote.size, self.remote.mtime)


def classify(remote: RemoteFile, current_school_year: int) -> DiagnosticFile | None:
    """Describe ``remote`` if it is a diagnostic-results file, else ``None``."""
    directory, name = posixpath.split(remote.path)
    subject = subject_of(name)
    if subject is None:
        return None
    folder = posixpath.basename(directory)
    if folder.lower() == CURRENT_YEAR_FOLDER:
        return DiagnosticFile(remote, subject, current_school_year, folder, posixpath.dirname(directory))
    m = _START_YEAR_FOLDER.match(folder)
    if m:
        return DiagnosticFile(remote, subject, int(m["year"]), folder, posixpath.dirname(directory))
    # A single-district account may put files straight under the root: treat them as the live year;
    # the Academic Year inside the file decides whether they are really loaded.
    return DiagnosticFile(remote, subject, current_school_year, None, directory)


def diagnostic_files(remotes: Iterable[RemoteFile], current_school_year: int) -> list[DiagnosticFile]:
    found = (classify(r, current_school_year) for r in remotes)
    return sorted((f for f in found if f is not None), key=lambda f: f.remote.path)


def newest_first(files: Iterable[DiagnosticFile]) -> list[DiagnosticFile]:
    return sorted(files, key=lambda f: (f.remote.mtime, f.remote.path), reverse=True)
