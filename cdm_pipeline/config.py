"""The project configuration file (``cdm.yaml``): typed models, loading and validation.

A mistake in the config is the most common way a nightly run goes wrong, so every problem is
reported as one line naming the file and the key (``cdm.yaml: sources[1].kind: ...``) before
anything runs. Relative paths are resolved against the config file's folder, never the current
working directory, so the same file works from cron, the CLI and the Dagster UI.
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_ENV_VAR = "CDM_CONFIG"
DEFAULT_CONFIG_NAME = "cdm.yaml"

SOURCE_KINDS = ("contacts", "orders", "email_events", "web_events")
SOURCE_FORMATS = ("csv", "jsonl", "parquet")

# Canonical columns a source may map, per kind. Staging turns these into typed, standardised
# columns; anything else a source carries stays in raw only.
CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "contacts": (
        "first_name", "last_name", "email", "phone", "birth_date", "address_line1",
        "address_line2", "city", "postcode", "region", "country", "company", "email_opt_in",
        "do_not_sell", "created_at", "updated_at", "linked_id",
    ),
    # An order may also name its buyer (BUYER_IDENTITY_COLUMNS): each order is then a contact
    # record of its own source too, linked by identity like any other.
    "orders": (
        "contact_id", "email", "order_date", "amount", "currency", "status", "channel",
        "first_name", "last_name", "phone", "address_line1", "address_line2", "city", "postcode",
        "region", "country", "company", "email_opt_in",
    ),
    "email_events": (
        "subscriber_id", "email", "event_type", "occurred_at", "campaign_id", "campaign_name",
        "url", "bounce_type",
    ),
    "web_events": (
        "client_id", "user_id", "email", "event_name", "occurred_at", "session_id", "page_url",
        "page_referrer", "utm_source", "utm_medium", "utm_campaign", "device_category",
        "country", "value", "currency", "transaction_id",
    ),
}
BUYER_IDENTITY_COLUMNS = (
    "first_name", "last_name", "phone", "address_line1", "address_line2", "city", "postcode",
    "region", "country", "company",
)
# Only date-like columns take a parse format ({column: X, format: "%Y%m%d"}).
DATE_COLUMNS = frozenset(
    {"birth_date", "created_at", "updated_at", "order_date", "occurred_at"}
)

SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
DATE_PLACEHOLDER = "{date}"


class ConfigError(Exception):
    """A problem in the config file, reported as ``<file>: <key>: <message>`` on one line."""

    def __init__(self, file: Path | str, key: str, message: str):
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EPOCH_FORMATS = ("epoch_s", "epoch_ms", "epoch_us")
# Columns read as numbers: amounts with currency symbols, thousands separators or a decimal comma
# are understood (the source's ``decimal`` says which mark separates the decimals).
AMOUNT_COLUMNS = frozenset({"amount", "value"})
BOOLEAN_COLUMNS = frozenset({"email_opt_in", "do_not_sell"})


class ColumnSpec(_Strict):
    """Where a canonical column's value comes from, and how to read it.

    Exactly one origin: ``column`` (a column of the file; with ``path`` a field inside a nested
    column, with ``param`` the value of a GA4-style key/value list), ``value`` (a constant) or
    ``from_filename`` (a regular expression on the file's name: its first group, else the match).
    """

    column: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, min_length=1)  # "category", "totals.amount"
    param: str | None = Field(default=None, min_length=1)  # GA4 event_params: the key
    value: str | None = None
    from_filename: str | None = Field(default=None, min_length=1)
    # Dates and times: a strftime format ("%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S %z") or seconds,
    # milliseconds or microseconds since 1970 (epoch_s, epoch_ms, epoch_us).
    format: str | None = None
    # A full name ("Jane Q. Smith", "Smith, Jane"): its first or last part.
    name_part: Literal["first", "last"] | None = None
    # The source's words for canonical values, matched case-insensitively after trimming
    # ({paid: completed}); null means "no value" (an unticked box states nothing). Others pass.
    values: dict[str, str | bool | None] | None = None
    # false: a file without this column gives nulls instead of failing the load (exports whose
    # files differ in columns, e.g. Mailchimp's subscribed and unsubscribed members).
    required: bool = True

    @property
    def origin(self) -> str:
        if self.column is not None:
            return self.column + (f".{self.path}" if self.path else "") + (f"[{self.param}]" if self.param else "")
        if self.value is not None:
            return f"constant {self.value!r}"
        return f"file name /{self.from_filename}/"


LOSS_SHARE = Field(default=None, ge=0, le=1)


class LossLimits(_Strict):
    """How much of a source partition may be lost before the run stops (README, "No silent loss").

    Shares of the partition's records: lines that could not be read, rows quarantined by
    staging, and non-empty values of one mapped column that could not be parsed (dates, amounts,
    booleans). Above a limit the blocking check fails and nothing downstream runs.
    """

    rejected_share: float = Field(default=0.05, ge=0, le=1)
    quarantined_share: float = Field(default=0.2, ge=0, le=1)
    unparsed_share: float = Field(default=0.2, ge=0, le=1)


# A share over a loss limit fails only once this many records are lost, so one bad line in a
# nine-line night does not stop the pipeline; losing every record fails at any size.
MIN_LOST = 10


def exceeds_loss_limit(lost: int, total: int, limit: float) -> bool:
    """The rule of every loss limit (extract's rejected lines, staging's quarantine and parsing)."""
    return total > 0 and lost / total > limit and (lost >= MIN_LOST or lost == total)


class SourceLossLimits(_Strict):
    """A source's own limits; unset keys take the project's ``loss_limits``."""

    rejected_share: float | None = LOSS_SHARE
    quarantined_share: float | None = LOSS_SHARE
    unparsed_share: float | None = LOSS_SHARE


class SourceConfig(_Strict):
    """One landed export: where its files are and how its columns map to canonical ones."""

    name: str
    # The preset the source was filled from (README, "Presets"); recorded for display.
    preset: str | None = None
    system: str = Field(min_length=1)
    kind: Literal["contacts", "orders", "email_events", "web_events"]
    format: Literal["csv", "jsonl", "parquet"]
    path: str = Field(min_length=1)
    # The record id: a column (id_column), or a hash of canonical columns where an export has
    # none (id_from: [client_id, occurred_at, event_name]).
    id_column: str | None = Field(default=None, min_length=1)
    id_from: list[str] | None = Field(default=None, min_length=1)
    columns: dict[str, str | ColumnSpec | None] = Field(default_factory=dict)
    # Orders and email events: the contacts source whose record ids their contact_id /
    # subscriber_id hold. Unset: every contacts source of the same system.
    contacts_source: str | None = None
    # CSV dialect; exports from Excel-minded systems use ';' and windows-1252 more often than not.
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    # Date-times written without an offset are local times here (unset: the project timezone).
    timezone: str | None = None
    decimal: Literal[".", ","] = "."
    # A column holding a list (JSON or Parquet): each element is a record of its own; mapped
    # columns naming this column read the element (e.g. Mailchimp's member activity).
    explode: str | None = Field(default=None, min_length=1)
    # Rows sharing a record id are one record, each column its first non-empty value in file
    # order (line-item exports: Shopify writes order fields on an order's first row only).
    group_rows: bool = False
    loss_limits: SourceLossLimits = Field(default_factory=SourceLossLimits)

    @property
    def is_snapshot(self) -> bool:
        """A path without ``{date}`` is a full snapshot, read again for every partition."""
        return DATE_PLACEHOLDER not in self.path

    def column_spec(self, canonical: str) -> ColumnSpec | None:
        value = self.columns.get(canonical)
        if value is None or isinstance(value, ColumnSpec):
            return value
        return ColumnSpec(column=value)

    @property
    def mapped(self) -> dict[str, ColumnSpec]:
        """Canonical column -> its spec, for every column the source maps."""
        return {c: self.column_spec(c) for c in self.columns if self.columns[c] is not None}

    @property
    def mapped_source_columns(self) -> list[str]:
        """The source's own column names every file must have: the id column first."""
        names = [self.id_column] if self.id_column else []
        for spec in self.mapped.values():
            if spec.column is not None and spec.required and spec.column not in names:
                names.append(spec.column)
        if self.explode and self.explode not in names:
            names.append(self.explode)
        return names

    @property
    def optional_source_columns(self) -> list[str]:
        """Mapped columns a file may lack (``required: false``): read as nulls there."""
        required = set(self.mapped_source_columns)
        optional = [s.column for s in self.mapped.values() if s.column and s.column not in required]
        return list(dict.fromkeys(optional))  # two canonical columns may read one (a full name)

    @property
    def carries_identity(self) -> bool:
        """An orders source mapping the buyer's details: each order is also a contact record."""
        return self.kind == "orders" and any(c in self.mapped for c in BUYER_IDENTITY_COLUMNS)

    def glob_for(self, landing_dir: Path, partition_date: dt.date) -> str:
        """The file glob for one partition, as an absolute pattern under ``landing_dir``."""
        relative = self.path.replace(DATE_PLACEHOLDER, partition_date.isoformat())
        return str(landing_dir / relative)


SurvivorshipRule = Literal["source_trust", "most_recent", "most_complete", "most_frequent"]
# Attributes of a golden customer; "address" is the address fields surviving together.
SURVIVING_ATTRIBUTES = (
    "first_name", "last_name", "email", "phone", "birth_date", "address", "company",
    "email_opt_in", "do_not_sell",
)
ADDRESS_FIELDS = ("address_line1", "address_line2", "city", "postcode", "region", "country")


class SameIdLink(_Strict):
    """A source column that holds another source's record id (``web user_id = CRM contact id``)."""

    source: str
    column: Literal["linked_id", "user_id"]
    equals: str


class SurvivorshipConfig(_Strict):
    """Which member record's value a golden customer keeps, per attribute."""

    # Source names (or systems), most trusted first; unlisted sources rank after them.
    source_trust: list[str] = Field(default_factory=list)
    default: SurvivorshipRule = "most_recent"
    attributes: dict[str, SurvivorshipRule] = Field(default_factory=dict)

    def rule_for(self, attribute: str) -> SurvivorshipRule:
        return self.attributes.get(attribute, DEFAULT_SURVIVORSHIP.get(attribute, self.default))


# Names are spelt best by the most trusted system; a birth date most records agree on is the
# likeliest right one; contact details and consent follow the latest statement.
DEFAULT_SURVIVORSHIP: dict[str, SurvivorshipRule] = {
    "first_name": "source_trust", "last_name": "source_trust", "birth_date": "most_frequent",
}


class IdentityConfig(_Strict):
    """Identity resolution: deterministic links, the Splink model, clusters and survivorship."""

    # The Splink database API; "duckdb" runs on the warehouse connection.
    engine: Literal["duckdb"] = "duckdb"
    model_path: Path = Path("data/identity/splink_model.json")
    overrides_path: Path = Path("data/identity/overrides.csv")
    match_threshold: float = Field(default=0.95, gt=0, lt=1)
    # Clusters joined only by weaker pairs merge when the pairs between them average at least
    # this match probability (pairs never compared count as 0): README, "Identity resolution".
    # Stored in the model when it is trained; a change takes effect with `cdm identity train`.
    merge_threshold: float = Field(default=0.6, gt=0, lt=1)
    # An email or phone shared by more records than this is ignored for linking and reported.
    max_records_per_identifier: int = Field(default=20, ge=2)
    max_cluster_size: int = Field(default=50, ge=2)
    # Fail before predicting when the blocking rules would generate more comparisons than this.
    max_comparisons: int = Field(default=200_000_000, ge=1)
    # Junk values never used for linking, added to the built-in list (test@test.com, 0000000000).
    blocklist: dict[Literal["email", "phone"], list[str]] = Field(default_factory=dict)
    same_ids: list[SameIdLink] = Field(default_factory=list)
    survivorship: SurvivorshipConfig = Field(default_factory=SurvivorshipConfig)
    # Labelled records (source_name, source_record_id, entity): when set, every run scores its
    # clusters against them (pairwise precision, recall, F1) in the asset's metadata.
    truth_path: Path | None = None
    # Random pairs for estimating u; the seed keeps a retrained model reproducible.
    u_sample_pairs: int = Field(default=2_000_000, ge=10_000)
    seed: int = 42


class LifecycleConfig(_Strict):
    """Day thresholds of the lifecycle stages, counted back from the marts' as-of date."""

    new_days: int = Field(default=30, ge=1)  # first order this recent: new
    active_days: int = Field(default=90, ge=1)  # last order this recent: active
    at_risk_days: int = Field(default=180, ge=1)  # ... else this recent: at risk
    lapsed_days: int = Field(default=365, ge=1)  # ... else this recent: lapsed; older: churned


class MartsConfig(_Strict):
    """How the marts read activity: money, windows, sessions and attribution."""

    # Revenue is reported in this currency; orders in others are converted with exchange_rates
    # (units of `currency` per unit of the other). Unset: amounts are summed as they are.
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    exchange_rates: dict[str, float] = Field(default_factory=dict)
    # Orders in these statuses are not revenue (and are not attributed).
    excluded_order_statuses: list[str] = Field(default_factory=lambda: ["cancelled", "refunded"])
    rfm_window_days: int = Field(default=365, ge=1)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    session_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)
    attribution_lookback_days: int = Field(default=30, ge=1)


