import dagster as dg

# `cdm run` executes this job for a date or a range of dates; in the UI it is the one-click way to
# refresh everything for a partition.
ALL_ASSETS_JOB = "all_assets"


# Dagster's default executor (multiprocess: each step in its own process), tuned for one DuckDB
# file. One step at a time: every step opens the warehouse, which takes one writer, so the
# `duckdb` pool would let only one run anyway; without the limit a second step process starts and
# polls the pool with a back-off that grows to 15 s. Steps fork from a server that has already
# imported the project, instead of each starting Python and importing Dagster, DuckDB and the
# project again (cdm_pipeline/step_preload.py: the definitions and Great Expectations too). Together:
# a 30-partition run of 2,000 demo people went from 72 to 55 s, most of it fixed cost per step; the
# preload of the definitions and GX then took the demo's 16-step night from 46.6 to 25.8 s. The
# pool still keeps apart the steps of different runs (CLI, schedule, sensor, backfills).
ONE_STEP_AT_A_TIME = dg.multiprocess_executor.configured(
    {"max_concurrent": 1, "start_method": {"forkserver": {"preload_modules": ["cdm_pipeline.step_preload"]}}}
)


def free_the_slot_of_a_step_that_died() -> None:
    """Make a run whose step process died (OOM killer, a crash) fail instead of hanging.

    Dagster 1.13 marks such a step "finished without success or failure event" but keeps the
    `duckdb` pool slot it claimed, so every later step of the same run waits for that slot
    forever (upstream: dagster-io/dagster#28456; run monitoring's
    ``free_slots_after_run_end_seconds`` frees slots only once a run has ended, which this one
    never does). We free the slot where Dagster gives the step up; the run then fails, alerts,
    and the next night's run starts normally.
    """
    from dagster._core.execution.plan.active import ActiveExecution

    give_up = ActiveExecution.mark_unknown_state
    if getattr(give_up, "frees_pool_slot", False):
        return

    def mark_unknown_state(self, step_key: str) -> None:
        give_up(self, step_key)
        if self._instance_concurrency_context:
            self._instance_concurrency_context.free_step(step_key)

    mark_unknown_state.frees_pool_slot = True
    ActiveExecution.mark_unknown_state = mark_unknown_state


free_the_slot_of_a_step_that_died()


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
