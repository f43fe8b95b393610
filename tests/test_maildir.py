"""The maildir holds buyer data: only the relay's own user may read what it writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from relay.channels.base import EmailMessageSpec
from relay.channels.maildir import Maildir

FROM = "Relay <relay@example.com>"


def _spec(message_id: str) -> EmailMessageSpec:
    return EmailMessageSpec(
        to="lucia@example.com",
        subject="OXXO",
        text="Ficha OXXO de María González",
        html="<p>Ficha OXXO</p>",
        message_id=message_id,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    """The common default umask, under which a plain open() gives 0644 and mkdir 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
async def test_maildir_files_are_0600_and_its_folders_0700(tmp_path: Path) -> None:
    root = tmp_path / "var" / "mail"
    maildir = Maildir(root, from_address=FROM)

    await maildir.send(_spec("dlv_1"))
    await maildir.send(_spec("dlv_1"))  # a retry replaces the file it wrote
    await maildir.send(_spec("dlv_2"))

    written = sorted((root / "new").iterdir())
    assert [p.name for p in written] == ["dlv_1.eml", "dlv_2.eml"]
    assert {p.name: oct(_mode(p)) for p in written} == {"dlv_1.eml": "0o600", "dlv_2.eml": "0o600"}
    folders = [root, root / "tmp", root / "new", root / "cur"]
    assert {str(d.relative_to(tmp_path)): oct(_mode(d)) for d in folders} == {
        str(d.relative_to(tmp_path)): "0o700" for d in folders
    }
    # The folders above the maildir are the operator's: left as the umask makes them.
    assert _mode(tmp_path / "var") == 0o755


@pytest.mark.usefixtures("open_umask")
async def test_a_stale_staging_file_does_not_keep_its_wider_mode(tmp_path: Path) -> None:
    """A crash between write and rename leaves tmp/<name>; the retry must not inherit 0644."""
    root = tmp_path / "mail"
    (root / "tmp").mkdir(parents=True)
    stale = root / "tmp" / "dlv_1.eml"
    stale.write_bytes(b"half a message")
    stale.chmod(0o644)

    await Maildir(root, from_address=FROM).send(_spec("dlv_1"))

    assert _mode(root / "new" / "dlv_1.eml") == 0o600
    assert list((root / "tmp").iterdir()) == []
