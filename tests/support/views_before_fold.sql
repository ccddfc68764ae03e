-- THE ORACLE, for tests only: the views as they were before the fold (storage/views.sql at 8c9fdb9),
-- each query re-parsing every event's JSON. tests/storage/test_fold_differential.py checks that the views
-- over the folded tables give the same rows. Remove once the fold has proven itself.
-- Every view users query, in one place. storage/db.py substitutes {journal} (absolute path of the
-- journal directory) and {columns} (the event envelope, storage/layout.py) and runs this file.
-- The views never write: they read sealed JSON segments and compacted Parquet files.

-- Event times are seconds since the epoch; users see naive UTC timestamps.
CREATE OR REPLACE MACRO utc(t) AS make_timestamp(CAST(t * 1000000 AS BIGINT));

-- (The oracle reads the folded `events` table, whose `data` is each event whole, as the journal held it.)
CREATE OR REPLACE VIEW events AS
SELECT id, type, epoch_us(ts) / 1e6 AS ts, receipt_id, writer, seq, data FROM folded.events;

-- Performance note: every `data->>'$.x'` parses the whole JSON document again and DuckDB keeps the
-- parses of a whole vector of rows, so each view extracts all its fields in ONE json_extract_string
-- call (a list, indexed below) per event: several times faster and a fraction of the memory.

-- The request of each exchange, and its logical call (the 402 and its paid retries share one).
CREATE OR REPLACE VIEW requests AS
SELECT receipt_id, ts, j[1] AS logical_id, j FROM (
    SELECT receipt_id, ts, json_extract_string(data, [
        '$.logical_id', '$.client', '$.app', '$.method', '$.scheme', '$.host', '$.port', '$.path', '$.model',  -- 1-9
        '$.body.sha256', '$.body.size', '$.ids.client_request_id', '$.ids.idempotency_key',                 -- 10-13
        '$.payment.payment_identifier', '$.upto_session', '$.settlement_type', '$.source', '$.payment',       -- 14-18
        '$.errors', '$.tee_request_hashes', '$.secrets_in_clear', '$.process.pid', '$.process.exe',          -- 19-23
        '$.process.cmdline', '$.app_name']) AS j                                                               -- 24-25
    FROM events WHERE type = 'request');

