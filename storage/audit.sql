-- `receipts audit`: every figure of the audit report, in one place. storage/audit.py runs the statements
-- below in order (each starts with a `-- name:` line); those named `section_*` return the report's rows.
-- Placeholders: {journal} (the journal directory), {max_line} (largest JSON event line read).
-- Parameters of the sections: $since (TIMESTAMP, UTC, or NULL) and $app (an app_name, or NULL).
--
-- Why not the views: at a million calls the `receipts` view takes ~30 s (it extracts every field of every
-- event and folds them several times). The audit reads the journal ONCE, narrowly: each event is parsed
-- once (one json_extract_string with a constant list of paths per event type: building long lists of
-- mostly NULL strings costs more than the parse), and the verifier's check events contribute their last
-- element (the verdict, when the pass changed it) and their list of checks as text, which is parsed
-- again only for the receipts the report lists (their evidence). The rules mirror storage/views.sql
-- (calls, receipts, sessions); tests/storage/test_audit.py checks that they fold the same rows.

-- name: paths
-- The fields kept of each event type (`f` of audit_ev holds them in this order), and their names.
CREATE OR REPLACE TEMP MACRO audit_request_paths() AS [
    '$.logical_id', '$.app_name', '$.app', '$.client', '$.scheme', '$.host', '$.path', '$.port',
    '$.secrets_in_clear', '$.process.exe', '$.upto_session', '$.model', '$.payment.header', '$.payment.scheme',
    '$.payment.network', '$.payment.payer', '$.payment.pay_to', '$.payment.asset', '$.payment.amount',
    '$.payment.decimals', '$.payment.symbol', '$.payment.valid_before', '$.payment.deadline'];
CREATE OR REPLACE TEMP MACRO audit_request(f) AS {
    'logical_id': f[1], 'app_name': f[2], 'app': f[3], 'client': f[4], 'scheme': f[5], 'host': f[6], 'path': f[7],
    'port': f[8], 'secrets': f[9], 'exe': f[10], 'upto_session': f[11], 'model': f[12], 'pay_header': f[13],
    'pay_scheme': f[14], 'pay_network': f[15], 'payer': f[16], 'pay_to': f[17], 'pay_asset': f[18],
    'pay_amount': f[19], 'pay_decimals': f[20], 'pay_symbol': f[21], 'pay_valid_before': f[22], 'pay_deadline': f[23]};
CREATE OR REPLACE TEMP MACRO audit_response_paths() AS [  -- a 402's first two offers (the one paid is matched)
    '$.status', '$.usage.prompt_tokens', '$.usage.completion_tokens', '$.usage.total_tokens', '$.model',
    '$.settlement.tx_hash', '$.settlement.amount', '$.og.upto_session',
    '$.challenge.accepts[0].amount', '$.challenge.accepts[0].asset', '$.challenge.accepts[0].network',
    '$.challenge.accepts[0].pay_to', '$.challenge.accepts[1].amount', '$.challenge.accepts[1].asset',
    '$.challenge.accepts[1].network', '$.challenge.accepts[1].pay_to'];
CREATE OR REPLACE TEMP MACRO audit_response(f) AS {
    'status': f[1], 'usage': coalesce(f[2], f[3], f[4]), 'model': f[5], 'tx_hash': f[6], 'settled_amount': f[7],
    'og_session': f[8], 'c0_amount': f[9], 'c0_asset': f[10], 'c0_network': f[11], 'c0_pay_to': f[12],
    'c1_amount': f[13], 'c1_asset': f[14], 'c1_network': f[15], 'c1_pay_to': f[16]};
CREATE OR REPLACE TEMP MACRO audit_stream_end_paths() AS [
    '$.usage.prompt_tokens', '$.usage.completion_tokens', '$.usage.total_tokens', '$.model', '$.done'];
