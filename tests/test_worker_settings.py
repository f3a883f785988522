"""Gateway worker processes read the parent's settings back from `SAMO_*` variables: every setting must
survive the trip, lists of objects (the OIDC issuers) and comma-separated lists (CORS origins) alike. A
list written comma-separated where the settings expect JSON kept two-worker gateways from starting."""

from __future__ import annotations

import os

import pytest

from gateway.main import _settings_to_environment
from samo.settings import GatewaySettings


def test_every_setting_survives_the_trip_to_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("SAMO_")]:
        monkeypatch.delenv(name)
    sent = GatewaySettings(
        workers=2,
        cors_allow_origins=("https://app.example", "https://admin.example"),
        oidc_issuers=[{"issuer": "https://id.example", "audiences": ["samo", "journal"]}],
        database_url="postgresql+psycopg://samo:secret@db/samo",
        batch_key="c2Ftby1iYXRjaC1rZXktb2YtdGhpcnR5LXR3by1ieXRlcyE=",
    )
    before = dict(os.environ)
    try:
        _settings_to_environment(sent)
        assert GatewaySettings() == sent
        assert GatewaySettings().oidc_issuers[0].audiences == ("samo", "journal")
        received = GatewaySettings()  # secrets compare equal when masked alike: compare their values
        assert received.batch_key is not None and sent.batch_key is not None
        assert received.batch_key.get_secret_value() == sent.batch_key.get_secret_value()
        assert received.database_url is not None and sent.database_url is not None
        assert received.database_url.get_secret_value() == sent.database_url.get_secret_value()
    finally:  # the helper writes os.environ directly: put it back as it was
        os.environ.clear()
        os.environ.update(before)
