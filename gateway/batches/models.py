"""The files and batches API's shapes, as OpenAI's Files and Batch APIs define them (so its SDKs parse
them), with SAMO's purposes and endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FilePurpose = Literal["batch", "audio", "batch_output"]
"""`batch`: a JSONL input file; `audio`: a recording a line refers to by ID; `batch_output`: an output or
error file the gateway wrote."""
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
ENDED: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})
COMPLETION_WINDOWS = {"24h": 86400.0, "1h": 3600.0, "10m": 600.0}
"""Completion windows a batch may ask for (OpenAI's is `24h`; shorter ones for tests and small jobs)."""


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class NewBatchFields(BaseModel):
    """`POST /v1/batches`: OpenAI's fields, and SAMO's optional `webhook_url` (an OpenAI SDK sends it in
    `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=40)
    endpoint: str = Field(max_length=64, description="The operation every line calls, e.g. `/v1/emotions`.")
    completion_window: str = Field(default="24h", description=f"One of {', '.join(COMPLETION_WINDOWS)}.")
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="Called once the batch ends (HMAC-signed; needs `SAMO_BATCH_WEBHOOK_SECRET`).",
    )


class InputLine(BaseModel):
    """One line of a batch input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str = Field(max_length=64)
    body: dict[str, Any]
