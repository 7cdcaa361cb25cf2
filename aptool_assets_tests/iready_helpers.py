"""Helpers for the i-Ready tests: lay out a vendor-like SFTP tree with generated files."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from aptool_demo.diagnostics import synthetic_diagnostics
from aptool_demo.iready_files import write_diagnostic_csv

REGION = "ca-test_usd"


def year_dir(root: Path, folder: str) -> Path:
    path = root / "exports" / REGION / folder
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    for parent in path.parents:
        if parent == root:
            break
        os.chmod(parent, 0o755)
    return path


def diagnostics(academic_year: int, subject: str, n_students: int = 30, seed: int = 1) -> pl.DataFrame:
    ids = list(range(5000, 5000 + n_students))
    return synthetic_diagnostics(
        n_students=n_students, academic_year=academic_year, subject=subject, seed=seed, student_ids=ids
    )


def write_file(
    root: Path,
    folder: str,
    name: str,
    academic_year: int,
    subject: str,
    *,
    layout: str = "2024-25",
    n_students: int = 30,
    seed: int = 1,
    mtime: int | None = None,
    records: pl.DataFrame | None = None,
) -> Path:
    """A vendor file of ``diagnostics(...)`` (or of ``records``) under ``root/<folder>/name``."""
    path = year_dir(root, folder) / name
    rows = diagnostics(academic_year, subject, n_students, seed) if records is None else records
    write_diagnostic_csv(path, rows, subject=subject, layout=layout)
    os.chmod(path, 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
