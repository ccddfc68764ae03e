"""`receipts audit`: the report a reviewer can hand on, as Markdown, HTML or JSON.

The figures come from storage/audit.py (its SQL is storage/audit.sql); this module only lays them out.
Captured values are attacker-controlled (headers, model names, hosts, paths): every value first goes
through `render.safe` (control characters such as terminal escapes become visible text), then through
the format's own escaping — HTML entities in HTML (and a Content-Security-Policy that allows no script
at all), backslash escapes of Markdown's punctuation in Markdown (a `|` or a newline cannot break a
table row, `<script>` or `[x](javascript:…)` cannot become markup).
Amounts are exact: the integer of atomic units, and beside it the human amount computed with Decimal
from the asset's decimals; never floats.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from . import render

AMOUNT_FIELDS = ("amount", "verified", "reported", "authorized", "charged", "challenge_amount", "excess")

# Each problem section: title, what it means (shown under the title), and its columns
# (field, header); `money` columns are shown as human amount + atomic units.
PROBLEMS = [
    (
        "risky_failed",
        "Risky or failed",
        "Paid calls whose latest verdict from `receipts verify` is `failed`, or whose resolution is `risky` "
        "(money moved but the outcome is bad or unknown). Evidence: the latest result of each check.",
        [
            ("receipt_id", "receipt"),
            ("app_name", "app"),
            ("first_seen", "first seen"),
            ("host", "host"),
            ("proof_status", "status"),
            ("resolution", "resolution"),
            ("reason", "reason"),
            ("last_status", "HTTP"),
            ("amount", "amount"),
            ("txs", "settlement tx"),
            ("evidence", "evidence"),
        ],
    ),
    (
        "overcharges",
        "Overcharges against the challenge",
        "Calls that signed or settled more than the 402 challenge asked for the same asset (or that the "
        "verifier judged `overcharged`).",
        [
            ("receipt_id", "receipt"),
            ("app_name", "app"),
            ("first_seen", "first seen"),
            ("host", "host"),
            ("challenge_amount", "challenge asked"),
            ("charged", "charged"),
            ("excess", "excess"),
            ("proof_status", "status"),
            ("reason", "reason"),
        ],
    ),
    (
        "never_settled",
        "Settlements never found",
        "Paid calls (or OpenGradient sessions) with no settlement transaction known: the server reported none "
        "and the verifier found none on chain, or found that the reported one is not there. `not_verified`: "
        "`receipts verify` has not looked yet.",
        [
            ("key", "receipt / session"),
            ("kind", "kind"),
            ("app_name", "app"),
            ("first_seen", "first seen"),
            ("host", "host"),
            ("payer", "payer"),
            ("pay_to", "payee"),
            ("amount", "signed (or cap)"),
            ("calls", "calls"),
            ("reason", "reason"),
        ],
    ),
    (
        "double_charges",
        "Double charges",
        "One logical call (its 402, paid attempts and retries) that was settled more than once.",
        [
            ("receipt_id", "receipt"),
            ("app_name", "app"),
            ("first_seen", "first seen"),
            ("host", "host"),
            ("settlements", "settlements"),
            ("txs", "settlement txs"),
            ("charged", "charged in total"),
            ("reason", "reason"),
        ],
    ),
    (
        "secrets_in_clear",
        "Secrets sent over plain HTTP",
        "Calls that carried secret headers or query parameters (API keys, Authorization, payment signatures) "
        "over unencrypted HTTP. Names only: the values were never stored.",
        [
            ("app_name", "app"),
            ("host", "host"),
            ("port", "port"),
            ("path", "path"),
            ("secrets", "secrets"),
            ("calls", "calls"),
            ("first_seen", "first seen"),
            ("last_seen", "last seen"),
            ("example_receipt", "example"),
        ],
    ),
    (
        "pinned_clients",
        "Clients that refused the proxy's certificate (pinning)",
        "TLS handshakes a client aborted because it did not accept the proxy's certificate: it pins its "
        "server's certificate (use `receipts proxy --reverse`) or does not trust the CA. Nothing of these calls "
        "was recorded; the failed handshake happens before any request, so no app is known (not filtered by "
        "`--app`).",
        [
            ("client", "client"),
            ("host", "server name"),
            ("refusals", "refusals"),
            ("first_seen", "first seen"),
            ("last_seen", "last seen"),
            ("message", "error"),
        ],
    ),
    (
        "no_usage",
        "Calls with no usage reported",
        "Answered calls (HTTP 2xx) whose response carried no token usage: what was consumed cannot be "
        "checked against what was paid.",
        [
            ("app_name", "app"),
            ("host", "host"),
            ("model", "model"),
            ("calls", "calls"),
            ("first_seen", "first seen"),
            ("last_seen", "last seen"),
            ("example_receipt", "example"),
        ],
    ),
]


# ---- values ----------------------------------------------------------------------------------
def _ts(value) -> str:
    return value.isoformat(sep=" ", timespec="seconds") + " UTC" if isinstance(value, datetime) else render.safe(value)


def money(atomic, decimals, symbol=None, asset=None) -> str:
    """`0.01 USDC (10000)`: the exact human amount, then the integer of atomic units."""
    if atomic is None:
        return "—"
    human = render.human_amount(atomic, decimals)
    unit = symbol or (asset[:10] + "…" if asset else "")
    if human is None:
        return f"{int(atomic)} atomic units (decimals unknown)"
    return f"{human} {unit} ({int(atomic)})".replace("  ", " ")


def _cell(row: dict, field: str, evidence: dict) -> str:
    value = row.get(field)
    if field in AMOUNT_FIELDS:
        return money(value, row.get("decimals"), row.get("symbol"), row.get("asset"))
    if field == "evidence":
        items = evidence.get(row.get("receipt_id"), [])
        return (
            "; ".join(
                f"{c['check']}={c['result']}"
                + (f" ({c['reason']})" if c.get("reason") else "")
                + (f" {c['detail']}" if c.get("detail") and c.get("result") != "pass" else "")
                for c in items
            )
            or "—"
        )
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "—"
    if isinstance(value, datetime):
        return _ts(value)
    return "—" if value is None else str(value)


def problem_counts(rep: dict) -> dict[str, int]:
    return {name: len(rep[name]) for name, *_ in PROBLEMS}


# ---- the report as plain data (all formats start here) ----------------------------------------
def tables(rep: dict, limit: int | None) -> list[dict]:
    """The report as a list of titled tables of strings (escaped later by each format)."""
    s = rep["summary"]
    counts = problem_counts(rep)
    out: list[dict[str, Any]] = [
        {
            "title": "Summary",
            "note": None,
            "columns": [
                "calls",
                "receipts (logical calls)",
                "paid",
                "apps",
                "first seen",
                "last seen",
                "problems found",
            ],
            "rows": [
                [
                    str(s["calls"]),
                    str(s["receipts"]),
                    str(s["paid_receipts"]),
                    str(s["apps"]),
                    _ts(s["first_seen"]),
                    _ts(s["last_seen"]),
                    str(sum(counts.values())),
                ]
            ],
        }
    ]
    out.append(
        {
            "title": "Problems",
            "note": "Each section below lists its rows; 0 means nothing of the kind was found in the recorded traffic.",
            "columns": ["section", "rows"],
            "rows": [[title, str(counts[name])] for name, title, *_ in PROBLEMS],
        }
    )
    out.append(
        {
            "title": "Apps",
            "note": "Grouped by app: the local process (executable and script) that made "
            "the calls when it could be found, else the user agent, else the client address.",
            "columns": ["app", "executable", "calls", "receipts", "paid receipts", "hosts", "first seen", "last seen"],
            "rows": [
                [
                    _cell(a, f, {})
                    for f in (
                        "app_name",
                        "exe",
                        "calls",
                        "receipts",
                        "paid_receipts",
                        "hosts",
                        "first_seen",
                        "last_seen",
                    )
                ]
                for a in rep["apps"]
            ],
        }
    )
    out.append(
        {
            "title": "Tokens and cost per app and model",
            "note": "Every call, paid on chain or billed by API key. List price: what the price table says the "
            "tokens of the calls not paid on chain cost. Paid on chain: calls whose money is in the "
            "totals below. Cost unknown: the table does not know the model, no usage was reported, or "
            "a call's own share of a session or cap is not known; never counted as 0.",
            "columns": ["app", "model", "receipts", "tokens", "list price", "paid on chain", "cost unknown"],
            "rows": [
                [
                    render.safe(u["app_name"]),
                    render.safe(u["model"]),
                    str(u["receipts"]),
                    "—" if u["tokens"] is None else f"{u['tokens']:,}",
                    "—" if u["list_price"] is None else f"{render.decimal_text(u['list_price'])} {u['list_currency']}",
                    str(u["paid_on_chain"]),
                    str(u["cost_unknown"]),
                ]
                for u in rep["usage"]
            ],
        }
    )
    out.append(
        {
            "title": "Totals paid per asset and payee",
            "note": "Exact amounts: human units (from the asset's decimals) and the integer of atomic units in "
            "brackets. Verified: settlements the verifier found on chain. Reported: settlements a server "
            "reported, not (yet) verified. Authorized: signed payments (or a session's cap) with no "
            "settlement known. A settlement the verifier found failed moved nothing and is not counted.",
            "columns": [
                "network",
                "asset",
                "payee",
                "paid calls",
                "settlements",
                "verified on chain",
                "reported, not verified",
                "authorized, no settlement",
            ],
            "rows": [
                [
                    render.safe(t["network"]),
                    render.safe(t["symbol"] or t["asset"]),
                    render.safe(t["pay_to"]),
                    str(t["paid_calls"]),
                    str(t["settlements"]),
                ]
                + [money(t[k], t["decimals"], t["symbol"], t["asset"]) for k in ("verified", "reported", "authorized")]
                for t in rep["totals"]
            ],
        }
    )
    out.append(
        {
            "title": "Totals per app",
            "note": None,
            "columns": [
                "app",
                "network",
                "asset",
                "paid calls",
                "verified on chain",
                "reported, not verified",
                "authorized, no settlement",
            ],
            "rows": [
                [
                    render.safe(t["app_name"]),
                    render.safe(t["network"]),
                    render.safe(t["symbol"] or t["asset"]),
                    str(t["paid_calls"]),
                ]
                + [money(t[k], t["decimals"], t["symbol"], t["asset"]) for k in ("verified", "reported", "authorized")]
                for t in rep["totals_by_app"]
            ],
        }
    )
    out.append(
        {
            "title": "Receipts by status and resolution",
            "note": "Logical calls (a 402, its paid retry and any further retries are one) by `proof_status` and "
            "`resolution` (see the README's statuses).",
            "columns": ["app", "proof status", "resolution", "receipts"],
            "rows": [
                [_cell(r, f, {}) for f in ("app_name", "proof_status", "resolution", "receipts")]
                for r in rep["statuses"]
            ],
        }
    )
    out.append(
        {
            "title": "Calls by HTTP answer",
            "note": "HTTP exchanges by status; none: no answer came (the error says why).",
            "columns": ["app", "HTTP status", "error", "calls"],
            "rows": [
                [
                    _cell(r, "app_name", {}),
                    "none" if r["status"] is None else str(r["status"]),
                    _cell(r, "error", {}),
                    str(r["calls"]),
                ]
                for r in rep["http_statuses"]
            ],
        }
    )
    for name, title, note, cols in PROBLEMS:
        rows = rep[name]
        shown = rows if not limit else rows[:limit]
        out.append(
            {
                "title": f"{title} ({len(rows)})",
                "note": note,
                "columns": [h for _, h in cols],
                "rows": [[_cell(r, f, rep["evidence"]) for f, _ in cols] for r in shown],
                "more": len(rows) - len(shown),
                "empty": "None found.",
            }
        )
    return out


# ---- Markdown ---------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def md_escape(value: str) -> str:
    """Text that stays text in a Markdown table cell: control characters made visible (render.safe;
    newlines too), Markdown punctuation backslash-escaped (pipes cannot split the row, no HTML or links)."""
    return _MD_SPECIAL.sub(r"\\\1", render.safe(value, 2000))


def markdown(rep: dict, meta: dict, limit: int | None) -> str:
    lines = [
        "# Audit of recorded AI calls",
        "",
        f"Data directory: {md_escape(meta['data'])}  ",
        f"Generated: {md_escape(meta['generated'])}  ",
        f"Filters: app = {md_escape(meta['app'] or 'all')}, since = {md_escape(meta['since'] or 'the beginning')}",
        "",
    ]
    for t in tables(rep, limit):
        lines += [f"## {md_escape(t['title'])}", ""]
        if t.get("note"):
            lines += [t["note"], ""]
        if not t["rows"]:
            lines += [t.get("empty", "Nothing recorded."), ""]
            continue
        lines.append("| " + " | ".join(md_escape(c) for c in t["columns"]) + " |")
        lines.append("|" + "---|" * len(t["columns"]))
        for row in t["rows"]:
            lines.append("| " + " | ".join(md_escape(c) for c in row) + " |")
        if t.get("more"):
            lines.append(f"\n… and {t['more']} more rows (use --limit 0 for all, or --format json).")
        lines.append("")
    return "\n".join(lines)


# ---- HTML -------------------------------------------------------------------------------------
CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}td{word-break:break-all}
th{background:#f3f3f3;word-break:normal;overflow-wrap:normal;hyphens:none}
h2{margin-top:1.6em}p.note{color:#555;max-width:60em}.none{color:#2a7a2a}code{font-size:92%;background:#f3f3f3}"""