-- One row per HTTP exchange the recorder saw.
CREATE OR REPLACE VIEW calls AS
WITH resp AS (
    SELECT receipt_id, max(ts) AS ts, arg_max(json_extract_string(data, [
        '$.status', '$.latency_ms', '$.model', '$.usage.prompt_tokens', '$.usage.completion_tokens',             -- 1-5
        '$.usage.total_tokens', '$.stream', '$.body.sha256', '$.body.size', '$.provider_request_id',            -- 6-10
        '$.response_id', '$.og.upto_session', '$.tee.tee_id', '$.tee.tee_timestamp', '$.tee.tee_request_hash',   -- 11-15
        '$.tee.tee_output_hash', '$.tee.tee_signature', '$.og.settlement_tx_hash', '$.og.walrus_blob_id',        -- 16-19
        '$.og.processing_hash', '$.usage', '$.errors', '$.upstream.result', '$.upstream.tee_id',                -- 20-24
        '$.tee_output_seen', '$.request_body.sha256', '$.request_body.size']), ts) AS p                          -- 25-27
    FROM events WHERE type = 'response' GROUP BY receipt_id
), fin AS (
    SELECT receipt_id, max(ts) AS ts, arg_max(json_extract_string(data, [
        '$.latency_ms', '$.model', '$.usage.prompt_tokens', '$.usage.completion_tokens', '$.usage.total_tokens', -- 1-5
        '$.bytes', '$.id', '$.tee.tee_id', '$.tee.tee_timestamp', '$.tee.tee_request_hash',                      -- 6-10
        '$.tee.tee_output_hash', '$.tee.tee_signature', '$.og.settlement_tx_hash', '$.og.walrus_blob_id',        -- 11-14
        '$.output_text_sha256', '$.done', '$.usage', '$.errors', '$.output_text_keccak',                       -- 15-19
        '$.sha256', '$.request_body.sha256', '$.request_body.size']), ts) AS f                                   -- 20-22
    FROM events WHERE type = 'stream_end' GROUP BY receipt_id
), err AS (
    SELECT receipt_id, max(ts) AS ts, arg_max(json_extract_string(data, ['$.kind', '$.message']), ts) AS e
    FROM events WHERE type = 'error' GROUP BY receipt_id
), joined AS (
SELECT
    r.receipt_id,
    r.logical_id,
    utc(r.ts)                                                        AS started_at,
    utc(greatest(resp.ts, fin.ts, err.ts))                           AS ended_at,
    r.j[2]                                                           AS client,
    r.j[3]                                                           AS app,
    coalesce(r.j[25], r.j[3], r.j[2])                                AS app_name,
    TRY_CAST(r.j[22] AS INTEGER)                                     AS client_pid,
    r.j[23]                                                          AS client_exe,
    r.j[24]                                                          AS client_cmdline,
    TRY_CAST(r.j[21] AS VARCHAR[])                                   AS secrets_in_clear,
    r.j[4]                                                           AS method,
    r.j[5]                                                           AS scheme,
    r.j[6]                                                           AS host,
    TRY_CAST(r.j[7] AS INTEGER)                                      AS port,
    r.j[8]                                                           AS path,
    TRY_CAST(resp.p[1] AS INTEGER)                                   AS status,
    TRY_CAST(coalesce(fin.f[1], resp.p[2]) AS DOUBLE)                AS latency_ms,
    coalesce(fin.f[2], resp.p[3], r.j[9])                            AS model,
    CASE WHEN fin.f[17] IS NOT NULL THEN [fin.f[3], fin.f[4], fin.f[5]]
         ELSE [resp.p[4], resp.p[5], resp.p[6]] END                  AS _usage,
    TRY_CAST(_usage[1] AS BIGINT)                                    AS prompt_tokens,
    TRY_CAST(_usage[2] AS BIGINT)                                    AS completion_tokens,
    TRY_CAST(_usage[3] AS BIGINT)                                    AS total_tokens,
    CASE WHEN resp.receipt_id IS NULL THEN NULL
         WHEN coalesce(fin.f[17], resp.p[21]) IS NULL THEN 'missing'
         ELSE 'provider' END                                         AS usage_source,
    coalesce(TRY_CAST(resp.p[7] AS BOOLEAN), false)                  AS stream,
    coalesce(err.e[1] || ': ' || err.e[2],
             CASE WHEN fin.receipt_id IS NOT NULL AND NOT coalesce(TRY_CAST(fin.f[16] AS BOOLEAN), false)
                  THEN 'stream_incomplete' END)                      AS error,
    coalesce(r.j[10], resp.p[26], fin.f[21])                         AS request_sha256,  -- streamed uploads:
    TRY_CAST(coalesce(r.j[11], resp.p[27], fin.f[22]) AS BIGINT)     AS request_bytes,   -- told with the answer
    coalesce(resp.p[8], fin.f[20])                                   AS response_sha256,
    TRY_CAST(coalesce(fin.f[6], resp.p[9]) AS BIGINT)                AS response_bytes,
    r.j[12]                                                          AS client_request_id,
    r.j[13]                                                          AS idempotency_key,
    r.j[14]                                                          AS payment_identifier,
    resp.p[10]                                                       AS provider_request_id,
    coalesce(fin.f[7], resp.p[11])                                   AS response_id,
    r.j[18] IS NOT NULL                                              AS paid,
    coalesce(r.j[15], resp.p[12])                                    AS upto_session,
    r.j[16]                                                          AS settlement_type,
    coalesce(fin.f[8], resp.p[13])                                   AS tee_id,
    TRY_CAST(coalesce(fin.f[9], resp.p[14]) AS BIGINT)               AS tee_timestamp,
    coalesce(fin.f[10], resp.p[15])                                  AS tee_request_hash,
    coalesce(fin.f[11], resp.p[16])                                  AS tee_output_hash,
    coalesce(fin.f[12], resp.p[17])                                  AS tee_signature,
    coalesce(fin.f[13], resp.p[18])                                  AS og_settlement_tx_hash,
    coalesce(fin.f[14], resp.p[19])                                  AS og_walrus_blob_id,
    resp.p[20]                                                       AS processing_hash,
    fin.f[15]                                                        AS output_text_sha256,
    r.j[20]::JSON                                                    AS tee_request_hashes,
    coalesce(fin.f[19], resp.p[25])                                  AS tee_output_seen,
    resp.p[23]                                                       AS upstream_pin,
    resp.p[24]                                                       AS upstream_tee_id,
    list_concat(
        coalesce(TRY_CAST(r.j[19] AS VARCHAR[]), []),
        coalesce(TRY_CAST(resp.p[22] AS VARCHAR[]), []),
        coalesce(TRY_CAST(fin.f[18] AS VARCHAR[]), []))              AS parse_errors,
    r.j[17]                                                          AS source
FROM requests r
LEFT JOIN resp USING (receipt_id)
LEFT JOIN fin USING (receipt_id)
LEFT JOIN err USING (receipt_id)
)
SELECT * EXCLUDE (_usage) FROM joined;

