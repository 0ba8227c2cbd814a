import dagster as dg

from cdm_pipeline.project import project_config
from cdm_pipeline.resources import WarehouseResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(
                database=str(project_config().warehouse),
                connection_config=project_config().duckdb.connection_settings(),
            )
        }
    )