class SegmentDefinition(_Strict):
    """A user-defined segment: a condition over customer_360 and segment columns."""

    name: str
    description: str | None = None
    where: str = Field(min_length=1)


class ExportsConfig(_Strict):
    """Audience files for ad platforms (hashed identifiers, consent-filtered)."""

    dir: Path = Path("data/exports")
    # Segments written every night (custom names, RFM segments, lifecycle stages, tiers).
    segments: list[str] = Field(default_factory=list)
    # Customer-match uploads are advertising: only customers who opted in to marketing email
    # (the latest statement) are exported unless this is switched off. do_not_sell always applies.
    require_email_opt_in: bool = True


_CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class ScheduleConfig(_Strict):
    """The nightly run of the previous day's partition (README, "Running every night")."""

    enabled: bool = False  # on: the schedule starts running with the Dagster daemon
    time: str = Field(default="02:00", pattern=_CLOCK_TIME)
    timezone: str = "UTC"
    # The marts' freshness policy: rebuilt between `time` and this time every day, or FAIL.
    marts_due_by: str = Field(default="06:00", pattern=_CLOCK_TIME)


class LandingSensorConfig(_Strict):
    """A run for a partition as soon as its files land (README, "Running every night")."""

    enabled: bool = False
    minimum_interval_seconds: int = Field(default=60, ge=10)