-- x402 terms offered in 402 answers: one row per `accepts` entry.
CREATE OR REPLACE VIEW challenges AS
WITH c AS (
    SELECT receipt_id, ts, json_extract_string(data, ['$.challenge.x402_version', '$.challenge.source',
                                                      '$.challenge.error', '$.challenge.accepts']) AS c
    FROM events WHERE type = 'response' AND json_extract_string(data, '$.challenge.accepts') IS NOT NULL
)
SELECT
    c.receipt_id,
    r.logical_id,
    utc(c.ts)                                       AS seen_at,
    TRY_CAST(c.c[1] AS INTEGER)                     AS x402_version,
    c.c[2]                                          AS source,
    c.c[3]                                          AS error,
    a[1] AS scheme, a[2] AS network, a[3] AS asset, TRY_CAST(a[4] AS HUGEINT) AS amount, a[5] AS pay_to,
    TRY_CAST(a[6] AS BIGINT) AS max_timeout_seconds, a[7] AS resource, a[8] AS asset_name, a[9] AS asset_version
FROM c
JOIN requests r USING (receipt_id)
CROSS JOIN LATERAL (
    SELECT json_extract_string(value, ['$.scheme', '$.network', '$.asset', '$.amount', '$.pay_to',
                                       '$.max_timeout_seconds', '$.resource', '$.extra.name', '$.extra.version']) AS a
    FROM (SELECT unnest(TRY_CAST(c.c[4] AS JSON[])) AS value));

-- Signed x402 payments sent by clients (decoded, non-secret fields; the header is kept as a hash).
CREATE OR REPLACE VIEW payments AS
SELECT
    receipt_id, logical_id, utc(ts) AS sent_at,
    TRY_CAST(p[1] AS INTEGER) AS x402_version, p[2] AS header, p[3] AS scheme, p[4] AS kind, p[5] AS network,
    p[6] AS payer, p[7] AS pay_to, p[8] AS asset, TRY_CAST(p[9] AS HUGEINT) AS amount,
    TRY_CAST(p[10] AS INTEGER) AS decimals, p[11] AS symbol, p[12] AS nonce,
    TRY_CAST(p[13] AS BIGINT) AS valid_after, TRY_CAST(p[14] AS BIGINT) AS valid_before,
    TRY_CAST(p[15] AS BIGINT) AS deadline, p[16] AS spender, p[17] AS facilitator, p[18] AS payment_identifier,
    p[19] AS header_sha256, p[20] AS signature_sha256, p[21] AS signer, p[22] AS signer_error,
    TRY_CAST(p[23] AS VARCHAR[]) AS errors
FROM (
    SELECT receipt_id, logical_id, ts, json_extract_string(j[18], [
        '$.x402_version', '$.header', '$.scheme', '$.kind', '$.network', '$.payer', '$.pay_to', '$.asset',
        '$.amount', '$.decimals', '$.symbol', '$.nonce', '$.valid_after', '$.valid_before', '$.deadline',
        '$.spender', '$.facilitator', '$.payment_identifier', '$.header_sha256', '$.signature_sha256',
        '$.signer', '$.signer_error', '$.errors']) AS p
    FROM requests WHERE j[18] IS NOT NULL);

