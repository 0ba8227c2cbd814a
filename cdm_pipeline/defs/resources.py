import dagster as dg

from cdm_pipeline.project import project_config
from cdm_pipeline.resources import LinkageEngineResource, WarehouseResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(
                database=str(project_config().warehouse),
                connection_config=project_config().duckdb.connection_settings(),
                key_file=_text(project_config().security.key_file),
                crypto=project_config().security.crypto,
                extension_directory=_text(project_config().security.extension_directory),
            ),
            "linkage_engine": _linkage_engine(),
        }
    )


def _text(path) -> str | None:
    return None if path is None else str(path)


def _linkage_engine() -> LinkageEngineResource:
    engine = project_config().engine
    return LinkageEngineResource(
        name=engine.name, master=engine.spark.master, app_name=engine.spark.app_name,
        conf=dict(engine.spark.conf), work_dir=str(engine.spark.work_dir),
    )
