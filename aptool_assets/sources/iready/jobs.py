"""The i-Ready load job: land, check and parse one school year × subject partition."""

from __future__ import annotations

import dagster as dg

iready_sync_job = dg.define_asset_job(
    name="iready_sync",
    selection=dg.AssetSelection.groups("iready"),
    description="Land the i-Ready diagnostic file(s) of one school year and subject, validate and publish them.",
    tags={"aptool/source": "iready"},
)
