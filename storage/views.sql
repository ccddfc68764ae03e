-- Every view users query, in one place. storage/db.py substitutes {journal} (absolute path of the
-- journal directory) and {columns} (the event envelope, storage/layout.py) and runs this file.
-- The views never write: they read sealed JSON segments and compacted Parquet files.

-- Event times are seconds since the epoch; users see naive UTC timestamps.
CREATE OR REPLACE MACRO utc(t) AS make_timestamp(CAST(t * 1000000 AS BIGINT));

-- All events, each exactly once. Parquet is read once (materialized) and a JSON event whose id is
-- already in Parquet (compacted, still inside its grace period) is dropped.
CREATE OR REPLACE VIEW events AS
WITH parquet AS MATERIALIZED (
    SELECT id, type, ts, receipt_id, writer, seq, data
    FROM read_parquet('{journal}/parquet/*/*.parquet')
)
SELECT * FROM parquet
UNION ALL
SELECT id, type, ts, receipt_id, writer, seq, data
FROM read_json('{journal}/*.jsonl', format = 'newline_delimited', columns = {columns})
WHERE id NOT IN (SELECT id FROM parquet);

-- One row per HTTP exchange the recorder saw.
CREATE OR REPLACE VIEW calls AS
WITH req AS (
    SELECT receipt_id, ts, data FROM events WHERE type = 'request'
), resp AS (
    SELECT receipt_id, arg_max(data, ts) AS data, max(ts) AS ts FROM events WHERE type = 'response' GROUP BY receipt_id
), fin AS (
    SELECT receipt_id, arg_max(data, ts) AS data, max(ts) AS ts FROM events WHERE type = 'stream_end' GROUP BY receipt_id
), err AS (
    SELECT receipt_id, arg_max(data, ts) AS data, max(ts) AS ts FROM events WHERE type = 'error' GROUP BY receipt_id
), joined AS (
SELECT
    req.receipt_id,
    req.data->>'$.logical_id'                                        AS logical_id,
    utc(req.ts)                                             AS started_at,
    utc(greatest(resp.ts, fin.ts, err.ts))                  AS ended_at,
    req.data->>'$.client'                                            AS client,
    req.data->>'$.app'                                               AS app,
    req.data->>'$.method'                                            AS method,
    req.data->>'$.scheme'                                            AS scheme,
    req.data->>'$.host'                                              AS host,
    (req.data->>'$.port')::INTEGER                                   AS port,
    req.data->>'$.path'                                              AS path,
    (resp.data->>'$.status')::INTEGER                                AS status,
    coalesce((fin.data->>'$.latency_ms')::DOUBLE,
             (resp.data->>'$.latency_ms')::DOUBLE)                   AS latency_ms,
    coalesce(fin.data->>'$.model', resp.data->>'$.model', req.data->>'$.model') AS model,
    coalesce(fin.data->'$.usage', resp.data->'$.usage')              AS _usage,
    (_usage->>'$.prompt_tokens')::BIGINT                             AS prompt_tokens,
    (_usage->>'$.completion_tokens')::BIGINT                         AS completion_tokens,
    (_usage->>'$.total_tokens')::BIGINT                              AS total_tokens,
    CASE WHEN resp.receipt_id IS NULL THEN NULL
         WHEN _usage IS NULL OR json_type(_usage) = 'NULL' THEN 'missing'
         ELSE 'provider' END                                         AS usage_source,
    coalesce((resp.data->>'$.stream')::BOOLEAN, false)               AS stream,
    coalesce(err.data->>'$.kind' || ': ' || (err.data->>'$.message'),
             CASE WHEN fin.receipt_id IS NOT NULL AND NOT (fin.data->>'$.done')::BOOLEAN
                  THEN 'stream_incomplete' END)                      AS error,
    req.data->>'$.body.sha256'                                       AS request_sha256,
    (req.data->>'$.body.size')::BIGINT                               AS request_bytes,
    resp.data->>'$.body.sha256'                                      AS response_sha256,
    coalesce((fin.data->>'$.bytes')::BIGINT, (resp.data->>'$.body.size')::BIGINT) AS response_bytes,
    req.data->>'$.ids.client_request_id'                             AS client_request_id,
    req.data->>'$.ids.idempotency_key'                               AS idempotency_key,
    req.data->>'$.payment.payment_identifier'                        AS payment_identifier,
    resp.data->>'$.provider_request_id'                              AS provider_request_id,
    coalesce(fin.data->>'$.id', resp.data->>'$.response_id')         AS response_id,
    (req.data->'$.payment') IS NOT NULL AND json_type(req.data->'$.payment') <> 'NULL' AS paid,
    coalesce(req.data->>'$.upto_session', resp.data->>'$.og.upto_session') AS upto_session,
    req.data->>'$.settlement_type'                                   AS settlement_type,
    coalesce(fin.data->'$.tee', resp.data->'$.tee')                  AS _tee,
    _tee->>'$.tee_id'                                                AS tee_id,
    (_tee->>'$.tee_timestamp')::BIGINT                               AS tee_timestamp,
    _tee->>'$.tee_request_hash'                                      AS tee_request_hash,
    _tee->>'$.tee_output_hash'                                       AS tee_output_hash,
    _tee->>'$.tee_signature'                                         AS tee_signature,
    coalesce(fin.data->>'$.og.settlement_tx_hash', resp.data->>'$.og.settlement_tx_hash') AS og_settlement_tx_hash,
    coalesce(fin.data->>'$.og.walrus_blob_id', resp.data->>'$.og.walrus_blob_id')         AS og_walrus_blob_id,
    resp.data->>'$.og.processing_hash'                               AS processing_hash,
    fin.data->>'$.output_text_sha256'                                AS output_text_sha256,
    list_concat(
        coalesce(CAST(req.data->'$.errors' AS VARCHAR[]), []),
        coalesce(CAST(resp.data->'$.errors' AS VARCHAR[]), []),
        coalesce(CAST(fin.data->'$.errors' AS VARCHAR[]), []))       AS parse_errors,
    req.data->>'$.source'                                            AS source
FROM req
LEFT JOIN resp USING (receipt_id)
LEFT JOIN fin USING (receipt_id)
LEFT JOIN err USING (receipt_id)
)
SELECT * EXCLUDE (_usage, _tee) FROM joined;