-- Settlement results servers returned (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE).
CREATE OR REPLACE VIEW settlements AS
SELECT
    s.receipt_id, r.logical_id, utc(s.ts) AS seen_at,
    x[1] AS header, TRY_CAST(x[2] AS BOOLEAN) AS success, x[3] AS tx_hash, x[4] AS job_id, x[5] AS network,
    x[6] AS payer, TRY_CAST(x[7] AS HUGEINT) AS amount, x[8] AS error_reason, x[9] AS error_message,
    TRY_CAST(x[10] AS VARCHAR[]) AS errors
FROM (
    SELECT receipt_id, ts, json_extract_string(data, [
        '$.settlement.header', '$.settlement.success', '$.settlement.tx_hash', '$.settlement.job_id',
        '$.settlement.network', '$.settlement.payer', '$.settlement.amount', '$.settlement.error_reason',
        '$.settlement.error_message', '$.settlement.errors']) AS x
    FROM events WHERE type = 'response' AND json_extract_string(data, '$.settlement.header') IS NOT NULL) s
JOIN requests r USING (receipt_id);

-- Verifier observations (written by `receipts verify`).
CREATE OR REPLACE VIEW checks AS
SELECT
    receipt_id, x[1] AS "check", x[2] AS result, x[3] AS proof_status, x[4] AS resolution, x[5] AS reason,
    x[6]::JSON AS detail, TRY_CAST(x[7] AS BIGINT) AS block, x[8] AS tx,
    TRY_CAST(x[9] AS HUGEINT) AS session_amount, utc(ts) AS observed_at
FROM (  -- a check event holds a list: the checks that changed in one pass, and the verdict if it did
    SELECT receipt_id, ts, json_extract_string(c, ['$.check', '$.result', '$.status', '$.resolution',
                                                   '$.reason', '$.detail', '$.block', '$.tx',
                                                   '$.session_amount']) AS x
    FROM (SELECT receipt_id, ts, unnest(TRY_CAST(json_extract(data, '$.checks') AS JSON[])) AS c
          FROM events WHERE type = 'check'));

-- OpenGradient upto sessions: the payment that opened each one (its request paid, its answer named the
-- session in X-Upto-Session) and the calls made under it, until a 402 ended it.
CREATE OR REPLACE VIEW sessions AS
WITH member AS (
    SELECT receipt_id, logical_id, upto_session AS session_id, started_at, status, paid, payment_identifier
    FROM calls WHERE upto_session IS NOT NULL
), opener AS (
    SELECT m.session_id, arg_min({'logical_id': p.logical_id, 'payer': p.payer, 'pay_to': p.pay_to,
                                  'asset': p.asset, 'network': p.network, 'scheme': p.scheme, 'amount': p.amount,
                                  'nonce': p.nonce, 'deadline': coalesce(p.deadline, p.valid_before),
                                  'valid_after': p.valid_after, 'facilitator': p.facilitator,
                                  'spender': p.spender, 'decimals': p.decimals, 'symbol': p.symbol,
                                  'signer': p.signer, 'sent_at': p.sent_at}, p.sent_at) AS o
    FROM member m JOIN payments p USING (receipt_id) GROUP BY m.session_id
), span AS (
    SELECT session_id, count(*) FILTER (WHERE status < 400) AS calls, min(started_at) AS first_call_at,
           max(started_at) FILTER (WHERE status < 400) AS last_call_at,
           min(started_at) FILTER (WHERE status = 402 AND NOT paid) AS ended_at
    FROM member GROUP BY session_id
)
SELECT span.session_id, o.logical_id AS opened_by, o.sent_at AS opened_at, o.payer, o.pay_to, o.asset, o.network,
       o.scheme, o.amount AS amount_cap, o.decimals, o.symbol, o.nonce, o.deadline, o.valid_after, o.facilitator,
       o.spender, o.signer, span.calls, span.first_call_at, span.last_call_at, span.ended_at
