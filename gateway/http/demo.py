"""GET /demo/live: a page that transcribes the microphone live through WS /v1/realtime (confirmed text in
black, the revisable tail in grey, the journal analysis when the user stops). Served only with
`SAMO_REALTIME_DEMO=true`; it is for trying the API, and needs no key itself: it asks for one and
sends it as the browser subprotocol."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("pages") / "live.html"


@cache
def _page() -> str:
    return PAGE.read_text()


def demo_router() -> APIRouter:
    router = APIRouter(tags=["demo"], include_in_schema=False)

    @router.get("/demo/live")
    async def live_page() -> HTMLResponse:
        return HTMLResponse(_page())

    return router
