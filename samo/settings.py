"""Process settings: one pydantic object, read from `SAMO_*` environment variables when built."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from samo.contracts.text import ENCODER_MAX_BATCH_SIZE

SECRETS_DIR_VARIABLE = "SAMO_SECRETS_DIR"
"""A folder of files named like settings' variables, holding their values (Kubernetes Secrets)."""
# limits' notation (https://limits.readthedocs.io): `amount/[multiple] granularity`, several joined by `;`.
RATE_LIMIT_PATTERN = r"^\s*\d+\s*(/|per)\s*\d*\s*[a-zA-Z]+\s*([,;|]\s*\d+\s*(/|per)\s*\d*\s*[a-zA-Z]+\s*)*$"


class OidcIssuer(BaseModel):
    """One identity provider whose tokens the gateway accepts (`SAMO_OIDC_ISSUERS`, a JSON list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        pattern=r"^https://",
        description="The issuer URL, exactly as its tokens' `iss` claim has it; its discovery document is at "
        "`<issuer>/.well-known/openid-configuration`.",
    )
    audiences: tuple[str, ...] = Field(
        min_length=1, description="Accepted `aud` values: a token must name one of them."
    )
    tenant_claim: str = Field(
        default="tenant", min_length=1, description="The claim that holds the caller's tenant."
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        description="Every token of this issuer belongs to this tenant (an app's own identity provider); "
        "`tenant_claim` is then not read.",
    )
    scopes_claim: str = Field(
        default="scope",
        min_length=1,
        description="The claim that holds the scopes: a space-separated string (`scope`) or a list (`scp`, "
        "`roles`).",
    )
    scope_prefix: str = Field(
        default="", description="Prefix of SAMO's scopes in that claim, e.g. `samo:` for `samo:emotions`."
    )


class QuotaSettings(BaseModel):
    """A tenant's quotas; unset fields are not limited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: str | None = Field(default=None, pattern=RATE_LIMIT_PATTERN)
    audio_seconds: str | None = Field(default=None, pattern=RATE_LIMIT_PATTERN)
    generated_tokens: str | None = Field(default=None, pattern=RATE_LIMIT_PATTERN)
    live_sessions: int | None = Field(default=None, ge=1)
    """Live sessions (WS /v1/realtime, gRPC TranscribeLive) open at once, across replicas."""


