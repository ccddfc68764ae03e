"""The HTML of `receipts serve`: pure functions from rows to text, no I/O.

Everything shown was captured from traffic, so it is attacker-controlled: every value goes through `h()`
(control characters made visible as `render.safe` does for the terminal — no bidi override can reorder a
line — then HTML-escaped, quotes included, so it is safe in text and in quoted attributes alike). Links
are built from escaped, percent-encoded parts; only explorer templates from the settings make absolute
URLs. Pages carry no inline script or style: the Content-Security-Policy forbids both.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote, urlencode

import orjson

from .. import render

TX = re.compile(r"0x[0-9a-fA-F]{64}")
NETWORKS: dict[str | None, str] = {
    "eip155:8453": "Base",
    "eip155:84532": "Base Sepolia",
    "eip155:10740": "OpenGradient devnet",
    "eip155:1": "Ethereum",
}
FILTERS = ("app", "host", "model", "status", "since", "until", "q")


def h(value, limit: int = 400) -> str:
    """Any value as safe HTML text (also inside a double-quoted attribute)."""
    return html.escape(render.safe(value, limit), quote=True)


def human(amount, decimals) -> str:
    """Exact human amount ("0.01"), or the atomic amount when the decimals are unknown."""
    if amount is None:
        return "—"
    # both known here, so human_amount gives text, not None
    return cast(str, render.human_amount(amount, decimals)) if decimals is not None else f"{int(amount)} atomic"


def short(value, keep: int = 6) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 2 * keep + 2 else f"{text[:keep]}…{text[-4:]}"


def when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else render.safe(value)


def epoch(value) -> str:
    """Seconds since the epoch as UTC text, with the number itself."""
    try:
        return f"{datetime.fromtimestamp(int(value), UTC):%Y-%m-%d %H:%M:%S} UTC ({int(value)})"
    except (TypeError, ValueError, OverflowError, OSError):
        return render.safe(value)


def qs(params: dict) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def receipt_href(receipt_id) -> str:
    return "/receipt/" + quote(str(receipt_id), safe="")


def explorer_link(template: str | None, tx) -> str | None:
    """The explorer URL of a transaction, if one is configured and the hash is a real 32-byte hash."""
    if not template or not isinstance(tx, str) or not TX.fullmatch(tx):
        return None
    if not template.startswith(("https://", "http://")):
        return None
    return template.replace("{tx}", tx)


# ---- the page frame --------------------------------------------------------------------------------
def page(title: str, body: str, status: dict, live: dict | None = None) -> str:
    data = "".join(f' data-{k}="{h(v, 2000)}"' for k, v in (live or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · receipts</title><link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script></head>
<body><header><a class="brand" href="/">receipts</a><span class="where">{h(status.get("data"))}</span>
<span class="fresh" id="freshness">{h(freshness(status))}</span></header>
<main id="main"{data}>{body}</main>
<footer>read-only view of the journal · data as of the last refresh · <a href="/api/status">status</a></footer>
</body></html>"""


def freshness(status: dict) -> str:
    if status.get("state") != "ready":
        return "reading the receipts…" if status.get("state") == "starting" else f"{status.get('state')}…"
    n = status.get("receipts")
    at = status.get("refreshed_at")
    return f"{n:,} receipts · refreshed {at} UTC" if n is not None else "ready"


def message_page(title: str, text: str, status: dict) -> str:
    return page(title, f'<h1>{h(title)}</h1><p class="note">{h(text, 2000)}</p>', status)


# ---- the list -------------------------------------------------------------------------------------
STATUS_CLASSES = ("passed", "pending", "failed", "unpaid", "risky", "refunded", "retried")


def _seller_receipt(r: dict, details: dict) -> str:
    """The seller's signed receipt (offer-receipt extension) of the latest settlement that carried one."""
    raw = next((s["seller_receipt"] for s in reversed(details.get("settlements", [])) if s.get("seller_receipt")), None)
    if not raw:
        return f'<span id="seller-receipt">{h(r.get("seller_receipt") or "absent")}</span>'
    doc = json.loads(raw) if isinstance(raw, str) else raw
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    said = " · ".join(
        f"{k} {payload[k]}" for k in ("payer", "resourceUrl", "issuedAt", "transaction") if payload.get(k)
    )
    return (
        f'<span id="seller-receipt">{h(r.get("seller_receipt"))}</span> <span class="sub">{h(doc.get("format"))}, '
        f'signed by <span class="mono">{h(doc.get("signer") or doc.get("signer_error"))}</span></span>'
        f'<div class="sub">{h(said)}</div>'
    )