-- x402 terms offered in 402 answers: one row per `accepts` entry.
CREATE OR REPLACE VIEW challenges AS
SELECT
    e.receipt_id,
    r.data->>'$.logical_id'                         AS logical_id,
    utc(e.ts)                              AS seen_at,
    (e.data->>'$.challenge.x402_version')::INTEGER  AS x402_version,
    e.data->>'$.challenge.source'                   AS source,
    e.data->>'$.challenge.error'                    AS error,
    a.value->>'$.scheme'                            AS scheme,
    a.value->>'$.network'                           AS network,
    a.value->>'$.asset'                             AS asset,
    TRY_CAST(a.value->>'$.amount' AS HUGEINT)       AS amount,
    a.value->>'$.pay_to'                            AS pay_to,
    (a.value->>'$.max_timeout_seconds')::BIGINT     AS max_timeout_seconds,
    a.value->>'$.resource'                          AS resource,
    a.value->>'$.extra.name'                        AS asset_name,
    a.value->>'$.extra.version'                     AS asset_version
FROM events e
JOIN events r ON r.receipt_id = e.receipt_id AND r.type = 'request'
CROSS JOIN LATERAL (SELECT unnest(CAST(e.data->'$.challenge.accepts' AS JSON[])) AS value) a
WHERE e.type = 'response' AND json_type(e.data->'$.challenge') = 'OBJECT';

-- Signed x402 payments sent by clients (decoded, non-secret fields; the header is kept as a hash).
CREATE OR REPLACE VIEW payments AS
SELECT
    receipt_id,
    data->>'$.logical_id'                          AS logical_id,
    utc(ts)                               AS sent_at,
    (data->>'$.payment.x402_version')::INTEGER     AS x402_version,
    data->>'$.payment.header'                      AS header,
    data->>'$.payment.scheme'                      AS scheme,
    data->>'$.payment.kind'                        AS kind,
    data->>'$.payment.network'                     AS network,
    data->>'$.payment.payer'                       AS payer,
    data->>'$.payment.pay_to'                      AS pay_to,
    data->>'$.payment.asset'                       AS asset,
    TRY_CAST(data->>'$.payment.amount' AS HUGEINT) AS amount,
    (data->>'$.payment.decimals')::INTEGER         AS decimals,
    data->>'$.payment.symbol'                      AS symbol,
    data->>'$.payment.nonce'                       AS nonce,
    (data->>'$.payment.valid_after')::BIGINT       AS valid_after,
    (data->>'$.payment.valid_before')::BIGINT      AS valid_before,
    (data->>'$.payment.deadline')::BIGINT          AS deadline,
    data->>'$.payment.spender'                     AS spender,
    data->>'$.payment.facilitator'                 AS facilitator,
    data->>'$.payment.payment_identifier'          AS payment_identifier,
    data->>'$.payment.header_sha256'               AS header_sha256,
    data->>'$.payment.signature_sha256'            AS signature_sha256,
    data->>'$.payment.signer'                      AS signer,
    data->>'$.payment.signer_error'                AS signer_error,
    CAST(data->'$.payment.errors' AS VARCHAR[])    AS errors
