-- `receipts audit`: every figure of the audit report, in one place. storage/audit.py runs the statements
-- below in order (each starts with a `-- name:` line); those named `section_*` return the report's rows.
-- Parameters of the sections: $since (TIMESTAMP, UTC, or NULL) and $app (an app_name, or NULL).
--
-- The audit reads no journal: it queries the views of storage/views.sql (payments, settlements,
-- challenges, checks) and, where a view is too slow, the folded tables under them (storage/fold.sql):
-- the `calls` view packs every field of the latest response and stream end (a struct of ~30 fields per
-- exchange, ~4x the time of the few fields the audit needs), and the `receipts` view gathers every id of
-- every attempt (`ids`): at a million calls they take tens of seconds. So `audit_calls` and
-- `audit_receipts` below follow those views' rules for the columns the audit needs, and
-- tests/storage/test_audit_fold.py checks that they give the views' values, row for row.

-- name: calls
-- One row per HTTP exchange, as the `calls` view folds it (its request, the latest response, stream end
-- and error): the columns the report needs.
CREATE OR REPLACE TEMP TABLE audit_calls AS
WITH resp AS (
    SELECT receipt_id, arg_max({'status': status, 'model': model, 'has_usage': has_usage,
                                'upto_session': og_upto_session}, ts) AS p
    FROM folded.responses GROUP BY receipt_id
), fin AS (
    SELECT receipt_id, arg_max({'model': model, 'has_usage': has_usage, 'done': done}, ts) AS f
    FROM folded.stream_ends GROUP BY receipt_id
), err AS (
    SELECT receipt_id, arg_max({'kind': kind, 'message': message}, ts) AS e FROM folded.errors GROUP BY receipt_id
)
SELECT
    r.receipt_id,
    r.logical_id,
    r.ts                                                               AS started_at,
    coalesce(r.app_name, r.app, r.client)                              AS app_name,
    r.client_exe                                                       AS exe,
    r.host, r.port, r.path,
    coalesce(fin.f.model, resp.p.model, r.model)                       AS model,
    r.secrets_in_clear,
    r.paid,
    coalesce(r.upto_session, resp.p.upto_session)                      AS session_id,
    resp.p.status,
    CASE WHEN resp.receipt_id IS NULL THEN NULL
         WHEN coalesce(fin.f.has_usage, false) OR resp.p.has_usage THEN 'provider'
         ELSE 'missing' END                                            AS usage_source,
    coalesce(err.e.kind || ': ' || err.e.message,
             CASE WHEN fin.receipt_id IS NOT NULL AND NOT fin.f.done THEN 'stream_incomplete' END) AS error
FROM folded.requests r
LEFT JOIN resp USING (receipt_id)
LEFT JOIN fin USING (receipt_id)
LEFT JOIN err USING (receipt_id);

