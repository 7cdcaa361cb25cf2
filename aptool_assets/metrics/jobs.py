"""Jobs over the derived metrics."""

from __future__ import annotations

import dagster as dg

from aptool_assets.metrics.assets import ACADEMIC_RISK_KEY

academic_risk_job = dg.define_asset_job(
    name="academic_risk",
    selection=dg.AssetSelection.assets(ACADEMIC_RISK_KEY),
    description="Recompute aptool.student_academic_risk for one school year.",
)
