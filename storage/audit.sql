-- `receipts audit`: every figure of the audit report, in one place. storage/audit.py runs the statements
-- below in order (each starts with a `-- name:` line); those named `section_*` return the report's rows.
-- Parameters of the sections: $since (TIMESTAMP, UTC, or NULL) and $app (an app_name, or NULL).
--
-- The audit reads no journal and folds nothing itself: it queries the views of storage/views.sql (calls,
-- receipts, checks), their payments and settlements by exchange (payment_rows(), settlement_rows(): the
-- exchange's logical id is in audit_calls already), and folded.errors. `receipts` gives, per logical
-- call, the offer its payment answers (max_amount_required …), its settlement transactions, the largest
-- amount settled, the latest settlement check and when the proof status was reached.

-- name: calls
-- The exchanges, with the columns the report needs.
CREATE OR REPLACE TEMP TABLE audit_calls AS
SELECT receipt_id, logical_id, started_at, app_name, client_exe AS exe, host, port, path, model, secrets_in_clear,
       paid, upto_session AS session_id, status, usage_source, error
FROM calls;

-- name: receipts
-- The logical calls, under the names the sections use (a view instead when `receipts` reads only kept
-- rows: storage/audit.py `build`).
CREATE OR REPLACE TEMP TABLE audit_receipts AS
SELECT receipt_id AS logical_id, first_seen, attempts, status, app_name, host, path, model, session_id,
       payment_count AS payments, settlement_count AS settlements, settlement_txs AS txs, payer, pay_to, asset,
       network, scheme, decimals, symbol, deadline, amount, signed_amount, payment_amount AS signed,
       max_settled_amount AS max_settled,
       {'amount': max_amount_required, 'asset': challenge_asset, 'network': challenge_network,
        'pay_to': challenge_pay_to} AS challenge,
       proof_status, resolution, reason, proof_status_at AS verdict_at, payment_hash AS verdict_tx, session_amount,
       settlement_check AS settlement_result, settlement_checked_at AS settlement_at,
       total_tokens AS tokens, cost, cost_currency, cost_source
FROM receipts;

-- name: sessions
-- OpenGradient upto sessions: the opening payment (payer, payee, asset, cap, deadline) as the `sessions`
-- view finds it, the session's calls as it counts them (its exchanges answered below 400), and the
-- session's one settlement as the verifier found it (the latest settlement check of its receipts).
CREATE OR REPLACE TEMP TABLE audit_sessions AS
WITH opener AS (
    SELECT c.session_id, arg_min({'network': p.network, 'payer': p.payer, 'pay_to': p.pay_to, 'asset': p.asset,
                                  'amount': p.amount, 'decimals': p.decimals, 'symbol': p.symbol,
                                  'deadline': coalesce(p.deadline, p.valid_before)}, p.sent_at) AS p
    FROM audit_calls c JOIN payment_rows() p USING (receipt_id) WHERE c.session_id IS NOT NULL GROUP BY c.session_id
), span AS (
    SELECT session_id, count(*) FILTER (WHERE status < 400) AS calls
    FROM audit_calls WHERE session_id IS NOT NULL GROUP BY session_id
)
SELECT session_id,
       min(first_seen)                                                          AS first_seen,
       arg_min(app_name, first_seen)                                            AS app_name,
       any_value(opener.p)                                                      AS p,
       coalesce(any_value(span.calls), 0)                                       AS calls,
       max(session_amount)                                                      AS session_amount,
       arg_max(verdict_tx, verdict_at) FILTER (WHERE verdict_tx IS NOT NULL)    AS tx,
       arg_max(settlement_result, settlement_at)                                AS settlement_result,
       arg_max(reason, verdict_at) FILTER (WHERE settlement_result IS DISTINCT FROM 'pass') AS reason
FROM audit_receipts LEFT JOIN opener USING (session_id) LEFT JOIN span USING (session_id)
WHERE session_id IS NOT NULL GROUP BY session_id;

-- name: charges
-- Money, one row per settlement (or authorization without one), with what is known about it:
--   verified   — the verifier found the settlement on chain (its latest settlement check passed);
--   reported   — the server reported a settlement tx, not (yet) verified on chain;
--   authorized — a signed payment (an exact amount, or a session's cap) with no settlement known.
-- A settlement the verifier found failed (reverted, wrong logs) moved no money and is not counted.
CREATE OR REPLACE TEMP TABLE audit_charges AS
WITH x402 AS (  -- each distinct settlement tx a server reported for a logical call, with its own attempt's payment
    SELECT DISTINCT ON (c.logical_id, tx_key(s.tx_hash)) c.logical_id, tx_key(s.tx_hash) AS tx_hash, p.network,
           p.asset, p.symbol, p.decimals, p.pay_to, p.payer,
           coalesce(s.amount, fixed_amount(p.scheme, p.amount)) AS amount
    FROM settlement_rows() s
    JOIN audit_calls c USING (receipt_id)
    LEFT JOIN payment_rows() p USING (receipt_id)
    WHERE s.tx_hash IS NOT NULL AND c.session_id IS NULL
    ORDER BY c.logical_id, tx_key(s.tx_hash), s.seen_at DESC
)
SELECT r.logical_id AS key, 'x402' AS kind, r.app_name, r.first_seen, x.network, x.asset, x.symbol, x.decimals,
       x.pay_to, x.payer, x.tx_hash AS tx, x.amount,
       CASE r.settlement_result WHEN 'pass' THEN 'verified' WHEN 'fail' THEN 'failed' ELSE 'reported' END AS state
FROM x402 x JOIN audit_receipts r USING (logical_id)
UNION ALL  -- found on chain by the verifier without the server telling (a log scan)
SELECT logical_id, 'x402', app_name, first_seen, network, asset, symbol, decimals, pay_to, payer, verdict_tx,
       CASE WHEN scheme = 'exact' THEN coalesce(max_settled, signed) END, 'verified'
FROM audit_receipts WHERE settlements = 0 AND settlement_result = 'pass' AND session_id IS NULL
UNION ALL  -- signed, nothing settled known
SELECT logical_id, 'x402', app_name, first_seen, network, asset, symbol, decimals, pay_to, payer, NULL,
       signed_amount, 'authorized'
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

-- name: section_usage
-- Tokens and cost per app and model, for every call, paid on chain or billed by API key: the price table's
-- list price of the calls not paid on chain, how many were paid on chain (their money is in the totals
-- below), and how many cost what is not known (never counted as 0).
SELECT app_name, model, count(*) AS receipts, sum(tokens)::BIGINT AS tokens,
       sum(cost) FILTER (WHERE cost_source = 'price_table') AS list_price,
       any_value(cost_currency) FILTER (WHERE cost_source = 'price_table') AS list_currency,
       count(*) FILTER (WHERE cost_source = 'x402') AS paid_on_chain,
       count(*) FILTER (WHERE cost_source = 'unknown') AS cost_unknown
FROM audit_receipts WHERE ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
GROUP BY app_name, model ORDER BY receipts DESC, app_name, model NULLS LAST;

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
       status AS last_status, attempts, network, asset, symbol, decimals, payer, pay_to, amount, txs, verdict_tx,
       session_id, verdict_at
FROM audit_receipts
WHERE (proof_status = 'failed' OR resolution = 'risky')
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
ORDER BY app_name, first_seen, logical_id;

-- name: section_overcharges
-- Paid more than the challenge asked: the signed amount (an exact payment's, or an upto cap) or a
-- settled amount above the amount of the 402's offer the payment answers; or the verifier said so.
SELECT logical_id AS receipt_id, app_name, first_seen, host, network, asset, symbol, decimals, pay_to,
       challenge.amount AS challenge_amount, greatest(signed, max_settled) AS charged,
       greatest(signed, max_settled) - challenge.amount AS excess, scheme, proof_status, resolution, reason
FROM audit_receipts
WHERE (greatest(signed, max_settled) > challenge.amount OR reason = 'overcharged')
  AND ($since IS NULL OR first_seen >= $since) AND ($app IS NULL OR app_name = $app)
ORDER BY app_name, first_seen, logical_id;

-- name: section_never_settled
-- Paid, but no settlement transaction is known: the server reported none and the verifier found none
-- (or found that the reported one is not on chain). A payment answered 402 was refused: nothing to settle.
SELECT logical_id AS key, 'x402' AS kind, app_name, first_seen, host, network, asset, symbol, decimals, payer,
       pay_to, signed_amount AS amount, deadline, txs, proof_status, resolution, reason, 1 AS calls
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
SELECT client, host, count(*) AS refusals, min(ts) AS first_seen, max(ts) AS last_seen,
       arg_max(message, ts) AS message
FROM folded.errors
WHERE kind = 'client_tls_refused' AND ($since IS NULL OR ts >= $since)
GROUP BY ALL ORDER BY refusals DESC, client, host;

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
-- observation of each check, with its detail.
SELECT receipt_id, "check", l.result, l.reason, l.detail::VARCHAR AS detail, observed_at FROM (
    SELECT receipt_id, "check", max(observed_at) AS observed_at,  -- arg_max skips NULLs: pack the fields
           arg_max({'result': result, 'reason': reason, 'detail': detail}, observed_at) AS l
    FROM checks WHERE "check" <> 'verdict' AND receipt_id IN (SELECT id FROM audit_ids)
    GROUP BY receipt_id, "check")
ORDER BY receipt_id, observed_at, "check";