def status_badge(proof_status, resolution=None, reason=None) -> dict:
    text = (proof_status or "—") + (f" · {resolution}" if resolution else "")
    key = resolution if resolution in STATUS_CLASSES else proof_status
    return {"t": text, "c": f"badge st-{key if key in STATUS_CLASSES else 'other'}", "ti": reason or ""}


def amount_text(r: dict) -> tuple[str, str]:
    """(shown, tooltip) for a receipt's amount."""
    sym = r.get("symbol") or short(r.get("asset"))
    if r.get("amount") is not None:
        return f"{human(r['amount'], r.get('decimals'))} {sym}", f"{r['amount']} atomic units"
    if r.get("session_id"):
        total = r.get("session_amount")
        if total is None:
            return "session (unsettled)", "the session's total is not on chain yet"
        return (
            f"session {human(total, r.get('decimals'))} {sym}",
            "the whole session's total; each call's share is unknown (only the total is on chain)",
        )
    if r.get("amount_cap") is not None:
        return f"≤ {human(r['amount_cap'], r.get('decimals'))} {sym}", "signed cap; the charge is not known"
    return "—", ""


# the list page's charts: (name, alt text); /chart/<name>.svg draws each (receipts/web/server.py)
CHARTS = (
    ("spend-app", "Spend over time per app"),
    ("spend-payee-time", "Spend over time per payee"),
    ("spend-payee", "Spend per payee"),
    ("tokens-model", "Tokens over time per model"),
    ("cost-app", "Cost over time per app"),
    ("latency-model", "Latency (p95) over time per model"),
    ("errors-app", "Failed calls over time per app"),
    ("status", "Receipts by status"),
)


def cost_cell(r: dict) -> dict:
    """What a call cost (paid on chain, or the price table's list price); a session's or a cap's text
    where only those are known; `unknown`, never 0."""
    if r.get("cost") is not None:
        figure = f"{render.decimal_text(r['cost'])} {r.get('cost_currency') or ''}".rstrip()
        why = (
            "paid on chain"
            if r.get("cost_source") == "x402"
            else f"list price ({r.get('price_table') or 'price table'})"
        )
        return {"t": figure, "ti": why, "c": "num"}
    amount, title = amount_text(r)
    return {"t": "unknown" if amount == "—" else amount, "ti": title or "no price known for this call", "c": "num"}


def list_row(r: dict) -> list[dict]:
    """One receipt as cells {t: text, h: link, c: class, ti: tooltip} — the same model for the HTML and
    for the live updates (app.js builds the cells from it with textContent)."""
    payer, payee = r.get("payer"), r.get("pay_to")
    href = receipt_href(r["receipt_id"])
    return [
        {"t": when(r.get("first_seen")), "h": href, "ti": str(r["receipt_id"])},
        {"t": r.get("app_name") or "—", "ti": r.get("app_name") or ""},
        {"t": f"{r.get('host') or ''}{r.get('path') or ''}", "c": "endpoint"},
        {"t": r.get("model") or "—"},
        {"t": "—" if r.get("status") is None else str(r["status"]), "c": "num"},
        status_badge(r.get("proof_status"), r.get("resolution"), r.get("reason")),
        {"t": "—" if r.get("total_tokens") is None else f"{r['total_tokens']:,}", "c": "num"},
        {"t": "—" if r.get("latency_ms") is None else f"{r['latency_ms']:,.0f} ms", "c": "num"},
        cost_cell(r),
        {
            "t": f"{short(payer)} → {short(payee)}" if payer or payee else "—",
            "ti": f"{payer or '—'} → {payee or '—'}",
            "c": "mono",
        },
        {
            "t": short(r.get("payment_hash"), 8) if r.get("payment_hash") else "—",
            "ti": r.get("payment_hash") or "",
            "c": "mono",
        },
    ]


LIST_HEAD = (
    "first seen (UTC)",
    "app",
    "endpoint",
    "model",
    "HTTP",
    "proof",
    "tokens",
    "latency",
    "cost",
    "payer → payee",
    "tx hash",
)


