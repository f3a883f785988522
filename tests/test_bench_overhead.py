"""`samo bench overhead`'s pure parts: the gateways it measures in one run, and its verdicts per gateway."""

from __future__ import annotations

from load_tests.bench_overhead import OverheadOptions, gateway_variants, verdicts


def test_compared_settings_are_measured_on_top_of_the_runs_own() -> None:
    options = OverheadOptions(settings=(("SAMO_WORKERS", "1"),), compare=(("SAMO_HTTP_SERVER", "granian"),))
    assert gateway_variants(options) == [
        ("SAMO_WORKERS=1", {"SAMO_WORKERS": "1"}),
        ("SAMO_HTTP_SERVER=granian", {"SAMO_WORKERS": "1", "SAMO_HTTP_SERVER": "granian"}),
    ]
    assert gateway_variants(OverheadOptions())[0] == ("defaults", {})


def test_each_gateway_gets_its_own_verdict_at_the_top_concurrency() -> None:
    def row(gateway: str, transport: str, load: str, cost: float) -> dict[str, object]:
        return {
            "gateway": gateway,
            "transport": transport,
            "load": load,
            "texts_per_s": 1000.0,
            "cpu_ms_stack": cost,
        }

    rows = [
        row("defaults", "http", "c=32", 0.1),  # not the top concurrency: no verdict from it
        row("defaults", "http", "c=256", 0.54),
        row("SAMO_HTTP_SERVER=granian", "http", "c=256", 0.30),
        row("SAMO_HTTP_SERVER=granian", "grpc", "c=256", 1.0),
    ]
    assert verdicts(rows, 256) == [
        "- defaults, http at c=256: the stack spends 0.54 ms of CPU per text (target 0.35 ms: missed by "
        "0.19 ms); 1000 texts/s",
        "- SAMO_HTTP_SERVER=granian, http at c=256: the stack spends 0.30 ms of CPU per text (target 0.35 "
        "ms: met); 1000 texts/s",
        "- SAMO_HTTP_SERVER=granian, grpc at c=256: the stack spends 1.00 ms of CPU per text (target 0.25 "
        "ms: missed by 0.75 ms); 1000 texts/s",
    ]
