import subprocess
import textwrap
from pathlib import Path

import pytest

from cdm_pipeline.cli import main
from cdm_pipeline.config import ConfigError, load_config
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env, write_config

VALID = textwrap.dedent(
    """
    warehouse: wh/cdm.duckdb
    landing_dir: landing
    sources:
      - name: crm_contacts
        system: crm
        kind: contacts
        format: csv
        path: crm/{date}/*.csv
        id_column: contact_id
        columns:
          first_name: FirstName
          birth_date: {column: DOB, format: "%Y%m%d"}
    """
)


def _error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_project_config_describes_the_five_demo_sources():
    config = load_config(REPO_ROOT / "cdm.yaml")
    assert [(s.name, s.kind, s.system, s.format) for s in config.sources] == [
        ("crm_contacts", "contacts", "crm", "csv"),
        ("crm_orders", "orders", "crm", "csv"),
        ("email_subscribers", "contacts", "email", "jsonl"),
        ("email_events", "email_events", "email", "jsonl"),
        ("web_events", "web_events", "web", "parquet"),
    ]
    assert config.warehouse == REPO_ROOT / "data" / "warehouse" / "cdm.duckdb"


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "deploy"
    folder.mkdir()
    path = write_config(folder, VALID)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("deploy/cdm.yaml"))
    assert config.warehouse == folder / "wh" / "cdm.duckdb"
    assert config.landing_dir == folder / "landing"
    assert config.config_path == path
    source = config.sources[0]
    assert source.column_spec("birth_date").format == "%Y%m%d"
    assert source.column_spec("first_name").column == "FirstName"
    assert source.mapped_source_columns == ["contact_id", "FirstName", "DOB"]
    assert not source.is_snapshot


@pytest.mark.parametrize(
    ("edit", "key", "fragment"),
    [
        (("landing_dir: landing", "landing_dir: landing\nlandng: x"), "landng", "unknown key"),
        (("    system: crm\n", "    system: crm\n    sytem: crm\n"), "sources[0].sytem", "unknown key"),
        (("    id_column: contact_id\n", ""), "sources[0].id_column", "required key is missing"),
        (("warehouse: wh/cdm.duckdb\n", ""), "warehouse", "required key is missing"),
        (("kind: contacts", "kind: contact"), "sources[0].kind", "unknown value 'contact'"),
        (("format: csv", "format: xlsx"), "sources[0].format", "unknown value 'xlsx'"),
        (("first_name: FirstName", "frist_name: FirstName"),
         "sources[0].columns.frist_name", "unknown canonical column"),
        (("first_name: FirstName", "first_name: {column: FirstName, format: '%Y'}"),
         "sources[0].columns.first_name.format", "only to date columns"),
        (("format: \"%Y%m%d\"", "format: YYYYMMDD"), "sources[0].columns.birth_date.format", "not a strftime format"),
        (("birth_date: {column: DOB, format: \"%Y%m%d\"}", "birth_date: {colum: DOB}"),
         "sources[0].columns.birth_date.colum", "unknown key"),
        (("path: crm/{date}/*.csv", "path: /abs/{date}/*.csv"), "sources[0].path", "not absolute"),
        (("path: crm/{date}/*.csv", "path: crm/{day}/*.csv"), "sources[0].path", "unknown placeholder {day}"),
        (("path: crm/{date}/*.csv", "path: crm/{date}/[ab.csv"), "sources[0].path", "unbalanced"),
        (("path: crm/{date}/*.csv", "path: ../crm/*.csv"), "sources[0].path", "inside landing_dir"),
        (("name: crm_contacts", "name: CRM Contacts"), "sources[0].name", "not a valid source name"),
        (("sources:\n", "start_date: yesterday\nsources:\n"), "start_date", "date"),
    ],
)
def test_each_mistake_is_one_line_naming_file_and_key(tmp_path, edit, key, fragment):
    old, new = edit
    assert old in VALID
    error = _error_for(tmp_path, VALID.replace(old, new, 1))
    assert error.key == key
    assert fragment in error.message
    text = str(error)
    assert text.startswith(str(tmp_path / "cdm.yaml") + f": {key}: ")
    assert "\n" not in text