class ExtractRetriesConfig(_Strict):
    """Retries of a failed extract step (a file still being copied, a locked warehouse, a network
    share that blinked). Errors in the files themselves never retry: they would fail again."""

    max_retries: int = Field(default=3, ge=0, le=20)
    delay_seconds: float = Field(default=30.0, ge=0)  # before the first retry
    backoff: Literal["exponential", "linear"] = "exponential"  # how the delay grows


class DuckDBConfig(_Strict):
    """Settings of every connection to the warehouse: pipeline steps and `cdm` commands alike."""

    # DuckDB's own default is 80% of the machine's memory; above the limit it spills to disk.
    memory_limit: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    threads: int | None = Field(default=None, ge=1, le=1024)  # default: every core

    def connection_settings(self) -> dict[str, str | int]:
        """The ``config`` argument of ``duckdb.connect`` (empty: DuckDB's defaults)."""
        settings: dict[str, str | int] = {}
        if self.memory_limit:
            settings["memory_limit"] = self.memory_limit
        if self.threads:
            settings["threads"] = self.threads
        return settings


class AlertsConfig(_Strict):
    """Who hears about a failed run: a webhook, a command, both or (the default) neither."""

    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    command: str | None = None  # run by /bin/sh; the alert as JSON on its standard input
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.command)


