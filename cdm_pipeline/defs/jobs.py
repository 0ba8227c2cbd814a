import dagster as dg

# `cdm run` executes this job for a date or a range of dates; in the UI it is the one-click way to
# refresh everything for a partition.
ALL_ASSETS_JOB = "all_assets"


# Dagster's default executor (multiprocess: each step in its own process), tuned for one DuckDB
# file. One step at a time: every step opens the warehouse, which takes one writer, so the
# `duckdb` pool would let only one run anyway; without the limit a second step process starts and
# polls the pool with a back-off that grows to 15 s. Steps fork from a server that has already
# imported the project, instead of each starting Python and importing Dagster, DuckDB and the
# project again. Together: a 30-partition run of 2,000 demo people went from 72 to 55 s, most of
# it fixed cost per step. The pool still keeps apart the steps of different runs (CLI, schedule,
# sensor, backfills).
ONE_STEP_AT_A_TIME = dg.multiprocess_executor.configured(
    {"max_concurrent": 1, "start_method": {"forkserver": {"preload_modules": ["cdm_pipeline.definitions"]}}}
)


@dg.definitions
def jobs() -> dg.Definitions:
    return dg.Definitions(
        executor=ONE_STEP_AT_A_TIME,
        jobs=[
            dg.define_asset_job(
                ALL_ASSETS_JOB,
                # The daily partitions come from the assets it selects.
                selection=dg.AssetSelection.all(),
                description="Every asset for the selected daily partitions, extract to marts.",
            )
        ]
    )
