"""The charts of `receipts serve` as SVG text, drawn on the server (no script, nothing fetched).

Pure functions: rows in, SVG out. Every label is captured data (app names, addresses), so every text
passes through `h()`. The SVG is served as an image (`<img src=…svg>`), where it could not run a script
even if one got in.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from .pages import h, human, short

PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#64748b")
STATUS_COLORS = {
    "passed": "#16a34a",
    "pending": "#d97706",
    "failed": "#dc2626",
    "unpaid": "#94a3b8",
    "risky": "#b91c1c",
    "refunded": "#2563eb",
    "retried": "#7c3aed",
}
WIDTH = 600
FONT = 'font-family="system-ui, sans-serif"'


def _top(totals: dict, max_keys: int) -> tuple[list[str], set[str], dict[str, str]]:
    """The keys with the largest totals (at most max_keys), the rest (drawn as "other"), and their colours."""
    keys = sorted(totals, key=lambda k: -totals[k])
    shown, other = keys[:max_keys], set(keys[max_keys:])
    color = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(shown)}
    if other:
        color["other"] = PALETTE[-1]
    return shown, other, color


def _svg(height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{h(title)}">'
        f'<title>{h(title)}</title><rect width="{WIDTH}" height="{height}" fill="#ffffff"/>' + "".join(body) + "</svg>"
    )


def _empty(title: str, note: str) -> str:
    return _svg(
        60,
        [
            f'<text x="12" y="22" {FONT} font-size="14" font-weight="600" fill="#0f172a">{h(title)}</text>',
            f'<text x="12" y="44" {FONT} font-size="12" fill="#64748b">{h(note)}</text>',
        ],
        title,
    )


def _units(spend, decimals) -> float:
    """Human units for drawing (labels use the exact text)."""
    value = Decimal(int(spend))
    return float(value.scaleb(-int(decimals))) if decimals is not None else float(value)


def _asset_name(row: dict) -> str:
    return row.get("symbol") or short(row.get("asset"))


def _label(t: datetime, bucket: str) -> str:
    return t.strftime("%m-%d %H:00" if bucket == "hour" else "%m-%d")


def spend_over_time(
    rows: list[dict], bucket: str, by_label: str = "app", max_assets: int = 3, max_keys: int = 6
) -> str:
    """Stacked bars of spend per time bucket, one colour per app (or payee); one panel per asset."""
    title = f"Spend over time by {by_label}"
    if not rows:
        return _empty(title, "no paid calls match")
    assets: dict[tuple, list[dict]] = {}
    for r in rows:
        assets.setdefault((r["asset"], r["network"]), []).append(r)
    panels = sorted(assets.values(), key=lambda rs: -sum(r["calls"] for r in rs))[:max_assets]
    panel_h, top = 160, 30
    body = [
        f'<text x="12" y="20" {FONT} font-size="14" font-weight="600" fill="#0f172a">{h(title)} '
        f"(per {h(bucket)}, UTC)</text>"
    ]
    for p, prow in enumerate(panels):
        y0 = top + p * panel_h
        totals: dict[str, int] = {}
        for r in prow:
            totals[r["key"]] = totals.get(r["key"], 0) + int(r["spend"])
        shown, other, color = _top(totals, max_keys)
        times = sorted({r["t"] for r in prow})
        stacks: dict[datetime, dict[str, float]] = {t: {} for t in times}
        for r in prow:
            k = "other" if r["key"] in other else r["key"]
            stacks[r["t"]][k] = stacks[r["t"]].get(k, 0.0) + _units(r["spend"], r["decimals"])
        peak = max(sum(s.values()) for s in stacks.values()) or 1.0
        decimals, name = prow[0]["decimals"], _asset_name(prow[0])
        total = sum(int(r["spend"]) for r in prow)
        body.append(
            f'<text x="12" y="{y0 + 14}" {FONT} font-size="12" fill="#334155">{h(name)} on '
            f"{h(prow[0]['network'])} · total {h(human(total, decimals))} {h(name)}</text>"
        )
        left, plot_w, plot_top, plot_h = 56, 360, y0 + 24, panel_h - 56
        body.append(
            f'<line x1="{left}" y1="{plot_top + plot_h}" x2="{left + plot_w}" y2="{plot_top + plot_h}" stroke="#cbd5e1"/>'
        )
        body.append(
            f'<text x="{left - 6}" y="{plot_top + 8}" {FONT} font-size="12" fill="#64748b" '
            f'text-anchor="end">{h(_fmt(peak))}</text>'
        )
        body.append(
            f'<text x="{left - 6}" y="{plot_top + plot_h}" {FONT} font-size="12" fill="#64748b" text-anchor="end">0</text>'
        )
        body += _bars(
            times,
            stacks,
            shown + (["other"] if other else []),
            color,
            (left, plot_w, plot_top, plot_h),
            peak,
            bucket,
            name,
        )
        for j, k in enumerate(shown + (["other"] if other else [])):
            ly = plot_top + j * 16
            amount = sum(totals[x] for x in other) if k == "other" else totals[k]
            body.append(f'<rect x="{left + plot_w + 14}" y="{ly}" width="10" height="10" fill="{color[k]}"/>')
            body.append(
                f'<text x="{left + plot_w + 28}" y="{ly + 9}" {FONT} font-size="12" fill="#0f172a">'
                f"{h(_cut(short(k) if by_label == 'payee' else k, 18))} {h(human(amount, decimals))}</text>"
            )
    return _svg(top + len(panels) * panel_h, body, title)


def spend_by(rows: list[dict], by_label: str = "payee", max_assets: int = 3, max_keys: int = 6) -> str:
    """Horizontal bars: total spend per payee (or app), one group per asset."""
    title = f"Spend by {by_label}"
    if not rows:
        return _empty(title, "no paid calls match")
    assets: dict[tuple, list[dict]] = {}
    for r in rows:
        assets.setdefault((r["asset"], r["network"]), []).append(r)
    groups = sorted(assets.values(), key=lambda rs: -sum(r["calls"] for r in rs))[:max_assets]
    body = [f'<text x="12" y="20" {FONT} font-size="14" font-weight="600" fill="#0f172a">{h(title)}</text>']
    y = 34
    for g in groups:
        g = sorted(g, key=lambda r: -int(r["spend"]))[:max_keys]
        name, decimals = _asset_name(g[0]), g[0]["decimals"]
        body.append(
            f'<text x="12" y="{y + 10}" {FONT} font-size="12" fill="#334155">{h(name)} on {h(g[0]["network"])}</text>'
        )
        y += 18
        peak = max(int(r["spend"]) for r in g) or 1
        for i, r in enumerate(g):
            w = max(2.0, int(r["spend"]) / peak * 220)
            body.append(
                f'<text x="12" y="{y + 12}" {FONT} font-size="12" fill="#0f172a">{h(_cut(short(r["key"]) if by_label == "payee" else r["key"], 26))}</text>'
            )
            body.append(
                f'<rect x="190" y="{y + 2}" width="{w:.1f}" height="13" fill="{PALETTE[i % len(PALETTE)]}">'
                f"<title>{h(r['key'])}: {h(human(r['spend'], decimals))} {h(name)} in {int(r['calls'])} calls</title></rect>"
            )
            body.append(
                f'<text x="{196 + w:.1f}" y="{y + 12}" {FONT} font-size="12" fill="#334155">'
                f"{h(human(r['spend'], decimals))} {h(name)} · {int(r['calls'])} calls</text>"
            )
            y += 18
        y += 8
    return _svg(y + 6, body, title)


USAGE_TITLES = {
    "tokens": ("Tokens over time by {by}", "tokens"),
    "cost": ("Cost over time by {by}", ""),
    "latency": ("Latency (p95) over time by {by}", "ms"),
    "errors": ("Failed calls over time by {by}", "calls"),
}


def usage_over_time(rows: list[dict], measure: str, bucket: str, by_label: str, max_keys: int = 6) -> str:
    """Every call's usage per time bucket, one colour per model (or app): stacked bars of tokens, cost (a
    panel per currency) and failed calls; a line per key for the p95 latency (latencies do not add up)."""
    template, unit = USAGE_TITLES[measure]
    title = template.format(by=by_label)
    if not rows:
        return _empty(title, "no calls with this measure match")
    panels: dict[str, list[dict]] = {}
    for r in rows:
        panels.setdefault(r["unit"] or unit, []).append(r)
    panel_h, top = 170, 30
    body = [
        f'<text x="12" y="20" {FONT} font-size="15" font-weight="600" fill="#0f172a">{h(title)} '
        f"(per {h(bucket)}, UTC)</text>"
    ]
    for p, (name, prow) in enumerate(sorted(panels.items(), key=lambda kv: -len(kv[1]))[:3]):
        y0 = top + p * panel_h
        totals: dict[str, float] = {}
        for r in prow:
            totals[r["key"]] = totals.get(r["key"], 0.0) + float(r["value"])
        shown, other, color = _top(totals, max_keys)
        times = sorted({r["t"] for r in prow})
        cells: dict[datetime, dict[str, float]] = {t: {} for t in times}
        for r in prow:
            k = "other" if r["key"] in other else r["key"]
            if measure == "latency":
                cells[r["t"]][k] = max(cells[r["t"]].get(k, 0.0), float(r["value"]))
            else:
                cells[r["t"]][k] = cells[r["t"]].get(k, 0.0) + float(r["value"])
        peak = max((max(c.values()) if measure == "latency" else sum(c.values())) for c in cells.values()) or 1.0
        total = sum(totals.values())
        summary = f"p95 up to {_fmt(peak)}" if measure == "latency" else f"total {_fmt(total)}"
        body.append(f'<text x="12" y="{y0 + 16}" {FONT} font-size="13" fill="#334155">{h(name)} · {h(summary)}</text>')
        left, plot_w, plot_top, plot_h = 84, 300, y0 + 26, panel_h - 60
        body.append(
            f'<line x1="{left}" y1="{plot_top + plot_h}" x2="{left + plot_w}" y2="{plot_top + plot_h}" stroke="#cbd5e1"/>'
        )
        body.append(
            f'<text x="{left - 6}" y="{plot_top + 10}" {FONT} font-size="12" fill="#64748b" '
            f'text-anchor="end">{h(_fmt(peak))}</text>'
        )
        body.append(
            f'<text x="{left - 6}" y="{plot_top + plot_h}" {FONT} font-size="12" fill="#64748b" text-anchor="end">0</text>'
        )
        step = plot_w / max(1, len(times))
        series = shown + (["other"] if other else [])
        if measure == "latency":
            for k in series:
                points = [
                    (left + i * step + step / 2, plot_top + plot_h - cells[t][k] / peak * plot_h)
                    for i, t in enumerate(times)
                    if k in cells[t]
                ]
                body.append(
                    f'<polyline fill="none" stroke="{color[k]}" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                    + '"/>'
                )
                body.extend(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color[k]}"><title>{h(k)}</title></circle>'
                    for x, y in points
                )
            body += _time_labels(times, (left, plot_w, plot_top, plot_h), bucket)
        else:
            body += _bars(times, cells, series, color, (left, plot_w, plot_top, plot_h), peak, bucket, name)
        for j, k in enumerate(series):
            ly = plot_top + j * 18
            amount = sum(totals[x] for x in other) if k == "other" else totals[k]
            body.append(f'<rect x="{left + plot_w + 14}" y="{ly}" width="11" height="11" fill="{color[k]}"/>')
            body.append(
                f'<text x="{left + plot_w + 30}" y="{ly + 10}" {FONT} font-size="12" fill="#0f172a">'
                f"{h(_cut(k, 16))}" + (f" {h(_fmt(amount))}" if measure != "latency" else "") + "</text>"
            )
    return _svg(top + min(3, len(panels)) * panel_h, body, title)


def _bars(
    times: list, cells: dict, series: list, color: dict, plot: tuple, peak: float, bucket: str, unit: str
) -> list[str]:
    """Stacked bars, one per time bucket (`cells[t][key]` stacked in `series` order), and the time axis."""
    left, plot_w, plot_top, plot_h = plot
    step = plot_w / max(1, len(times))
    bar = max(1.0, step * 0.8)
    out = []
    for i, t in enumerate(times):
        x, y = left + i * step + (step - bar) / 2, plot_top + plot_h
        for k in series:
            v = cells[t].get(k, 0.0)
            if v <= 0:
                continue
            hgt = max(1.0, v / peak * plot_h)
            y -= hgt
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{hgt:.1f}" fill="{color[k]}">'
                f"<title>{h(_label(t, bucket))} · {h(k)} · {h(_fmt(v))} {h(unit)}</title></rect>"
            )
    return out + _time_labels(times, plot, bucket)


def _time_labels(times: list, plot: tuple, bucket: str) -> list[str]:
    """The first and last bucket's time under the plot."""
    left, plot_w, plot_top, plot_h = plot
    step = plot_w / max(1, len(times))
    return [
        f'<text x="{left + i * step + step / 2:.1f}" y="{plot_top + plot_h + 16}" {FONT} font-size="12" '
        f'fill="#64748b" text-anchor="middle">{h(_label(times[i], bucket))}</text>'
        for i in sorted({0, len(times) - 1})
    ]