CREATE OR REPLACE TEMP MACRO audit_stream_end(f) AS {'usage': coalesce(f[1], f[2], f[3]), 'model': f[4], 'done': f[5]};
CREATE OR REPLACE TEMP MACRO audit_error_paths() AS ['$.kind', '$.message', '$.client', '$.host'];
CREATE OR REPLACE TEMP MACRO audit_error(f) AS {'kind': f[1], 'message': f[2], 'client': f[3], 'host': f[4]};
CREATE OR REPLACE TEMP MACRO audit_check_paths() AS [  -- the list's last element: the verdict, if it changed
    '$.checks[#-1].check', '$.checks[#-1].status', '$.checks[#-1].resolution', '$.checks[#-1].reason',
    '$.checks[#-1].tx', '$.checks[#-1].session_amount', '$.checks[#-1].detail.settlement_tx',
    '$.checks[#-1].detail.session_settlement', '$.checks'];
CREATE OR REPLACE TEMP MACRO audit_check(f) AS {
    'last': f[1], 'status': f[2], 'resolution': f[3], 'reason': f[4], 'tx': f[5], 'session_amount': f[6],
    'settlement': coalesce(f[7], f[8])};  -- f[9]: the whole list, for the evidence

-- name: read
-- Compacted Parquet: one scan, one parse per event.
CREATE OR REPLACE TEMP TABLE audit_ev AS
SELECT id, type, ts, receipt_id, CASE type
    WHEN 'request' THEN json_extract_string(data, audit_request_paths())
    WHEN 'response' THEN json_extract_string(data, audit_response_paths())
    WHEN 'stream_end' THEN json_extract_string(data, audit_stream_end_paths())
    WHEN 'error' THEN json_extract_string(data, audit_error_paths())
    WHEN 'check' THEN json_extract_string(data, audit_check_paths()) END AS f
FROM read_parquet('{journal}/parquet/*/*.parquet');

