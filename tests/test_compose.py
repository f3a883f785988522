"""compose.yaml: valid against the Compose specification's JSON schema, and wired as the deployment needs.

The schema is vendored (tests/data/compose/compose_spec.json, from the docker-compose 1.29.2 wheel on
PyPI, `compose/config/compose_spec.json`, wheel sha256 8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809):
the tests download nothing. It is the specification as of May 2021; `depends_on` conditions and GPU
device reservations are in it. No container engine runs here, so the file is validated, not run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read compose.yaml")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates compose.yaml")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).parent / "data" / "compose" / "compose_spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    # Extension fields (x-*) hold YAML anchors; the specification allows them at the top level.
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    assert _errors(compose) == []


def test_the_schema_check_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] = [1]
    broken["services"]["gateway"]["depends_on"]["triton"]["condition"] = "service_ready"
    errors = _errors(broken)
    assert any("devices" in e for e in errors) and any("depends_on" in e for e in errors), errors


def _gpus(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_triton_and_the_engine_build_reserve_a_gpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("triton", "build-engines"):
        (device,) = _gpus(services[name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] >= 1
    assert not _gpus(services["gateway"]) and not _gpus(services["export"])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """volume name -> container path (short syntax, `name:path[:mode]`)."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}


def test_one_model_volume_one_engine_cache_and_the_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(compose["volumes"]) == {"models", "tensorrt-cache"}
    for name in ("triton", "gateway", "build-engines"):
        assert _mounts(services[name])["models"] == "/models", name
    assert _mounts(services["export"])["models"] != "/models", "export copies the image's /models into it"
    for name in ("triton", "build-engines"):
        assert _mounts(services[name])["tensorrt-cache"] == "/cache/tensorrt", name

    assert services["build-engines"]["entrypoint"] == ["samo", "build-engines", "--repository", "/models"]
    assert services["build-engines"]["image"] == services["triton"]["image"], (
        "engines built by the serving TensorRT"
    )
    order = {
        "build-engines": ("export", "service_completed_successfully"),
        "triton": ("build-engines", "service_completed_successfully"),
        "gateway": ("triton", "service_healthy"),
    }
    for service, (dependency, condition) in order.items():
        assert services[service]["depends_on"][dependency]["condition"] == condition
    assert "healthcheck" in services["triton"]


def test_gateway_reaches_triton_and_only_the_gateway_is_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = services["gateway"]
    host, port = gateway["environment"]["SAMO_TRITON_GRPC_URL"].split(":")
    assert host == "triton" and port in services["triton"]["expose"]
    assert gateway["environment"]["SAMO_MODEL_REPOSITORY"] == "/models"
    assert {p.split(":")[-1] for p in gateway["ports"]} == {"8080", "50051"}
    assert "ports" not in services["triton"]
    for service in services.values():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