def cells_html(cells: list[dict], row_id=None) -> str:
    out = []
    for c in cells:
        cls = f' class="{h(c["c"])}"' if c.get("c") else ""
        title = f' title="{h(c["ti"], 2000)}"' if c.get("ti") else ""
        text = h(c["t"], 200)
        if c.get("h"):
            text = f'<a href="{h(c["h"], 2000)}">{text}</a>'
        if "badge" in (c.get("c") or ""):
            out.append(f"<td><span{cls}{title}>{text}</span></td>")
        else:
            out.append(f"<td{cls}{title}>{text}</td>")
    rid = f' data-id="{h(row_id, 2000)}"' if row_id is not None else ""
    return f"<tr{rid}>" + "".join(out) + "</tr>"


def _select(name: str, label: str, options: list[tuple], chosen) -> str:
    opts = ['<option value="">all</option>']
    seen = False
    for value, n in options:
        sel = " selected" if value == chosen else ""
        seen |= bool(sel)
        opts.append(f'<option value="{h(value, 1000)}"{sel}>{h(value, 80)} ({n:,})</option>')
    if chosen and not seen:
        opts.append(f'<option value="{h(chosen, 1000)}" selected>{h(chosen, 80)}</option>')
    return f'<label>{h(label)} <select name="{name}" id="f-{name}">{"".join(opts)}</select></label>'


def list_page(
    rows: list[dict],
    total: int,
    filters: dict,
    facets: dict,
    status: dict,
    next_before: dict | None,
    version: int,
    limit: int,
    paid: bool = True,
) -> str:
    raw = {k: filters.get(k + "_text", filters.get(k)) for k in FILTERS}
    query = qs({**raw, "limit": limit if limit != 50 else None})
    form = f"""<form class="filters" method="get" action="/" id="filters">
{_select("app", "app", facets.get("app", []), raw["app"])}
{_select("host", "host", facets.get("host", []), raw["host"])}
{_select("model", "model", facets.get("model", []), raw["model"])}
{_select("status", "status", facets.get("status", []), raw["status"])}
<label>since <input name="since" id="f-since" value="{h(raw["since"] or "")}" placeholder="2h, 7d, 2026-11-24"></label>
<label>until <input name="until" id="f-until" value="{h(raw["until"] or "")}" placeholder="1h, 2026-11-25T08:00"></label>
<label class="search">id <input name="q" id="f-q" value="{h(raw["q"] or "", 1000)}" placeholder="receipt, request or provider id, tx hash, session, nonce, address" size="44"></label>
<button type="submit">Filter</button> <a href="/">clear</a></form>"""
    chart_q = qs({**raw, "v": version})
    shown = [c for c in CHARTS if paid or not c[0].startswith("spend")]  # spend charts: paid calls only
    charts = (
        '<section class="charts" id="charts">'
        + "".join(
            f'<figure><img id="chart-{name}" alt="{h(alt)}" src="/chart/{name}.svg?{h(chart_q, 4000)}"></figure>'
            for name, alt in shown
        )
        + "</section>"
    )
    head = "".join(f"<th>{h(x)}</th>" for x in LIST_HEAD)
    body = (
        "".join(cells_html(list_row(r), r["receipt_id"]) for r in rows)
        or f'<tr><td colspan="{len(LIST_HEAD)}">no receipts match</td></tr>'
    )
    more = ""
    if next_before:
        more = f'<p class="pager"><a id="older" href="/?{h(qs({**raw, **next_before, "limit": limit if limit != 50 else None}), 4000)}">older →</a></p>'
    summary = (
        f'<p class="summary"><span id="total">{total:,}</span> receipts match · newest first · '
        f'<span id="live" class="live">live</span></p>'
    )
    main = (
        form
        + charts
        + summary
        + f'<table class="receipts"><thead><tr>{head}</tr></thead><tbody id="rows">{body}</tbody></table>'
        + more
    )
    live = {"live": f"/api/receipts?{query}", "version": version}
    if filters.get("before"):
        live = {"version": version}  # an older page stays as it is
    return page("Receipts", main, status, live)


