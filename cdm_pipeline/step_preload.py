"""Imported once by the forkserver that a run's step processes fork from (defs/jobs.py).

A step then starts with the project's definitions and its heaviest library already imported
instead of importing them again: every step read the modules under defs/ (0.7 s), and each
staging step imported Great Expectations for its validation (2.4 s). The demo's 16-step night
took 46.6 s before this, measured on 2 cores.
"""

import great_expectations  # noqa: F401  (staging's validation, lib/quality/validate.py)
import great_expectations.expectations  # noqa: F401
from great_expectations.execution_engine import pandas_execution_engine  # noqa: F401

from cdm_pipeline.definitions import defs

# Imports every module of the defs folder (and what they import) as a step's definitions would.
# A failure here (a config broken since the run started) is left for the step to report, with
# its one-line message; the forkserver must not die of it.
try:
    defs()
except Exception:
    pass
