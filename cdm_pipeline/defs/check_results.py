"""A library check's result as Dagster reports it: metadata with the one-line finding, logged when
the check fails."""

from __future__ import annotations

import dagster as dg

from cdm_pipeline.lib.check_results import CheckResult
from cdm_pipeline.project import CHECK_DETAIL


def asset_check_result(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, check: CheckResult, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    if not check.passed:
        log = context.log.error if severity == dg.AssetCheckSeverity.ERROR else context.log.warning
        log(f"check {check.name} of {asset_key.to_user_string()} failed: {check.detail}")
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name=check.name, passed=check.passed, severity=severity,
        metadata={**check.counts, CHECK_DETAIL: check.detail},
    )
