"""Contents at rest, sealed: AES-256-GCM (`cryptography`) under the deployment's key, each piece bound to
what it is (its file ID, its batch line) as associated data, so that sealed bytes moved to another row do
not open. The key comes from `batch_key` (a secret), or is generated once into `batch_dir/batch.key`."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_FILE = "batch.key"


class SealError(Exception):
    """Sealed bytes that do not open with this key and label (another key, or tampered)."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"`batch_key` must be 32 bytes (base64), got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Sealer:
        if settings.batch_key is not None:
            try:
                key = base64.b64decode(settings.batch_key.get_secret_value(), validate=True)
            except binascii.Error:
                raise ValueError("`batch_key` is not base64") from None
            return cls(key)
        return cls(_local_key(settings.batch_dir))

    def seal(self, data: bytes, label: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, data, label.encode())

    def open(self, sealed: bytes, label: str) -> bytes:
        if sealed[:1] != VERSION:
            raise SealError(f"unknown seal version for {label}")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, label.encode())
        except InvalidTag:
            raise SealError(f"sealed content of {label} does not open with this key") from None


def _local_key(folder: Path) -> bytes:
    """The embedded default's key: read from `folder/batch.key`, or made there (0600) the first time."""
    path = folder / KEY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(descriptor, "w") as file:
        file.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode())
    logger.info("batch store: generated a key in %s (set SAMO_BATCH_KEY to use the deployment's own)", path)
    return base64.b64decode(path.read_text().strip())
