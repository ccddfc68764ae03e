"""Synthetic journals for benchmarks: N recorded calls written straight into the journal's compacted
Parquet layout (`journal/parquet/date=YYYY-MM-DD/*.parquet`, the envelope of storage/layout.py), with the
same event JSON the recorder (addon/exchange.py) and the verifier (verifier/verify.py, verifier/og.py)
write, so every view, `receipts audit` and `receipts serve` read it exactly as they read a capture.

    from testbed.synthetic import generate
    generate("/tmp/data", 1_000_000, seed=1)      # ~1M calls (HTTP exchanges) in well under a minute

`calls` counts HTTP exchanges (rows of the `calls` view); logical calls (rows of `receipts`) are fewer,
because a paid call is a 402 and its paid retry. The mix (shares of exchanges, roughly):

- 57 % unpaid OpenAI/Anthropic-style calls from several apps: some streamed (a `stream_end` event), some
  with no usage reported, some answered 500, some failed before any answer (`error` event), and about
  1 % over plain HTTP carrying an `Authorization` header (`secrets_in_clear`);
- 30 % x402 `exact` calls (402 challenge, then the paid retry with PAYMENT-SIGNATURE and PAYMENT-RESPONSE)
  on two payees, USDC on Base and Base Sepolia, each followed by the verifier's `check` events: mostly
  `pending` → `passed`, and a tail of every problem the verifier reports (paid but server error →
  risky, overcharged, paid to another address, forged signature, reverted settlement, settlement never
  found, pending past its deadline, refunded);
- 0.4 % double settlements (a paid 500 with a settlement, then a second paid 200 with another) and 0.8 %
  retried calls (a paid 500 without settlement, then a paid 200);
- 8 % OpenGradient upto sessions (an opener paid in OPG on Base with its 402, six calls under
  `X-Upto-Session`, TEE proofs, the session settlement check, some unsettled → risky, a few answers
  whose TEE output hash fails);
- and one `client_tls_refused` error (a pinning client) per 1,000 calls (not a call: no request).

Calls are spread uniformly over `days` days ending at `end` (default: now), one Parquet file per writer
(`proxy`, `verifier`) and day.
The same `seed` gives the same events (ids, hashes, amounts, choices); only the times move with `end`.
"""
from __future__ import annotations

import os
import time

# Apps: (executable, command line, user agent, client address, wallet seed). `process.app_name` turns the
# first three into the app name the recorder would have stored.
APPS = [
    ("/usr/bin/python3.12", "python3 /opt/agents/research_agent.py --loop", "python-httpx/0.28.1", "127.0.0.1"),
    ("/usr/bin/node", "node /srv/chatbot/server.js --port 3000", "OpenAI/JS 4.67.1", "127.0.0.1"),
    ("/usr/local/bin/summarizer", "/usr/local/bin/summarizer --daemon", "summarizer/1.4.2", "127.0.0.1"),
    ("/usr/bin/python3.12", "python3 /home/dev/og_bot.py", "python-httpx/0.28.1", "127.0.0.1"),
    (None, None, "curl/8.5.0", "10.0.0.7"),
]
# Unpaid hosts: (host, path, models)
FREE_HOSTS = [
    ("api.openai.com", "/v1/chat/completions", ["gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"]),
    ("api.anthropic.com", "/v1/messages", ["claude-3-5-haiku", "claude-sonnet-4"]),
    ("openrouter.ai", "/api/v1/chat/completions", ["meta-llama/llama-3.1-70b-instruct", "mistral-large"]),
]
# x402 sellers: (host, path, model, network, asset, symbol, decimals, price in atomic units)
X402_HOSTS = [
    ("api.x402-llm.example", "/v1/chat/completions", "llama-3.3-70b", "eip155:8453",
     "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USDC", 6, 10000),
    ("inference.paid.example", "/v1/chat/completions", "qwen-2.5-72b", "eip155:8453",
     "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USDC", 6, 2500),
    ("sepolia.x402-llm.example", "/v1/completions", "deepseek-v3", "eip155:84532",
     "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", 6, 1000),
]
OG = ("tee-1.opengradient.example", "/v1/chat/completions", "gpt-4.1-mini", "eip155:8453",
      "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB", "OPG", 18, 100_000_000_000_000_000)
PLAIN = ("llm.office.lan", 8000, "/v1/chat/completions", "local-llama-8b")  # plain HTTP, Authorization sent
FACILITATOR = "0x90f79bf6eb2c4f870365e785982e1f101e93b906"
MEMBERS = 6  # calls under X-Upto-Session per OpenGradient session (plus the opener)


def _plan(calls: int) -> dict[str, int]:
    """Logical calls of each kind so that the exchanges add up to exactly `calls`."""
    least = 1 if calls >= 64 else 0
    plan = {"x402": max(least, int(calls * 0.30 / 2)), "double": max(least, int(calls * 0.004 / 4)),
            "retried": max(least, int(calls * 0.008 / 4)), "session": max(least, int(calls * 0.08 / (2 + MEMBERS)))}
    used = 2 * plan["x402"] + 4 * plan["double"] + 4 * plan["retried"] + (2 + MEMBERS) * plan["session"]
    while used > calls:  # tiny N: shrink the paid kinds until the unpaid remainder is not negative
        k = max(("x402", "double", "retried", "session"), key=lambda n: plan[n])
        plan[k] -= 1
        used -= {"x402": 2, "double": 4, "retried": 4, "session": 2 + MEMBERS}[k]
    plan["unpaid"] = calls - used
    return plan


