"""Every table the platform writes, declared once: the published tables of contract §3 and the
operational tables beside them.

The declarations sit below the sources, the webhook path and the metrics, because several of them
write the same table (a pull and a webhook event both write ``aptool.attendance_days``). Each table
is also an asset whose key is ``aptool/<table name>``.
"""

from __future__ import annotations

import dagster as dg

from aptool_assets.storage.warehouse import TableSpec


def asset_key(table: TableSpec) -> dg.AssetKey:
    """The asset that owns ``table``: ``aptool/<name>``."""
    return dg.AssetKey(["aptool", table.name])