def test_duplicate_source_names_are_rejected(tmp_path):
    doubled = VALID + textwrap.indent(VALID.split("sources:\n", 1)[1], "")
    error = _error_for(tmp_path, doubled)
    assert error.key == "sources[1].name"
    assert "duplicate source name 'crm_contacts'" in error.message


def test_invalid_yaml_names_the_line(tmp_path):
    error = _error_for(tmp_path, VALID.replace("kind: contacts", "kind: [contacts"))
    assert error.key.startswith("line ")
    assert "invalid YAML" in error.message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_mistake_in_one_line_with_exit_status_2(tmp_path, capsys):
    path = write_config(tmp_path, VALID.replace("kind: contacts", "kind: people"))
    status = main(["run", "--config", str(path), "--date", "2026-10-01"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err == (
        f"cdm: error: {path}: sources[0].kind: unknown value 'people'; expected one of "
        "'contacts', 'orders', 'email_events' or 'web_events'\n"
    )


def test_cli_rejects_a_snapshot_glob_that_matches_nothing(tmp_path, capsys):
    (tmp_path / "landing").mkdir()
    path = write_config(tmp_path, VALID.replace("path: crm/{date}/*.csv", "path: crm/contacts.csv")
                        .replace("sources:\n", "start_date: 2026-10-01\nsources:\n"))
    status = main(["run", "--config", str(path), "--date", "2026-10-01"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"cdm: error: {path}: sources[0].path: 'crm/contacts.csv' matches no file")
    assert err.count("\n") == 1


def test_cli_rejects_dates_outside_the_partitions(tmp_path, capsys):
    (tmp_path / "landing").mkdir()
    path = write_config(tmp_path, VALID.replace("sources:\n", "start_date: 2026-10-01\nsources:\n"))
    assert main(["run", "--config", str(path), "--date", "2026-09-30"]) == 2
    assert (
        "start_date: 2026-09-30 is before the first partition 2026-10-01;"
        " set start_date: 2026-09-30 (or earlier) in cdm.yaml" in capsys.readouterr().err
    )
    assert main(["run", "--config", str(path), "--date", "2999-01-01"]) == 2
    assert "2999-01-01 has no partition yet" in capsys.readouterr().err
    assert main(["run", "--config", str(path), "--from", "2026-10-03", "--to", "2026-10-01"]) == 2
    assert "--to: 2026-10-01 is before --from 2026-10-03" in capsys.readouterr().err


def test_real_cli_exits_2_without_a_traceback(tmp_path):
    path = write_config(tmp_path, VALID.replace("landing_dir: landing", "landing_dir: landing\nextra: 1"))
    done = subprocess.run(
        [CDM, "run", "--config", str(path), "--date", "2026-10-01"],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 2
    assert done.stderr == f"cdm: error: {path}: extra: unknown key\n"
    assert "Traceback" not in done.stdout + done.stderr


ORDERS_SOURCE = (
    "  - name: crm_orders\n    system: crm\n    kind: orders\n    format: csv\n"
    "    path: orders/{date}/*.csv\n    id_column: order_id\n"
)


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ("marts:\n  lifecycle: {active_days: 20}\n", "marts.lifecycle.active_days", "greater than new_days (30)"),
        ("marts:\n  exchange_rates: {EUR: 0.9}\n", "marts.currency", "need the reporting currency"),
        ("marts:\n  currency: GBP\n  exchange_rates: {EUR: 0}\n", "marts.exchange_rates.EUR", "must be positive"),
        ("marts:\n  currency: pounds\n", "marts.currency", "should match pattern"),
        ("marts:\n  session_timout_minutes: 20\n", "marts.session_timout_minutes", "unknown key"),
        ("segments:\n  - {name: Big Spenders, where: 'revenue > 1'}\n", "segments[0].name", "not a valid segment name"),
        ("segments:\n  - {name: champions, where: 'revenue > 1'}\n", "segments[0].name", "built-in segment name"),
        ("segments:\n  - {name: vip, where: 'revenue > 1'}\n  - {name: vip, where: 'revenue > 2'}\n",
         "segments[1].name", "duplicate segment name 'vip'"),
        ("segments:\n  - {name: vip, where: 'revnue > 1'}\n", "segments[0].where", "did you mean 'revenue'"),
        ("segments:\n  - {name: vip, where: 'revenue > 1; drop table x'}\n", "segments[0].where", "position"),
        ("exports:\n  segments: [champion]\n", "exports.segments[0]", "did you mean rfm:champions"),
        ("exports:\n  segments: [new]\n", "exports.segments[0]", "ambiguous"),
    ],
)
def test_marts_segments_and_exports_mistakes_name_the_key(tmp_path, extra, key, fragment):
    error = _error_for(tmp_path, VALID + extra)
    assert error.key == key
    assert fragment in error.message
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ("engine: sparky\n", "engine.name", "'duckdb' or 'spark'"),
        ("engine:\n  name: spark\n  spark:\n    mastr: local\n", "engine.spark.mastr", "unknown key"),
        ("engine:\n  name: spark\n  spark: {break_lineage_method: cache}\n", "engine.spark.break_lineage_method",
         "'parquet'"),
        ("engine:\n  name: spark\n  spark:\n    conf: {spark.hadoop.fs.s3a.secret.key: abc123}\n",
         "engine.spark.conf", "spark.hadoop.fs.s3a.secret.key looks like a credential"),
    ],
)
def test_engine_mistakes_name_the_key(tmp_path, extra, key, fragment):
    error = _error_for(tmp_path, VALID + extra)
    assert error.key == key
    assert fragment in error.message
    assert "\n" not in str(error) and "abc123" not in str(error)


