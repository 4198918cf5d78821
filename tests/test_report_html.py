"""The HTML report in a real headless Chromium (Debian's chromium): every plot renders at a real size
with its marks and labels, the page is self-contained, and a screenshot shows ink where the plots are."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fleet_servers import unavailable

PROBE = """<script>
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('figure.plot')].map(f => {
    const svg = f.querySelector('svg'); const box = svg.getBoundingClientRect();
    return {id: f.id, width: box.width, height: box.height, top: box.top + window.scrollY,
            marks: svg.querySelectorAll('path, use, rect').length,
            texts: [...svg.querySelectorAll('text')].map(t => t.textContent)};
  });
  const out = document.createElement('pre'); out.id = 'rendered'; out.textContent = JSON.stringify(plots);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("Chromium is not installed here (Debian: apt-get install chromium)")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium as the machine's probe starts it: no sandbox as root, no GPU, no background traffic."""
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_plots_render_in_chromium(quick_run, tmp_path):
    from edgedl.report import write_all

    browser = chromium()
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    # a second "device" for the run's artifacts, as edgedl bench --run attaches one
    manifest = json.loads((run / "manifest.json").read_text())
    benched = [a for a in manifest["artifacts"] if a["metrics"].get("latency_ms")]
    (run / "fleet").mkdir()
    for a in benched:
        lat = a["metrics"]["latency_ms"]
        quantiles = (a["benchmark"].get("statistics") or {}).get("quantiles_ms")
        assert quantiles and len(quantiles) == 21  # every bench keeps its distribution
        (run / "fleet" / f"pi5--{a['name']}.json").write_text(json.dumps({
            "artifact": str(run / a["path"]), "device": {"label": "pi5"},
            "metrics": {"latency_ms": {k: 3 * v for k, v in lat.items()}, "energy_j_per_inference": 0.002},
            "statistics": {"quantiles_ms": [3 * q for q in quantiles]}}))
    md, page = write_all(run, run_dir=run)
    html = page.read_text()
    # self-contained: no script, stylesheet, image or font fetched from anywhere
    assert not re.search(r"<script|<link|src=|url\((?!#)|@import", html)  # url(#id): within the page
    assert "## On devices" in md.read_text() and "pi5 p50 ms" in md.read_text()

    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = headless(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    rendered = json.loads(re.search(r'<pre id="rendered">(.*?)</pre>', dom.stdout, re.S).group(1).replace("&quot;", '"'))
    plots = {p["id"]: p for p in rendered}
    assert set(plots) == {"plot-pareto", "plot-size", "plot-latency", "plot-energy"}
    for plot in plots.values():
        assert plot["width"] > 300 and plot["height"] > 100, plot
        assert plot["marks"] > 20, plot  # axes, ticks, points, bars or boxes
    pareto = " ".join(plots["plot-pareto"]["texts"])
    assert "p50 latency (ms)" in pareto and "accuracy (%)" in pareto and "pi5" in pareto and "this machine" in pareto
    assert any("@ pi5" in t for t in plots["plot-latency"]["texts"])
    assert any("energy per inference" in t for t in plots["plot-energy"]["texts"])

    shot = tmp_path / "report.png"
    taken = headless(browser, tmp_path / "profile", "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-500:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    top = int(plots["plot-pareto"]["top"])
    region = pixels[top:top + int(plots["plot-pareto"]["height"]), 40:600]
    ink = (region.mean(axis=2) < 0.8).mean()
    assert 0.01 < ink < 0.6, ink  # the plot drew marks and text: neither blank nor a solid block
    # colour: the device series are drawn in matplotlib's palette, not only black text
    colourful = (np.ptp(region, axis=2) > 0.3).mean()
    assert colourful > 0.001, colourful


def test_report_from_the_database(tmp_path):
    """edgedl report --db: a page for results from the database alone."""
    from edgedl.results import ResultsDB, bench_row

    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = ResultsDB(db)
    base = {"artifact": "m.int8.onnx", "metrics": {"latency_ms": {"p50": 1.0, "p99": 2.0}, "throughput_ips": 900,
                                                   "accuracy": 0.97},
            "statistics": {"quantiles_ms": list(np.linspace(0.8, 2.2, 21))}}
    for label, scale in (("orin", 1.0), ("pi5", 4.0)):
        result = json.loads(json.dumps(base))
        result["metrics"]["latency_ms"] = {k: v * scale for k, v in base["metrics"]["latency_ms"].items()}
        result["device"] = {"label": label}
        store.add([bench_row(result)])
    from edgedl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["report", "--db", db, "--artifact", "m.int8.onnx", "--out", str(tmp_path / "out")])
    assert exc.value.code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    rows = [line for line in md.splitlines() if "m.int8.onnx" in line]
    assert len(rows) == 2 and {r.split("|")[3].strip() for r in rows} == {"orin", "pi5"}
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="plot-pareto"' in html and 'id="plot-latency"' in html
