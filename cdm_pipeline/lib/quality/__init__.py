"""Data quality of the staging tables: expectation suites, validation with Great Expectations 1.x,
and offline Data Docs.

Importing this package is cheap: Great Expectations (~3 s to import) is loaded only when a frame
is validated or Data Docs are written.
"""

from cdm_pipeline.lib.quality.data_docs import write_data_docs
from cdm_pipeline.lib.quality.expectations import (
    CRITICAL,
    E164_REGEX,
    EMAIL_REGEX,
    SUITES,
    WARNING,
    ExpectationSpec,
)
from cdm_pipeline.lib.quality.validate import (
    ExpectationOutcome,
    MissingColumnsError,
    QualityError,
    SuiteResult,
    required_columns,
    validate_frame,
)

__all__ = [
    "CRITICAL",
    "E164_REGEX",
    "EMAIL_REGEX",
    "ExpectationOutcome",
    "ExpectationSpec",
    "MissingColumnsError",
    "QualityError",
    "SUITES",
    "SuiteResult",
    "WARNING",
    "required_columns",
    "validate_frame",
    "write_data_docs",
]
