"""The files and batches routes (OpenAI's Files and Batch APIs); the entries (gateway/batches) gate,
validate and keep tenants apart, as the model operations do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from gateway.batches import BatchService
from gateway.batches.models import BatchList, BatchObject, FileDeleted, FileList, FileObject, NewBatchFields
from gateway.errors import SamoError
from gateway.http.body_limit import UPLOAD_FORM_LIMITS
from gateway.http.context import request_context
from gateway.http.errors import ERRORS
from gateway.http.sse import EVENT_STREAM, EVENTS, event

Limit = Annotated[int, Query(ge=1, le=10_000)]


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json().encode(), status_code=status, media_type="application/json")


def batch_router() -> APIRouter:
    router = APIRouter(tags=["batches"])

    def service(request: Request) -> BatchService:
        return request.app.state.batches

    @router.post("/v1/files", response_model=FileObject, responses=ERRORS, form_limits=UPLOAD_FORM_LIMITS)
    async def upload_file(
        request: Request,
        file: Annotated[UploadFile, File()],
        purpose: Annotated[str, Form(max_length=32, description="`batch` (JSONL input) or `audio`")],
    ) -> Response:
        """Upload a batch input file (JSONL, `purpose=batch`) or a recording a batch line refers to by ID
        (`purpose=audio`). Stored encrypted; deleted at the end of `SAMO_BATCH_RETENTION_S`."""
        data = await file.read()
        created = await service(request).upload(request_context(request), file.filename or "", purpose, data)
        return _json(created)

    @router.get("/v1/files", response_model=FileList, responses=ERRORS)
    async def list_files(
        request: Request, purpose: str | None = None, after: str | None = None, limit: Limit = 10_000
    ) -> Response:
        """This tenant's files, newest first; `after` the last ID of the previous page."""
        return _json(await service(request).files(request_context(request), purpose, after, limit))

    @router.get("/v1/files/{file_id}", response_model=FileObject, responses=ERRORS)
    async def retrieve_file(file_id: str, request: Request) -> Response:
        return _json(await service(request).file(request_context(request), file_id))

    @router.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=ERRORS)
    async def delete_file(file_id: str, request: Request) -> Response:
        """Delete a file, and with an input file the batches made from it, their lines and outputs."""
        return _json(await service(request).delete_file(request_context(request), file_id))

    @router.get("/v1/files/{file_id}/content", responses=ERRORS)
    async def file_content(file_id: str, request: Request) -> Response:
        """The file's bytes (output and error files: JSONL in input order)."""
        data, row = await service(request).content(request_context(request), file_id)
        media = "application/octet-stream" if row.purpose == "audio" else "application/jsonl"
        return Response(data, media_type=media)

    @router.post("/v1/batches", response_model=BatchObject, responses=ERRORS)
    async def create_batch(body: NewBatchFields, request: Request) -> Response:
        """A batch of the requests in `input_file_id`, each run as `endpoint` runs it. A file that cannot
        make a batch is refused here (422, with the line at fault); a malformed line goes to the error file."""
        return _json(await service(request).create(request_context(request), body))

    @router.get("/v1/batches", response_model=BatchList, responses=ERRORS)
    async def list_batches(request: Request, after: str | None = None, limit: Limit = 20) -> Response:
        """This tenant's batches, newest first; `after` the last ID of the previous page."""
        return _json(await service(request).batches(request_context(request), after, limit))

    @router.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=ERRORS)
    async def retrieve_batch(batch_id: str, request: Request) -> Response:
        return _json(await service(request).batch(request_context(request), batch_id))

    @router.get("/v1/batches/{batch_id}/events", responses={200: EVENTS, **ERRORS})
    async def batch_events(batch_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: a `batch` event with the batch object now and at each change of its status
        or counts, until it ends."""
        updates = await service(request).progress(request_context(request), batch_id)

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for batch in updates:
                    yield event("batch", batch.model_dump(mode="json"))
            except SamoError as exc:
                yield event("error", {"type": exc.type.value, "message": exc.message})

        return StreamingResponse(stream(), media_type=EVENT_STREAM)

    @router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject, responses=ERRORS)
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        """Stop a batch: no new line starts; lines that finished stay in its output file."""
        return _json(await service(request).cancel(request_context(request), batch_id))

    return router
