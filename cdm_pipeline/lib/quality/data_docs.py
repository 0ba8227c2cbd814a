"""Great Expectations Data Docs for the staging quality runs, readable without internet access.

``write_data_docs`` keeps a small GX file project next to the site (``<reports>/gx``: the
expectation suites and the last ``keep_runs`` validation results per suite), rebuilds the site
with GX's own Data Docs builder, then makes every page work offline:

* GX's templates load jQuery, Bootstrap, bootstrap-table, bootstrap-datepicker, Font Awesome,
  bootstrap-dark and Vega from CDNs (without them the index page renders empty). Those exact
  files (same versions; Vega's floating ``@5``/``@6`` tags pinned to the versions shipped) are
  in ``static/vendor`` of this package; they are copied into ``<site>/static/vendor`` on each
  build and every CDN link is rewritten to a relative path (``integrity``/``crossorigin``
  attributes are dropped: a browser refuses CORS-mode loads from ``file://``; the shipped
  files are byte-identical to the pinned npm releases, see ``static/README.md``).
* The GX logo that the templates load from an S3 bucket points to the copy GX puts in
  ``<site>/static/images``.
* Links in prose (the GX newsletter footer, "Great Expectations" credit) lose their external
  target: the footer is removed, other external ``<a href>`` keep their text without a link.
  Nothing on a page refers to the internet.
* GX's validation pages link their favicon one folder too high; relative ``static/`` links are
  recomputed from each page's depth.

Validation results arrive already redacted (counts only, see ``validate.py``) and are redacted
again before they are stored, so neither the store nor the pages hold row values.

The site folder is self-contained: it can be zipped or opened from ``file://``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdm_pipeline.lib.quality.validate import redact_result

if TYPE_CHECKING:
    from cdm_pipeline.lib.quality.validate import SuiteResult

logger = logging.getLogger(__name__)

SITE_NAME = "cdm_quality"
STORE_DIR_NAME = "gx"
"""The GX file project lives in ``<site_dir.parent>/gx`` (GX's own folder name)."""
VENDOR_SOURCE = Path(__file__).resolve().parent / "static" / "vendor"
SITE_VENDOR_DIR = "static/vendor"
LOCK_FILE_NAME = ".cdm_data_docs.lock"

CDN_ASSETS: dict[str, str] = {
    # js_script_imports.j2
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free@6.6.0/css/all.min.css"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9/dist/umd/popper.min.js"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1/dist/js/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js"
    ),
    # page.j2, page_minimal.j2, index_page.j2
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.css"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1/dist/css/bootstrap.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "forevolve-bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css"
    ),
}
"""CDN URL in GX 1.24's Data Docs templates → file under ``static/vendor`` (npm name@version/path)."""

GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
IMAGE_ASSETS: dict[str, str] = {
    # top_navbar.j2 (the light logo) and data_docs_default_styles.css (its dark-mode twin, which
    # GX does not ship): both become the logo that GX copies into <site>/static/images.
    GX_WEB_ASSETS + "logo-long.png": "static/images/logo-long.png",
    GX_WEB_ASSETS + "full_logo_dark.png": "static/images/logo-long.png",
}
"""Image URL (query ignored) → path inside the site."""