class GatewaySettings(BaseSettings):
    """The gateway's settings. Built in `main()` or the app factory, never at import time."""

    model_config = SettingsConfigDict(env_prefix="SAMO_", frozen=True)

    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port.")
    grpc_port: int = Field(
        default=50051, ge=0, le=65535, description="gRPC API port (samo.v1); 0 picks a free one."
    )
    keep_alive_s: float = Field(
        default=75.0,
        gt=0,
        description="Seconds an idle HTTP keep-alive connection stays open. Keep it above the idle timeout "
        "of whatever pools connections in front (load balancers: 60 s on AWS ALB; client pools): a "
        "connection the gateway closes just as a client reuses it fails that request (uvicorn's default "
        "is 5 s).",
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Gateway processes sharing the HTTP and gRPC ports. 0: from the cores this process "
        "may use (its CPU affinity and its container's CPU quota): one per core for `samo gateway` (the "
        "gateway image), half of them for `samo serve`, whose Triton needs the rest. One process tokenizes "
        "and serializes on one core. Limits such as `admission_budget` and `grpc_max_concurrent_rpcs` are "
        "per process; /metrics adds up all of them.",
    )
    grpc_max_message_bytes: int = Field(
        default=26 << 20,
        ge=1 << 20,
        description="Largest gRPC request accepted, bytes: the audio limit plus room.",
    )
    grpc_max_send_message_bytes: int = Field(
        default=16 << 20,
        ge=4096,
        description="Largest gRPC response sent, bytes (a transcript with word timestamps of an hour of "
        "speech is under 2 MB); a larger one fails with RESOURCE_EXHAUSTED instead of being buffered.",
    )
    grpc_max_concurrent_rpcs: int = Field(
        default=1024,
        ge=1,
        description="gRPC calls in progress at once, streams included until they end; grpc refuses more "
        "with RESOURCE_EXHAUSTED before reading them. Admission by cost (`admission_budget`) applies below it.",
    )
    triton_grpc_url: str = Field(
        default="127.0.0.1:8001",
        description="Triton's gRPC endpoint for every model not in `triton_model_urls`: `host:port`, or a "
        "gRPC target that names several servers, `dns:///triton-headless:8001` (a headless Service: one "
        "address per pod) or `ipv4:10.0.0.1:8001,10.0.0.2:8001`; calls are balanced round robin over them.",
    )
    triton_model_urls: dict[str, str] = Field(
        default={},
        description="Models served by another Triton, as JSON: model name -> gRPC target (same forms as "
        '`triton_grpc_url`), e.g. `{"whisper": "dns:///samo-triton-whisper-headless:8001"}`. One channel '
        "per distinct target.",
    )
    triton_restricted_key: SecretStr | None = Field(
        default=None,
        description="The key Triton's model-repository and shared-memory protocols are restricted with "
        "(`--grpc-restricted-protocol=model-repository,shared-memory:samo-triton-key=<key>`); sent as the "
        "`samo-triton-key` metadata of the gateway's model reloads. Unset: sent nowhere.",
    )
    model_repository: Path = Field(
        default=Path("model_repository"),
        description="The repository Triton serves; the gateway reads tokenizers, labels and thresholds from it.",
    )
    default_emotion_model: str = Field(default="emotion", description="Model used when a request names none.")
    default_whisper_model: str = Field(
        default="whisper", description="Transcription model used when a request names none."
    )
    default_summarizer: str | None = Field(
        default=None,
        description="Summarization model used when a request names none; unset: the first abstractive "
        "model installed, else `extractive`.",
    )
    max_audio_bytes: int = Field(
        default=25 << 20, ge=1024, description="Largest audio upload, bytes (413 above)."
    )
    max_audio_duration_s: float = Field(
        default=3600.0, gt=0, description="Longest audio accepted, seconds (413 above)."
    )
    max_audio_decode_samples: int = Field(
        default=3600 * 48_000 * 2,
        ge=1,
        description="Decoding budget per upload, input samples over all channels (sample rate x channels "
        "x seconds; 413 above): bounds the CPU one file takes. Default: an hour of 48 kHz stereo.",
    )
    max_body_bytes: int = Field(
        default=8 << 20,
        ge=1024,
        description="Largest request body that is not an audio upload, bytes (413 above, checked on "
        "Content-Length and while the body arrives). Must hold `max_texts` texts of `max_text_chars`: "
        "64 x 20,000 characters are 5.1 MB of 4-byte UTF-8 and 7.7 MB written as JSON `\\uXXXX` escapes. "
        "Audio uploads are limited to `max_audio_bytes` plus 64 KiB of form.",
    )
    max_windows_in_flight: int = Field(
        default=4,
        ge=1,
        description="30 s windows of one recording in Triton at once (with their repairs); decoding waits "
        "while all are taken. Each costs the gateway about 6 MB while in flight. More fill Whisper's "
        "batches (up to 8) from one recording, which pays on a GPU; on CPU, 4 transcribed 59 minutes "
        "of speech as fast as 8, with 30 MB less memory.",
    )
    coalesce_in_flight: int = Field(
        default=4,
        ge=0,
        description="Triton calls open at once per text encoder (emotion models, the embedder) in one "
        "gateway process, before concurrent requests to it are joined (calls, not texts). Below the "
        "limit a request is sent at once, alone; at the limit requests wait and, when a call ends, "
        "everything waiting goes as one call of up to the card's `max_batch_size` texts (no timer). "
        "Fewer: larger calls, fewer gRPC round trips and less gateway CPU per text, but a request may "
        "wait for a call to end. More: less waiting, smaller calls, Triton's batcher does the joining. "
        "Keep it above the model's Triton instance count, so that no instance idles. 0 joins nothing. "
        "Default measured with `samo bench sweep --coalesce-in-flight` (2 cores, MiniLM fp32, texts/s "
        "at c=8 and c=32): off 109 / 104, 1: 96 / 112, 2: 105 / 120, 4: 115 / 126, 8: 103 / 131; 8 "
        "joins nothing below 8 clients.",
    )
    max_texts: int = Field(
        default=ENCODER_MAX_BATCH_SIZE,
        ge=1,
        description="Texts per request (422 above); each model's card sets how many go in one Triton call.",
    )
    max_text_chars: int = Field(
        default=20_000,
        ge=1,
        description="Characters per text; tokens past the model's limit are truncated anyway.",
    )
    triton_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request's deadline before its work is counted, seconds: Triton calls outside a "
        "request (readiness) get this; a request gets this plus `deadline_s_per_unit` per work unit.",
    )
    # Admission, deadlines and overload (gateway/admission.py, gateway/deadlines.py).
    admission_budget: int = Field(
        default=65_536,
        ge=1,
        description="Work in progress at once, in work units (one text through an encoder; see "
        "`units_per_token` and `units_per_audio_s`); a request that would pass it gets 429 with "
        "Retry-After at once. Streams hold their units until they end. A request costing more than the "
        "whole budget is admitted only when nothing else is in progress.",
    )
    units_per_token: float = Field(
        default=2.0,
        ge=0,
        description="Work units per token a summary may generate, per beam (max_new_tokens x num_beams, "
        "the model's defaults where unset).",
    )
    units_per_audio_s: float = Field(
        default=16.0,
        ge=0,
        description="Work units per second of audio to transcribe; an upload is admitted at one 30 s "
        "window before it is read, and topped up to its duration once that is known.",
    )
    deadline_s_per_unit: float = Field(
        default=0.05,
        ge=0,
        description="Seconds added to a request's deadline (`triton_timeout_s`) per work unit, so long "
        "audio and long summaries get time in proportion; Triton drops a request still queued at its "
        "deadline. The default gives audio 0.8 s per second of recording: tiny.en on 2 busy CPU cores "
        "ran near 0.3 s per second, and a 124 s file missed a 0.16 s-per-second deadline under load.",
    )
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After sent with 429 and 503, seconds.")
    # Health, healing and shutdown (gateway/health, gateway/shutdown.py).
    health_probe_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often every model is probed with a real inference, seconds; a failing model is "
        "reloaded in Triton. A request failing with a server-side error probes its model at once, so this "
        "bounds detection only while no traffic reaches a broken model. Each round costs one small "
        "inference per model (a 0.5 s silent window for Whisper).",
    )
    health_probe_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A probe not answered within this marks its model `slow` in /health/models, seconds: "
        "still ready and never reloaded while Triton reports the model loaded, since on a busy CPU a probe "
        "waits behind real work (Whisper base took over 10 s on 2 shared cores) and reloading a busy model "
        "would turn slowness into an outage.",
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM: readiness turns false, new requests are refused, and requests in "
        "progress (HTTP and gRPC) get this long to finish before the process exits, seconds. Kubernetes' "
        "terminationGracePeriodSeconds must exceed it plus the preStop sleep.",
    )
    # Live transcription (gateway/realtime): WS /v1/realtime?intent=transcription.
    realtime_partial_interval_s: float = Field(
        default=1.0,
        ge=0.2,
        le=10.0,
        description="How often a live session decodes its open turn again while the user speaks, seconds. "
        "Text is confirmed once two decodes in a row agree on it (LocalAgreement-2), so the first "
        "confirmed words come about two intervals after speech starts. Each decode is one Whisper "
        "window in Triton: halving the interval doubles a session's admission cost.",
    )
    realtime_first_partial_interval_s: float = Field(
        default=0.4,
        ge=0.2,
        le=10.0,
        description="Until a live turn has confirmed words, its partial decodes come this often, seconds "
        "(the first once it holds 0.5 s of speech), so its first words are confirmed after two decodes that "
        "heard two words or more (p50 1.2 s, p95 1.4 to 1.5 s after speech starts, one session on 2 cores); "
        "then every "
        "`realtime_partial_interval_s`.",
    )
    realtime_final_context_s: float = Field(
        default=20.0,
        ge=0.0,
        le=20.0,
        description="Seconds before a live turn from which its decodes (partial and final) hear the session's "
        "earlier turns, whole, in one window with the turn (those of its last half, or the turn before when "
        "none began there), forced to begin with their texts and the turn's "
        "confirmed words (CTranslate2 models); 0: each turn decoded alone. With 20 s and a stability margin, "
        "journal speech came within +0.02 of the file route's word error rate (from +0.10 with turns decoded "
        "alone); a longer window costs decode time.",
    )
    realtime_partial_beam_size: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Beam size of the partial re-decodes (the final decode of a turn uses 5, as files do). "
        "Greedy partials cost about half of beam 5 on CPU.",
    )
    realtime_final_beam_size: int = Field(
        default=5,
        ge=1,
        le=10,
        description="Beam size of a live turn's final decode (continuing after its confirmed words). Greedy "
        "finals decode about twice as fast on CPU and cost word errors (journal speech, one session: live WER "
        "0.18 against 0.13 with beam 5, the file route's 0.11). With the short encoder windows of "
        "`realtime_window_padding_s`, one session: beam 3 p95 end of speech to `completed` 0.66 to 0.77 s at WER "
        "0.14 to 0.16 (5 runs), beam 5 0.75 to 1.03 s at 0.13 to 0.14 (8 runs, 0.75 to 0.78 in the same hour as "
        "beam 3's 0.66 to 0.73); set 3 where a steady margin under 0.8 s matters more than a word or two in a "
        "hundred.",
    )
    realtime_window_padding_s: float = Field(
        default=3.0,
        ge=0.0,
        le=30.0,
        description="Seconds of silence after the audio that a live decode's encoder hears, in a window of at "
        "least 10 s, in steps of 2 s, instead of Whisper's 30 s (CTranslate2 models; the decodes that hear "
        "the turns before them). tiny.en on one thread encodes 10 s in 0.06 s and 30 s in 0.44 s; journal "
        "sentences decoded alone had WER 0.085 in such windows against 0.109 in 30 s ones. One session's end "
        "of speech to `completed` measured p95 0.82 to 1.03 s (1.05 to 1.19 s with 30 s windows). 0: every "
        "live decode hears a 30 s window, as files do.",
    )
    realtime_max_session_s: float = Field(
        default=1800.0, gt=0, description="Longest live session, seconds of wall time; then it is closed."
    )
    realtime_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A live session that receives no client event for this long is closed, seconds.",
    )
    realtime_max_message_bytes: int = Field(
        default=1 << 20,
        ge=4096,
        description="Largest client event of a live session, bytes (base64 audio included: 1 MiB holds "
        "16 s of 24 kHz PCM); a larger one gets an `error` event and the session goes on.",
    )
    realtime_max_bad_events: int = Field(
        default=20,
        ge=1,
        description="Invalid client events (not JSON, unknown type, bad base64, wrong format) a live session "
        "may send within 10 s; one more closes it with WebSocket code 1008.",
    )
    realtime_max_speedup: float = Field(
        default=8.0,
        ge=1.0,
        description="How much faster than real time a live session may send audio (past a 10 s allowance); "
        "a faster client is slowed down (its events are read later), so admission's cost holds.",
    )
    realtime_max_sessions_per_key: int = Field(
        default=0,
        ge=0,
        description="Live sessions open at once per API key (per client address without keys), counted in "
        "`rate_limit_storage` (Redis: across replicas; `memory://`: per gateway process); 0: no limit "
        "beyond admission and the tenant's `live_sessions` quota.",
    )
    realtime_audio_rate_limit: str | None = Field(
        default=None,
        pattern=RATE_LIMIT_PATTERN,
        description="Seconds of live session audio per API key (or client address), e.g. `3600/day`, counted "
        "as it arrives, beside `audio_rate_limit` (which counts live audio too); a chunk over it gets an "
        "`error` event. Unset: no limit of its own.",
    )
    realtime_session_lease_s: float = Field(
        default=30.0,
        ge=1.0,
        le=600.0,
        description="A live session's hold on its concurrent-session counts lasts this long and is renewed "
        "every third of it while the session runs, seconds: slots of a gateway that dies without closing "
        "its sessions are free again on every replica within this time.",
    )
    realtime_demo: bool = Field(
        default=False,
        description="Serve /demo/live, a page that transcribes the microphone live (for trying the API; "
        "it asks its user for a key).",
    )
    # Access (gateway/security): API keys, rate limits, TLS, CORS.
    api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys, one `name:key` per line (`#` comments); reloaded when it changes "
        "and on SIGHUP. Set: every route but /health/* needs `Authorization: Bearer <key>` (or "
        "`X-API-Key`). Unset: the gateway is open to anyone who reaches it.",
    )
    api_keys_reload_s: float = Field(
        default=2.0, gt=0, description="How often the API key file is checked for changes, seconds."
    )
    rate_limit: str | None = Field(
        default=None,
        pattern=RATE_LIMIT_PATTERN,
        description="Requests per API key (per client address when the gateway is open), e.g. "
        "`120/minute` or `10/second;600/hour`; 429 with Retry-After above. Unset: no limit.",
    )
    audio_rate_limit: str | None = Field(
        default=None,
        pattern=RATE_LIMIT_PATTERN,
        description="Seconds of audio per API key (or client address), e.g. `3600/hour`, counted when an "
        "upload is decoded; 429 with Retry-After above. Unset: no limit.",
    )
    rate_limit_storage: str | None = Field(
        default=None,
        pattern=r"^(memory|redis|rediss|redis\+unix)://",
        description="Where rate-limit counters live: unset or `memory://` in this process; "
        "`redis://host:port/db` (or `rediss://`) shared by every replica.",
    )
    # Identity and tenants (gateway/security, gateway/database, gateway/usage).
    oidc_issuers: tuple[OidcIssuer, ...] = Field(
        default=(),
        description="Identity providers whose JWT bearer tokens are accepted, as JSON: a list of "
        '`{"issuer": "https://...", "audiences": ["samo"], "tenant_claim": "tenant", "scopes_claim": '
        '"scope", "scope_prefix": ""}` ([Identity and tenants](../operations/identity.md)). Set: every '
        "route but /health/* needs a credential.",
    )
    oidc_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle trusted for the issuers' HTTPS (an identity provider behind a private CA); "
        "unset: the system's CAs.",
    )
    oidc_clock_skew_s: float = Field(
        default=30.0, ge=0, le=300, description="Leeway for a token's `exp` and `nbf`, seconds."
    )
    oidc_jwks_cache_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long an issuer's signing keys are used before they are fetched again, seconds.",
    )
    oidc_jwks_min_refresh_s: float = Field(
        default=30.0,
        ge=0,
        description="Least time between two fetches of an issuer's keys, seconds: a token naming an unknown "
        "key (`kid`) fetches them again at most this often.",
    )
    oidc_http_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one request to an issuer (discovery, JWKS), seconds."
    )
    oidc_max_token_bytes: int = Field(
        default=4096, ge=512, le=16384, description="Longer bearer tokens are refused unread."
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the database of managed API keys and the usage ledger: "
        "`sqlite:///var/samo.db` (embedded) or `postgresql+psycopg://user:password@host/samo`. Its schema is "
        "migrated at start (Alembic). Unset: no managed keys, no ledger.",
    )
    batch_dir: Path = Field(
        default=Path("samo-data"),
        description="Folder of the embedded batch store: without `database_url`, batch jobs keep their files "
        "and state in `batches.db` (SQLite) here, created on the first batch request; also where a generated "
        "`batch.key` is kept when `batch_key` is unset.",
    )
    batch_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts batch files and outputs at rest (AES-256-GCM): 32 bytes, base64. "
        "Unset: a key generated once into `batch_dir/batch.key` (mode 0600); set it from the deployment's "
        "secrets wherever several processes share the database.",
    )
    batch_worker: bool = Field(
        default=True,
        description="Run batch lines in this gateway process. With PostgreSQL, every process that runs them "
        "(gateways, `samo worker`) takes jobs from one procrastinate queue; with SQLite, one process per "
        "database runs them (a lock file elects it).",
    )
    batch_runner_process: bool = Field(
        default=True,
        description="Embedded store (no `database_url`): run batch lines in one `samo worker` process beside "
        "the gateway's, at nice `batch_runner_nice`, started once the store exists; the gateway processes "
        "then run none. A niced process gets spare CPU only, so a batch's tokenizing, sealing and SQLite "
        "writes do not slow interactive requests. Off: lines run in the gateway process.",
    )
    batch_runner_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="OS nice level of that process (0 to 19): at 10 the kernel gives it about a tenth of a "
        "busy core against the gateway's nice 0 (CFS weights 110 and 1024), and all of an idle one.",
    )
    batch_runner_concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Batch lines that process runs at once (its `batch_concurrency`): it shares the cores "
        "with the gateway and Triton. Measured (`samo bench batch-interference`, 2 cores, MiniLM): 1 line at "
        "a time kept interactive p99 at 0.95x of p99 without a batch at 50 % load, with 36 lines/s; 4 "
        "gave 42 lines/s and 2.4 to 2.8x.",
    )
    batch_concurrency: int = Field(
        default=4, ge=1, le=256, description="Batch lines one process runs at once."
    )
    batch_chunk_lines: int = Field(
        default=16, ge=1, le=10_000, description="Lines per queued job: a job runs its lines in order."
    )
    batch_max_attempts: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Tries of a line that meets transient errors (overload, rate limits, unavailable, "
        "timeouts) before it goes to the error file; permanent errors go there at once.",
    )
    batch_retry_base_s: float = Field(
        default=0.5,
        gt=0,
        description="First backoff after a transient error, seconds; doubled each try (with jitter), at most "
        "30 s.",
    )
    batch_admission_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of `admission_budget` that batch lines may fill: a line is admitted only while the "
        "work in progress, interactive requests included, leaves it room within this share (spare capacity "
        "only); otherwise it waits and retries.",
    )
    batch_max_file_bytes: int = Field(
        default=200 << 20, ge=1024, description="Largest file `POST /v1/files` takes, bytes."
    )
    batch_max_lines: int = Field(default=50_000, ge=1, description="Most lines in one batch's input file.")
    batch_max_line_bytes: int = Field(
        default=1 << 20, ge=256, description="Longest line of a batch input file, bytes."
    )
    batch_max_active: int = Field(
        default=20,
        ge=1,
        description="Batches a tenant may have not yet ended (validating, in progress, finalizing, "
        "cancelling); one more is refused with 429.",
    )
    batch_retention_s: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="How long files and batch outputs are kept, seconds (default 30 days); then they are "
        "deleted with everything derived from them.",
    )
    batch_stalled_after_s: float = Field(
        default=30.0,
        gt=0,
        description="PostgreSQL queue: a worker silent (no heartbeat) this long is taken for dead and its jobs "
        "go back to the queue, seconds. Heartbeats go every third of it.",
    )
    batch_webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key that signs batch webhooks (`webhook-signature`, Standard Webhooks). "
        "Unset: batches may not ask for webhooks.",
    )
    managed_keys_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="How often each gateway process reads the managed keys again, seconds: a key created or "
        "revoked on one replica holds on every replica within this time.",
    )
    tenant_quota: QuotaSettings | None = Field(
        default=None,
        description="Every tenant's quotas, as JSON: `requests` (e.g. `600/minute`), `audio_seconds` (e.g. "
        "`36000/day`; live audio included), `generated_tokens` (`1000000/day`), `live_sessions` (open at "
        'once, e.g. `20`), e.g. `{"requests": "600/minute"}`. Counted in `rate_limit_storage` (Redis: across replicas). Unset: no quota.',
    )
    tenant_quotas: dict[str, QuotaSettings] = Field(
        default={},
        description="Quotas of named tenants, as JSON: tenant -> quotas as in `tenant_quota`, which they "
        "replace.",
    )
    metrics_max_tenants: int = Field(
        default=100,
        ge=1,
        description="Tenants with a label of their own in `samo_tenant_*` metrics, per process; later ones "
        "count as `other` (the usage ledger keeps every tenant).",
    )
    quota_storage_failure: Literal["refuse", "allow"] = Field(
        default="refuse",
        description="When the quota counters' storage cannot be reached: `refuse` (fail closed, 503) or "
        "`allow` (requests pass uncounted). Either way it is logged and counted.",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain: HTTP and gRPC serve TLS with it (needs `tls_key`)."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of `tls_cert`.")
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Browser origins allowed by CORS, comma-separated (`*` for any); empty: no CORS headers.",
    )
    # Request IDs, logs, traces and metrics (gateway/observability).
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines on stderr: `text`, or `json` (one object per line: time, level, logger, "
        "process, request_id, message).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Level of the gateway's own logs; DEBUG adds one line per request (route, status, "
        "milliseconds).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OpenTelemetry: base URL of an OTLP/HTTP receiver (e.g. `http://otel-collector:4318`); "
        "spans go to `<url>/v1/traces`. Unset: tracing is off unless the standard "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` is set.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Settings from arguments, then `SAMO_*` variables, then files: with `SAMO_SECRETS_DIR` set, a
        file named like a variable (`SAMO_DATABASE_URL`) in that folder holds its value, as a Kubernetes
        Secret mounted there provides (read when the settings are built, so a rotated secret is read by
        the next process: `kubectl rollout restart`)."""
        folder = os.environ.get(SECRETS_DIR_VARIABLE)
        if not folder:
            return init_settings, env_settings, dotenv_settings
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SecretsSettingsSource(settings_cls, secrets_dir=folder),
        )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: set both or neither")
        return self
