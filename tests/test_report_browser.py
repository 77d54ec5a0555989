"""The report in a real browser: headless Chromium loads it with every image present and none broken.

Chromium comes from Debian's ``chromium`` package (``make test`` installs it). Outside CI the test is
skipped when it is absent; under CI (env CI set) a missing browser is a failure. The screenshot is kept as
``test-artifacts/report.png`` in the repository root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builders import results_folder
from programs import chromium, run_chromium

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def test_report_opens_in_chromium_with_every_image(tmp_path):
    from tiltflow.qc.report import write_report

    exe = chromium()
    out = results_folder(tmp_path / "OUT")
    page = write_report(out)
    n_img = len(re.findall(r"<img ", page.read_text()))
    url = page.resolve().as_uri()

    dom = run_chromium(exe, tmp_path / "profile1", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stdout[:500]
    tag = body.group(0)
    assert 'data-loaded="1"' in tag  # the page's own script ran after every image settled
    assert f'data-images="{n_img}"' in tag and n_img >= 18
    assert 'data-broken-images="0"' in tag, tag
    assert not re.search(r"<img[^>]*data-broken=", dom.stdout)
    assert "TS_01" in dom.stdout and "TS_02" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    if shot.exists():
        shot.unlink()
    res = run_chromium(exe, tmp_path / "profile2", "--hide-scrollbars", "--window-size=1280,4000",
               "--virtual-time-budget=10000", f"--screenshot={shot}", url)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a rendered page of plots, not a blank frame
    from PIL import Image  # matplotlib depends on pillow

    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        colours = im.convert("RGB").resize((64, 200)).getcolors(64 * 200)
        assert colours is None or len(colours) > 50  # plots and images, not an empty page
