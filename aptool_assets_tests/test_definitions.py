"""The code location loads, and its asset graph is what review last accepted.

An unplanned change of keys, dependencies, groups, partitions, checks, jobs, sensors or schedules
fails here; after a deliberate change run `make snapshot` and commit the new snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from aptool_assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _partitions(pd) -> object:
    if pd is None:
        return None
    if isinstance(pd, dg.MultiPartitionsDefinition):
        return {d.name: _partitions(d.partitions_def) for d in pd.partitions_defs}
    if isinstance(pd, dg.DynamicPartitionsDefinition):
        return f"dynamic:{pd.name}"
    if isinstance(pd, dg.StaticPartitionsDefinition):
        return sorted(pd.get_partition_keys())
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):  # the time zone is configuration: left out
        return f"time windows '{pd.cron_schedule}' from {pd.start:%Y-%m-%d}, key {pd.fmt}, end offset {pd.end_offset}"
    return type(pd).__name__


def _mapping(mapping) -> str:
    """A dependency's partition mapping with its parameters (which years a year reads is part of the graph)."""
    if isinstance(mapping, dg.TimeWindowPartitionMapping):
        return f"TimeWindowPartitionMapping({mapping.start_offset}, {mapping.end_offset})"
    if isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping):
        return f"MultiToSingleDimensionPartitionMapping({mapping.partition_dimension_name})"
    return type(mapping).__name__


def graph_snapshot() -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "dep_partition_mappings": {
                k.to_user_string(): _mapping(graph.get_partition_mapping(key, k))
                for k in sorted(node.parent_keys, key=lambda k: k.to_user_string())
                if node.partitions_def is not None and graph.get(k).partitions_def is not None
            },
            "kinds": sorted(node.kinds),
            "automation": type(node.automation_condition).__name__ if node.automation_condition else None,
            "checks": sorted(c.name for c in node.check_keys),
            "blocking_checks": sorted(c.name for c in node.check_keys if graph.get(c).blocking),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "sensors": sorted((s.name, str(s.default_status.value)) for s in repo.sensor_defs),
        "schedules": sorted((s.name, str(s.cron_schedule), s.execution_timezone or "") for s in repo.schedule_defs),
    }


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_matches_snapshot():
    current = json.loads(json.dumps(graph_snapshot()))
    if os.environ.get("APTOOL_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"no accepted asset graph at {SNAPSHOT}: run `make snapshot` and commit it"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the asset graph changed; if this was intended run `make snapshot` and commit "
        f"{SNAPSHOT.relative_to(Path.cwd()) if SNAPSHOT.is_relative_to(Path.cwd()) else SNAPSHOT}"
    )


def test_every_asset_and_check_is_described():
    graph = defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.owners, f"{key.to_user_string()} has no owner"
    for check_key in graph.asset_check_keys:
        assert graph.get(check_key).description, f"check {check_key.name} has no description"