class PrivacyConfig(_Strict):
    """Where governance drops privacy requests and collects access-request documents."""

    requests_path: Path = Path("data/privacy/requests.csv")
    access_dir: Path = Path("data/privacy/access")


class CdmConfig(_Strict):
    """The whole ``cdm.yaml``: warehouse, landing folder, partition start and the sources."""

    warehouse: Path
    landing_dir: Path
    reports_dir: Path = Path("data/reports")
    # The first daily partition. Unset: the earliest day a dated source has files for, else
    # yesterday (project.first_partition_date), so someone else's exports run from their first day.
    start_date: dt.date | None = None
    timezone: str = "UTC"
    default_region: str = Field(default="GB", pattern=r"^[A-Z]{2}$")
    sources: list[SourceConfig] = Field(min_length=1)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    marts: MartsConfig = Field(default_factory=MartsConfig)
    segments: list[SegmentDefinition] = Field(default_factory=list)
    exports: ExportsConfig = Field(default_factory=ExportsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    landing_sensor: LandingSensorConfig = Field(default_factory=LandingSensorConfig)
    extract_retries: ExtractRetriesConfig = Field(default_factory=ExtractRetriesConfig)
    duckdb: DuckDBConfig = Field(default_factory=DuckDBConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    loss_limits: LossLimits = Field(default_factory=LossLimits)
    # Set by load_config, not read from the file.
    config_path: Path = Field(default=Path(DEFAULT_CONFIG_NAME), exclude=True)

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)

    def sources_of_kind(self, kind: str) -> list[SourceConfig]:
        return [source for source in self.sources if source.kind == kind]

    def sources_staged_as(self, kind: str) -> list[SourceConfig]:
        """The sources whose rows feed ``staging.<kind>``: for contacts, also the orders sources
        that carry their buyer's identity."""
        return [
            source for source in self.sources
            if source.kind == kind or (kind == "contacts" and source.carries_identity)
        ]

    def loss_limit(self, source: SourceConfig, which: str) -> float:
        """A loss limit of a source (its own, else the project's)."""
        own = getattr(source.loss_limits, which)
        return own if own is not None else getattr(self.loss_limits, which)

    def linked_contacts_sources(self, source: SourceConfig) -> list[str]:
        """Contacts sources whose record ids an orders / email_events source's ids refer to.

        ``contacts_source`` when set, else every contacts source of the same system, in config
        order (the first holding an id wins).
        """
        if source.contacts_source:
            return [source.contacts_source]
        if source.carries_identity and "contact_id" not in source.mapped:
            return [source.name]  # the order's own buyer record (its contact_id is the order id)
        return [c.name for c in self.sources_of_kind("contacts") if c.system == source.system]


def default_config_path() -> Path:
    """``--config`` wins, then ``$CDM_CONFIG``, then ``cdm.yaml`` in the current folder."""
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_NAME)


