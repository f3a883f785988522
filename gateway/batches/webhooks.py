"""A batch's end announced to the URL it gave: Standard Webhooks headers (`webhook-id`, the idempotency
key, one per batch and end; `webhook-timestamp`; `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`), tried again with exponential backoff until a 2xx, at most `ATTEMPTS` times. The
body is OpenAI's batch event (`batch.completed`, ...) with the batch object; never line content."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time

import httpx

logger = logging.getLogger(__name__)

ATTEMPTS = 6
FIRST_BACKOFF_S = 1.0
TIMEOUT_S = 10.0


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def event_body(batch: dict[str, object]) -> bytes:
    return json.dumps(
        {"object": "event", "type": f"batch.{batch['status']}", "data": {"id": batch["id"]}, "batch": batch}
    ).encode()


async def deliver(
    url: str, secret: bytes, batch: dict[str, object], *, first_backoff_s: float = FIRST_BACKOFF_S
) -> bool:
    """POST the event until a 2xx answer; whether one came. The URL is the caller's, so it is logged by
    host only."""
    webhook_id = f"{batch['id']}.{batch['status']}"
    body = event_body(batch)
    host = httpx.URL(url).host
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for attempt in range(1, ATTEMPTS + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(secret, webhook_id, timestamp, body),
            }
            try:
                response = await client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            logger.warning("batch %s webhook to %s: try %d failed (%s)", batch["id"], host, attempt, reason)
            if attempt < ATTEMPTS:
                await asyncio.sleep(first_backoff_s * 2 ** (attempt - 1))
    return False
