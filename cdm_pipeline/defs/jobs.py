import dagster as dg

# `cdm run` executes this job for a date or a range of dates; in the UI it is the one-click way to
# refresh everything for a partition.
ALL_ASSETS_JOB = "all_assets"


@dg.definitions
def jobs() -> dg.Definitions:
    return dg.Definitions(
        jobs=[
            dg.define_asset_job(
                ALL_ASSETS_JOB,
                # The daily partitions come from the assets it selects.
                selection=dg.AssetSelection.all(),
                description="Every asset for the selected daily partitions, extract to marts.",
            )
        ]
    )
