"""Every metric the Grafana dashboard, the alerts and the Triton autoscaler read is one the running stack
exports: the session's gateway (/metrics) and its real tritonserver (metrics port), scraped after real
requests. Metrics that cannot appear here are named: GPU_ONLY (Triton exports nv_gpu_* only where it
sees a GPU) and CLUSTER_ONLY (kube-state-metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from gateway.client import GrpcClient
from gateway.observability.metrics import gateway_registry
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "k8s" / "base" / "monitoring"
GPU_ONLY = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}
CLUSTER_ONLY = {"kube_pod_status_ready"}
# Declared by the gateway but without a value until something happens that this healthy stack does not do
# (a failed Triton call), or that the gateway does not record yet (audio seconds): checked against the
# gateway's registry instead of a scrape.
DECLARED_ONLY = {"samo_triton_errors_total", "samo_audio_seconds_total"}
METRIC = re.compile(r"\b((?:samo|nv|kube)_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _queries() -> dict[str, list[str]]:
    """PromQL of the dashboard's panels, the alert rules and the prometheus-adapter rules, by source."""
    dashboard = json.loads((MONITORING / "dashboards" / "samo-serving.json").read_text())
    panels = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    (rule,) = yaml.safe_load_all((MONITORING / "prometheusrule.yaml").read_text())
    alerts = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    rules = [q for r in adapter["rules"]["custom"] for q in (r["seriesQuery"], r["metricsQuery"])]
    return {"dashboard": panels, "alerts": alerts, "prometheus-adapter": rules}


def _exported(text: str) -> set[str]:
    """Sample names in a Prometheus exposition, and those each declared family yields once it has values."""
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def _declared() -> set[str]:
    return {
        family.name + suffix
        for family in gateway_registry().collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_dashboard_and_rules_use_names_that_exist(gateway: Gateway, triton: LocalTriton) -> None:
    with GrpcClient(gateway.grpc_target) as client:
        assert client.detect_emotions(["A good day."]).results
    with httpx.Client(base_url=gateway.http_url, timeout=120) as http:
        assert http.post("/v1/emotions", json={"texts": ["A good day."]}).status_code == 200
        assert http.post("/v1/summarize", json={"texts": ["One. Two days. Three weeks."]}).status_code == 200
        summary = http.post(
            "/v1/summarize", json={"texts": ["One. Two."], "model": "tiny_t5", "max_new_tokens": 2}
        )
        assert summary.status_code == 200
        audio = (ROOT / "tests" / "data" / "jfk.wav").read_bytes()
        assert http.post("/v1/transcribe", files={"file": ("jfk.wav", audio)}).status_code == 200
        assert http.post("/v1/emotions", json={"texts": []}).status_code == 422
        gateway_metrics = http.get("/metrics").text
    triton_metrics = httpx.get(triton.metrics_url, timeout=30).text
    exported = _exported(gateway_metrics) | _exported(triton_metrics)
    # Scraped values, not only declarations, for the gateway's core series and Triton's queue and compute.
    assert re.search(r'^samo_http_requests_total\{.*route="/v1/emotions".*\} [1-9]', gateway_metrics, re.M)
    assert re.search(r'^nv_inference_queue_duration_us\{.*model="emotion"', triton_metrics, re.M)

    queries = _queries()
    assert all(queries.values())
    missing = {}
    for source, exprs in queries.items():
        used = {name for expr in exprs for name in METRIC.findall(expr)}
        assert used, source
        unknown = used - exported - GPU_ONLY - CLUSTER_ONLY - (DECLARED_ONLY & _declared())
        if unknown:
            missing[source] = sorted(unknown)
    assert not missing, f"queries name metrics the stack does not export: {missing}"
    # The lists of exceptions are used, and name nothing this CPU stack does export.
    used = {name for exprs in queries.values() for expr in exprs for name in METRIC.findall(expr)}
    assert used >= GPU_ONLY and used >= CLUSTER_ONLY
    assert not (GPU_ONLY | CLUSTER_ONLY) & exported