FROM events
WHERE type = 'request' AND json_type(data->'$.payment') = 'OBJECT';

-- Settlement results servers returned (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE).
CREATE OR REPLACE VIEW settlements AS
SELECT
    e.receipt_id,
    r.data->>'$.logical_id'                          AS logical_id,
    utc(e.ts)                               AS seen_at,
    e.data->>'$.settlement.header'                   AS header,
    (e.data->>'$.settlement.success')::BOOLEAN       AS success,
    e.data->>'$.settlement.tx_hash'                  AS tx_hash,
    e.data->>'$.settlement.job_id'                   AS job_id,
    e.data->>'$.settlement.network'                  AS network,
    e.data->>'$.settlement.payer'                    AS payer,
    TRY_CAST(e.data->>'$.settlement.amount' AS HUGEINT) AS amount,
    e.data->>'$.settlement.error_reason'             AS error_reason,
    e.data->>'$.settlement.error_message'            AS error_message,
    CAST(e.data->'$.settlement.errors' AS VARCHAR[]) AS errors
FROM events e
JOIN events r ON r.receipt_id = e.receipt_id AND r.type = 'request'
WHERE e.type = 'response' AND json_type(e.data->'$.settlement') = 'OBJECT';

-- Verifier observations (written by `receipts verify`).
CREATE OR REPLACE VIEW checks AS
SELECT
    receipt_id,
    data->>'$.check'               AS "check",
    data->>'$.result'              AS result,
    data->>'$.status'              AS proof_status,
    data->>'$.resolution'          AS resolution,
    data->>'$.reason'              AS reason,
    data->'$.detail'               AS detail,
    (data->>'$.block')::BIGINT     AS block,
    utc(ts)               AS observed_at
FROM events
WHERE type = 'check';

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
        arg_max(client, started_at)                                AS client,
        first(coalesce(client_request_id, idempotency_key, payment_identifier) ORDER BY started_at)
            FILTER (WHERE coalesce(client_request_id, idempotency_key, payment_identifier) IS NOT NULL) AS client_id,
        arg_max(coalesce(provider_request_id, response_id), started_at)
            FILTER (WHERE coalesce(provider_request_id, response_id) IS NOT NULL) AS provider_id,
        arg_max(upto_session, started_at) FILTER (WHERE upto_session IS NOT NULL) AS session_id
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
    SELECT logical_id, v.proof_status, v.resolution, v.reason FROM (
        SELECT receipt_id AS logical_id,
               arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason}, observed_at) AS v
        FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id)
)
SELECT
    grp.logical_id                                                  AS receipt_id,
    coalesce(grp.client_id, grp.provider_id)                        AS request_id,
    settle.tx_hash                                                  AS payment_hash,
    coalesce(pay.payer, settle.payer)                               AS payer,
    pay.pay_to,
    pay.asset,
    coalesce(settle.amount, CASE WHEN pay.scheme = 'exact' THEN pay.amount END) AS amount,
    CASE WHEN pay.scheme = 'upto' THEN pay.amount END               AS amount_cap,
    chal.max_amount_required,
    pay.decimals,
    pay.symbol,
    coalesce(pay.network, settle.network, chal.challenge_network)  AS network,
    pay.scheme,
    pay.kind,
    pay.nonce,
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
    grp.first_seen,
    grp.last_seen,
    settle.job_id                                                   AS settlement_job_id,
    settle.success                                                  AS settlement_success,
    grp.host,
    grp.path,
    grp.app,
    grp.client,
    list_distinct(list_concat(idlist._ids, [lower(grp.logical_id)],
        list_filter([lower(settle.tx_hash), lower(settle.job_id), lower(pay.payer), lower(pay.nonce)], lambda x: x IS NOT NULL))) AS ids
FROM grp
JOIN idlist USING (logical_id)
LEFT JOIN pay USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN settle USING (logical_id)
LEFT JOIN last_check USING (logical_id);
