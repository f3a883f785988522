"""The /demo/live page in a real browser: Debian's headless Chromium, its microphone fed the JFK recording
(`--use-file-for-fake-audio-capture`), driven over the DevTools protocol. The page must show the words
as they are spoken (confirmed text, and a grey tail while it is still open), then the journal analysis
when it is stopped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from load_tests.processes import free_port, port_server_process
from samo.evaluation.wer import word_error_rate
from tests.conftest import Gateway
from tests.speech import JFK_TEXT, RATE, jfk_samples, wav_bytes

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`make install`)"
)


@pytest.fixture()
def microphone(tmp_path: Path) -> Path:
    """What the fake microphone plays once: half a second of silence, JFK, three seconds of silence."""
    silence = np.zeros(RATE // 2, dtype=np.int16)
    path = tmp_path / "microphone.wav"
    path.write_bytes(wav_bytes(np.concatenate([silence, jfk_samples(), silence, silence, silence, silence])))
    return path


@pytest.fixture()
def browser(gateway: Gateway, microphone: Path, tmp_path: Path) -> Iterator[str]:
    """Chromium showing /demo/live?autostart=1; yields its page's DevTools WebSocket URL."""
    assert CHROMIUM is not None
    port = free_port()
    with port_server_process(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # the tests run as root
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop",
            "--autoplay-policy=no-user-gesture-required",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"{gateway.http_url}/demo/live?autostart=1",
        ],
        port,
        name="Chromium",
        env=os.environ,
        log=tmp_path / "chromium.log",
        timeout_s=30,
    ):
        deadline = time.monotonic() + 30
        while True:  # DevTools listens before the page is listed
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                page = next(p for p in pages if p.get("type") == "page" and "/demo/live" in p.get("url", ""))
                break
            except (httpx.HTTPError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield page["webSocketDebuggerUrl"]


class Page:
    def __init__(self, devtools: ClientConnection) -> None:
        self.devtools = devtools
        self.next_id = 0

    async def evaluate(self, expression: str) -> Any:
        self.next_id += 1
        await self.devtools.send(
            json.dumps(
                {
                    "id": self.next_id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            answer = json.loads(await self.devtools.recv())
            if answer.get("id") == self.next_id:
                return answer["result"]["result"].get("value")


SEEN = """JSON.stringify({
  confirmed: [...document.querySelectorAll('.confirmed')].map((e) => e.textContent).join(' '),
  tail: [...document.querySelectorAll('.tail')].map((e) => e.textContent).join(''),
  status: document.getElementById('status').textContent,
  errors: [...document.querySelectorAll('.error')].map((e) => e.textContent),
  analysis: document.getElementById('analysis').hidden ? null : document.getElementById('analysis').innerText,
})"""


def test_the_page_shows_words_while_they_are_spoken_and_the_analysis_at_the_end(browser: str) -> None:
    async def drive() -> list[dict]:
        seen: list[dict] = []

        async def look(page: Page) -> dict | None:
            raw = await page.evaluate(SEEN)
            if raw is None:  # the page is still loading
                return None
            seen.append(json.loads(raw))
            return seen[-1]

        async with connect(browser, max_size=None) as devtools:
            page = Page(devtools)
            started = time.monotonic()
            deadline = started + 60
            # The microphone plays 13.5 s; the last turn is completed once its silence has been heard.
            while time.monotonic() < deadline:
                state = await look(page)
                words = re.sub(r"[^\w\s]", "", state["confirmed"]).split() if state else []
                ended = state and not state["tail"] and words[-1:] == ["country"]
                if ended and time.monotonic() - started > 13:
                    break
                await asyncio.sleep(0.25)
            await page.evaluate("stop()")
            deadline = time.monotonic() + 30  # the last turn's final decode, then the journal
            while time.monotonic() < deadline:
                state = await look(page)
                if state and state["status"] in ("done", "closed"):
                    break
                await asyncio.sleep(0.25)
        return seen

    seen = asyncio.run(drive())
    final = seen[-1]
    assert final["errors"] == [] and final["status"] == "done", final
    assert word_error_rate(JFK_TEXT, final["confirmed"]) <= 0.2, final["confirmed"]
    # While speech went on, the page showed confirmed words and a grey tail after them.
    assert any(state["confirmed"] and state["tail"] for state in seen[:-5])
    assert final["analysis"] and "Summary:" in final["analysis"]