def load_config(path: Path | str | None = None) -> CdmConfig:
    """Read, validate and resolve a config file.

    Raises:
        ConfigError: on any problem, with the file and key in its one-line message.
    """
    path = Path(path) if path is not None else default_config_path()
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "", "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "", f"cannot read config file ({exc.__class__.__name__})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(shown, where, f"invalid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(shown, "", "expected a mapping of keys at the top level")

    from cdm_pipeline.presets import PresetError, apply_presets

    try:
        document = apply_presets(document)
    except PresetError as exc:
        raise ConfigError(shown, exc.key, exc.message) from None
    try:
        config = CdmConfig.model_validate(document)
    except ValidationError as exc:
        raise _first_error(shown, exc) from None

    _check_sources(shown, config)
    _check_identity(shown, config)
    _check_marts(shown, config)
    _check_timezones(shown, config)
    base = path.resolve().parent
    identity = config.identity.model_copy(
        update={
            "model_path": _resolve(base, config.identity.model_path),
            "overrides_path": _resolve(base, config.identity.overrides_path),
            "truth_path": (
                None if config.identity.truth_path is None else _resolve(base, config.identity.truth_path)
            ),
        }
    )
    return config.model_copy(
        update={
            "identity": identity,
            "warehouse": _resolve(base, config.warehouse),
            "landing_dir": _resolve(base, config.landing_dir),
            "exports": config.exports.model_copy(update={"dir": _resolve(base, config.exports.dir)}),
            "privacy": config.privacy.model_copy(update={
                "requests_path": _resolve(base, config.privacy.requests_path),
                "access_dir": _resolve(base, config.privacy.access_dir),
            }),
            "reports_dir": _resolve(base, config.reports_dir),
            "config_path": path.resolve(),
        }
    )


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else (base / value).resolve()


def _key_path(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in ("str", "ColumnSpec", "literal['contacts','orders','email_events','web_events']"):
            # pydantic names union branches in the location; they mean nothing to a user.
            continue
        else:
            key += f".{part}" if key else str(part)
    return key


def _first_error(file: str, exc: ValidationError) -> ConfigError:
    """Turn pydantic's report into one line: the first problem, in the user's vocabulary."""
    errors = exc.errors()
    # A union (plain string or {column:, format:}) fails on both branches; prefer the mapping
    # branch's complaint when the user wrote a mapping.
    candidates = [e for e in errors if "ColumnSpec" in e["loc"]] or errors
    # A misspelt key also makes the right one "missing": name the misspelling.
    error = next((e for e in candidates if e["type"] == "extra_forbidden"), candidates[0])
    key = _key_path(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"unknown value {value!r}; expected one of {expected}"
    elif isinstance(value, (dict, list)):
        message = error["msg"]
    else:
        message = f"{error['msg']} (got {value!r})"
    return ConfigError(file, key, message)


def _check_sources(file: str, config: CdmConfig) -> None:
    seen: dict[str, int] = {}
    for index, source in enumerate(config.sources):
        key = f"sources[{index}]"
        if not SOURCE_NAME_PATTERN.match(source.name):
            raise ConfigError(
                file, f"{key}.name",
                f"{source.name!r} is not a valid source name (lower-case letters, digits and _,"
                " starting with a letter; it becomes a table name)",
            )
        if source.name in seen:
            raise ConfigError(
                file, f"{key}.name",
                f"duplicate source name {source.name!r} (also sources[{seen[source.name]}])",
            )
        seen[source.name] = index
        _check_path(file, f"{key}.path", source.path)
        allowed = CANONICAL_COLUMNS[source.kind]
        for canonical in source.columns:
            if canonical not in allowed:
                raise ConfigError(
                    file, f"{key}.columns.{canonical}",
                    f"unknown canonical column for kind {source.kind!r}; expected one of "
                    + ", ".join(allowed),
                )
        for canonical, spec in source.mapped.items():
            _check_column_spec(file, f"{key}.columns.{canonical}", canonical, spec)
        if (source.id_column is None) == (source.id_from is None):
            raise ConfigError(
                file, f"{key}.id_column",
                "give id_column (the column holding the record id) or id_from (canonical columns"
                " whose values, hashed, identify a record), not both" if source.id_column else
                "required key is missing (or id_from: the canonical columns that identify a record)",
            )
        for i, name in enumerate(source.id_from or []):
            if name not in source.mapped:
                raise ConfigError(
                    file, f"{key}.id_from[{i}]", f"{name!r} is not a canonical column the source maps"
                )
        if source.group_rows and source.id_column is None:
            raise ConfigError(file, f"{key}.group_rows", "needs id_column: rows are grouped by it")
        for canonical, spec in source.mapped.items():
            if spec.param and spec.column == source.explode:
                raise ConfigError(
                    file, f"{key}.columns.{canonical}.param",
                    f"reads a list column ({source.explode!r}, exploded); use path on its elements",
                )
        if source.explode and not any(s.column == source.explode for s in source.mapped.values()):
            raise ConfigError(
                file, f"{key}.explode", f"no mapped column reads {source.explode!r}'s elements"
            )
        try:
            codecs.lookup(source.encoding)
        except LookupError:
            raise ConfigError(
                file, f"{key}.encoding", f"unknown encoding {source.encoding!r} (e.g. utf-8, windows-1252)"
            ) from None
        if source.contacts_source is not None:
            if source.kind not in ("orders", "email_events"):
                raise ConfigError(
                    file, f"{key}.contacts_source", "applies only to orders and email_events sources"
                )
            target = next((s for s in config.sources if s.name == source.contacts_source), None)
            if target is None or target.kind != "contacts":
                raise ConfigError(
                    file, f"{key}.contacts_source",
                    f"{source.contacts_source!r} is not the name of a contacts source",
                )
        if source.format != "csv" and (source.delimiter != "," or source.encoding.lower() not in ("utf-8", "utf8")):
            raise ConfigError(
                file, f"{key}.delimiter",
                "delimiter and encoding apply only to csv sources",
            )


def _check_column_spec(file: str, key: str, canonical: str, spec: ColumnSpec) -> None:
    origins = [name for name in ("column", "value", "from_filename") if getattr(spec, name) is not None]
    if len(origins) != 1:
        raise ConfigError(
            file, key,
            "give exactly one of column, value or from_filename" + (f" (got {', '.join(origins)})" if origins else ""),
        )
    if (spec.path or spec.param) and spec.column is None:
        raise ConfigError(file, f"{key}.{'path' if spec.path else 'param'}", "applies only with column")
    if spec.path and spec.param:
        raise ConfigError(file, f"{key}.param", "give path or param, not both")
    if spec.from_filename is not None:
        try:
            re.compile(spec.from_filename)
        except re.error as exc:
            raise ConfigError(file, f"{key}.from_filename", f"bad regular expression ({exc})") from None
    if spec.format is not None:
        if canonical not in DATE_COLUMNS:
            raise ConfigError(
                file, f"{key}.format",
                "a format applies only to date columns (" + ", ".join(sorted(DATE_COLUMNS)) + ")",
            )
        if "%" not in spec.format and spec.format not in EPOCH_FORMATS:
            raise ConfigError(
                file, f"{key}.format",
                f"{spec.format!r} is not a strftime format (e.g. \"%Y%m%d\") nor one of "
                + ", ".join(EPOCH_FORMATS),
            )
    if spec.name_part is not None and canonical not in ("first_name", "last_name"):
        raise ConfigError(file, f"{key}.name_part", "applies only to first_name and last_name")


def _check_identity(file: str, config: CdmConfig) -> None:
    identity = config.identity
    names = {source.name for source in config.sources}
    trusted = names | {source.system for source in config.sources}
    for index, link in enumerate(identity.same_ids):
        key = f"identity.same_ids[{index}]"
        if link.source not in names:
            raise ConfigError(file, f"{key}.source", f"no source named {link.source!r}")
        if link.equals not in names:
            raise ConfigError(file, f"{key}.equals", f"no source named {link.equals!r}")
        source = config.source(link.source)
        wanted = "contacts" if link.column == "linked_id" else "web_events"
        if source.kind != wanted:
            raise ConfigError(
                file, f"{key}.column",
                f"{link.column!r} is a column of {wanted} sources; {link.source!r} is {source.kind}",
            )
        if link.column not in source.columns:
            raise ConfigError(
                file, f"{key}.column", f"source {link.source!r} does not map {link.column!r}"
            )
        if config.source(link.equals).kind != "contacts":
            raise ConfigError(file, f"{key}.equals", f"{link.equals!r} is not a contacts source")
    survivorship = identity.survivorship
    for index, name in enumerate(survivorship.source_trust):
        if name not in trusted:
            raise ConfigError(
                file, f"identity.survivorship.source_trust[{index}]",
                f"{name!r} is neither a source name nor a system",
            )
    for attribute in survivorship.attributes:
        if attribute not in SURVIVING_ATTRIBUTES:
            raise ConfigError(
                file, f"identity.survivorship.attributes.{attribute}",
                "unknown attribute; expected one of " + ", ".join(SURVIVING_ATTRIBUTES),
            )


def _check_timezones(file: str, config: CdmConfig) -> None:
    import zoneinfo

    zones = [("timezone", config.timezone), ("schedule.timezone", config.schedule.timezone)]
    zones += [(f"sources[{i}].timezone", s.timezone) for i, s in enumerate(config.sources) if s.timezone]
    for key, name in zones:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(file, key, f"unknown time zone {name!r} (e.g. UTC, Europe/London)") from None
    if config.schedule.marts_due_by == config.schedule.time:
        raise ConfigError(
            file, "schedule.marts_due_by",
            f"{config.schedule.marts_due_by} is when the nightly run starts; give the time the marts"
            " must be rebuilt by (e.g. 06:00)",
        )


def _check_marts(file: str, config: CdmConfig) -> None:
    # Imported here: the marts vocabulary and grammar are library code that must not import config.
    from cdm_pipeline.lib.marts.vocabulary import BUILT_IN_SEGMENTS, built_in_folders, slug

    marts = config.marts
    stages = marts.lifecycle
    thresholds = [("new_days", stages.new_days), ("active_days", stages.active_days),
                  ("at_risk_days", stages.at_risk_days), ("lapsed_days", stages.lapsed_days)]
    for (low_name, low), (high_name, high) in zip(thresholds, thresholds[1:], strict=False):
        if high <= low and not (low_name == "new_days" and high == low):
            raise ConfigError(
                file, f"marts.lifecycle.{high_name}", f"must be greater than {low_name} ({low})"
            )
    for currency, rate in marts.exchange_rates.items():
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ConfigError(file, f"marts.exchange_rates.{currency}", "not an ISO 4217 currency code")
        if not rate > 0:
            raise ConfigError(file, f"marts.exchange_rates.{currency}", f"must be positive (got {rate})")
    if marts.exchange_rates and marts.currency is None:
        raise ConfigError(file, "marts.currency", "exchange_rates need the reporting currency they convert to")

    reserved = built_in_folders() | {slug(n) for names in BUILT_IN_SEGMENTS.values() for n in names}
    seen: set[str] = set()
    for index, segment in enumerate(config.segments):
        key = f"segments[{index}]"
        if not SOURCE_NAME_PATTERN.match(segment.name):
            raise ConfigError(
                file, f"{key}.name",
                f"{segment.name!r} is not a valid segment name (lower-case letters, digits and _,"
                " starting with a letter; it names the export folder)",
            )
        if segment.name in reserved:
            raise ConfigError(file, f"{key}.name", f"{segment.name!r} is a built-in segment name")
        if segment.name in seen:
            raise ConfigError(file, f"{key}.name", f"duplicate segment name {segment.name!r}")
        seen.add(segment.name)
        from cdm_pipeline.lib.marts.conditions import ConditionError, compile_condition

        try:
            compile_condition(segment.where)
        except ConditionError as exc:
            raise ConfigError(file, f"{key}.where", str(exc)) from None
    for index, name in enumerate(config.exports.segments):
        from cdm_pipeline.lib.exports.audiences import UnknownSegment, resolve_segment

        try:
            resolve_segment(config, name)
        except UnknownSegment as exc:
            raise ConfigError(file, f"exports.segments[{index}]", str(exc)) from None


def _check_path(file: str, key: str, path: str) -> None:
    """Reject globs that can never match what the user meant, before any run."""
    if os.path.isabs(path):
        raise ConfigError(file, key, "must be relative to landing_dir, not absolute")
    if ".." in Path(path).parts:
        raise ConfigError(file, key, "must stay inside landing_dir (no '..')")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(path) if name is not None]
    except ValueError as exc:
        raise ConfigError(file, key, f"bad glob: {exc}") from None
    unknown = sorted(set(fields) - {"date"})
    if unknown:
        raise ConfigError(
            file, key, f"unknown placeholder {{{unknown[0]}}}; only {DATE_PLACEHOLDER} is supported"
        )
    if path.count("[") != path.count("]"):
        raise ConfigError(file, key, "bad glob: unbalanced [ ]")