def status_counts(rows: list[dict]) -> str:
    """Horizontal bars: receipts per proof status (and resolution)."""
    title = "Receipts by status"
    if not rows:
        return _empty(title, "no receipts match")
    peak = max(r["n"] for r in rows) or 1
    body = [f'<text x="12" y="20" {FONT} font-size="14" font-weight="600" fill="#0f172a">{h(title)}</text>']
    y = 32
    for r in rows:
        label = r["proof_status"] + (f" · {r['resolution']}" if r.get("resolution") else "")
        color = STATUS_COLORS.get(r.get("resolution") or "", STATUS_COLORS.get(r["proof_status"], "#64748b"))
        w = max(2.0, r["n"] / peak * 340)
        body.append(f'<text x="12" y="{y + 12}" {FONT} font-size="12" fill="#0f172a">{h(label)}</text>')
        body.append(
            f'<rect x="160" y="{y + 2}" width="{w:.1f}" height="13" fill="{color}"><title>{h(label)}: {r["n"]}</title></rect>'
        )
        body.append(f'<text x="{166 + w:.1f}" y="{y + 12}" {FONT} font-size="12" fill="#334155">{r["n"]:,}</text>')
        y += 18
    return _svg(y + 10, body, title)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:,.4g}"


def _cut(text, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
