"""cdm_pipeline: customer data management on Dagster and DuckDB."""

__version__ = "0.1.0"
