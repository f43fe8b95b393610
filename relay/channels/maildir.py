"""Email into a local maildir: one real .eml per message, for dev setups and tests.

Each file is written to tmp/ and renamed into new/, so a reader never sees half a
message. The name comes from the message id, so a retry replaces the file it
wrote before instead of adding a duplicate. Messages carry buyer data, so files are
0600 and the folders the relay creates 0700, whatever the umask.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path

from relay.channels.base import AttemptReport, EmailMessageSpec, TransientError
from relay.mime_writer import message_bytes

# Comfortably under the 255-byte name limit of common filesystems, ".eml" included.
MAX_NAME_STEM_CHARS = 150
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# Each message holds buyer data: readable by the relay's own user only, like the store.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class Maildir:
    """Writes each message to `<root>/new/<message id>.eml`."""

    def __init__(self, root: Path, *, from_address: str) -> None:
        self._root = root
        self._from_address = from_address

    async def send(self, message: EmailMessageSpec) -> AttemptReport:
        """Write one message; return the path written or raise a DeliveryError."""
        # Files on disk use the local line ending; CRLF is for the SMTP wire.
        content = message_bytes(message, self._from_address, linesep="\n")
        name = file_name(message.message_id)
        started = time.perf_counter()
        try:
            path = await asyncio.to_thread(_write_atomically, self._root, name, content)
        except OSError as exc:
            reason = f"cannot write to maildir {self._root}: {exc}"
            raise TransientError(reason, AttemptReport(latency_ms=_elapsed_ms(started))) from None
        return AttemptReport(latency_ms=_elapsed_ms(started), detail=f"written to {path}")


def file_name(message_id: str) -> str:
    """A safe, stable file name for a message id; distinct ids get distinct names."""
    # "%" escapes, like URL encoding, so no two ids collide; it never starts with a dot.
    stem = _UNSAFE_NAME_CHARS.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), message_id)
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem) > MAX_NAME_STEM_CHARS:
        digest = hashlib.sha256(message_id.encode()).hexdigest()
        stem = f"{stem[: MAX_NAME_STEM_CHARS - len(digest) - 1]}-{digest}"
    return f"{stem}.eml"


def _write_atomically(root: Path, name: str, content: bytes) -> Path:
    # The maildir's own folders are made private; the folders above it are the operator's.
    root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    staging = root / "tmp" / name
    final = root / "new" / name
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        # A staging file left by a crash keeps its old mode through O_CREAT: set it.
        os.fchmod(fd, PRIVATE_FILE_MODE)
        handle.write(content)
        handle.flush()
        os.fsync(fd)
    os.rename(staging, final)
    _fsync_dir(final.parent)  # make the rename itself survive a crash
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
