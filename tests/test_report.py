"""`evo report`: one self-contained HTML file of a real run, its plots inline, its code escaped; opened in
headless Chromium (skipped where no chromium is installed), with a screenshot kept in test-artifacts/."""

from __future__ import annotations

import base64
import html
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from report_run import MARKUP, ReportRun, make_report_run

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PLOTS = ("progress over evaluations", "archive heatmap", "map of program embeddings", "novelty distribution",
         "lineage of the best program")
_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def evo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    return make_report_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(made: ReportRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = evo("report", str(made.run_dir), "--out", str(out), "--top", "3")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in " ".join(result.stdout.split())
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


def test_the_plots_are_inline_pngs(report: Path) -> None:
    text = report.read_text()
    found = {alt: _png_size(base64.b64decode(data)) for data, alt in _IMG.findall(text)}
    for plot in PLOTS:
        assert plot in found, (plot, list(found))
        w, h = found[plot]
        assert w > 200 and h > 100, (plot, w, h)
    assert "could not draw" not in text


def test_the_file_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched when opened
    assert "<script" not in text and "<link" not in text


def test_the_code_is_escaped_and_the_best_programs_are_shown(report: Path, made: ReportRun) -> None:
    import evo

    text = report.read_text()
    assert "<script>document.title" not in text and "<b>bold</b>" not in text
    assert html.escape(MARKUP.strip()) in text
    with evo.load(made.run_dir) as run:
        best = run.best(3, ["id", "source", "value"])
        summary_best = run.programs(["value"], status="evaluated")["value"].max()
        failed = run.evaluations().query("failure == 'audit'")
    for row in best.itertuples():
        assert row.id in text and html.escape(row.source) in text
    assert f"{summary_best:.6g}" in text  # the headline's best value
    assert "ctypes" in text.split("Audit rejections", 1)[1]  # the audit section names the failed check
    assert len(failed) == 1


def test_a_folder_without_a_run_is_a_one_line_error(tmp_path: Path) -> None:
    result = evo("report", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not an evo run directory" in result.stdout + result.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


# Appended to a copy of the report (the report itself has no script): counts the images the browser decoded.
_PROBE = """<script>window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const d = document.createElement("div");
  d.id = "probe";
  d.textContent = `images=${imgs.length} decoded=${imgs.filter(i => i.complete && i.naturalWidth > 0).length}`;
  document.body.appendChild(d);
});</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_chromium_shows_every_plot(report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<div id="probe">images=(\d+) decoded=(\d+)</div>', dom.stdout)
    assert found, (dom.stdout[-2000:], dom.stderr[-2000:])
    images, decoded = int(found[1]), int(found[2])
    assert images >= len(PLOTS) and decoded == images, (images, decoded)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    w, h = _png_size(shot.read_bytes())
    assert (w, h) == (1280, 4000) and shot.stat().st_size > 50_000  # a page of plots, not a blank one
