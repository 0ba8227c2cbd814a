"""Files the pipeline hands to other systems: ad-platform audiences built from the segments."""

from cdm_pipeline.lib.exports.audiences import (
    AudienceExport,
    ExportError,
    MartsNotBuilt,
    SegmentRef,
    UnknownSegment,
    exports_dir,
    resolve_segment,
    write_audience_export,
    write_nightly_exports,
)

__all__ = [
    "AudienceExport",
    "ExportError",
    "MartsNotBuilt",
    "SegmentRef",
    "UnknownSegment",
    "exports_dir",
    "resolve_segment",
    "write_audience_export",
    "write_nightly_exports",
]