# ---- one receipt ----------------------------------------------------------------------------------
def _kv(rows: list[tuple]) -> str:
    """A two-column table; rows whose value is `—` (nothing known, or it does not apply) are left out."""
    out = []
    for row in rows:
        label, value = row[0], row[1]
        if value in ("—", "", None):
            continue
        rid = f' id="{row[2]}"' if len(row) > 2 else ""
        out.append(f"<tr{rid}><th>{h(label)}</th><td>{value}</td></tr>")
    return '<table class="kv">' + "".join(out) + "</table>"


def _addr(value) -> str:
    return f'<span class="mono">{h(value)}</span>' if value else "—"


def _link_search(value, text: str | None = None) -> str:
    if not value:
        return "—"
    return f'<a class="mono" href="/?{h(qs({"q": value}), 2000)}">{h(text or value)}</a>'


def _details_json(d) -> dict:
    if isinstance(d, dict):
        return d
    try:
        got = orjson.loads(d) if d else {}
    except orjson.JSONDecodeError:
        return {"detail": d}
    return got if isinstance(got, dict) else {"detail": got}


def latest_detail(checks: list[dict], name: str) -> dict:
    for c in reversed(checks):
        if c["check"] == name and c.get("detail"):
            return _details_json(c["detail"])
    return {}


def timeline(r: dict, details: dict) -> list[dict]:
    """Every step of the receipt in time order: attempts and their answers, the challenge, the payment,
    the settlement the server reported, and each verification pass (the status it reached, and the
    checks as evidence)."""
    steps = []
    for i, c in enumerate(details.get("calls", []), 1):
        steps.append(
            {
                "at": c.get("started_at"),
                "kind": "request",
                "title": f"attempt {i}: {c.get('method') or ''} {c.get('host') or ''}{c.get('path') or ''}"
                + (" with payment" if c.get("paid") else ""),
                "evidence": [("receipt id", c.get("receipt_id")), ("request sha256", c.get("request_sha256"))],
            }
        )
        if c.get("status") is not None or c.get("error"):
            steps.append(
                {
                    "at": c.get("ended_at") or c.get("started_at"),
                    "kind": "answer",
                    "title": f"attempt {i} answered {c.get('status') if c.get('status') is not None else '—'}"
                    + (f" ({c['error']})" if c.get("error") else ""),
                    "evidence": [
                        ("latency ms", c.get("latency_ms")),
                        ("response sha256", c.get("response_sha256")),
                        ("stream", c.get("stream")),
                    ],
                }
            )
    for ch in details.get("challenges", []):
        steps.append(
            {
                "at": ch.get("seen_at"),
                "kind": "challenge",
                "title": f"402 challenge: {ch.get('amount')} atomic units of {short(ch.get('asset'))} to {short(ch.get('pay_to'))}",
                "evidence": [
                    ("scheme", ch.get("scheme")),
                    ("network", ch.get("network")),
                    ("pay to", ch.get("pay_to")),
                    ("resource", ch.get("resource")),
                ],
            }
        )
    for p in details.get("payments", []):
        steps.append(
            {
                "at": p.get("sent_at"),
                "kind": "payment",
                "title": f"payment signed ({p.get('scheme')}, {p.get('kind') or '—'}): {p.get('amount')} atomic units",
                "evidence": [
                    ("payer", p.get("payer")),
                    ("pay to", p.get("pay_to")),
                    ("nonce", p.get("nonce")),
                    ("signer recovered", p.get("signer")),
                    ("valid before", epoch(p["valid_before"]) if p.get("valid_before") is not None else None),
                ],
            }
        )
    for s in details.get("settlements", []):
        steps.append(
            {
                "at": s.get("seen_at"),
                "kind": "settlement",
                "title": "server reported settlement " + ("success" if s.get("success") else "failure"),
                "evidence": [
                    ("tx", s.get("tx_hash")),
                    ("job", s.get("job_id")),
                    ("network", s.get("network")),
                    ("error", s.get("error_reason")),
                    ("seller's signed receipt", s.get("seller_receipt")),
                ],
            }
        )
    passes: dict = {}
    for c in details.get("checks", []):
        passes.setdefault(c.get("observed_at"), []).append(c)
    for at, group in passes.items():
        verdict = next((c for c in group if c["check"] == "verdict"), None)
        evidence = [c for c in group if c["check"] != "verdict"]
        title = (
            (
                f"status → {verdict['proof_status']}"
                + (f" · {verdict['resolution']}" if verdict.get("resolution") else "")
                + (f" ({verdict['reason']})" if verdict.get("reason") else "")
            )
            if verdict
            else "checks changed"
        )
        steps.append(
            {
                "at": at,
                "kind": "verdict" if verdict else "check",
                "title": title,
                "status": verdict and verdict.get("proof_status"),
                "resolution": verdict and verdict.get("resolution"),
                "checks": evidence,
            }
        )
    order = {"request": 0, "answer": 1, "challenge": 2, "payment": 3, "settlement": 4, "check": 5, "verdict": 6}
    return sorted(steps, key=lambda s: (s["at"] or datetime.min, order[s["kind"]]))


