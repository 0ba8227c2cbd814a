"""The configuration's typed models: what ``cdm.yaml`` may say, with defaults.

Pure pydantic and vocabulary, importing nothing of the pipeline: every other module may import
it. Reading the file is ``config.loading``; the rules across fields are ``config.checks``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONFIG_NAME = "cdm.yaml"

# The kinds of source the pipeline understands, written once: each kind is a staging table.
SourceKind = Literal["contacts", "orders", "email_events", "web_events"]
SourceFormat = Literal["csv", "jsonl", "parquet"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
SOURCE_FORMATS: tuple[str, ...] = get_args(SourceFormat)

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
    kind: SourceKind
    format: SourceFormat
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


# Spark settings that carry credentials (fs.s3a.secret.key, ...password, ...token).
SECRET_SETTING = re.compile(r"secret|password|token|credential|access\.key|session\.key", re.IGNORECASE)


class SparkConfig(_Strict):
    """How the identity stage reaches Spark (``engine: {name: spark, spark: ...}``; README, "Engines")."""

    # local[N] for one machine; spark://host:7077, yarn, k8s://... for a cluster.
    master: str = "local[*]"
    app_name: str = "cdm_pipeline"
    # Any Spark setting (spark.driver.memory, spark.local.dir, spark.executor.instances, ...).
    conf: dict[str, str] = Field(default_factory=dict)
    # Where Splink writes the intermediate tables that break Spark's lineage (a folder or a URI
    # such as hdfs://... or s3a://... that every executor reaches). Unset: a folder of the run
    # under work_dir. Each run writes a folder of its own there and deletes it at the end.
    checkpoint_dir: str | None = None
    # The run's Parquet hand-over between the warehouse and Spark: on a cluster, a mount the
    # driver and the executors share.
    work_dir: Path = Path("data/spark")
    # Splink's SparkAPI options. "persist" ran out of memory clustering ~3,000 records.
    break_lineage_method: Literal[
        "parquet", "checkpoint", "persist", "delta_lake_table", "delta_lake_files"
    ] = "parquet"
    repartition_after_blocking: bool = False
    num_partitions_on_repartition: int | None = Field(default=None, ge=1)

    @field_validator("conf")
    @classmethod
    def _no_secrets(cls, conf: dict[str, str]) -> dict[str, str]:
        # The settings are shown in the Dagster UI (the linkage_engine resource) and cdm.yaml is
        # not a place for secrets: Spark reads credentials from the environment itself.
        for key in conf:
            if SECRET_SETTING.search(key):
                raise ValueError(
                    f"{key} looks like a credential: set it in the environment (as Spark and Hadoop read"
                    " them, e.g. AWS_ACCESS_KEY_ID), not in cdm.yaml"
                )
        return conf


class EngineConfig(_Strict):
    """Where Splink runs: ``duckdb`` (the warehouse connection, the default) or ``spark``."""

    name: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkConfig = Field(default_factory=SparkConfig)


class IdentityConfig(_Strict):
    """Identity resolution: deterministic links, the Splink model, clusters and survivorship."""

    # Superseded by the top-level ``engine:``; still accepted as written by earlier configs.
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
    # Nights link only the records that changed since the last resolution, once a model and a
    # full resolution exist (README, "Incremental nights"); false: every night re-links everyone.
    incremental: bool = True
    # A full re-link, the reference, runs when the last one is this many days old (0: only when
    # the model, the settings or the overrides change, or `cdm identity relink` asks).
    full_relink_every_days: int = Field(default=7, ge=0)


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


class SecurityConfig(_Strict):
    """Encryption at rest and the analyst warehouse (README, "Security").

    The warehouse key itself never lives here: it comes from ``$CDM_WAREHOUSE_KEY`` or from the
    file named by ``key_file`` (or ``$CDM_WAREHOUSE_KEY_FILE``), a file outside the project that
    only its owner can read.
    """

    key_file: Path | None = None
    # httpfs: DuckDB's OpenSSL crypto (the secure one), loaded from INSTALL or extension_directory.
    # builtin: DuckDB's built-in mbedtls mode (``force_mbedtls_unsafe``), for machines that cannot
    # get httpfs; DuckDB itself calls it not securely encrypted, so it is never chosen silently.
    crypto: Literal["httpfs", "builtin"] = "httpfs"
    extension_directory: Path | None = None  # offline copy of DuckDB extensions (httpfs)
    # Pseudonymous marts for analysts and BI tools, refreshed each night; null: not built.
    analyst_warehouse: Path | None = Path("data/analyst/cdm_analyst.duckdb")


class BackupsConfig(_Strict):
    """Where ``cdm backup`` writes snapshots, how many it keeps, and whether each night makes one."""

    dir: Path = Path("data/backups")
    keep: int = Field(default=7, ge=1, le=1000)
    nightly: bool = False  # a snapshot after each successful scheduled/`cdm run` night


class RetentionConfig(_Strict):
    """How long data is kept (unset: forever). Each night's purge is counted and audited."""

    raw_days: int | None = Field(default=None, ge=1)  # raw landing copies (raw.* rows by partition)
    web_events_months: int | None = Field(default=None, ge=1)  # web events, raw and staged
    # customers with no activity and no consent for this long are erased (and suppressed)
    inactive_customer_years: int | None = Field(default=None, ge=1)

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.raw_days, self.web_events_months, self.inactive_customer_years))


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
    # Where identity's Splink work runs: `engine: spark` or `engine: {name: spark, spark: {...}}`.
    engine: EngineConfig = Field(default_factory=EngineConfig)
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
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    backups: BackupsConfig = Field(default_factory=BackupsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    # Set by load_config, not read from the file.
    config_path: Path = Field(default=Path(DEFAULT_CONFIG_NAME), exclude=True)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_by_name(cls, value):
        # `engine: spark` is short for `engine: {name: spark}`.
        return {"name": value} if isinstance(value, str) else value

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