_EXTERNAL = re.compile(r"^(?:https?:)?//", re.IGNORECASE)
_RESOURCE_TAG = re.compile(r"<(script|link|img|source|iframe|embed)\b[^>]*>", re.IGNORECASE)
_ANCHOR_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_URL_ATTRIBUTE = re.compile(r"\b(src|href)(\s*=\s*)([\"'])(.*?)\3", re.IGNORECASE | re.DOTALL)
_SRI_ATTRIBUTES = re.compile(r"\s+(?:integrity|crossorigin)(?:\s*=\s*([\"']).*?\1)?(?=[\s/>])", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*([\"']?)([^\"')]*?)\1\s*\)", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import\s+(?:url\(\s*)?([\"']?)((?:https?:)?//[^\"')\s;]*)\1\s*\)?[^;]*;", re.IGNORECASE)
_LOCAL_STATIC = re.compile(r"\b(src|href)(\s*=\s*)([\"'])(?:\./|(?:\.\./)+)static/", re.IGNORECASE)
_GX_NEWSLETTER_FOOTER = re.compile(
    r"<footer>\s*<p>\s*Stay current on everything GX.*?</footer>\s*", re.IGNORECASE | re.DOTALL
)


def write_data_docs(results: Sequence[SuiteResult], site_dir: Path, keep_runs: int = 30) -> Path:
    """Store ``results``, prune old runs, rebuild the Data Docs site offline-ready; return index.html.

    Args:
        results: suite results from :func:`~cdm_pipeline.lib.quality.validate.validate_frame`
            (may be empty: the site is then rebuilt from the stored runs).
        site_dir: the site folder (created); the GX store goes to ``site_dir.parent / "gx"``.
        keep_runs: validation runs kept per suite (the oldest are deleted from the store and
            their pages from the site).

    Idempotent: storing the same result again overwrites it (same suite, run name, run time and
    table). Calls are serialised by a lock file in the store folder.
    """
    if keep_runs < 1:
        raise ValueError(f"keep_runs must be at least 1, not {keep_runs}")
    site_dir = Path(site_dir).absolute()
    store_dir = site_dir.parent / STORE_DIR_NAME
    if site_dir == store_dir:
        raise ValueError(f"the site folder cannot be named {STORE_DIR_NAME!r}: the GX store lives there")
    site_dir.mkdir(parents=True, exist_ok=True)
    store_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(store_dir / LOCK_FILE_NAME):
        context = _file_context(site_dir.parent, store_dir, site_dir)
        _store_suites(context, results)
        for result in results:
            _store_result(context, result)
        pruned = prune_validation_results(context, keep_runs)
        if pruned:
            logger.info("pruned %d old validation result(s), keeping %d run(s) per suite", pruned, keep_runs)
        context.build_data_docs(site_names=[SITE_NAME])
        make_site_offline(site_dir)
    return site_dir / "index.html"


# --- GX file project ---------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _file_context(project_root: Path, store_dir: Path, site_dir: Path) -> Any:
    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    if context.variables.analytics_enabled is not False or _progress_bars_on(context):
        context.variables.analytics_enabled = False
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        context.variables.save()
    site_config = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            # Relative to the store folder, so the reports folder can move as a whole.
            "base_directory": os.path.relpath(site_dir, store_dir),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
    }
    sites = context.list_data_docs_sites()
    for name in list(sites):
        if name != SITE_NAME:  # GX's default "local_site" under gx/uncommitted
            context.delete_data_docs_site(name)
    if SITE_NAME not in sites:
        context.add_data_docs_site(SITE_NAME, site_config)
    elif dict(sites[SITE_NAME]) != site_config:
        context.update_data_docs_site(SITE_NAME, site_config)
    return context


def _progress_bars_on(context: Any) -> bool:
    bars = context.variables.progress_bars
    if bars is None:
        return True
    return bool(bars.get("globally", True)) or bool(bars.get("metric_calculations", True))


def _store_suites(context: Any, results: Sequence[SuiteResult]) -> None:
    """Save each suite as it last ran (one per suite name), so validation pages link to it."""
    import great_expectations as gx

    latest: dict[str, SuiteResult] = {}
    for result in results:
        name = result.gx_result.suite_name
        if name not in latest or result.evaluated_at >= latest[name].evaluated_at:
            latest[name] = result
    for name, result in latest.items():
        expectations = []
        for expectation_result in result.gx_result.results:
            expectation = expectation_result.expectation_config.to_domain_obj()
            expectation.batch_id = None  # the in-memory batch of that run, not part of the suite
            expectations.append(expectation)
        context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))


def _run_id(result: SuiteResult) -> Any:
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = result.gx_result.meta.get("run_id")
    if isinstance(run_id, RunIdentifier):
        return run_id
    if isinstance(run_id, dict):
        return RunIdentifier(run_name=run_id.get("run_name"), run_time=run_id.get("run_time") or result.evaluated_at)
    return RunIdentifier(run_time=result.evaluated_at)


def _store_result(context: Any, result: SuiteResult) -> None:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    gx_result = redact_result(result.gx_result)
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=gx_result.suite_name),
        run_id=_run_id(result),
        batch_identifier=result.table,
    )
    context.validation_results_store.set(key, gx_result)


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def prune_validation_results(context: Any, keep_runs: int) -> int:
    """Delete all but the newest ``keep_runs`` validation results of each suite; return how many."""
    store = context.validation_results_store
    by_suite: dict[str, list[Any]] = defaultdict(list)
    for key in store.list_keys():
        by_suite[key.expectation_suite_identifier.name].append(key)
    removed = 0
    for keys in by_suite.values():
        keys.sort(
            key=lambda k: (_utc(k.run_id.run_time), k.run_id.run_name or "", str(k.batch_identifier)),
            reverse=True,
        )
        for key in keys[keep_runs:]:
            store.remove_key(key)
            removed += 1
    return removed


# --- offline site ---------------------------------------------------------------------------------


