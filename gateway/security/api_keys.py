"""API keys from a file of `name:key` lines, looked up in constant time, reloaded while serving.

Only the key's name leaves this module (logs, metrics, rate-limit counters); keys are kept as SHA-256
digests, and messages about the file name line numbers, never their content.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Names appear in metrics labels, logs and rate-limit keys: keep them plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_KEY_CHARS = 16
SETTLE_S = 0.2
"""A changed key file is loaded once it reads the same twice this far apart (SIGHUP loads at once: the
operator says the file is written)."""


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the line, never the key."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_file(text: str) -> dict[str, bytes]:
    """Key name -> SHA-256 of the key, from `name:key` lines; blank lines and `#` comments skipped."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, key = (part.strip() for part in line.partition(":"))
        if not separator or not NAME_PATTERN.fullmatch(name):
            raise KeyFileError(
                f"line {number}: expected `name:key` with a name of letters, digits, `.`, `_` or `-`"
            )
        if len(key) < MIN_KEY_CHARS:
            raise KeyFileError(f"line {number} (`{name}`): keys need at least {MIN_KEY_CHARS} characters")
        if name in keys:
            raise KeyFileError(f"line {number}: the name `{name}` is used twice")
        digest = _digest(key)
        if digest in keys.values():
            raise KeyFileError(f"line {number} (`{name}`): the same key is given to two names")
        keys[name] = digest
    return keys


class ApiKeys:
    """The keys of one file: `name_for(key)` answers the key's name, reading the file again on `reload()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._source = path.read_bytes()
        self._keys = parse_key_file(self._source.decode())
        self._warn_if_empty()

    def name_for(self, candidate: str) -> str | None:
        """The name of the key equal to `candidate`, or None.

        Digests have one length, and every key is compared, so the time taken says nothing about
        which key, or how much of one, matched.
        """
        digest = _digest(candidate)
        found = None
        for name, key in self._keys.items():
            if hmac.compare_digest(digest, key):
                found = name
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def reload(self, settle_s: float = 0.0) -> bool:
        """Read the file again; True when the keys changed. A file that cannot be used keeps the old keys.

        `settle_s`: a changed file is read again after this long and loaded only if it reads the same. A
        file written in place (an editor, `echo >`) can be read empty or cut off mid-key, and a key cut
        to 16 characters or more parses: loaded, it would lock its owner out until the next good write.
        """
        try:
            source = self.path.read_bytes()
            if source == self._source:
                return False
            if settle_s:
                time.sleep(settle_s)
                if self.path.read_bytes() != source:
                    return False  # still being written: the next poll reads it whole
            keys = parse_key_file(source.decode())
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            logger.warning("API key file %s not reloaded, the previous keys stay: %s", self.path, _safe(exc))
            return False
        self._source, self._keys = source, keys
        logger.info("API keys reloaded from %s: %d keys (%s)", self.path, len(keys), ", ".join(keys))
        self._warn_if_empty()
        return True

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the file's content changes (editors, `kubectl` secret updates), until cancelled.

        Polls the content rather than watching inotify events: a Kubernetes secret volume swaps a
        symlink, which events on the file itself miss.
        """
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.reload, SETTLE_S)

    def _warn_if_empty(self) -> None:
        if not self._keys:
            logger.warning(
                "API key file %s holds no keys: every request except /health is refused", self.path
            )


def _safe(exc: Exception) -> str:
    """A reason that cannot quote the file: decode errors carry the bytes, so only their kind is told."""
    if isinstance(exc, KeyFileError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
