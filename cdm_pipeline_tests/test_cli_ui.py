"""`cdm ui` starts the real Dagster webserver on 127.0.0.1 with this project's assets."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from cdm_pipeline_tests.conftest import CDM, REPO_ROOT, cli_env

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outward interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_ui_serves_the_project_assets_on_loopback_only(tmp_path):
    port = _free_port()
    config = tmp_path / "cdm.yaml"
    config.write_text((REPO_ROOT / "cdm.yaml").read_text().replace("data/", str(tmp_path) + "/data/"))
    process = subprocess.Popen(
        [CDM, "ui", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env(), start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        data = None
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, "{ assetNodes { assetKey { path } groupName } }")
                break
            except OSError:
                time.sleep(1)
        assert data is not None, "the webserver did not answer within 90 s"
        keys = {tuple(node["assetKey"]["path"]): node["groupName"] for node in data["data"]["assetNodes"]}
        assert keys[("raw", "crm_contacts")] == "raw"
        assert keys[("quarantine", "web_events_rejects")] == "quarantine"
        assert len([k for k in keys if k[0] == "raw"]) == 5
        assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()
        outward = _non_loopback_address()
        if outward:
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=2).close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