def _values(rows: list[tuple]) -> str:
    def lit(v):
        if v is None:
            return "NULL"
        if isinstance(v, (int, float)):
            return repr(v)
        return "'" + str(v).replace("'", "''") + "'"
    return ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)


def generate(data_dir: str | os.PathLike, calls: int, seed: int = 0, *, days: float = 30.0,
             end: float | None = None) -> dict:
    """Write `calls` synthetic HTTP exchanges (and their check events) into `data_dir`'s journal as
    compacted Parquet. Returns counts: calls, receipts (logical calls), events, files, seconds."""
    import duckdb

    from receipts.addon.process import app_name
    from receipts.storage.journal import journal_dir
    from receipts.storage.layout import ensure_anchors, parquet_dir

    started = time.monotonic()
    journal = journal_dir(data_dir)
    ensure_anchors(journal)
    out = parquet_dir(journal)
    plan = _plan(int(calls))
    end = float(end if end is not None else int(time.time()))
    span = max(60.0, days * 86400.0 - 120.0)
    start = end - span - 60.0
    b1 = plan["unpaid"]
    b2 = b1 + plan["x402"]
    b3 = b2 + plan["double"]
    b4 = b3 + plan["retried"]
    total_logical = b4 + plan["session"] * (1 + MEMBERS)
    apps = [(i, exe, cmd, ua, client, app_name({"pid": 4000 + i, "exe": exe, "cmdline": cmd} if exe else None, ua, client))
            for i, (exe, cmd, ua, client) in enumerate(APPS)]
    S = int(seed)

    con = duckdb.connect(":memory:")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"""
    CREATE MACRO u(i, salt) AS (hash(i, salt, {S}) % 1000003) / 1000003.0;
    CREATE MACRO hx(i, salt) AS md5(concat(i, ':', salt, ':', {S})) || md5(concat({S}, ':', salt, ':', i));
    CREATE MACRO addr(i, salt) AS '0x' || substr(hx(i, salt), 1, 40);
    CREATE MACRO u7(t, n) AS (
        substr(printf('%012x', CAST(floor(t * 1000) AS BIGINT)), 1, 8) || '-' ||
        substr(printf('%012x', CAST(floor(t * 1000) AS BIGINT)), 9, 4) || '-7' ||
        printf('%03x', CAST(hash(n, {S}) % 4096 AS BIGINT)) || '-' ||
        printf('%04x', 32768 + CAST(hash(n, {S}, 'v') % 16384 AS BIGINT)) || '-' || printf('%012x', n));
    CREATE MACRO httpdate(t) AS strftime(make_timestamp(CAST(t * 1000000 AS BIGINT)), '%a, %d %b %Y %H:%M:%S GMT');
    CREATE MACRO chk(name, res, reason, detail, blk) AS
        to_json({{'check': name, 'result': res, 'reason': reason, 'detail': detail, 'block': blk}})::VARCHAR;
    CREATE MACRO vrd(st, resolution, reason, detail) AS
        to_json({{'check': 'verdict', 'result': st, 'status': st, 'resolution': resolution, 'reason': reason,
                  'detail': detail}})::VARCHAR;
    CREATE MACRO vrd_tx(st, resolution, reason, detail, tx, amount) AS
        to_json({{'check': 'verdict', 'result': st, 'status': st, 'resolution': resolution, 'reason': reason,
                  'detail': detail, 'tx': tx, 'session_amount': amount}})::VARCHAR;
    CREATE TABLE apps(app INTEGER, exe VARCHAR, cmdline VARCHAR, ua VARCHAR, client VARCHAR, app_name VARCHAR);
    INSERT INTO apps VALUES {_values(apps)};
    CREATE TABLE free_hosts(h INTEGER, host VARCHAR, path VARCHAR, models VARCHAR[]);
    INSERT INTO free_hosts VALUES {", ".join(f"({i}, '{h}', '{p}', {m!r})" for i, (h, p, m) in enumerate(FREE_HOSTS))};
    CREATE TABLE sellers(h INTEGER, host VARCHAR, path VARCHAR, model VARCHAR, network VARCHAR, asset VARCHAR,
                         symbol VARCHAR, decimals INTEGER, price HUGEINT, pay_to VARCHAR);
    INSERT INTO sellers VALUES {_values([(i, *x, None) for i, x in enumerate(X402_HOSTS)] + [(9, *OG, None)])};
    UPDATE sellers SET pay_to = addr(h, 'payee');
    """)

    # One row per logical call: its kind, its outcome, who made it, where it went, when.
    con.execute(f"""
    CREATE TABLE lc AS
    WITH base AS (
        SELECT li,
               CASE WHEN li < {b1} THEN 'unpaid' WHEN li < {b2} THEN 'x402' WHEN li < {b3} THEN 'double'
                    WHEN li < {b4} THEN 'retried' ELSE 'og' END AS kind,
               CASE WHEN li >= {b4} THEN (li - {b4}) // {1 + MEMBERS} END AS sess,
               CASE WHEN li >= {b4} THEN (li - {b4}) % {1 + MEMBERS} END AS pos,
               u(li, 'o') AS r
        FROM range({total_logical}) t(li)
    )
    SELECT *,
        CASE WHEN kind = 'og' THEN {start} + u(sess, 'ts') * {span} + pos * 3.0
             ELSE {start} + u(li, 'ts') * {span} END AS ts0,
        CASE kind WHEN 'unpaid' THEN [0, 1, 2, 4, 0, 1][1 + CAST(floor(u(li, 'app') * 6) AS INTEGER)]
                  WHEN 'og' THEN 3 ELSE [0, 1, 2][1 + CAST(floor(u(li, 'app') * 3) AS INTEGER)] END AS app,
        CASE WHEN kind = 'og' THEN 9 WHEN kind = 'unpaid' THEN CAST(floor(u(li, 'host') * {len(FREE_HOSTS)}) AS INTEGER)
             ELSE CAST(floor(u(li, 'host') * {len(X402_HOSTS)}) AS INTEGER) END AS h,
        CASE kind
            WHEN 'unpaid' THEN CASE WHEN r < 0.15 THEN 'stream' WHEN r < 0.19 THEN 'no_usage'
                                    WHEN r < 0.21 THEN 'server_error' WHEN r < 0.22 THEN 'refused'
                                    WHEN r < 0.235 THEN 'plain_http' ELSE 'ok' END
            WHEN 'x402' THEN CASE WHEN r < 0.80 THEN 'passed' WHEN r < 0.85 THEN 'awaiting' WHEN r < 0.89 THEN 'unverified'
                                  WHEN r < 0.91 THEN 'server_error' WHEN r < 0.92 THEN 'overcharged'
                                  WHEN r < 0.925 THEN 'pay_to' WHEN r < 0.93 THEN 'forged' WHEN r < 0.935 THEN 'reverted'
                                  WHEN r < 0.95 THEN 'never_settled' WHEN r < 0.955 THEN 'past_deadline'
                                  WHEN r < 0.96 THEN 'refunded' ELSE 'passed' END
            WHEN 'og' THEN CASE WHEN u(sess, 'so') < 0.04 THEN 'unsettled' WHEN u(sess, 'so') < 0.08 THEN 'risky'
                                WHEN u(li, 'tee') < 0.01 AND pos > 0 THEN 'tee_fail' ELSE 'passed' END
            ELSE kind END AS outcome,
        CASE kind WHEN 'unpaid' THEN 1 WHEN 'x402' THEN 2 WHEN 'og' THEN (CASE WHEN pos = 0 THEN 2 ELSE 1 END)
                  ELSE 4 END AS n_attempts
    FROM base
    """)
    # One row per HTTP exchange.
    con.execute("""
    CREATE TABLE ex AS
    SELECT lc.*, a AS attempt, lc.li * 4 + a AS g, lc.ts0 + a * 0.35 + u(lc.li, 'j') * 0.05 AS ts,
           u7(lc.ts0, lc.li * 4) AS lid, u7(lc.ts0 + a * 0.35 + u(lc.li, 'j') * 0.05, lc.li * 4 + a) AS rid,
           (kind IN ('x402', 'double', 'retried') AND a % 2 = 1) OR (kind = 'og' AND pos = 0 AND a = 1) AS paid,
           (kind IN ('x402', 'double', 'retried') AND a % 2 = 0) OR (kind = 'og' AND pos = 0 AND a = 0) AS challenged,
           CASE WHEN kind = 'unpaid' AND outcome = 'refused' THEN NULL
                WHEN (kind IN ('x402', 'double', 'retried') AND a % 2 = 0) OR (kind = 'og' AND pos = 0 AND a = 0) THEN 402
                WHEN kind = 'unpaid' AND outcome = 'server_error' THEN 500
                WHEN kind = 'x402' AND outcome IN ('server_error', 'refunded') THEN 500
                WHEN kind IN ('double', 'retried') AND a = 1 THEN 500
                ELSE 200 END AS status,
           CASE WHEN kind = 'x402' AND a = 1 AND outcome NOT IN ('never_settled', 'past_deadline')
                  OR kind = 'double' AND a IN (1, 3) OR kind = 'retried' AND a = 3
                THEN '0x' || hx(lc.li * 4 + a, 'tx') END AS tx,
           kind = 'unpaid' AND outcome = 'stream' AS stream,
           kind = 'unpaid' AND outcome = 'plain_http' AS plain,
           CASE WHEN kind = 'og' THEN 'sess-' || substr(hx(lc.sess, 'session'), 1, 32) END AS session_id
    FROM lc, LATERAL unnest(range(lc.n_attempts)) AS t(a)
    """)
    events_sql = f"""
    WITH x AS (
        SELECT ex.*, apps.exe, apps.cmdline, apps.ua, apps.client, apps.app_name,
               coalesce(s.host, f.host) AS host0, coalesce(s.path, f.path) AS path0,
               coalesce(s.model, f.models[1 + CAST(floor(u(ex.li, 'm') * len(f.models)) AS INTEGER)]) AS model0,
               s.network, s.asset, s.symbol, s.decimals, s.price, s.pay_to AS seller_pay_to,
               addr(ex.app, 'wallet') AS payer,
               CASE WHEN ex.kind = 'og' THEN 2 + CAST(floor(u(ex.li, 'pt') * 60) AS BIGINT) ELSE 12 + CAST(floor(u(ex.li, 'pt') * 900) AS BIGINT) END AS ptok,
               CASE WHEN ex.kind = 'og' THEN 5 + CAST(floor(u(ex.li, 'ct') * 200) AS BIGINT) ELSE 20 + CAST(floor(u(ex.li, 'ct') * 1500) AS BIGINT) END AS ctok,
               round(CASE WHEN ex.status = 402 THEN 3 + u(ex.g, 'lat') * 20 ELSE 250 + u(ex.g, 'lat') * 4000 END, 3) AS lat_ms
        FROM ex
        JOIN apps USING (app)
        LEFT JOIN sellers s ON ex.kind <> 'unpaid' AND s.h = ex.h
        LEFT JOIN free_hosts f ON ex.kind = 'unpaid' AND f.h = ex.h
    ), y AS (
        SELECT x.*,
               CASE WHEN plain THEN '{PLAIN[0]}' ELSE host0 END AS host,
               CASE WHEN plain THEN {PLAIN[1]} ELSE 443 END AS port,
               CASE WHEN plain THEN '{PLAIN[2]}' ELSE path0 END AS path,
               CASE WHEN plain THEN '{PLAIN[3]}' ELSE model0 END AS model,
               CASE WHEN kind = 'og' THEN 'upto' ELSE 'exact' END AS x_scheme,
               CASE WHEN kind = 'x402' AND outcome = 'pay_to' THEN addr(h, 'elsewhere') ELSE seller_pay_to END AS pay_to,
               CASE WHEN kind = 'x402' AND outcome = 'overcharged' THEN price * 2 ELSE price END AS signed,
               floor(ts) + 300 AS valid_before,
               '0x' || hx(g, 'nonce') AS nonce,
               'req_' || substr(hx(g, 'prov'), 1, 32) AS prov_id,
               'chatcmpl-' || substr(hx(g, 'resp'), 1, 24) AS resp_id,
               200 + CAST(floor(u(g, 'size') * 3000) AS BIGINT) AS req_size,
               300 + CAST(floor(u(g, 'rsize') * 6000) AS BIGINT) AS resp_size
        FROM x
    ), r AS (
        SELECT y.*,
            {{'x402Version': 2, 'error': 'Payment required',
              'resource': {{'url': 'https://' || host || path, 'description': 'Chat completion', 'mimeType': 'application/json'}},
              'accepts': [{{'scheme': x_scheme, 'network': network, 'asset': asset, 'amount': CAST(price AS VARCHAR),
                           'payTo': seller_pay_to, 'maxTimeoutSeconds': 300,
                           'extra': {{'name': CASE WHEN kind = 'og' THEN 'OpenGradient' ELSE 'USD Coin' END, 'version': '2'}}}}]}}
                AS wire_challenge,
            {{'x402_version': 2, 'error': 'Payment required', 'resource': 'https://' || host || path,
              'accepts': [{{'scheme': x_scheme, 'network': network, 'network_raw': network, 'amount': CAST(price AS VARCHAR),
                           'asset': asset, 'pay_to': seller_pay_to, 'max_timeout_seconds': 300,
                           'resource': 'https://' || host || path, 'description': 'Chat completion',
                           'mime_type': 'application/json',
                           'extra': {{'name': CASE WHEN kind = 'og' THEN 'OpenGradient' ELSE 'USD Coin' END, 'version': '2'}}}}],
              'errors': []::VARCHAR[], 'source': 'header'}} AS challenge
        FROM y
    )
    SELECT u7(ts, g * 8) AS id, 'request' AS type, ts, rid AS receipt_id, 'proxy' AS writer, g * 8 AS seq,
        to_json({{
            'logical_id': lid, 'source': 'proxy', 'match': CASE WHEN paid OR session_id IS NOT NULL AND pos > 0 THEN 'x402' ELSE 'path' END,
            'client': client, 'client_port': 30000 + CAST(floor(u(g, 'port') * 30000) AS INTEGER), 'app': ua,
            'method': 'POST', 'scheme': CASE WHEN plain THEN 'http' ELSE 'https' END, 'host': host, 'port': port,
            'path': path, 'query': NULL::VARCHAR, 'http_version': 'HTTP/1.1',
            'headers': CASE WHEN plain THEN to_json({{'host': host || ':' || port, 'accept': 'application/json',
                                              'user-agent': ua, 'content-type': 'application/json',
                                              'content-length': CAST(req_size AS VARCHAR),
                                              'authorization': '[redacted sha256:' || substr(hx(app, 'apikey'), 1, 16) || ']'}})
                            WHEN paid THEN to_json({{'host': host, 'accept': '*/*', 'accept-encoding': 'gzip, deflate, br, zstd',
                                              'connection': 'keep-alive', 'user-agent': ua,
                                              'content-length': CAST(req_size AS VARCHAR), 'content-type': 'application/json',
                                              'payment-signature': '[redacted sha256:' || substr(hx(g, 'psig'), 1, 16) || ']',
                                              'access-control-expose-headers': 'PAYMENT-RESPONSE,X-PAYMENT-RESPONSE'}})
                            WHEN session_id IS NOT NULL THEN to_json({{'host': host, 'accept': '*/*', 'connection': 'keep-alive',
                                              'user-agent': ua, 'content-length': CAST(req_size AS VARCHAR),
                                              'content-type': 'application/json', 'x-settlement-type': 'individual',
                                              'x-upto-session': session_id}})
                            ELSE to_json({{'host': host, 'accept': '*/*', 'accept-encoding': 'gzip, deflate, br, zstd',
                                    'connection': 'keep-alive', 'user-agent': ua, 'content-length': CAST(req_size AS VARCHAR),
                                    'content-type': 'application/json',
                                    'authorization': '[redacted sha256:' || substr(hx(app, 'apikey'), 1, 16) || ']'}}) END,
            'body': {{'size': req_size, 'sha256': hx(g, 'body')}},
            'model': model, 'stream': stream,
            'ids': {{'client_request_id': CASE WHEN app = 1 THEN 'cli-' || substr(hx(li, 'cid'), 1, 20) END,
                    'idempotency_key': NULL::VARCHAR, 'traceparent': NULL::VARCHAR}},
            'payment': CASE WHEN paid THEN {{
                'x402_version': 2, 'scheme': x_scheme, 'network': network, 'payer': payer, 'pay_to': pay_to, 'asset': asset,
                'amount': CAST(CASE WHEN kind = 'og' THEN price ELSE signed END AS VARCHAR), 'nonce': nonce,
                'valid_after': CASE WHEN kind = 'og' THEN floor(ts) - 600 ELSE 0 END,
                'valid_before': CASE WHEN kind <> 'og' THEN valid_before END,
                'deadline': CASE WHEN kind = 'og' THEN floor(ts) + 900 END,
                'spender': CASE WHEN kind = 'og' THEN '0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002' END,
                'facilitator': CASE WHEN kind = 'og' THEN '{FACILITATOR}' END,
                'resource': 'https://' || host || path, 'payment_identifier': NULL::VARCHAR,
                'signature_sha256': hx(g, 'sig'), 'signed_tx_sha256': NULL::VARCHAR,
                'kind': CASE WHEN kind = 'og' THEN 'permit2' ELSE 'eip3009' END, 'extensions': []::VARCHAR[],
                'errors': []::VARCHAR[], 'header': 'payment-signature', 'header_sha256': hx(g, 'psig'),
                'decimals': decimals, 'symbol': symbol,
                'signer': CASE WHEN outcome = 'forged' THEN addr(li, 'forger') ELSE payer END, 'signer_error': NULL::VARCHAR}} END,
            'upto_session': CASE WHEN session_id IS NOT NULL AND pos > 0 THEN session_id END,
            'settlement_type': CASE WHEN kind = 'og' THEN 'individual' END,
            'tee_request_hashes': CASE WHEN kind = 'og' THEN {{'gateway-2026-03': '0x' || hx(g, 'treq'),
                                                                'gateway-2026-02': '0x' || hx(g, 'treq2')}} END,
            'secrets_in_clear': CASE WHEN plain THEN ['authorization'] END,
            'errors': []::VARCHAR[],
            'process': CASE WHEN exe IS NOT NULL THEN {{'pid': 4000 + app, 'exe': exe, 'cmdline': cmdline}} END,
            'app_name': app_name}}) AS data
    FROM r
    UNION ALL
    SELECT u7(ts + lat_ms / 1000, g * 8 + 1), 'response', ts + lat_ms / 1000, rid, 'proxy', g * 8 + 1,
        to_json({{
            'status': status, 'reason': CASE status WHEN 200 THEN 'OK' WHEN 402 THEN 'Payment Required' ELSE 'Internal Server Error' END,
            'http_version': 'HTTP/1.1',
            'headers': CASE WHEN status = 402 THEN to_json({{'date': httpdate(ts), 'server': 'uvicorn', 'content-type': 'application/json',
                                                      'payment-required': to_base64(encode(to_json(wire_challenge)::VARCHAR)),
                                                      'cache-control': 'no-store', 'content-length': '2',
                                                      'x-request-id': prov_id, 'x-receipt-id': rid}})
                            WHEN tx IS NOT NULL THEN to_json({{'date': httpdate(ts), 'server': 'uvicorn',
                                                      'content-length': CAST(resp_size AS VARCHAR), 'content-type': 'application/json',
                                                      'payment-response': to_base64(encode(to_json({{'success': true, 'payer': payer,
                                                            'transaction': tx, 'network': network}})::VARCHAR)),
                                                      'x-request-id': prov_id, 'x-receipt-id': rid}})
                            WHEN session_id IS NOT NULL THEN to_json({{'date': httpdate(ts), 'server': 'Werkzeug/3.1.9 Python/3.12.1',
                                                      'content-type': 'application/json', 'content-length': CAST(resp_size AS VARCHAR),
                                                      'x-upto-session': session_id, 'x-receipt-id': rid}})
                            ELSE to_json({{'date': httpdate(ts), 'content-type': CASE WHEN stream THEN 'text/event-stream' ELSE 'application/json' END,
                                    'content-length': CASE WHEN NOT stream THEN CAST(resp_size AS VARCHAR) END,
                                    'x-request-id': prov_id, 'openai-processing-ms': CAST(CAST(lat_ms AS BIGINT) AS VARCHAR),
                                    'x-receipt-id': rid}}) END,
            'content_type': CASE WHEN stream THEN 'text/event-stream' ELSE 'application/json' END,
            'body': {{'size': CASE WHEN NOT stream THEN CASE WHEN status = 402 THEN 2 ELSE resp_size END END,
                     'sha256': CASE WHEN NOT stream THEN hx(g, 'rbody') END}},
            'stream': stream, 'latency_ms': CASE WHEN stream THEN round(lat_ms / 10, 3) ELSE lat_ms END,
            'provider_request_id': CASE WHEN session_id IS NULL THEN prov_id END,
            'response_id': CASE WHEN status = 200 AND NOT stream THEN resp_id END,
            'model': CASE WHEN status = 200 AND NOT stream THEN model END,
            'usage': CASE WHEN status = 200 AND NOT stream AND outcome <> 'no_usage'
                          THEN {{'prompt_tokens': ptok, 'completion_tokens': ctok, 'total_tokens': ptok + ctok}} END,
            'challenge': CASE WHEN status = 402 THEN challenge END,
            'settlement': CASE WHEN tx IS NOT NULL THEN {{'success': true, 'tx_hash': tx, 'job_id': NULL::VARCHAR,
                'network': network, 'payer': payer, 'amount': NULL::VARCHAR, 'error_reason': NULL::VARCHAR,
                'error_message': NULL::VARCHAR, 'errors': []::VARCHAR[], 'header': 'payment-response'}} END,
            'tee': CASE WHEN kind = 'og' AND status = 200 THEN {{
                'tee_signature': to_base64(unhex(hx(g, 'ts1') || hx(g, 'ts2') || hx(g, 'ts3') || hx(g, 'ts4'))),
                'tee_request_hash': hx(g, 'treq'), 'tee_output_hash': hx(g, 'tout'),
                'tee_timestamp': CAST(floor(ts) AS BIGINT), 'tee_id': '0x' || hx(1, 'tee')}} END,
            'og': CASE WHEN session_id IS NOT NULL AND status = 200 THEN {{'upto_session': session_id,
                'settlement_tx_hash': '0x' || hx(g, 'anchor')}} END,
            'tee_output_seen': CASE WHEN kind = 'og' AND status = 200 THEN '0x' || hx(g, 'tout') END,
            'errors': []::VARCHAR[]}})
    FROM r WHERE status IS NOT NULL
    UNION ALL
    SELECT u7(ts + lat_ms / 1000 + 0.5, g * 8 + 2), 'stream_end', ts + lat_ms / 1000 + 0.5, rid, 'proxy', g * 8 + 2,
        to_json({{'bytes': resp_size * 3, 'events': 20 + CAST(ctok / 4 AS BIGINT), 'done': true, 'id': resp_id, 'model': model,
                  'usage': CASE WHEN u(g, 'su') < 0.7 THEN {{'prompt_tokens': ptok, 'completion_tokens': ctok,
                                                             'total_tokens': ptok + ctok}} END,
                  'tee': NULL::VARCHAR, 'output_text_sha256': hx(g, 'otext'), 'output_text_keccak': '0x' || hx(g, 'okec'),
                  'output_chars': ctok * 4, 'errors': []::VARCHAR[], 'og': NULL::VARCHAR,
                  'latency_ms': lat_ms + 500}})
    FROM r WHERE stream
    UNION ALL
    SELECT u7(ts + 2, g * 8 + 3), 'error', ts + 2, rid, 'proxy', g * 8 + 3,
        to_json({{'kind': CASE WHEN u(g, 'ek') < 0.5 THEN 'upstream_refused' ELSE 'upstream_timeout' END,
                  'message': CASE WHEN u(g, 'ek') < 0.5 THEN 'Connection refused' ELSE 'TCP connection timed out' END,
                  'phase': 'request'}})
    FROM r WHERE status IS NULL
    """
    # The verifier's check events: one or two per paid logical call, as verifier/verify.py and og.py write.
    checks_sql = f"""
    WITH c AS (
        SELECT lc.*, e.ts_last, e.lid, e.payer, e.tx2,
               '0x' || hx(lc.sess, 'settle') AS stx, 3 + CAST(floor(u(lc.li, 'blk') * 1000000) AS BIGINT) AS blk,
               CAST((2 + MEMBERS_K) * 150000000000000 AS HUGEINT) AS samount
        FROM lc JOIN (
            SELECT li, max(ts) AS ts_last, any_value(lid) AS lid, addr(any_value(app), 'wallet') AS payer,
                   arg_max(tx, attempt) FILTER (WHERE tx IS NOT NULL) AS tx2
            FROM ex WHERE kind <> 'unpaid' GROUP BY li) e USING (li)
    ), k AS (
        SELECT c.*, s.price AS p, CASE WHEN outcome = 'overcharged' THEN s.price * 2 ELSE s.price END AS signed_amt,
               s.pay_to AS seller, CASE WHEN outcome = 'pay_to' THEN addr(c.h, 'elsewhere') ELSE s.pay_to END AS paid_to,
               CASE WHEN outcome = 'forged' THEN addr(li, 'forger') ELSE payer END AS sgn
        FROM c JOIN sellers s ON s.h = c.h
    ), parts AS (
        SELECT li, lid, ts_last, kind, outcome, pos,
            chk('signature', CASE WHEN outcome = 'forged' THEN 'fail' ELSE 'pass' END,
                CASE WHEN outcome = 'forged' THEN 'signature_mismatch' END,
                {{'signer': lower(sgn), 'payer': payer}}, NULL::BIGINT) AS c_sig,
            chk('terms', CASE WHEN outcome IN ('overcharged', 'pay_to') THEN 'fail' ELSE 'pass' END,
                CASE outcome WHEN 'overcharged' THEN 'overcharged' WHEN 'pay_to' THEN 'unexpected_pay_to' END,
                CASE outcome WHEN 'overcharged' THEN to_json({{'problems': ['signed ' || signed_amt || ', the challenge asked ' || p]}})
                             WHEN 'pay_to' THEN to_json({{'problems': ['paid to ' || paid_to || ', the challenge said ' || seller]}})
                             ELSE to_json({{'challenge_checked': true}}) END, NULL::BIGINT) AS c_terms,
            chk('settlement_tx', 'pending', 'awaiting_confirmations',
                {{'tx_hash': tx2, 'block': blk, 'confirmations': 1, 'required': 5, 'sender': '{FACILITATOR}', 'found_by': 'response'}},
                blk) AS c_await,
            chk('settlement_tx', 'pass', NULL,
                {{'tx_hash': tx2, 'block': blk, 'confirmations': 6, 'required': 5, 'sender': '{FACILITATOR}', 'found_by': 'response'}},
                blk) AS c_settled,
            chk('settlement_tx', 'fail', 'tx_reverted', {{'tx_hash': tx2, 'block': blk, 'status': 0}}, blk) AS c_reverted,
            chk('settlement_tx', 'pending', 'no_tx_hash', {{'scanned_from_block': blk - 100, 'payer': payer}}, NULL::BIGINT) AS c_notx,
            chk('refund', 'pass', NULL, {{'tx_hash': '0x' || hx(li, 'refund'), 'amount': CAST(p AS VARCHAR)}}, blk + 40) AS c_refund,
            chk('session_settlement', 'pass', NULL,
                {{'tx': stx, 'amount': CAST(samount AS VARCHAR), 'cap': CAST(p AS VARCHAR), 'pay_to': lower(seller),
                  'facilitator': '{FACILITATOR}', 'sender': '{FACILITATOR}', 'block': blk, 'confirmations': 6,
                  'nonce_bit_set': true, 'required': 5, 'share': 'unknown: only the session total is on chain'}}, blk) AS c_sess,
            chk('session_settlement', 'pending', CASE WHEN outcome = 'risky' THEN 'session_unsettled_past_deadline' ELSE 'session_not_settled' END,
                {{'deadline': CAST(floor(ts0) + 900 AS BIGINT), 'payer': payer}}, NULL::BIGINT) AS c_nosess,
            chk('tee_request_hash', 'pass', NULL, {{'form': 'gateway-2026-03', 'hash': hx(li * 4 + n_attempts - 1, 'treq')}}, NULL::BIGINT) AS c_treq,
            chk('tee_output_hash', CASE WHEN outcome = 'tee_fail' THEN 'fail' ELSE 'pass' END,
                CASE WHEN outcome = 'tee_fail' THEN 'output_hash_mismatch' END,
                {{'hash': '0x' || hx(li * 4 + n_attempts - 1, 'tout')}}, NULL::BIGINT) AS c_tout,
            chk('tee_signature', 'pass', NULL, {{'tee_id': '0x' || hx(1, 'tee'), 'key_sha256': hx(1, 'teekey')}}, NULL::BIGINT) AS c_tsig,
            stx, samount
        FROM k
    )
    SELECT li, lid, ts_last + 20 AS ts, 1 AS n, '{{"checks": [' || concat_ws(', ',
        CASE WHEN kind <> 'og' OR pos = 0 THEN c_sig END,
        CASE WHEN kind <> 'og' OR pos = 0 THEN c_terms END,
        CASE WHEN kind = 'og' THEN CASE WHEN outcome IN ('unsettled', 'risky') THEN c_nosess ELSE c_sess END
             WHEN outcome IN ('passed', 'awaiting') THEN c_await
             WHEN outcome = 'reverted' THEN c_reverted
             WHEN outcome IN ('never_settled', 'past_deadline') THEN c_notx
             ELSE c_settled END,
        CASE WHEN kind = 'og' THEN c_treq END, CASE WHEN kind = 'og' THEN c_tout END, CASE WHEN kind = 'og' THEN c_tsig END,
        CASE WHEN kind = 'og' THEN
                CASE WHEN outcome = 'tee_fail' THEN vrd_tx('failed', NULL, 'output_hash_mismatch', {{'signature': CASE WHEN pos = 0 THEN 'pass' END, 'terms': CASE WHEN pos = 0 THEN 'pass' END, 'session_settlement': 'pass', 'tee_request_hash': 'pass', 'tee_output_hash': 'fail', 'tee_signature': 'pass'}}, stx, samount)
                     WHEN outcome = 'unsettled' THEN vrd('pending', NULL, 'session_not_settled', {{'signature': CASE WHEN pos = 0 THEN 'pass' END, 'terms': CASE WHEN pos = 0 THEN 'pass' END, 'session_settlement': 'pending', 'tee_request_hash': 'pass', 'tee_output_hash': 'pass', 'tee_signature': 'pass'}})
                     WHEN outcome = 'risky' THEN vrd('pending', 'risky', 'session_unsettled_past_deadline', {{'signature': CASE WHEN pos = 0 THEN 'pass' END, 'terms': CASE WHEN pos = 0 THEN 'pass' END, 'session_settlement': 'pending', 'tee_request_hash': 'pass', 'tee_output_hash': 'pass', 'tee_signature': 'pass'}})
                     ELSE vrd_tx('passed', NULL, NULL, {{'signature': CASE WHEN pos = 0 THEN 'pass' END, 'terms': CASE WHEN pos = 0 THEN 'pass' END, 'session_settlement': 'pass', 'tee_request_hash': 'pass', 'tee_output_hash': 'pass', 'tee_signature': 'pass'}}, stx, samount) END
             WHEN kind = 'double' THEN vrd('passed', 'risky', 'double_settlement', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass'}})
             WHEN kind = 'retried' THEN vrd('passed', 'retried', NULL, {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass'}})
             ELSE CASE outcome
                WHEN 'passed' THEN vrd('pending', NULL, 'awaiting_confirmations', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pending'}})
                WHEN 'awaiting' THEN vrd('pending', NULL, 'awaiting_confirmations', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pending'}})
                WHEN 'server_error' THEN vrd('passed', 'risky', 'paid_but_server_error', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass'}})
                WHEN 'refunded' THEN vrd('passed', 'risky', 'paid_but_server_error', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass'}})
                WHEN 'overcharged' THEN vrd('failed', 'risky', 'overcharged', {{'signature': 'pass', 'terms': 'fail', 'settlement_tx': 'pass'}})
                WHEN 'pay_to' THEN vrd('failed', 'risky', 'unexpected_pay_to', {{'signature': 'pass', 'terms': 'fail', 'settlement_tx': 'pass'}})
                WHEN 'forged' THEN vrd('failed', NULL, 'signature_mismatch', {{'signature': 'fail', 'terms': 'pass', 'settlement_tx': 'pass'}})
                WHEN 'reverted' THEN vrd('failed', NULL, 'tx_reverted', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'fail'}})
                WHEN 'never_settled' THEN vrd('pending', NULL, 'no_tx_hash', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pending'}})
                WHEN 'past_deadline' THEN vrd('pending', 'risky', 'pending_past_deadline', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pending'}})
             END END) || ']}}' AS checks
    FROM parts WHERE outcome <> 'unverified'
    UNION ALL
    SELECT li, lid, ts_last + 90, 2, '{{"checks": [' || CASE outcome
        WHEN 'passed' THEN c_settled || ', ' || vrd('passed', NULL, NULL, {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass'}})
        WHEN 'refunded' THEN c_refund || ', ' || vrd('passed', 'refunded', 'paid_but_server_error', {{'signature': 'pass', 'terms': 'pass', 'settlement_tx': 'pass', 'refund': 'pass'}}) END || ']}}'
    FROM parts WHERE kind = 'x402' AND outcome IN ('passed', 'refunded')
    """.replace("MEMBERS_K", str(MEMBERS))
    base = 1 << 40  # check and refusal ids live far above every exchange's
    refusals = max(0, int(calls) // 1000)
    proxy_sql = f"""
    SELECT * FROM ({events_sql})
    UNION ALL
    SELECT u7(t, {base * 2} + i), 'error', t, u7(t, {base * 3} + i), 'proxy', {base} + i,
        to_json({{'kind': 'client_tls_refused', 'message': 'client refused the proxy''s certificate (alert 48: unknown ca)',
                  'phase': 'tls', 'host': CASE WHEN i % 2 = 0 THEN '{OG[0]}' ELSE 'api.pinned-bank-llm.example' END,
                  'client': '127.0.0.1'}})
    FROM (SELECT i, {start} + u(i, 'refusal') * {span} AS t FROM range({refusals}) r(i))
    """
    verifier_sql = f"""
    SELECT u7(ts, {base} + li * 4 + n) AS id, 'check' AS type, ts, lid AS receipt_id, 'verifier' AS writer,
           li * 4 + n AS seq, checks::JSON AS data FROM ({checks_sql})
    """
    # As compaction writes them: each writer's events in its own files (here one per writer and day).
    for writer, sql in (("proxy", proxy_sql), ("verifier", verifier_sql)):
        con.execute(f"""
        COPY (SELECT id, type, ts, receipt_id, writer, seq, data,
                     strftime(make_timestamp(CAST(ts * 1000000 AS BIGINT)), '%Y-%m-%d') AS date
              FROM ({sql}) ORDER BY ts, id)
        TO '{str(out).replace("'", "''")}'
        (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date), APPEND,
         FILENAME_PATTERN 'synthetic-{S}-{writer}-{{uuid}}')
        """)
    con.close()
    files = len([p for p in out.glob(f"*/synthetic-{S}-*.parquet")])
    with __import__("duckdb").connect() as c:
        n_events = c.execute(f"SELECT count(*) FROM read_parquet('{out}/*/synthetic-{S}-*.parquet')").fetchone()[0]
    return {"calls": int(calls), "receipts": b4 + plan["session"] * (1 + MEMBERS), "events": n_events, "files": files,
            "seconds": round(time.monotonic() - started, 2), "plan": plan}


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(description="Write a synthetic journal of N calls (compacted Parquet).")
    p.add_argument("data_dir")
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=float, default=30.0)
    args = p.parse_args()
    print(json.dumps(generate(args.data_dir, args.calls, args.seed, days=args.days)))
