"""One self-contained HTML page per report: the tables, and plots drawn by matplotlib as inline SVG
(no script, no file or network reference: the page can be mailed or attached to a ticket).

Plots: accuracy against p50 latency with each device's Pareto front marked, size per artifact,
the latency distribution per device (boxes from the 5th to the 95th percentile), and energy per
inference where a power source measured it.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from edgedl._fs import atomic_write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td.t,th.t{text-align:left}tr.dim td{color:#999}
figure.plot{margin:1rem 0;display:inline-block;vertical-align:top}figure.plot svg{width:520px;height:auto}
figcaption{font-size:.8rem;color:#555;max-width:520px}.note{color:#555;font-size:.85rem}
"""


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _matplotlib_at_least(*version: int) -> bool:
    import matplotlib

    return tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit()) >= version


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _figure(plot_id: str, svg: str, caption: str) -> str:
    return (f'<figure class="plot" id="plot-{plot_id}">{svg}<figcaption>{html.escape(caption)}</figcaption>'
            "</figure>")


def plots(points: list[dict]) -> tuple[list[str], list[str]]:
    """The figures as HTML, and a note for each plot that could not be drawn (and why): a report is
    never lost to a plot."""
    try:
        return _plots(points)
    except Exception as exc:  # a matplotlib that draws differently: the tables still stand
        return [], [f"plots could not be drawn ({type(exc).__name__}: {str(exc)[:200]})"]


def _plots(points: list[dict]) -> tuple[list[str], list[str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["plots need matplotlib, which is not installed: pip install 'edgedl[plot]'"]
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    figures, notes = [], []
    devices = list(dict.fromkeys(p["device"] for p in points))
    colors = {d: f"C{i % 10}" for i, d in enumerate(devices)}

    timed = [p for p in points if p.get("p50_ms") is not None and p.get("accuracy") is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for device in devices:
            mine = [p for p in timed if p["device"] == device]
            if not mine:
                continue
            xy = [(p["p50_ms"], 100 * p["accuracy"]) for p in mine]
            ax.scatter(*zip(*xy), color=colors[device], label=device, s=28, zorder=3)
            front = pareto(xy)
            ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color=colors[device], lw=1.2, ls="--",
                    zorder=2)
            ax.scatter([xy[i][0] for i in front], [xy[i][1] for i in front], facecolors="none",
                       edgecolors=colors[device], s=110, lw=1.3, zorder=4)
            for i in front:  # the front's points are the ones to read; the rest stay unlabelled
                ax.annotate(mine[i]["artifact"], xy[i], fontsize=6.5, xytext=(5, -9 - 8 * (front.index(i) % 2)),
                            textcoords="offset points", color=colors[device])
        ax.set_xlabel("p50 latency (ms)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy against latency (circled, dashed: Pareto front per device)")
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
        figures.append(_figure("pareto", _svg(fig), "Each point is one artifact on one device; a circled (and "
                                                    "named) point has no other artifact both faster and more "
                                                    "accurate there."))
    else:
        notes.append("accuracy against latency: no artifact has both an accuracy and a latency")

    sized = {p["artifact"]: p["size_mb"] for p in points if p.get("size_mb") is not None}
    if sized:
        fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.32 * len(sized)))
        names = list(sized)
        ax.barh(names, [sized[n] for n in names], color="C0")
        for i, n in enumerate(names):
            ax.annotate(f"{sized[n]:.3g} MB", (sized[n], i), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("size (MB)")
        ax.set_title("Size per artifact")
        figures.append(_figure("size", _svg(fig), "The file a device loads (with its external data)."))

    spread = [p for p in points if p.get("quantiles_ms")]
    if spread:
        fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.34 * len(spread)))
        stats = []
        for p in spread:
            q = p["quantiles_ms"]  # every 5th percentile, 0..100
            stats.append({"label": f"{p['artifact']} @ {p['device']}", "whislo": q[1], "q1": q[5], "med": q[10],
                          "q3": q[15], "whishi": q[19], "fliers": []})
        sideways = {"orientation": "horizontal"} if _matplotlib_at_least(3, 10) else {"vert": False}
        boxes = ax.bxp(stats, patch_artist=True, showfliers=False, **sideways)
        for patch, p in zip(boxes["boxes"], spread):
            patch.set_facecolor(colors[p["device"]])
            patch.set_alpha(.55)
        ax.invert_yaxis()
        ax.set_xlabel("latency per call (ms): box 25th-75th, whiskers 5th-95th percentile")
        ax.set_title("Latency distribution per device")
        ax.grid(axis="x", alpha=.3)
        figures.append(_figure("latency", _svg(fig), "From every timed call of each bench (21 percentiles kept)."))
    else:
        notes.append("latency distribution: no result carries its percentiles (results from edgedl 0.1 and adb "
                     "devices keep only summary figures)")

    energy = [p for p in points if p.get("energy_mj") is not None]
    if energy:
        fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.32 * len(energy)))
        labels = [f"{p['artifact']} @ {p['device']}" for p in energy]
        ax.barh(labels, [p["energy_mj"] for p in energy], color=[colors[p["device"]] for p in energy])
        ax.invert_yaxis()
        ax.set_xlabel("energy per inference (mJ)")
        ax.set_title("Energy per inference")
        figures.append(_figure("energy", _svg(fig), "Measured by the device's power source during the timed calls."))
    else:
        notes.append("energy per inference: no power source measured any of these results")
    return figures, notes


def _table(columns: list[str], rows: list[list[str]], dim: list[bool] | None = None, text: int = 1) -> str:
    head = "".join(f'<th class="{"t" if i < text else ""}">{html.escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for k, row in enumerate(rows):
        cls = ' class="dim"' if dim and dim[k] else ""
        cells = "".join(f'<td class="{"t" if i < text else ""}">{html.escape(str(c))}</td>' for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, intro: str, sections: list[tuple[str, str]], points: list[dict]) -> str:
    """The whole page: ``sections`` are (heading, HTML) pairs shown before the plots."""
    figures, notes = plots(points)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for heading, body in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    parts += ["<h2>Plots</h2>", *figures]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path