-- name: read_segments
-- Sealed JSON segments, line by line (as storage's `json_fields` reads them); an event already
-- compacted into Parquet (inside its grace period) is kept once. A copy has the same `ts`, so only
-- Parquet events at least as recent as the oldest segment line need comparing.
INSERT INTO audit_ev
WITH lines AS (
    SELECT json_extract_string(line, ['$.id', '$.type', '$.ts', '$.receipt_id']) AS e, line
    FROM read_csv('{journal}/*.jsonl', columns = {'line': 'VARCHAR'}, header = false, delim = chr(1),
                  quote = '', escape = '', auto_detect = false, buffer_size = {max_line},
                  max_line_size = {max_line})
), seg AS (
    SELECT e[1] AS id, e[2] AS type, TRY_CAST(e[3] AS DOUBLE) AS ts, e[4] AS receipt_id, CASE e[2]
        WHEN 'request' THEN json_extract_string(line, list_transform(audit_request_paths(), lambda p: '$.data' || p[2:]))
        WHEN 'response' THEN json_extract_string(line, list_transform(audit_response_paths(), lambda p: '$.data' || p[2:]))
        WHEN 'stream_end' THEN json_extract_string(line, list_transform(audit_stream_end_paths(), lambda p: '$.data' || p[2:]))
        WHEN 'error' THEN json_extract_string(line, list_transform(audit_error_paths(), lambda p: '$.data' || p[2:]))
        WHEN 'check' THEN json_extract_string(line, list_transform(audit_check_paths(), lambda p: '$.data' || p[2:]))
        END AS f
    FROM lines
)
SELECT * FROM seg
WHERE id NOT IN (SELECT id FROM audit_ev WHERE ts >= (SELECT min(ts) FROM seg));

-- name: calls
-- One row per HTTP exchange, as the `calls` view folds it (latest response, stream end and error).
CREATE OR REPLACE TEMP TABLE audit_calls AS
WITH req AS (
    SELECT receipt_id, ts, unnest(audit_request(f)) FROM audit_ev WHERE type = 'request'
), resp AS (
    SELECT receipt_id, arg_max(audit_response(f), ts) AS x FROM audit_ev WHERE type = 'response' GROUP BY receipt_id
), fin AS (
    SELECT receipt_id, arg_max(audit_stream_end(f), ts) AS x FROM audit_ev WHERE type = 'stream_end' GROUP BY receipt_id
), err AS (
    SELECT receipt_id, arg_max(audit_error(f), ts) AS x FROM audit_ev WHERE type = 'error' GROUP BY receipt_id
)
SELECT
    r.receipt_id,
    r.logical_id,
    utc(r.ts)                                                          AS started_at,
    coalesce(r.app_name, r.app, r.client)                              AS app_name,
    r.exe, r.scheme, r.host, TRY_CAST(r.port AS INTEGER) AS port, r.path,
    coalesce(fin.x.model, resp.x.model, r.model)                       AS model,
    TRY_CAST(r.secrets AS VARCHAR[])                                   AS secrets_in_clear,
    r.pay_header IS NOT NULL                                           AS paid,
    r.pay_scheme, r.pay_network AS network, r.payer, r.pay_to, r.pay_asset AS asset,
    TRY_CAST(r.pay_amount AS HUGEINT) AS signed_amount, TRY_CAST(r.pay_decimals AS INTEGER) AS decimals,
    r.pay_symbol AS symbol,
    TRY_CAST(coalesce(r.pay_deadline, r.pay_valid_before) AS BIGINT)   AS deadline,
    r.upto_session IS NOT NULL                                         AS session_member,
    coalesce(r.upto_session, resp.x.og_session)                        AS session_id,
    TRY_CAST(resp.x.status AS INTEGER)                                 AS status,
    CASE WHEN resp.receipt_id IS NULL THEN NULL
         WHEN coalesce(fin.x.usage, resp.x.usage) IS NULL THEN 'missing'
         ELSE 'provider' END                                           AS usage_source,
    lower(resp.x.tx_hash)                                              AS tx_hash,
    TRY_CAST(resp.x.settled_amount AS HUGEINT)                         AS settled_amount,
    CASE WHEN resp.x.c0_amount IS NOT NULL THEN  -- the offer this payment answers (same asset and network)
        CASE WHEN resp.x.c1_amount IS NOT NULL AND lower(resp.x.c1_asset) = lower(r.pay_asset)
                  AND resp.x.c1_network = r.pay_network
             THEN {'amount': TRY_CAST(resp.x.c1_amount AS HUGEINT), 'asset': resp.x.c1_asset,
                   'network': resp.x.c1_network, 'pay_to': resp.x.c1_pay_to}
             ELSE {'amount': TRY_CAST(resp.x.c0_amount AS HUGEINT), 'asset': resp.x.c0_asset,
                   'network': resp.x.c0_network, 'pay_to': resp.x.c0_pay_to} END
    END                                                                AS challenge,
    coalesce(err.x.kind || ': ' || err.x.message,
             CASE WHEN fin.receipt_id IS NOT NULL AND NOT coalesce(TRY_CAST(fin.x.done AS BOOLEAN), false)
                  THEN 'stream_incomplete' END)                        AS error
FROM req r
LEFT JOIN resp USING (receipt_id)
LEFT JOIN fin USING (receipt_id)
LEFT JOIN err USING (receipt_id);

-- name: verdicts
-- The latest verdict of each logical call (a check event whose list ends with one).
CREATE OR REPLACE TEMP TABLE audit_verdicts AS
SELECT receipt_id AS logical_id, utc(max(ts)) AS verdict_at, arg_max(audit_check(f), ts) AS v
FROM audit_ev WHERE type = 'check' AND f[1] = 'verdict' GROUP BY receipt_id;

-- name: receipts
-- One row per logical call, as the `receipts` view folds it (proof_status, resolution, reason, amounts).
CREATE OR REPLACE TEMP TABLE audit_receipts AS
WITH g AS (
    SELECT
        logical_id,
        min(started_at)                                                AS first_seen,
        count(*)                                                       AS attempts,
        arg_max(status, started_at)                                    AS status,
        arg_max(app_name, started_at)                                  AS app_name,
        arg_max(host, started_at)                                      AS host,
        arg_max(path, started_at)                                      AS path,
        arg_max(model, started_at) FILTER (WHERE model IS NOT NULL)    AS model,
        arg_max(session_id, started_at) FILTER (WHERE session_id IS NOT NULL) AS session_id,
        bool_or(session_member)                                        AS session_member,
        count(*) FILTER (WHERE paid)                                   AS payments
    FROM audit_calls GROUP BY logical_id
), pay AS (  -- the last payment (the few paid attempts only: cheaper than a FILTER over every call)
    SELECT logical_id, arg_max({'scheme': pay_scheme, 'network': network, 'payer': payer, 'pay_to': pay_to,
                                'asset': asset, 'amount': signed_amount, 'decimals': decimals, 'symbol': symbol,
                                'deadline': deadline}, started_at) AS p
    FROM audit_calls WHERE paid GROUP BY logical_id
), settle AS (
    SELECT logical_id, count(DISTINCT tx_hash) AS settlements, list(DISTINCT tx_hash ORDER BY tx_hash) AS txs,
           max(settled_amount) AS settled_amount
    FROM audit_calls WHERE tx_hash IS NOT NULL GROUP BY logical_id
), chal AS (
    SELECT logical_id, arg_max(challenge, started_at) AS challenge
    FROM audit_calls WHERE challenge IS NOT NULL GROUP BY logical_id
), sp AS (  -- the payment that opened an upto session pays for its calls
    SELECT session_id, arg_min({'scheme': pay_scheme, 'network': network, 'payer': payer, 'pay_to': pay_to,
                                'asset': asset, 'decimals': decimals, 'symbol': symbol, 'deadline': deadline},
                               started_at) AS s
    FROM audit_calls WHERE paid AND session_id IS NOT NULL GROUP BY session_id
)
SELECT g.*, coalesce(settle.settlements, 0) AS settlements, settle.txs, settle.settled_amount, chal.challenge,
    coalesce(p.scheme, sp.s.scheme) AS scheme, coalesce(p.network, sp.s.network) AS network,
    coalesce(p.payer, sp.s.payer) AS payer, coalesce(p.pay_to, sp.s.pay_to) AS pay_to,
    coalesce(p.asset, sp.s.asset) AS asset, p.amount, coalesce(p.decimals, sp.s.decimals) AS decimals,
    coalesce(p.symbol, sp.s.symbol) AS symbol, coalesce(p.deadline, sp.s.deadline) AS deadline,
    coalesce(v.v.status, CASE WHEN payments > 0 OR settlements > 0 OR session_id IS NOT NULL THEN 'pending'
                          ELSE 'unpaid' END)                           AS proof_status,
    v.v.resolution,
    CASE WHEN v.logical_id IS NOT NULL THEN v.v.reason
         WHEN payments > 0 OR settlements > 0 OR session_id IS NOT NULL THEN 'not_verified' END AS reason,
    v.verdict_at,
    v.v.tx                                                             AS verdict_tx,
    TRY_CAST(v.v.session_amount AS HUGEINT)                            AS session_amount,
    v.v.settlement                                                     AS settlement_result
FROM g
LEFT JOIN pay USING (logical_id)
LEFT JOIN settle USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN audit_verdicts v USING (logical_id)
LEFT JOIN sp USING (session_id);

-- name: sessions
-- OpenGradient upto sessions: the opener's payment (payer, payee, asset, cap, deadline), the calls, and
-- the session's one settlement as the verifier found it.
CREATE OR REPLACE TEMP TABLE audit_sessions AS
SELECT session_id,
       arg_min(logical_id, first_seen)                                          AS opened_by,
       min(first_seen)                                                          AS first_seen,
       count(*)                                                                 AS calls,
       arg_min(app_name, first_seen)                                            AS app_name,
       arg_min({'network': network, 'payer': payer, 'pay_to': pay_to, 'asset': asset, 'amount': amount,
                'decimals': decimals, 'symbol': symbol, 'deadline': deadline}, first_seen)
           FILTER (WHERE payments > 0)                                          AS p,
       max(session_amount)                                                      AS session_amount,
       arg_max(verdict_tx, verdict_at) FILTER (WHERE verdict_tx IS NOT NULL)    AS tx,
       arg_max(settlement_result, verdict_at)                                   AS settlement_result,
       arg_max(reason, verdict_at) FILTER (WHERE settlement_result IS DISTINCT FROM 'pass') AS reason
FROM audit_receipts WHERE session_id IS NOT NULL GROUP BY session_id;

-- name: charges
-- Money, one row per settlement (or authorization without one), with what is known about it:
--   verified   — the verifier found the settlement on chain (its latest settlement check passed);
--   reported   — the server reported a settlement tx, not (yet) verified on chain;
--   authorized — a signed payment (an exact amount, or a session's cap) with no settlement known.
-- A settlement the verifier found failed (reverted, wrong logs) moved no money and is not counted.
CREATE OR REPLACE TEMP TABLE audit_charges AS
WITH x402 AS (  -- each distinct settlement tx a server reported for a logical call, with its own attempt's payment
    SELECT DISTINCT ON (logical_id, tx_hash) logical_id, tx_hash, network, asset, symbol, decimals, pay_to, payer,
           coalesce(settled_amount, CASE WHEN pay_scheme = 'exact' THEN signed_amount END) AS amount
    FROM audit_calls WHERE tx_hash IS NOT NULL AND session_id IS NULL
    ORDER BY logical_id, tx_hash, started_at DESC
)
SELECT r.logical_id AS key, 'x402' AS kind, r.app_name, r.first_seen, x.network, x.asset, x.symbol, x.decimals,
       x.pay_to, x.payer, x.tx_hash AS tx, x.amount,
       CASE r.settlement_result WHEN 'pass' THEN 'verified' WHEN 'fail' THEN 'failed' ELSE 'reported' END AS state
FROM x402 x JOIN audit_receipts r USING (logical_id)
UNION ALL  -- found on chain by the verifier without the server telling (a log scan)
SELECT logical_id, 'x402', app_name, first_seen, network, asset, symbol, decimals, pay_to, payer, verdict_tx,
       CASE WHEN scheme = 'exact' THEN coalesce(settled_amount, amount) END, 'verified'
FROM audit_receipts WHERE settlements = 0 AND settlement_result = 'pass' AND session_id IS NULL
UNION ALL  -- signed, nothing settled known
SELECT logical_id, 'x402', app_name, first_seen, network, asset, symbol, decimals, pay_to, payer, NULL,
       CASE WHEN scheme = 'exact' THEN amount END, 'authorized'
FROM audit_receipts WHERE payments > 0 AND settlements = 0 AND settlement_result IS DISTINCT FROM 'pass'
     AND session_id IS NULL AND status IS DISTINCT FROM 402
UNION ALL  -- OpenGradient sessions: one settlement of the session's total, or the cap while none is known
SELECT session_id, 'session', app_name, first_seen, p.network, p.asset, p.symbol, p.decimals, p.pay_to, p.payer, tx,
       CASE WHEN settlement_result = 'pass' THEN session_amount ELSE p.amount END,
       CASE WHEN settlement_result = 'pass' THEN 'verified' ELSE 'authorized' END
FROM audit_sessions;

-- name: section_summary
SELECT
    (SELECT count(*) FROM audit_calls WHERE ($since IS NULL OR started_at >= $since) AND ($app IS NULL OR app_name = $app)) AS calls,
    count(*)                                                           AS receipts,
    count(*) FILTER (WHERE proof_status <> 'unpaid')                   AS paid_receipts,
    count(DISTINCT app_name)                                           AS apps,
    min(first_seen)                                                    AS first_seen,
    max(first_seen)                                                    AS last_seen,
    count(*) FILTER (WHERE reason = 'not_verified')                    AS not_verified
FROM audit_receipts WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app);

-- name: section_apps
-- Calls per app (and their hosts); receipts (logical calls) per app, by the app of their last attempt.
WITH c AS (
    SELECT app_name, host, any_value(exe) FILTER (WHERE exe IS NOT NULL) AS exe, count(*) AS calls,
           min(started_at) AS first_seen, max(started_at) AS last_seen
    FROM audit_calls
    WHERE ($since IS NULL OR started_at >= $since) AND ($app IS NULL OR app_name = $app)
    GROUP BY app_name, host
), r AS (
    SELECT app_name, count(*) AS receipts, count(*) FILTER (WHERE proof_status <> 'unpaid') AS paid_receipts
    FROM audit_receipts
    WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
    GROUP BY app_name
)
SELECT c.app_name, any_value(c.exe) AS exe, sum(c.calls)::BIGINT AS calls, coalesce(any_value(r.receipts), 0) AS receipts,
       coalesce(any_value(r.paid_receipts), 0) AS paid_receipts, list(c.host ORDER BY c.host) AS hosts,
       min(c.first_seen) AS first_seen, max(c.last_seen) AS last_seen
FROM c LEFT JOIN r USING (app_name)
GROUP BY c.app_name ORDER BY calls DESC, c.app_name;

-- name: section_totals
-- Totals paid per asset and payee: exact integers of atomic units (HUGEINT), decimals beside them.
SELECT network, asset, symbol, decimals, pay_to,
       count(DISTINCT key)                                                       AS paid_calls,
       count(*) FILTER (WHERE state IN ('verified', 'reported'))                 AS settlements,
       coalesce(sum(amount) FILTER (WHERE state = 'verified'), 0)                AS verified,
       coalesce(sum(amount) FILTER (WHERE state = 'reported'), 0)                AS reported,
       coalesce(sum(amount) FILTER (WHERE state = 'authorized'), 0)              AS authorized,
       count(*) FILTER (WHERE state IN ('reported', 'verified', 'authorized') AND amount IS NULL) AS unknown_amounts
FROM audit_charges
WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY network, asset, pay_to;

-- name: section_totals_by_app
SELECT app_name, network, asset, symbol, decimals,
       count(DISTINCT key)                                                       AS paid_calls,
       coalesce(sum(amount) FILTER (WHERE state = 'verified'), 0)                AS verified,
       coalesce(sum(amount) FILTER (WHERE state = 'reported'), 0)                AS reported,
       coalesce(sum(amount) FILTER (WHERE state = 'authorized'), 0)              AS authorized
FROM audit_charges
WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY app_name, network, asset;

-- name: section_statuses
-- Logical calls by proof status and resolution, per app.
SELECT app_name, proof_status, resolution, count(*) AS receipts
FROM audit_receipts
WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY app_name, receipts DESC, proof_status, resolution NULLS FIRST;

-- name: section_http_statuses
-- HTTP exchanges by answer (NULL: none came; `error` says why), per app.
SELECT app_name, status, CASE WHEN status IS NULL THEN split_part(error, ':', 1) END AS error, count(*) AS calls
FROM audit_calls
WHERE ($since IS NULL OR started_at >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY app_name, status NULLS LAST, error;

-- name: section_risky_failed
SELECT logical_id AS receipt_id, app_name, first_seen, host, path, model, proof_status, resolution, reason,
       status AS last_status, attempts, network, asset, symbol, decimals, payer, pay_to,
       coalesce(settled_amount, amount) AS amount, txs, verdict_tx, session_id, verdict_at
FROM audit_receipts
WHERE (proof_status = 'failed' OR resolution = 'risky')
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
ORDER BY app_name, first_seen, logical_id;

-- name: section_overcharges
-- Paid more than the challenge asked: the signed amount (an exact payment's, or an upto cap) or the
-- settled amount above the 402's amount for the same asset; or the verifier said so.
SELECT logical_id AS receipt_id, app_name, first_seen, host, network, asset, symbol, decimals, pay_to,
       challenge.amount AS challenge_amount, greatest(amount, settled_amount) AS charged,
       greatest(amount, settled_amount) - challenge.amount AS excess, scheme, proof_status, resolution, reason
FROM audit_receipts
WHERE (greatest(amount, settled_amount) > challenge.amount OR reason = 'overcharged')
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
ORDER BY app_name, first_seen, logical_id;

-- name: section_never_settled
-- Paid, but no settlement transaction is known: the server reported none and the verifier found none
-- (or found that the reported one is not on chain). A payment answered 402 was refused: nothing to settle.
SELECT logical_id AS key, 'x402' AS kind, app_name, first_seen, host, network, asset, symbol, decimals, payer,
       pay_to, CASE WHEN scheme = 'exact' THEN amount END AS amount, deadline, txs, proof_status, resolution,
       reason, 1 AS calls
FROM audit_receipts
WHERE session_id IS NULL AND payments > 0
  AND ((settlements = 0 AND settlement_result IS DISTINCT FROM 'pass' AND status IS DISTINCT FROM 402)
       OR reason IN ('tx_not_found', 'settlement_disappeared'))
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
UNION ALL
SELECT session_id, 'session', app_name, first_seen, NULL, p.network, p.asset, p.symbol, p.decimals, p.payer,
       p.pay_to, p.amount, p.deadline, [], NULL, NULL, coalesce(reason, 'not_verified'), calls
FROM audit_sessions
WHERE settlement_result IS DISTINCT FROM 'pass'
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
ORDER BY app_name, first_seen, key;

-- name: section_double_charges
-- One logical call, more than one settlement: each reported tx and what it moved.
SELECT r.logical_id AS receipt_id, r.app_name, r.first_seen, r.host, r.network, r.asset, r.symbol, r.decimals,
       r.payer, r.pay_to, r.settlements, r.txs, (SELECT sum(amount) FROM audit_charges c WHERE c.key = r.logical_id
                                                 AND c.state IN ('verified', 'reported')) AS charged,
       r.proof_status, r.resolution, r.reason
FROM audit_receipts r
WHERE (r.settlements > 1 OR r.reason = 'double_settlement')
  AND ($since IS NULL OR r.first_seen >= $since) AND ($app IS NULL OR r.app_name = $app)
ORDER BY r.app_name, r.first_seen, r.logical_id;

-- name: section_secrets_in_clear
-- Calls that sent secret headers or query parameters over plain HTTP (names only: values are never stored).
SELECT app_name, host, port, path, secrets_in_clear AS secrets, count(*) AS calls,
       min(started_at) AS first_seen, max(started_at) AS last_seen, min(receipt_id) AS example_receipt
FROM audit_calls
WHERE len(secrets_in_clear) > 0
  AND ($since IS NULL OR started_at >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY app_name, calls DESC, host;

-- name: section_pinned_clients
-- Clients that refused the proxy's certificate (they pin their server's, or do not trust the CA).
-- The handshake failed before any request, so only the client address and server name are known:
-- these rows are not filtered by --app.
SELECT e.client, e.host, count(*) AS refusals, utc(min(ts)) AS first_seen, utc(max(ts)) AS last_seen,
       arg_max(e.message, ts) AS message
FROM (SELECT ts, audit_error(f) AS e FROM audit_ev WHERE type = 'error')
WHERE e.kind = 'client_tls_refused' AND ($since IS NULL OR utc(ts) >= $since)
GROUP BY ALL ORDER BY refusals DESC, e.client, e.host;

-- name: section_no_usage
-- Answered calls (2xx) whose response reported no token usage.
SELECT app_name, host, model, count(*) AS calls, min(started_at) AS first_seen, max(started_at) AS last_seen,
       min(receipt_id) AS example_receipt
FROM audit_calls
WHERE status BETWEEN 200 AND 299 AND usage_source = 'missing'
  AND ($since IS NULL OR started_at >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY ALL ORDER BY app_name, calls DESC, host, model;

-- name: evidence
-- The verifier's evidence for the receipts the report lists (temp table audit_ids): the latest
-- observation of each check, with its detail. Only these receipts' check lists are parsed.
WITH obs AS (
    SELECT receipt_id, ts, json_extract_string(c, ['$.check', '$.result', '$.reason']) AS x, json_extract(c, '$.detail') AS detail
    FROM (SELECT receipt_id, ts, unnest(TRY_CAST(f[9] AS JSON[])) AS c
          FROM audit_ev WHERE type = 'check' AND receipt_id IN (SELECT id FROM audit_ids))
)
SELECT receipt_id, "check", l.result, l.reason, l.detail::VARCHAR AS detail, observed_at FROM (
    SELECT receipt_id, x[1] AS "check", utc(max(ts)) AS observed_at,  -- arg_max skips NULLs: pack the fields
           arg_max({'result': x[2], 'reason': x[3], 'detail': detail}, ts) AS l
    FROM obs WHERE x[1] <> 'verdict' GROUP BY receipt_id, x[1])
ORDER BY receipt_id, observed_at, "check";