-- name: receipts
-- One row per logical call, as the `receipts` view folds it (its attempts, the latest payment, the
-- settlements, the latest verdict), with what the audit adds:
--   challenge         — the offer of the latest 402 that the payment answers: the one for the payment's
--                       asset and network (the last such entry), else the first entry;
--   signed            — the payment's own amount, whatever its scheme (an upto payment's: its cap);
--   max_settled       — the largest amount a settlement reported (an overcharge in any settlement counts);
--   txs               — the settlement transactions, lower case;
--   settlement_result — the latest result of its settlement check (`settlement_tx`, or an OpenGradient
--                       session's `session_settlement`), and when it was observed.
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
        arg_max(session_id, started_at) FILTER (WHERE session_id IS NOT NULL) AS session_id
    FROM audit_calls GROUP BY logical_id
), pay AS (  -- as the view's `pay`: each field from the latest payment that has it
    SELECT logical_id, count(*) AS payments, arg_max(scheme, sent_at) AS scheme, arg_max(network, sent_at) AS network,
           arg_max(payer, sent_at) AS payer, arg_max(pay_to, sent_at) AS pay_to, arg_max(asset, sent_at) AS asset,
           arg_max(amount, sent_at) AS amount, arg_max(decimals, sent_at) AS decimals,
           arg_max(symbol, sent_at) AS symbol, arg_max(deadline, sent_at) AS deadline,
           arg_max(valid_before, sent_at) AS valid_before
    FROM payments GROUP BY logical_id
), settle AS (
    SELECT logical_id,
           count(DISTINCT tx_hash)                                     AS settlements,
           list(DISTINCT lower(tx_hash) ORDER BY lower(tx_hash)) FILTER (WHERE tx_hash IS NOT NULL) AS txs,
           arg_max(amount, seen_at) FILTER (WHERE amount IS NOT NULL)  AS amount,
           max(amount)                                                 AS max_settled,
           arg_max(payer, seen_at)                                     AS payer,
           arg_max(network, seen_at)                                   AS network
    FROM settlements GROUP BY logical_id
), last_offers AS (  -- the entries of each logical call's latest 402 (ties: the latest receipt_id)
    SELECT * FROM challenges
    QUALIFY dense_rank() OVER (PARTITION BY logical_id ORDER BY seen_at DESC, receipt_id DESC) = 1
), chal AS (
    SELECT o.logical_id,
           coalesce(arg_max(o, o.item) FILTER (WHERE lower(o.asset) = lower(pay.asset) AND o.network = pay.network),
                    arg_min(o, o.item)) AS c
    FROM last_offers o LEFT JOIN pay USING (logical_id) GROUP BY o.logical_id
), chal_net AS (  -- the view's challenge_network: the latest 402's (any entry)
    SELECT logical_id, arg_max(network, seen_at) AS network FROM challenges GROUP BY logical_id
), verdict AS (  -- the view's last_check, with when it was observed
    SELECT receipt_id AS logical_id, max(observed_at) AS verdict_at,
           arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason, 'tx': tx,
                    'session_amount': session_amount}, observed_at) AS v
    FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id
), settled_check AS (
    SELECT receipt_id AS logical_id, max(observed_at) AS settlement_at, arg_max(result, observed_at) AS result
    FROM checks WHERE "check" IN ('settlement_tx', 'session_settlement') GROUP BY receipt_id
), sess AS (  -- as the `sessions` view: the session's first payment (over the members' exchanges)
    SELECT c.session_id, arg_min({'payer': p.payer, 'pay_to': p.pay_to, 'asset': p.asset, 'network': p.network,
                                  'scheme': p.scheme, 'amount': p.amount, 'decimals': p.decimals,
                                  'symbol': p.symbol, 'deadline': coalesce(p.deadline, p.valid_before)},
                                 p.sent_at) AS s
    FROM audit_calls c JOIN payments p USING (receipt_id) WHERE c.session_id IS NOT NULL GROUP BY c.session_id
)
SELECT
    g.logical_id, g.first_seen, g.attempts, g.status, g.app_name, g.host, g.path, g.model, g.session_id,
    coalesce(pay.payments, 0)                                          AS payments,
    coalesce(settle.settlements, 0)                                    AS settlements,
    settle.txs,
    coalesce(pay.payer, settle.payer, sess.s.payer)                    AS payer,
    coalesce(pay.pay_to, sess.s.pay_to)                                AS pay_to,
    coalesce(pay.asset, sess.s.asset)                                  AS asset,
    coalesce(pay.network, settle.network, chal_net.network, sess.s.network) AS network,
    coalesce(pay.scheme, sess.s.scheme)                                AS scheme,
    coalesce(pay.decimals, sess.s.decimals)                            AS decimals,
    coalesce(pay.symbol, sess.s.symbol)                                AS symbol,
    coalesce(pay.deadline, pay.valid_before, sess.s.deadline)          AS deadline,
    coalesce(settle.amount, CASE WHEN pay.scheme = 'exact' THEN pay.amount END) AS amount,
    CASE WHEN pay.scheme = 'exact' THEN pay.amount END                 AS signed_amount,
    pay.amount                                                         AS signed,
    settle.max_settled,
    chal.c                                                             AS challenge,
    coalesce(verdict.v.proof_status,
             CASE WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
                       OR g.session_id IS NOT NULL THEN 'pending' ELSE 'unpaid' END) AS proof_status,
    verdict.v.resolution,
    CASE WHEN verdict.logical_id IS NOT NULL THEN verdict.v.reason
         WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
              OR g.session_id IS NOT NULL THEN 'not_verified' END      AS reason,
    verdict.verdict_at,
    verdict.v.tx                                                       AS verdict_tx,
    verdict.v.session_amount,
    settled_check.result                                               AS settlement_result,
    settled_check.settlement_at
FROM g
LEFT JOIN pay USING (logical_id)
LEFT JOIN settle USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN chal_net USING (logical_id)
LEFT JOIN verdict USING (logical_id)
LEFT JOIN settled_check USING (logical_id)
LEFT JOIN sess ON sess.session_id = g.session_id;

-- name: sessions
-- OpenGradient upto sessions: the opening payment (payer, payee, asset, cap, deadline) as the `sessions`
-- view finds it, the session's calls as it counts them (its exchanges answered below 400), and the
-- session's one settlement as the verifier found it (the latest settlement check of its receipts).
CREATE OR REPLACE TEMP TABLE audit_sessions AS
WITH opener AS (
    SELECT c.session_id, arg_min({'network': p.network, 'payer': p.payer, 'pay_to': p.pay_to, 'asset': p.asset,
                                  'amount': p.amount, 'decimals': p.decimals, 'symbol': p.symbol,
                                  'deadline': coalesce(p.deadline, p.valid_before)}, p.sent_at) AS p
    FROM audit_calls c JOIN payments p USING (receipt_id) WHERE c.session_id IS NOT NULL GROUP BY c.session_id
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
    SELECT DISTINCT ON (s.logical_id, lower(s.tx_hash)) s.logical_id, lower(s.tx_hash) AS tx_hash, p.network,
           p.asset, p.symbol, p.decimals, p.pay_to, p.payer,
           coalesce(s.amount, CASE WHEN p.scheme = 'exact' THEN p.amount END) AS amount
    FROM settlements s
    JOIN audit_calls c USING (receipt_id)
    LEFT JOIN payments p USING (receipt_id)
    WHERE s.tx_hash IS NOT NULL AND c.session_id IS NULL
    ORDER BY s.logical_id, lower(s.tx_hash), s.seen_at DESC
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
