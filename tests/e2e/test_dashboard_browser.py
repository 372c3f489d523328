"""The HTML dashboard in a real headless browser (Debian's `chromium`): it renders, draws, logs nothing.

Skipped with a reason where chromium is absent; CI installs it (`apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanecho_tools.summarize import app
from tests.summary_support import session, write_run

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "training_summary_history.jsonl"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"
)


def chromium(
    page: Path, profile: Path, *args: str, size: str = "1000,1600"
) -> subprocess.CompletedProcess[str]:
    """Run headless chromium on a local file, offline, with console messages logged to stderr."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--window-size={size}",
        *args, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what chromium writes) into rows of raw pixel bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind in (0, 2):  # None and Up, most of chromium's rows: no per-byte branching
            line = bytearray(line if kind == 0 else ((x + b) & 0xFF for x, b in zip(line, prev, strict=True)))
            rows.append(bytes(line))
            prev = line
            continue
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def count_colors(path: Path, colors: list[tuple[int, int, int]], tolerance: int = 40) -> list[int]:
    """How many pixels lie within `tolerance` (per channel) of each color; one decode, one pass."""
    _, bpp, rows = png_pixels(path)
    counts = [0] * len(colors)
    for row in rows:
        for pixel in zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True):
            if pixel[0] == pixel[1] == pixel[2]:
                continue  # greys (background, text, grid) are never a series or a marker
            for n, (r, g, b) in enumerate(colors):
                if (
                    abs(pixel[0] - r) <= tolerance
                    and abs(pixel[1] - g) <= tolerance
                    and abs(pixel[2] - b) <= tolerance
                ):
                    counts[n] += 1
    return counts


def dashboard(tmp_path: Path) -> Path:
    """Two runs, one with a reset, written by the CLI."""
    root = tmp_path / "repo"
    sessions = [session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.6)]
    sessions += [
        session(h, (h - 1) * 100, h * 100, start_loss=2.6 - (h - 2) * 0.1, end_loss=2.6 - (h - 1) * 0.1)
        for h in range(2, 8)
    ]
    sessions.append(session(8, 0, 100, source="fresh", start_loss=None, end_loss=2.7))
    sessions.append(session(9, 100, 200, start_loss=2.7, end_loss=2.3))
    write_run(root, sessions)
    write_run(root, [session(1, 0, 400, source="fresh", start_loss=None, end_loss=1.9, run="nanecho-cached-full",
                             preset="full")], run=".training-progress/nanecho-cached-full")  # fmt: skip
    target = tmp_path / "dashboard.html"
    result = CliRunner().invoke(app, ["--root", str(root), "--html", str(target)])
    assert result.exit_code == 0, result.stderr
    return target


@needs_chromium
def test_dashboard_renders_its_charts_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    page = dashboard(tmp_path)
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None
    # 2 series per run + 2 in the all-runs overlay, each a non-empty path with a non-zero box
    assert 'data-rendered="ok"' in body.group(0) and 'data-paths="6"' in body.group(0)
    assert console_lines(dom.stderr) == []

    shot = tmp_path / "dashboard.png"
    # 1100 px tall: the comparison, the overlay and the ci run's chart (decoding more costs seconds)
    screenshot = chromium(page, tmp_path / "profile2", f"--screenshot={shot}", size="1000,1100")
    assert screenshot.returncode == 0 and shot.exists(), screenshot.stderr[-2000:]
    assert console_lines(screenshot.stderr) == []
    blue, red = count_colors(shot, [(0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)], tolerance=30)
    assert blue > 300  # the ci run's val-loss line
    assert red > 100  # the reset marker


@needs_chromium
def test_legacy_history_page_renders_its_reset_markers(tmp_path: Path) -> None:
    page = tmp_path / "legacy.html"
    result = CliRunner().invoke(app, ["--legacy-history", str(FIXTURE), "--html", str(page)])
    assert result.exit_code == 0, result.stderr
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert 'data-rendered="ok"' in dom.stdout and 'data-paths="2"' in dom.stdout
    assert dom.stdout.count('<line class="flagged"') == 18
    assert console_lines(dom.stderr) == []


@needs_chromium
def test_the_console_check_would_catch_a_page_error(tmp_path: Path) -> None:
    """The negative control: the same harness reports a script error, so a silent pass means something."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><script>console.error("x"); missing();</script></body></html>'
    )
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("missing is not defined" in line for line in console_lines(dom.stderr))


MERMAID_JS = os.environ.get("NANECHO_MERMAID_JS", "")  # e.g. node_modules/mermaid/dist/mermaid.min.js


@needs_chromium
@pytest.mark.skipif(
    not Path(MERMAID_JS).is_file(),
    reason="set NANECHO_MERMAID_JS to mermaid.min.js (npm install mermaid@11) to render the Markdown charts",
)
def test_every_mermaid_chart_parses_and_renders_with_real_mermaid(tmp_path: Path) -> None:
    """PROGRESS.md's and the legacy history's xychart-beta blocks, rendered by Mermaid itself."""
    dashboard(tmp_path)  # builds the two runs and PROGRESS.md under tmp_path/repo
    legacy = CliRunner().invoke(app, ["--legacy-history", str(FIXTURE), "--format", "md"]).stdout
    progress = (tmp_path / "repo" / ".training-progress" / "PROGRESS.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", progress + legacy, re.S)
    assert len(blocks) == 2 * 2 + 1
    page = tmp_path / "mermaid.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        f'<script src="{Path(MERMAID_JS).resolve().as_uri()}"></script><script>'
        f"const blocks = {json.dumps(blocks)};"
        "mermaid.initialize({startOnLoad: false});"
        "(async () => { const out = [];"
        " for (let i = 0; i < blocks.length; i++) {"
        "  try { const r = await mermaid.render('m' + i, blocks[i]);"
        "   out.push((r.svg.match(/<path/g) || []).length > 0 ? 'ok' : 'empty'); }"
        "  catch (e) { out.push('error: ' + e.message); } }"
        " document.body.setAttribute('data-result', out.join('|')); })();"
        "</script></body></html>"
    )
    dom = chromium(page, tmp_path / "profile", "--allow-file-access-from-files", "--virtual-time-budget=20000",
                   "--dump-dom")  # fmt: skip
    result = re.search(r'data-result="([^"]*)"', dom.stdout)
    assert result is not None, dom.stderr[-2000:]
    assert result.group(1).split("|") == ["ok"] * len(blocks)