def test_engine_by_name_or_in_full_and_its_folders_relative_to_the_config(tmp_path):
    assert load_config(write_config(tmp_path, VALID)).engine.name == "duckdb"
    short = load_config(write_config(tmp_path, VALID + "engine: spark\n"))
    assert short.engine.name == "spark" and short.engine.spark.master == "local[*]"
    assert short.engine.spark.work_dir == tmp_path.resolve() / "data" / "spark"
    full = load_config(write_config(tmp_path, VALID + (
        "engine:\n  name: spark\n  spark:\n    master: spark://head:7077\n    work_dir: /mnt/shared/cdm\n"
        "    checkpoint_dir: hdfs://head/cdm/checkpoints\n    conf: {spark.executor.memory: 16g}\n"
    )))
    spark = full.engine.spark
    assert (spark.master, spark.work_dir, spark.checkpoint_dir) == (
        "spark://head:7077", Path("/mnt/shared/cdm"), "hdfs://head/cdm/checkpoints"
    )
    assert spark.conf == {"spark.executor.memory": "16g"} and spark.break_lineage_method == "parquet"


def test_contacts_source_must_name_a_contacts_source(tmp_path):
    error = _error_for(tmp_path, VALID + ORDERS_SOURCE + "    contacts_source: crm_orders\n")
    assert error.key == "sources[1].contacts_source"
    assert "is not the name of a contacts source" in error.message
    config = load_config(write_config(tmp_path, VALID + ORDERS_SOURCE + "    contacts_source: crm_contacts\n"))
    assert config.sources[1].contacts_source == "crm_contacts"


def test_project_config_declares_segments_and_nightly_exports():
    config = load_config(REPO_ROOT / "cdm.yaml")
    assert [s.name for s in config.segments] == ["high_value_at_risk", "cart_abandoners"]
    assert config.exports.dir == REPO_ROOT / "data" / "exports"
    assert config.marts.currency == "GBP"