def h(value) -> str:
    return html.escape(render.safe(value, 2000), quote=True)


_CODE = re.compile(r"`([^`]+)`")


def prose(text: str) -> str:
    """The report's own sentences (notes; never a captured value) in HTML: escaped, `code` as <code>."""
    return _CODE.sub(r"<code>\1</code>", h(text))


def to_html(rep: dict, meta: dict, limit: int | None) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        "<title>Audit of recorded AI calls</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Audit of recorded AI calls</h1>",
        f"<p>Data directory: {h(meta['data'])}<br>Generated: {h(meta['generated'])}<br>"
        f"Filters: app = {h(meta['app'] or 'all')}, since = {h(meta['since'] or 'the beginning')}</p>",
    ]
    for t in tables(rep, limit):
        parts.append(f"<h2>{h(t['title'])}</h2>")
        if t.get("note"):
            parts.append(f'<p class="note">{prose(t["note"])}</p>')
        if not t["rows"]:
            parts.append(f'<p class="none">{prose(t.get("empty", "Nothing recorded."))}</p>')
            continue
        parts.append("<table><thead><tr>" + "".join(f"<th>{h(c)}</th>" for c in t["columns"]) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in t["rows"]]
        parts.append("</tbody></table>")
        if t.get("more"):
            parts.append(f"<p>… and {t['more']} more rows (use --limit 0 for all, or --format json).</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---- JSON -------------------------------------------------------------------------------------
def _json_row(row: dict) -> dict:
    """Amounts as exact strings of atomic units with `<field>_human` beside them; times as ISO text."""
    out = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            v = v.replace(tzinfo=UTC).isoformat()
        if isinstance(v, Decimal):  # a cost (DECIMAL(38, 18)): exact text
            v = render.decimal_text(v)
        if k in AMOUNT_FIELDS:
            out[k] = None if v is None else str(int(v))
            out[f"{k}_human"] = render.human_amount(v, row.get("decimals"))
            continue
        out[k] = v
    return out


def to_json(rep: dict, meta: dict, limit: int | None) -> str:
    doc: dict[str, Any] = {"meta": meta, "summary": _json_row(rep["summary"]), "problem_counts": problem_counts(rep)}
    for name in ("apps", "usage", "totals", "totals_by_app", "statuses", "http_statuses"):
        doc[name] = [_json_row(r) for r in rep[name]]
    for name, *_ in PROBLEMS:
        rows = rep[name] if not limit else rep[name][:limit]
        doc[name] = [_json_row(r) for r in rows]
    doc["evidence"] = {rid: [_json_row(c) for c in checks] for rid, checks in rep["evidence"].items()}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


FORMATS = {"md": markdown, "html": to_html, "json": to_json}


def run(
    data_dir: str,
    fmt: str = "md",
    since: datetime | None = None,
    app: str | None = None,
    limit: int | None = 1000,
    since_text: str | None = None,
) -> tuple[str, dict]:
    """The report in `fmt` and the raw figures (for the caller's summary line)."""
    from receipts.storage import audit

    rep = audit.report(data_dir, since=since, app=app, shown=limit or None)  # (the evidence of the rows shown)
    meta = {
        "data": str(data_dir),
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "app": app,
        "since": since_text,
        "limit": limit or None,
    }
    return FORMATS[fmt](rep, meta, limit), rep
