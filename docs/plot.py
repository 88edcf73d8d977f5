#!/usr/bin/env python3
"""Plot the churn benchmark: ns per (free + allocate) pair against N, log-log.

Reads the `--json` output of the churn benchmark (one JSON object per line;
other lines are ignored) and writes an SVG with two panels, 4 KiB and 2 MiB
alignment, one line per implementation and order. Pure Python 3 stdlib.

    cargo run --release -p svmap-bench --bin churn -- --json > churn.json
    python3 docs/plot.py churn.json docs/performance.svg
"""
import json
import math
import sys

COLORS = {
    "svmap": "#d62728",
    "svmap-heap": "#e377c2",
    "offset-allocator": "#7f7f7f",
    "gap-tree": "#1f77b4",
    "gap-tree-exact": "#17becf",
    "vm-allocator": "#2ca02c",
    "range-alloc": "#9467bd",
    "hole-list": "#ff7f0e",
    "kernel": "#000000",
}
DASH = {"lowest": "", "highest": "6,3", "best-fit": "2,2", "unordered": "1,3"}
MARK = {"lowest": "circle", "highest": "square", "best-fit": "circle", "unordered": "circle"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("ns_per_pair") is not None:
                rows.append(r)
    return rows


def panel(out, rows, x0, y0, w, h, title):
    """Draws one log-log panel at (x0, y0) of size w x h."""
    ns = [r["n"] for r in rows] or [1000, 1000000]
    ts = [r["ns_per_pair"] for r in rows] or [10, 1e6]
    lx0, lx1 = math.floor(math.log10(min(ns))), math.ceil(math.log10(max(ns)))
    ly0, ly1 = math.floor(math.log10(min(ts))), math.ceil(math.log10(max(ts)))
    lx1 = max(lx1, lx0 + 1)
    ly1 = max(ly1, ly0 + 1)

    def px(n):
        return x0 + (math.log10(n) - lx0) / (lx1 - lx0) * w

    def py(t):
        return y0 + h - (math.log10(t) - ly0) / (ly1 - ly0) * h

    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="14">{title}</text>')
    for e in range(lx0, lx1 + 1):
        x = px(10 ** e)
        out.append(f'<line x1="{x}" y1="{y0}" x2="{x}" y2="{y0 + h}" stroke="#ddd"/>')
        out.append(f'<text x="{x}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">1e{e}</text>')
    for e in range(ly0, ly1 + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="11">1e{e}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" font-size="12">N live ranges</text>')
    out.append(f'<text x="{x0 - 44}" y="{y0 + h / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 - 44} {y0 + h / 2})">ns per (free + allocate) pair</text>')
    series = {}
    for r in rows:
        series.setdefault((r["impl"], r["order"]), []).append((r["n"], r["ns_per_pair"]))
    for (imp, order), pts in sorted(series.items()):
        pts.sort()
        color = COLORS.get(imp, "#8c564b")
        d = " ".join(f"{px(n):.1f},{py(t):.1f}" for n, t in pts)
        dash = DASH.get(order, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
        for n, t in pts:
            if MARK.get(order) == "square":
                out.append(f'<rect x="{px(n) - 3:.1f}" y="{py(t) - 3:.1f}" width="6" height="6" fill="{color}"/>')
            else:
                out.append(f'<circle cx="{px(n):.1f}" cy="{py(t):.1f}" r="3" fill="{color}"/>')
    return series


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py CHURN_JSON OUT_SVG")
    rows = load(sys.argv[1])
    W, H = 1100, 560
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" viewBox="0 0 {W} {H}">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    all_series = {}
    for i, (align, title) in enumerate([(4096, "4 KiB alignment"), (2 << 20, "2 MiB alignment")]):
        sub = [r for r in rows if r["align"] == align]
        all_series.update(panel(out, sub, 90 + i * 400, 40, 320, 420, title))
    # Legend.
    lx, ly = 880, 50
    for k, (imp, order) in enumerate(sorted(all_series)):
        y = ly + k * 18
        color = COLORS.get(imp, "#8c564b")
        dash = DASH.get(order, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 28}" y2="{y}" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 34}" y="{y + 4}" font-size="11">{imp} ({order})</text>')
    out.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">'
               f'churn benchmark: median of the repetitions; missing points are n/a or skipped</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
