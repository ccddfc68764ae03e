"""How records are shown in a terminal, and as JSON/CSV. Captured values are attacker-controlled:
every value passes through `safe()`, which makes control characters (terminal escape sequences,
carriage returns, bidi overrides) visible instead of letting them act."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from datetime import datetime
from decimal import Decimal

import orjson

from receipts.addon import ohttp


def safe(value, limit: int = 400) -> str:
    if value is None:
        return "—"
    text = value.isoformat(sep=" ", timespec="milliseconds") if isinstance(value, datetime) else str(value)
    head = text[:limit]
    if not head.isprintable():  # (printable: no character of category C, so nothing to show; the usual case)
        head = "".join(
            ch
            if ch == "\t" or not unicodedata.category(ch).startswith("C")
            else (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
            for ch in head
        )
    return head + ("…" if len(text) > limit else "")


def human_amount(amount, decimals) -> str | None:
    """Exact decimal text of an integer amount of atomic units, e.g. 10000 with 6 decimals → 0.01."""
    if amount is None or decimals is None:
        return None
    value = Decimal(int(amount)).scaleb(-int(decimals))
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def to_json(obj) -> str:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _default(value):
    if isinstance(value, Decimal):  # exact text, as short as it is exact (costs: DECIMAL(38, 18))
        return decimal_text(value)
    if isinstance(value, int):  # HUGEINT amounts beyond 64 bits
        return str(value)
    raise TypeError(type(value).__name__)


def jsonable(row: dict) -> dict:
    """Amounts stay exact: integers beyond 2**53 become strings."""
    return {k: (str(v) if isinstance(v, int) and abs(v) > 2**53 else v) for k, v in row.items()}


def receipt_document(r: dict, details: dict) -> dict:
    """One receipt as `receipts show --json` prints it (and `receipts serve` copies it)."""
    return {"receipt": jsonable(r), **{k: [jsonable(x) for x in v] for k, v in details.items()}}


def table(columns: list[str], rows: list[tuple], width: int = 48) -> str:
    cells = [[safe(c, width) for c in columns]] + [[safe(v, width) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value):
    """A CSV cell no spreadsheet takes for a formula: text beginning with `=`, `+`, `-`, `@`, a tab or a
    carriage return gets a `'` before it (OWASP, "CSV Injection"); numbers and other values stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(columns: list[str], rows: list[tuple]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([inert_cell(c) for c in columns])
    w.writerows([["" if v is None else inert_cell(v) for v in r] for r in rows])
    return buf.getvalue()


def decimal_text(value) -> str | None:
    """A Decimal as exact text without trailing zeros (0.000210000000000000 → 0.00021)."""
    if value is None:
        return None
    text = f"{Decimal(value):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


COST_SOURCES: dict[str | None, str] = {"x402": "paid on chain", "price_table": "list price"}


def cost_text(r: dict, short: bool = False) -> str:
    """What a call cost, with where the figure comes from: `0.01 USDC (paid on chain)`,
    `0.00021 USD (list price, genai-prices 0.2.5)`, or `unknown` (never 0)."""
    if r.get("cost") is None:
        return "unknown"
    figure = f"{decimal_text(r['cost'])} {r.get('cost_currency') or ''}".rstrip()
    if short:
        return figure
    source = COST_SOURCES.get(r.get("cost_source"), r.get("cost_source") or "")
    return f"{figure} ({source}{', ' + r['price_table'] if r.get('price_table') else ''})"


def receipt_text(r: dict, details: dict) -> str:
    """A receipt laid out like a transfer record on a block explorer."""
    amount = human_amount(r.get("amount"), r.get("decimals"))
    cap = human_amount(r.get("amount_cap"), r.get("decimals"))
    paid = (
        "—"
        if r.get("amount") is None
        else (
            f"{amount} {r.get('symbol') or ''} (atomic {r['amount']}, {r['decimals']} decimals)".replace("  ", " ")
            if amount
            else f"{r['amount']} atomic units (decimals unknown)"
        )
    )
    status = (
        r["proof_status"]
        + (f" · {r['resolution']}" if r.get("resolution") else "")
        + (f" ({r['reason']})" if r.get("reason") else "")
    )
    lines = [
        f"Receipt       {safe(r['receipt_id'])}",
        f"Proof status  {safe(status)}",
        *_trust_line(r),
        f"Amount        {safe(paid)}"
        + (f"   cap {safe(cap or r['amount_cap'])}" if r.get("amount_cap") is not None else ""),
        f"From (payer)  {safe(r.get('payer'))}",
        f"To (pay_to)   {safe(r.get('pay_to'))}",
        f"Asset         {safe(r.get('asset'))}",
        f"Network       {safe(r.get('network'))}   scheme {safe(r.get('scheme'))}",
        f"Tx hash       {safe(r.get('payment_hash'))}"
        + (f"   (settlement job {safe(r['settlement_job_id'])})" if r.get("settlement_job_id") else ""),
        f"Nonce         {safe(r.get('nonce'))}",
        f"Request id    {safe(r.get('request_id'))}",
        f"Session       {safe(r.get('session_id'))}",
        *_og_lines(r, details),
        f"Model         {safe(r.get('model'))}   tokens {safe(r.get('total_tokens'))}"
        + (
            f" ({safe(r.get('prompt_tokens'))} in, {safe(r.get('completion_tokens'))} out)"
            if r.get("prompt_tokens") is not None
            else ""
        )
        + (f"   latency {r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else ""),
        f"Cost          {safe(cost_text(r))}",
        f"Endpoint      {safe(r.get('host'))}{safe(r.get('path'))}   last status {safe(r.get('status'))}",
        f"App           {safe(r.get('app'))}   client {safe(r.get('client'))}",
        f"First seen    {safe(r.get('first_seen'))} UTC",
        f"Last seen     {safe(r.get('last_seen'))} UTC",
        f"Attempts      {r.get('attempts')}",
    ]
    for i, c in enumerate(details.get("calls", []), 1):
        flags = [
            x for x in ("paid" if c.get("paid") else None, "stream" if c.get("stream") else None, c.get("error")) if x
        ]
        lines.append(
            f"  {i}. {safe(c['receipt_id'])}  {safe(c['started_at'])}  {safe(c['method'])} "
            f"→ {safe(c['status'])}  {safe(c.get('latency_ms'))} ms  {safe(', '.join(flags)) if flags else ''}".rstrip()
        )
        for err in c.get("parse_errors") or []:
            lines.append(f"     parse error: {safe(err)}")
    for s in details.get("settlements", []):
        lines.append(
            f"Settlement    success={safe(s.get('success'))} tx={safe(s.get('tx_hash'))} "
            f"job={safe(s.get('job_id'))} {safe(s.get('error_reason') or '')}".rstrip()
        )
        if s.get("channel_id"):
            lines.append(
                f"Channel       {safe(s['channel_id'])}  charged {safe(s.get('amount'))}, "
                f"{safe(s.get('charged_cumulative'))} so far; its tx {safe(s.get('channel_tx'))} "
                f"({safe(s.get('channel_amount'))})"
            )
        lines += _seller_receipt_lines(s.get("seller_receipt"), r.get("seller_receipt"))
    checks = details.get("checks", [])
    tx = _latest_detail(checks, "settlement_tx") or _latest_detail(checks, "session_settlement")
    if tx.get("block") is not None:
        lines.append(
            f"Block         {safe(tx['block'])}   confirmations {safe(tx.get('confirmations'))} of "
            f"{safe(tx.get('required', 'the network'))}   sent by {safe(tx.get('sender'))}"
        )
    path = [c for c in checks if c["check"] == "verdict"]
    if path:
        lines.append("Status path")
        for c in path:
            extra = " · ".join(x for x in (c.get("resolution"), c.get("reason")) if x)
            lines.append(
                f"  {safe(c['observed_at'])}  {safe(c['proof_status'])}" + (f"  ({safe(extra)})" if extra else "")
            )
    evidence = [c for c in checks if c["check"] != "verdict"]
    if evidence:
        lines.append("Evidence")
        for c in evidence:
            lines.append(
                f"  {safe(c['observed_at'])}  {safe(c['check'])} = {safe(c['result'])}"
                + (f" ({safe(c['reason'])})" if c.get("reason") else "")
                + f"  {safe(c.get('detail'), 300)}"
            )
    return "\n".join(lines)


def _seller_receipt_lines(raw, status) -> list[str]:
    """The seller's signed receipt a settlement carried (the `offer-receipt` extension): evidence."""
    if not raw:
        return []
    doc = json.loads(raw) if isinstance(raw, str) else raw
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    said = "  ".join(
        f"{k}={safe(payload.get(k))}"
        for k in ("payer", "network", "resourceUrl", "issuedAt", "transaction")
        if payload.get(k) not in (None, "")
    )
    return [
        f"  seller's receipt ({safe(status)}, {safe(doc.get('format'))}, signed by "
        f"{safe(doc.get('signer') or doc.get('signer_error'))}): {said}".rstrip()
    ]


def _trust_line(r: dict) -> list[str]:
    """What `passed` rests on (the receipts view's `trust`; none unless passed)."""
    trust = r.get("trust")
    if not trust:
        return []
    what = (
        "one endpoint's word: a node that lies consistently is not caught"
        if trust == "single-node"
        else f"{trust.removeprefix('quorum-')} endpoints gave the same evidence"
    )
    return [f"Trust         {safe(trust)}   ({safe(what)})"]


def _og_lines(r: dict, details: dict) -> list[str]:
    """OpenGradient: the session's payment, the TEE proof, and where the proof is anchored."""
    checks, lines = details.get("checks", []), []
    if r.get("session_id"):
        total = human_amount(r.get("session_amount"), r.get("decimals"))
        shown = (
            f"{total} {r.get('symbol') or ''} (atomic {r['session_amount']})"
            if total
            else safe(r.get("session_amount"))
        )
        lines.append(
            f"  session total {safe(shown)} for {safe(r.get('session_calls'))} calls; this call's share: "
            f"unknown (only the total is on chain)   permit deadline {safe(r.get('session_deadline'))}   "
            f"opened by {safe(r.get('session_opened_by'))}"
        )
    if r.get("reason") == "sealed" or r.get("ohttp_tee_id"):
        relay = r.get("relay_receipt") or ("this call" if r.get("payment_count") else "not seen by this recorder")
        lines.append(
            f"Sealed        OHTTP for TEE {safe(r.get('ohttp_tee_id'))} (as the client names it)   "
            f"relay's payment: {safe(relay)}"
        )
        lines.append(f"  unknowable  {ohttp.UNKNOWABLE}")
    if not r.get("tee_id"):
        return lines
    result = {c["check"]: c for c in checks}

    def res(name: str) -> str:
        c = result.get(name)
        return "—" if c is None else safe(c["result"]) + (f" ({safe(c['reason'])})" if c.get("reason") else "")

    form = _latest_detail(checks, "tee_request_hash").get("form")
    lines.append(f"TEE           {safe(r['tee_id'])}   signed at {safe(r.get('tee_timestamp'))}")
    lines.append(
        f"  proof       request hash {res('tee_request_hash')}"
        + (f" [form {safe(form)}]" if form else "")
        + f", output hash {res('tee_output_hash')}, signature {res('tee_signature')}"
    )
    anchor = _latest_detail(checks, "anchor")
    kind = r.get("settlement_type") or "unknown"
    where = {
        "individual": f"tx {safe(anchor.get('tx') or r.get('anchor_tx'))}",
        "batch": f"root {safe(anchor.get('root'))} in tx {safe(anchor.get('tx'))}, blob {safe(anchor.get('blob_id'))}",
    }.get(kind, "nothing is anchored on chain")
    deadline = (
        f"   deadline {safe(anchor['deadline'])}"
        if anchor.get("deadline") and res("anchor").startswith("pending")
        else ""
    )
    lines.append(
        f"Anchor        {safe(kind)}: {where}   {res('anchor') if kind in ('individual', 'batch') else ''}{deadline}".rstrip()
    )
    pins = {
        (c.get("upstream_pin"), c.get("upstream_tee_id")) for c in details.get("calls", []) if c.get("upstream_pin")
    }
    for pin, tee in sorted(pins, key=str):
        lines.append(f"Upstream pin  {safe(pin)} (TEE {safe(tee)})")
    return lines


def _latest_detail(checks: list[dict], name: str) -> dict:
    for c in reversed(checks):
        if c["check"] == name and c.get("detail"):
            try:
                detail = orjson.loads(c["detail"]) if isinstance(c["detail"], str) else c["detail"]
            except orjson.JSONDecodeError:
                return {}
            return detail if isinstance(detail, dict) else {}
    return {}
