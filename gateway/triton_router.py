"""Which Triton serves which model: one client per endpoint, and no calls to a model whose card differs.

Text models and Whisper can run in separate Triton Deployments (scaled apart, on different GPUs), so a
model's calls go to the endpoint `triton_model_urls` names for it, every other model's to
`triton_grpc_url`. An endpoint may be several pods behind one gRPC target (a headless Service); its
client balances over them (gateway.triton_client.channel_args).

Before a model's first call, and again whenever the health monitor reloads it, the model's card is
compared with the configuration Triton reports (gateway/card_check.py); a model that differs is refused
with UNAVAILABLE (503) and the differences, in the log and in /health/models, until they match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence

import numpy as np

from gateway.card_check import ExpectedModel, mismatches
from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.triton_client import ModelGate, ModelRefused, TritonClient
from samo.contracts.cards import CARD_FILE
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


class TritonRouter:
    """The gateway's Triton calls, each sent to the endpoint that serves its model."""

    def __init__(
        self,
        default_url: str,
        model_urls: Mapping[str, str],
        timeout_s: float,
        *,
        restricted_key: str | None = None,
    ) -> None:
        urls = dict.fromkeys([default_url, *model_urls.values()])
        self._clients = {url: TritonClient(url, timeout_s, restricted_key=restricted_key) for url in urls}
        self._default = self._clients[default_url]
        self._routes = {model: self._clients[url] for model, url in model_urls.items()}
        self._expected: dict[str, ExpectedModel] = {}
        self._verified: set[str] = set()
        self._refused: dict[str, ModelRefused] = {}
        self._checks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TritonRouter:
        key = settings.triton_restricted_key
        return cls(
            settings.triton_grpc_url,
            settings.triton_model_urls,
            settings.triton_timeout_s,
            restricted_key=key.get_secret_value() if key is not None else None,
        )

    def client_for(self, model: str) -> TritonClient:
        return self._routes.get(model, self._default)

    @property
    def endpoints(self) -> dict[str, TritonClient]:
        """gRPC target -> its client."""
        return dict(self._clients)

    @property
    def gate(self) -> ModelGate | None:
        return self._default.gate

    @gate.setter
    def gate(self, gate: ModelGate | None) -> None:
        for client in self._clients.values():
            client.gate = gate

    # -- card checks --

    def expect(self, models: Mapping[str, ExpectedModel]) -> None:
        """The models the gateway calls, as their cards describe them; each is checked before serving."""
        self._expected = dict(models)

    async def _verify(self, model: str) -> None:
        if model in self._refused:
            raise self._refused[model]
        if model in self._verified or model not in self._expected:
            return
        lock = self._checks.setdefault(model, asyncio.Lock())
        async with lock:
            if model not in self._verified and model not in self._refused:
                await self._check(model)
        if model in self._refused:
            raise self._refused[model]

    async def _check(self, model: str) -> None:
        try:
            config = await self.client_for(model).model_config(model)
        except SamoError:
            return  # Triton unreachable or the model not loaded: the call itself reports that
        differences = mismatches(self._expected[model], config)
        if not differences:
            self._verified.add(model)
            return
        detail = "; ".join(differences)
        logger.error(
            "model %s refused: its card (%s) does not match the model Triton serves: %s",
            model,
            CARD_FILE,
            detail,
        )
        self._refused[model] = ModelRefused(
            ErrorType.UNAVAILABLE,
            f"model `{model}` is refused: the gateway's model card does not match the model Triton serves "
            f"({detail})",
        )

    # -- the calls services make (gateway.triton_client.InferenceCalls) --

    async def infer(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]:
        await self._verify(model)
        return await self.client_for(model).infer(context, model, inputs, outputs)

    async def stream(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> AsyncGenerator[dict[str, np.ndarray], None]:
        await self._verify(model)
        # aclosing: a consumer that stops early closes the client's stream at once, not at collection.
        responses = self.client_for(model).stream(context, model, inputs, outputs)
        async with contextlib.aclosing(responses):
            async for response in responses:
                yield response

    async def is_model_ready(self, model: str) -> bool:
        return await self.client_for(model).is_model_ready(model)

    async def model_state(self, model: str) -> str | None:
        return await self.client_for(model).model_state(model)

    async def is_server_live(self) -> bool:
        """Whether any endpoint answers: the health monitor reloads failing models only then."""
        return any(await asyncio.gather(*(client.is_server_live() for client in self._clients.values())))

    async def reload_model(self, model: str) -> None:
        """Reload `model` in its Triton; a refused model is checked against Triton's config again instead
        (a reload cannot fix a card mismatch; a new rollout of either side can)."""
        if model in self._refused:
            del self._refused[model]
            await self._verify(model)
            return
        self._verified.discard(model)
        await self.client_for(model).reload_model(model)
        await self._verify(model)

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self._clients.values()))