def _timeline_html(steps: list[dict]) -> str:
    out = ['<ol class="timeline" id="timeline">']
    for s in steps:
        badge = ""
        if s.get("status"):
            b = status_badge(s["status"], s.get("resolution"))
            badge = f' <span class="{h(b["c"])}">{h(b["t"])}</span>'
        items = []
        for label, value in s.get("evidence", []):
            if value is not None:
                items.append(f'<li><span class="k">{h(label)}</span> <span class="mono">{h(value, 300)}</span></li>')
        for c in s.get("checks", []):
            detail = _details_json(c.get("detail"))
            facts = ", ".join(f"{k}={v}" for k, v in detail.items())
            items.append(
                f'<li class="check"><span class="k">{h(c["check"])}</span> '
                f'<span class="res res-{h(c.get("result") or "none")}">{h(c.get("result"))}</span>'
                + (f' <span class="reason">{h(c["reason"])}</span>' if c.get("reason") else "")
                + (f' <span class="mono detail">{h(facts, 600)}</span>' if facts else "")
                + (f' <span class="k">block</span> {h(c["block"])}' if c.get("block") is not None else "")
                + "</li>"
            )
        ev = f'<ul class="evidence">{"".join(items)}</ul>' if items else ""
        out.append(
            f'<li class="step step-{h(s["kind"])}"><time>{h(when(s["at"]))}</time> '
            f'<span class="title">{h(s["title"], 600)}</span>{badge}{ev}</li>'
        )
    out.append("</ol>")
    return "".join(out)


def _unpaid(r: dict) -> bool:
    """Nothing of this call was paid on chain: its page has no transfer to show (API-key billing)."""
    return r.get("proof_status") == "unpaid" and not any(
        r.get(k) for k in ("payer", "pay_to", "asset", "amount", "payment_hash", "session_id", "amount_cap")
    )


