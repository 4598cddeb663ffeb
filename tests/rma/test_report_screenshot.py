"""report.html as a person sees it: headless Chromium renders it and the screenshot shows the
chart (the expected band, the counted line, the shaded gap) and the images.

Needs Debian's ``chromium``. Under ``CI=true`` a missing browser fails the test; elsewhere it
is skipped. Chromium loads the page from a file with networking features off; the page's own
Content-Security-Policy forbids it to fetch anything anyway.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rma.bundle import build_bundle
from rma.redact import Redactor
from rma.report import BAND_COLOUR, GAP_COLOUR, LINE_COLOUR
from tests.chromium import chromium
from tests.rma.bundle_sample import CONFIG_SECRETS, sample_input

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1200, 1600


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def near(pixels: np.ndarray, colour: str, tolerance: int) -> np.ndarray:
    return np.abs(pixels - rgb(colour)).max(axis=2) <= tolerance


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    browser = chromium()
    tmp = tmp_path_factory.mktemp("report")
    bundle = build_bundle(sample_input(), Redactor(CONFIG_SECRETS))
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/report.html"))
        handle = tar.extractfile(member)
        assert handle is not None
        page = tmp / "report.html"
        page.write_bytes(handle.read())
    png = tmp / "report.png"
    profile = tmp / "profile"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert png.exists(), done.stderr.decode(errors="replace")[-2000:]
    keep = os.environ.get("FFC_KEEP_SCREENSHOT")  # a path, to look at it by eye
    if keep:
        Path(keep).write_bytes(png.read_bytes())
    with Image.open(png) as img:
        assert img.size == (WIDTH, HEIGHT)
        return np.asarray(img.convert("RGB")).astype(np.int16)


def test_page_is_not_blank(screenshot: np.ndarray) -> None:
    flat = screenshot.reshape(-1, 3)
    colours = np.unique(flat // 8, axis=0)
    assert len(colours) > 200  # text, chart, images: many colours
    dark = (flat.max(axis=1) < 80).mean()
    assert 0.03 < dark < 0.5  # the header band and the text, not an all-black page


def test_the_chart_shows_band_line_and_gap(screenshot: np.ndarray) -> None:
    band = near(screenshot, BAND_COLOUR, 6)
    line = near(screenshot, LINE_COLOUR, 40)
    gap = near(screenshot, GAP_COLOUR, 6)
    assert band.sum() > 8_000, band.sum()
    assert line.sum() > 1_000, line.sum()
    assert gap.sum() > 3_000, gap.sum()
    # The first chart sits below the header, across the page, above the fold.
    ys, xs = np.nonzero(band)
    assert 250 < ys.min() and ys.max() < 1300, (ys.min(), ys.max())
    assert xs.max() - xs.min() > 600
    # The counted line runs through the band's region, the gap sits at the right of the chart.
    ly, _ = np.nonzero(line)
    assert ys.min() - 40 < np.median(ly) < ys.max() + 40
    tall = np.nonzero(gap.sum(axis=0) > 60)[0]  # columns of the shaded span, not the legend
    assert len(tall) > 60
    assert tall.min() > xs.min() + (xs.max() - xs.min()) * 0.6


def test_the_images_are_shown(screenshot: np.ndarray) -> None:
    # The reference's blue door frame (70, 90, 120) is in the lower part of the first screen.
    door = near(screenshot, "#465a78", 18)
    assert door[1000:].sum() > 2_000, door[1000:].sum()