def make_site_offline(site_dir: Path) -> None:
    """Copy the vendored assets into the site and rewrite every page and style sheet to use them."""
    site_dir = Path(site_dir)
    _sync_tree(VENDOR_SOURCE, site_dir / SITE_VENDOR_DIR)
    vendor_dir = site_dir / SITE_VENDOR_DIR
    for path in sorted(site_dir.rglob("*")):
        if path.suffix.lower() not in (".html", ".css") or not path.is_file() or vendor_dir in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".html":
            new_text = offline_html(text, path.relative_to(site_dir))
        else:
            new_text = offline_css(text, path.relative_to(site_dir))
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")


def _sync_tree(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` (copy changed files, delete extra ones)."""
    wanted = set()
    for path in source.rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(source)
        wanted.add(relative)
        destination = target / relative
        stat = path.stat()
        if destination.is_file():
            existing = destination.stat()
            if existing.st_size == stat.st_size and int(existing.st_mtime) == int(stat.st_mtime):
                continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            relative = path.relative_to(target)
            if path.is_file() and relative not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _site_target(url: str) -> str | None:
    """The path inside the site that replaces an external URL, or None if unknown."""
    if url.startswith("//"):
        url = "https:" + url
    if url in CDN_ASSETS:
        return f"{SITE_VENDOR_DIR}/{CDN_ASSETS[url]}"
    bare = url.split("?", 1)[0].split("#", 1)[0]
    if bare in CDN_ASSETS:
        return f"{SITE_VENDOR_DIR}/{CDN_ASSETS[bare]}"
    return IMAGE_ASSETS.get(bare)


def _relative(target: str, page: Path) -> str:
    """``target`` (a path inside the site) as seen from ``page`` (also inside the site)."""
    depth = len(page.parent.parts)
    return "../" * depth + target


def _rewrite_resource_tag(match: re.Match, page: Path) -> str:
    tag = match.group(0)
    attribute = _URL_ATTRIBUTE.search(tag)
    if attribute is None or not _EXTERNAL.match(attribute.group(4).strip()):
        return tag
    url = attribute.group(4).strip()
    target = _site_target(url)
    if target is None:
        logger.warning("Data Docs page %s: removed a <%s> that loads %s (no local copy)", page, match.group(1), url)
        return f"<!-- cdm: removed an external <{match.group(1).lower()}> (the report works offline) -->"
    local = attribute.group(1) + attribute.group(2) + attribute.group(3) + _relative(target, page) + attribute.group(3)
    tag = tag[: attribute.start()] + local + tag[attribute.end() :]
    return _SRI_ATTRIBUTES.sub("", tag)


def _rewrite_anchor(match: re.Match) -> str:
    tag = match.group(0)
    attribute = _URL_ATTRIBUTE.search(tag)
    if attribute is None or attribute.group(1).lower() != "href" or not _EXTERNAL.match(attribute.group(4).strip()):
        return tag
    return tag[: attribute.start()].rstrip() + tag[attribute.end() :]


def _rewrite_css_urls(text: str, page: Path) -> str:
    def replace(match: re.Match) -> str:
        url = match.group(2).strip()
        if not _EXTERNAL.match(url):
            return match.group(0)
        target = _site_target(url)
        if target is None:
            logger.warning("Data Docs %s: removed a CSS url(%s) (no local copy)", page, url)
            return "url(data:,)"
        return f"url('{_relative(target, page)}')"

    text = _CSS_IMPORT.sub(lambda m: _css_import(m, page), text)
    return _CSS_URL.sub(replace, text)


def _css_import(match: re.Match, page: Path) -> str:
    target = _site_target(match.group(2))
    if target is None:
        logger.warning("Data Docs %s: removed @import of %s (no local copy)", page, match.group(2))
        return ""
    return f"@import url('{_relative(target, page)}');"


def offline_html(text: str, page: Path) -> str:
    """A Data Docs page (``page`` = its path inside the site) rewritten to load nothing remote."""
    text = _GX_NEWSLETTER_FOOTER.sub("", text)
    text = _RESOURCE_TAG.sub(lambda m: _rewrite_resource_tag(m, page), text)
    text = _ANCHOR_TAG.sub(_rewrite_anchor, text)
    text = _rewrite_css_urls(text, page)
    prefix = "../" * len(page.parent.parts)
    return _LOCAL_STATIC.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{prefix}static/", text)


def offline_css(text: str, sheet: Path) -> str:
    """A style sheet of the site (``sheet`` = its path inside the site) with no remote url()."""
    return _rewrite_css_urls(text, sheet)