FROM span LEFT JOIN opener USING (session_id);

-- One row per logical call: the 402 challenge, the paid attempt and any retries together.
CREATE OR REPLACE VIEW receipts AS
WITH c AS (SELECT * FROM calls),
grp AS (
    SELECT
        logical_id,
        count(*)                                                   AS attempts,
        min(started_at)                                            AS first_seen,
        max(coalesce(ended_at, started_at))                        AS last_seen,
        arg_max(status, started_at)                                AS status,
        arg_max(model, started_at) FILTER (WHERE model IS NOT NULL) AS model,
        arg_max(total_tokens, started_at) FILTER (WHERE total_tokens IS NOT NULL) AS total_tokens,
        arg_max(host, started_at)                                  AS host,
        arg_max(path, started_at)                                  AS path,
        arg_max(app, started_at)                                   AS app,
        arg_max(app_name, started_at)                              AS app_name,
        arg_max(client_pid, started_at)                            AS client_pid,
        arg_max(client, started_at)                                AS client,
        first(coalesce(client_request_id, idempotency_key, payment_identifier) ORDER BY started_at)
            FILTER (WHERE coalesce(client_request_id, idempotency_key, payment_identifier) IS NOT NULL) AS client_id,
        arg_max(coalesce(provider_request_id, response_id), started_at)
            FILTER (WHERE coalesce(provider_request_id, response_id) IS NOT NULL) AS provider_id,
        arg_max(upto_session, started_at) FILTER (WHERE upto_session IS NOT NULL) AS session_id,
        arg_max(settlement_type, started_at) FILTER (WHERE settlement_type IS NOT NULL) AS settlement_type,
        arg_max(tee_id, started_at) FILTER (WHERE tee_id IS NOT NULL) AS tee_id,
        arg_max(tee_timestamp, started_at) FILTER (WHERE tee_id IS NOT NULL) AS tee_timestamp,
        arg_max(og_settlement_tx_hash, started_at) FILTER (WHERE og_settlement_tx_hash IS NOT NULL) AS anchor_tx,
        arg_max(og_walrus_blob_id, started_at) FILTER (WHERE og_walrus_blob_id IS NOT NULL) AS anchor_blob_id
    FROM c GROUP BY logical_id
), idlist AS (  -- every id that finds the logical call, from every attempt and every settlement
    SELECT logical_id, list(DISTINCT lower(x)) FILTER (WHERE x IS NOT NULL) AS _ids
    FROM (
        SELECT logical_id, x FROM c, LATERAL unnest([receipt_id, client_request_id, idempotency_key, payment_identifier,
                                  provider_request_id, response_id, upto_session, og_settlement_tx_hash]) AS u(x)
        UNION ALL
        SELECT logical_id, x FROM settlements, LATERAL unnest([tx_hash, job_id]) AS u(x)
        UNION ALL
        SELECT logical_id, x FROM payments, LATERAL unnest([payer, nonce]) AS u(x)
    )
    GROUP BY logical_id
), pay AS (
    SELECT logical_id, arg_max(COLUMNS(* EXCLUDE (logical_id, receipt_id)), sent_at), count(*) AS payments
    FROM payments GROUP BY logical_id
), chal AS (
    SELECT logical_id, arg_max(amount, seen_at) AS max_amount_required, arg_max(network, seen_at) AS challenge_network,
           arg_max(pay_to, seen_at) AS challenge_pay_to, arg_max(asset, seen_at) AS challenge_asset
    FROM challenges GROUP BY logical_id
), settle AS (
    SELECT logical_id,
           arg_max(tx_hash, seen_at) FILTER (WHERE tx_hash IS NOT NULL) AS tx_hash,
           arg_max(job_id, seen_at) FILTER (WHERE job_id IS NOT NULL)   AS job_id,
           arg_max(amount, seen_at) FILTER (WHERE amount IS NOT NULL)   AS amount,
           arg_max(payer, seen_at)                                      AS payer,
           arg_max(network, seen_at)                                    AS network,
           bool_or(success)                                             AS success,
           count(DISTINCT tx_hash)                                      AS settlements
    FROM settlements GROUP BY logical_id
), last_check AS (  -- the latest verdict, as a whole (arg_max skips NULLs, so pack the fields)
    SELECT logical_id, v.proof_status, v.resolution, v.reason, v.tx, v.session_amount FROM (
        SELECT receipt_id AS logical_id,
               arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason, 'tx': tx,
                        'session_amount': session_amount},
                       observed_at) AS v
        FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id)
), trust AS (  -- what the latest passing settlement check rested on: single-node, or quorum-N endpoints
    SELECT receipt_id AS logical_id, arg_max(detail->>'trust', observed_at) AS trust
    FROM checks WHERE "check" IN ('settlement_tx', 'session_settlement') AND result = 'pass' GROUP BY receipt_id
), sess AS (SELECT * FROM sessions)
SELECT
    grp.logical_id                                                  AS receipt_id,
    coalesce(grp.client_id, grp.provider_id)                        AS request_id,
    coalesce(settle.tx_hash, last_check.tx)                         AS payment_hash,
    coalesce(pay.payer, settle.payer, sess.payer)                   AS payer,
    coalesce(pay.pay_to, sess.pay_to)                               AS pay_to,
    coalesce(pay.asset, sess.asset)                                 AS asset,
    coalesce(settle.amount, CASE WHEN pay.scheme = 'exact' THEN pay.amount END) AS amount,
    CASE WHEN coalesce(pay.scheme, sess.scheme) = 'upto' THEN coalesce(pay.amount, sess.amount_cap) END AS amount_cap,
    chal.max_amount_required,
    coalesce(pay.decimals, sess.decimals)                           AS decimals,
    coalesce(pay.symbol, sess.symbol)                               AS symbol,
    coalesce(pay.network, settle.network, chal.challenge_network, sess.network) AS network,
    coalesce(pay.scheme, sess.scheme)                               AS scheme,
    pay.kind,
    coalesce(pay.nonce, sess.nonce)                                 AS nonce,
    pay.valid_after,
    pay.valid_before,
    pay.sent_at                                                     AS paid_at,
    pay.signer,
    pay.signer_error,
    chal.challenge_pay_to,
    chal.challenge_network,
    chal.challenge_asset,
    CASE WHEN pay.scheme = 'exact' THEN pay.amount END             AS signed_amount,
    coalesce(pay.payments, 0)                                       AS payment_count,
    coalesce(settle.settlements, 0)                                 AS settlement_count,
    grp.session_id,
    sess.opened_by                                                  AS session_opened_by,
    sess.calls                                                      AS session_calls,
    sess.deadline                                                   AS session_deadline,
    last_check.session_amount,
    grp.settlement_type,
    grp.tee_id,
    grp.tee_timestamp,
    grp.anchor_tx,
    grp.anchor_blob_id,
    grp.model,
    grp.total_tokens,
    grp.status,
    grp.attempts,
    coalesce(last_check.proof_status,
             CASE WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
                       OR grp.session_id IS NOT NULL THEN 'pending' ELSE 'unpaid' END) AS proof_status,
    last_check.resolution,
    CASE WHEN last_check.logical_id IS NOT NULL THEN last_check.reason
         WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
              OR grp.session_id IS NOT NULL THEN 'not_verified' END     AS reason,
    CASE WHEN last_check.proof_status = 'passed' THEN trust.trust END AS trust,
    grp.first_seen,
    grp.last_seen,
    settle.job_id                                                   AS settlement_job_id,
    settle.success                                                  AS settlement_success,
    grp.host,
    grp.path,
    grp.app,
    grp.app_name,
    grp.client_pid,
    grp.client,
    list_distinct(list_concat(idlist._ids, [lower(grp.logical_id)],
        list_filter([lower(settle.tx_hash), lower(settle.job_id), lower(pay.payer), lower(pay.nonce)], lambda x: x IS NOT NULL))) AS ids
FROM grp
JOIN idlist USING (logical_id)
LEFT JOIN pay USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN settle USING (logical_id)
LEFT JOIN last_check USING (logical_id)
LEFT JOIN trust USING (logical_id)
LEFT JOIN sess ON sess.session_id = grp.session_id;