def receipt_page(r: dict, details: dict, doc_json: str, status: dict, explorer: str | None, stamp: str) -> str:
    checks = details.get("checks", [])
    settle = latest_detail(checks, "settlement_tx") or latest_detail(checks, "session_settlement")
    badge = status_badge(r.get("proof_status"), r.get("resolution"), r.get("reason"))
    amount, amount_title = amount_text(r)
    decimals, sym = r.get("decimals"), r.get("symbol") or ""
    atomic = (
        f"{h(r['amount'])} atomic units" + (f", {h(decimals)} decimals" if decimals is not None else "")
        if r.get("amount") is not None
        else ""
    )
    extra = []
    if r.get("amount_cap") is not None:
        extra.append(f"cap {h(human(r['amount_cap'], decimals))} {h(sym)} ({h(r['amount_cap'])} atomic)")
    if r.get("max_amount_required") is not None:
        extra.append(f"price asked {h(human(r['max_amount_required'], decimals))} {h(sym)}")
    tx = r.get("payment_hash")
    link = explorer_link(explorer, tx)
    tx_html = (
        "—"
        if not tx
        else f'<span class="mono" id="tx-hash">{h(tx)}</span>'
        + (
            f' <a id="explorer" rel="noreferrer noopener" target="_blank" href="{h(link, 2000)}">view on explorer ↗</a>'
            if link
            else ""
        )
    )
    net = r.get("network")
    confirmations = "—"
    if settle.get("confirmations") is not None:
        confirmations = f"{h(settle['confirmations'])}" + (
            f" of {h(settle['required'])} required" if settle.get("required") is not None else ""
        )
    transfer = _kv(
        [
            ("Receipt", f'<span class="mono" id="receipt-id">{h(r["receipt_id"])}</span>'),
            (
                "Status",
                f'<span class="{h(badge["c"])}" id="status">{h(badge["t"])}</span>'
                + (f' <span class="reason">{h(r["reason"])}</span>' if r.get("reason") else ""),
            ),
            (
                "Amount",
                f'<strong id="amount" title="{h(amount_title)}">{h(amount)}</strong>'
                + (f' <span class="atomic">({atomic})</span>' if atomic else "")
                + (f'<div class="sub">{" · ".join(extra)}</div>' if extra else ""),
            ),
            ("Asset", (f"{h(sym)} " if sym else "") + _addr(r.get("asset"))),
            ("From (payer)", _link_search(r.get("payer"))),
            ("To (payee)", _link_search(r.get("pay_to"))),
            (
                "Network",
                f"{h(NETWORKS.get(net, net))}" + (f' <span class="mono">{h(net)}</span>' if net in NETWORKS else ""),
            ),
            ("Transaction hash", tx_html),
            ("Block", h(settle.get("block")) if settle.get("block") is not None else "—"),
            ("Confirmations", confirmations),
            ("Settled by", _addr(settle.get("sender"))),
            ("Scheme", f"{h(r.get('scheme'))} {h(r.get('kind') or '')}"),
            ("Nonce", _addr(r.get("nonce"))),
            ("Settlement job", _addr(r.get("settlement_job_id"))),
            ("Seller's receipt", _seller_receipt(r, details)),
        ]
    )
    calls = details.get("calls", [])
    last = calls[-1] if calls else {}
    call = _kv(
        [
            ("Model", h(r.get("model"))),
            (
                "Tokens",
                f"{h(r.get('total_tokens'))} total"
                + (
                    f" ({h(last.get('prompt_tokens'))} prompt, {h(last.get('completion_tokens'))} completion)"
                    if last.get("prompt_tokens") is not None
                    else ""
                )
                + (
                    f' <span class="reason">usage {h(last.get("usage_source"))}</span>'
                    if last.get("usage_source") == "missing"
                    else ""
                ),
            ),
            ("Latency", f"{h(last.get('latency_ms'))} ms" if last.get("latency_ms") is not None else "—"),
            ("Cost", f'<strong id="cost">{h(render.cost_text(r))}</strong>'),
            ("Endpoint", f'<span class="mono">{h(r.get("host"))}{h(r.get("path"))}</span> → HTTP {h(r.get("status"))}'),
            (
                "App",
                f"{h(r.get('app_name'))}"
                + (f' <span class="sub">pid {h(r.get("client_pid"))}</span>' if r.get("client_pid") else "")
                + f'<div class="sub">user agent {h(r.get("app"))} · client {h(r.get("client"))}</div>',
            ),
            ("Request id", _link_search(r.get("request_id"))),
            ("First seen", f"{h(when(r.get('first_seen')))} UTC"),
            ("Last seen", f"{h(when(r.get('last_seen')))} UTC"),
            ("Attempts", h(r.get("attempts"))),
        ]
    )
    hashes = "".join(
        f'<tr><td>{i}</td><td class="mono">{h(c.get("receipt_id"))}</td><td>{h(c.get("method"))} → {h(c.get("status"))}</td>'
        f'<td class="mono">{h(c.get("request_sha256"))}</td><td class="mono">{h(c.get("response_sha256"))}</td>'
        f'<td class="num">{h(c.get("latency_ms"))}</td></tr>'
        for i, c in enumerate(calls, 1)
    )
    attempts = (
        '<table class="attempts"><thead><tr><th>#</th><th>attempt</th><th>answer</th><th>request sha256</th>'
        f"<th>response sha256</th><th>ms</th></tr></thead><tbody>{hashes}</tbody></table>"
    )
    sections = [
        f'<h1>Receipt <span class="mono">{h(short(r["receipt_id"], 8))}</span> '
        f'<span class="{h(badge["c"])}">{h(badge["t"])}</span></h1>',
        '<p class="actions"><button type="button" id="copy-json">Copy as JSON</button> '
        f'<a href="/api/receipt/{h(quote(str(r["receipt_id"]), safe=""))}">raw JSON</a> '
        '<span id="copied" class="note" hidden>copied</span></p>',
        *([] if _unpaid(r) else ['<section class="card"><h2>Transfer</h2>' + transfer + "</section>"]),
        '<section class="card"><h2>Call</h2>' + call + "</section>",
    ]
    if r.get("session_id"):
        sections.append(
            '<section class="card" id="session"><h2>OpenGradient session</h2>'
            + _kv(
                [
                    ("Session", _link_search(r.get("session_id"))),
                    (
                        "Opened by",
                        f'<a class="mono" href="{h(receipt_href(r["session_opened_by"]))}">{h(r["session_opened_by"])}</a>'
                        if r.get("session_opened_by")
                        else "—",
                    ),
                    ("Calls", h(r.get("session_calls"))),
                    (
                        "Session total",
                        (
                            f"{h(human(r['session_amount'], decimals))} {h(sym)} ({h(r['session_amount'])} atomic)"
                            if r.get("session_amount") is not None
                            else "not settled yet"
                        )
                        + '<div class="sub">this call\'s share is unknown: only the session total is on chain</div>',
                    ),
                    ("Permit deadline", h(epoch(r.get("session_deadline")))),
                ]
            )
            + "</section>"
        )
    if r.get("tee_id"):
        sections.append('<section class="card" id="tee"><h2>TEE proof</h2>' + _tee(r, details) + "</section>")
    sections.append('<section class="card"><h2>Attempts and hashes</h2>' + attempts + "</section>")
    sections.append('<section class="card"><h2>Timeline</h2>' + _timeline_html(timeline(r, details)) + "</section>")
    sections.append(
        '<section class="card"><details><summary>Receipt as JSON (same as <code>receipts show --json</code>)'
        f'</summary><pre id="receipt-json">{html.escape(doc_json, quote=True)}</pre></details></section>'
    )
    return page(
        f"Receipt {short(r['receipt_id'], 8)}",
        "".join(sections),
        status,
        {"stamp": stamp, "watch": f"/api/receipt/{quote(str(r['receipt_id']), safe='')}?stamp=1"},
    )


