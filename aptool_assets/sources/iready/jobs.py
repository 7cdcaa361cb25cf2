"""The i-Ready jobs: the load (land, check and parse one school year × subject partition) and the
nightly landing-area retention."""

import dagster as dg

from aptool_assets.resources import PlatformResource
from aptool_assets.sources.iready.retention import prune_landing_area
from aptool_assets.storage.resources import WarehouseResource
from aptool_assets.tables.iready import LANDED_FILES

# One i-Ready run at a time under the production run queue: pruning never overlaps a landing.
SOURCE_TAG = {"aptool/source": "iready"}

iready_sync_job = dg.define_asset_job(
    name="iready_sync",
    selection=dg.AssetSelection.groups("iready"),
    description="Land the i-Ready diagnostic file(s) of one school year and subject, validate and publish them.",
    tags=SOURCE_TAG,
)


class LandingRetentionConfig(dg.Config):
    dry_run: bool = False  # count what would be pruned, remove nothing


@dg.op(
    name="prune_landing_area",
    description="Remove landed and quarantined i-Ready files older than APTOOL_LANDING_RETENTION_DAYS, except "
    "the files each partition's published results came from; counts and bytes go to the step's metadata.",
    out=dg.Out(dg.Nothing),
    tags=SOURCE_TAG,
)
def prune_landing_area_op(
    context: dg.OpExecutionContext,
    config: LandingRetentionConfig,
    warehouse: WarehouseResource,
    platform: PlatformResource,
) -> None:
    settings = platform.settings()
    # Read before listing the files: a landing that selects a file after this read lands it fresh (recent).
    landed = warehouse.get().read_table(
        LANDED_FILES, columns=["school_year", "subject", "status", "sha256", "local_path", "landed_at", "run_id"]
    )
    report = prune_landing_area(settings.landing_dir, landed, platform.landing_retention_days, dry_run=config.dry_run)
    context.log.info(
        f"landing retention ({platform.landing_retention_days} days, before {report.cutoff:%Y-%m-%d %H:%M} UTC"
        f"{', dry run' if config.dry_run else ''}): {report.landed.files_pruned} landed files "
        f"({report.landed.bytes_pruned} bytes) and {report.quarantine.files_pruned} quarantined files "
        f"({report.quarantine.bytes_pruned} bytes) pruned; {report.landed.kept_current} kept as current"
    )
    if report.failed:
        context.log.warning(f"could not remove: {', '.join(report.failed[:20])}")
        raise dg.Failure(
            description=f"{len(report.failed)} expired landing file(s) could not be removed; check the permissions "
            "of APTOOL_LANDING_DIR (the step's log names them)",
            metadata=report.metadata(),
        )
    context.add_output_metadata(report.metadata())


@dg.job(
    name="iready_landing_retention",
    description="Prune the i-Ready landing area (nightly by `iready_landing_retention`; safe to run by hand, "
    "with `dry_run: true` in the op config to only count).",
    tags=SOURCE_TAG,
)
def iready_landing_retention_job():
    prune_landing_area_op()
