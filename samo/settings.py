"""Process settings: one pydantic object, read from `SAMO_*` environment variables when built."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from samo.contracts.text import ENCODER_MAX_BATCH_SIZE


class GatewaySettings(BaseSettings):
    """The gateway's settings. Built in `main()` or the app factory, never at import time."""

    model_config = SettingsConfigDict(env_prefix="SAMO_", frozen=True)

    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC API port (samo.v1); 0 picks a free one.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Gateway processes sharing the HTTP and gRPC ports. One process tokenizes and "
        "serializes on one core; with a GPU behind Triton, about one per free core. Limits such as "
        "`max_inflight_requests` and /metrics are per process.",
    )
    grpc_max_message_bytes: int = Field(
        26 << 20, ge=1 << 20, description="Largest gRPC request accepted, bytes: the audio limit plus room."
    )
    grpc_health_interval_s: float = Field(
        2.0, gt=0, description="How often grpc.health.v1 re-checks Triton with a real inference, seconds."
    )
    triton_grpc_url: str = Field("127.0.0.1:8001", description="Triton's gRPC endpoint, host:port.")
    model_repository: Path = Field(
        Path("model_repository"),
        description="The repository Triton serves; the gateway reads tokenizers, labels and thresholds from it.",
    )
    default_emotion_model: str = Field("emotion", description="Model used when a request names none.")
    default_whisper_model: str = Field(
        "whisper", description="Transcription model used when a request names none."
    )
    default_summarizer: str | None = Field(
        None,
        description="Summarization model used when a request names none; unset: the first abstractive "
        "model installed, else `extractive`.",
    )
    max_audio_bytes: int = Field(25 << 20, ge=1024, description="Largest audio upload, bytes (413 above).")
    max_audio_duration_s: float = Field(
        3600.0, gt=0, description="Longest audio accepted, seconds (413 above)."
    )
    max_texts: int = Field(
        ENCODER_MAX_BATCH_SIZE,
        ge=1,
        description="Texts per request (422 above); each model's card sets how many go in one Triton call.",
    )
    max_text_chars: int = Field(
        20_000, ge=1, description="Characters per text; tokens past the model's limit are truncated anyway."
    )
    triton_timeout_s: float = Field(30.0, gt=0, description="Deadline for one Triton call, seconds.")
    max_inflight_requests: int = Field(
        256, ge=1, description="Requests in progress before new ones get 429; bounds queueing latency."
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 429 and 503, seconds.")
    ready_cache_s: float = Field(
        2.0, ge=0, description="How long a successful readiness inference is trusted, seconds."
    )