def _tee(r: dict, details: dict) -> str:
    checks = details.get("checks", [])
    result = {c["check"]: c for c in checks}

    def res(name: str) -> str:
        c = result.get(name)
        if c is None:
            return "—"
        return f'<span class="res res-{h(c.get("result") or "none")}">{h(c.get("result"))}</span>' + (
            f' <span class="reason">{h(c["reason"])}</span>' if c.get("reason") else ""
        )

    calls = details.get("calls", [])
    last: dict[str, Any] = next((c for c in reversed(calls) if c.get("tee_id")), {})
    form = latest_detail(checks, "tee_request_hash").get("form")
    anchor = latest_detail(checks, "anchor")
    kind = r.get("settlement_type") or "unknown"
    where = {
        "individual": f'tx <span class="mono">{h(anchor.get("tx") or r.get("anchor_tx"))}</span>',
        "batch": f'root <span class="mono">{h(anchor.get("root"))}</span> in tx <span class="mono">{h(anchor.get("tx"))}</span>, '
        f'blob <span class="mono">{h(anchor.get("blob_id") or r.get("anchor_blob_id"))}</span>',
    }.get(kind, "nothing is anchored on chain")
    return _kv(
        [
            ("TEE id", _addr(r.get("tee_id"))),
            ("Signed at", h(epoch(r.get("tee_timestamp")))),
            (
                "Request hash",
                f'<span class="mono">{h(last.get("tee_request_hash"))}</span> {res("tee_request_hash")}'
                + (f' <span class="sub">form {h(form)}</span>' if form else ""),
            ),
            ("Output hash", f'<span class="mono">{h(last.get("tee_output_hash"))}</span> {res("tee_output_hash")}'),
            (
                "Signature",
                f'<span class="mono sig">{h(short(last.get("tee_signature"), 24))}</span> {res("tee_signature")}',
            ),
            ("Anchor", f"{h(kind)}: {where} " + (res("anchor") if kind in ("individual", "batch") else "")),
            (
                "Upstream pin",
                h(last.get("upstream_pin"))
                + (
                    f' (TEE <span class="mono">{h(last.get("upstream_tee_id"))}</span>)'
                    if last.get("upstream_tee_id")
                    else ""
                ),
            ),
        ]
    )
