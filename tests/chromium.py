"""Headless Chromium for the tests: screenshots and the DOM of a page over loopback."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def available() -> bool:
    """True when the Chromium binary scripts/test.sh installs is there."""
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


def run(url: str, profile: Path, *args: str) -> str:
    """Run Chromium once on ``url`` with a fresh profile; return its stdout."""
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dump_dom(url: str, profile: Path) -> str:
    """The page's DOM after loading, as HTML."""
    return run(url, profile, "--dump-dom")


def screenshot(url: str, profile: Path, path: Path) -> bytes:
    """Save a PNG screenshot of the page at ``path`` and return its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    run(url, profile, f"--screenshot={path}")
    return path.read_bytes()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class Tables(HTMLParser):
    """Every table of a document as rows of cell texts, plus the whole visible text."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._stack: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._skip = 0
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open tables, rows and cells; <br> separates values within a cell."""
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "table":
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._stack[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        """Close cells and tables."""
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None and self._stack:
            self._stack[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        """Collect visible text."""
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[dict[str, str]]:
        """The rows of the first table whose header row has ``header``, as dicts."""
        for table in self.tables:
            if table and header in table[0]:
                return [dict(zip(table[0], row, strict=True)) for row in table[1:]]
        raise AssertionError(f"no table with a {header!r} column")

    def visible_text(self) -> str:
        """All text outside style and script, whitespace collapsed."""
        return " ".join("".join(self.text).split())
