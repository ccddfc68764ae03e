-- The fold: what each event becomes, in typed rows. The one place where a field of an event is read.
-- storage/fold.py runs each statement below (each starts with a `-- table:` line) over `{events}`, a
-- relation of events (id, type, ts, receipt_id, writer, seq, data JSON): sealed journal segments when it
-- folds them into the Parquet files of `<data>/tables/`, and the unfolded tail when a reader opens
-- (storage/db.py). The views users query (storage/views.sql) read these tables only.
--
-- Each statement extracts all its fields in ONE json_extract_string call per event (a list, indexed
-- below): every `data->>'$.x'` would parse the document again.

-- Money is DECIMAL(38, 0) here: Parquet has no 128-bit integer (DuckDB would write a HUGEINT as a DOUBLE);
-- the views turn it back into HUGEINT.

-- table: events
-- Every event, whole: the lossless record (headers, bodies as configured, fields no table below types).
-- Readers use the typed tables; `data` is read only to export an exchange as it was (HAR).
SELECT id, type, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, receipt_id, writer, seq, data
FROM {events};

-- table: requests
-- One row per request (addon/exchange.py `request_data`); an MCP tool call's or an A2A message send's
-- JSON-RPC method and id, the MCP tool, the A2A task it is sent to;
-- an x402 sign-in's account, chain, the signer its signature verifies for (else why not: addon/siwx.py), expiry;
-- an OHTTP call's (addon/ohttp.py: `ohttp`, its body sealed) TEE, as the client names it.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, j[1] AS logical_id,
       j[2] AS client, j[3] AS app, j[25] AS app_name, TRY_CAST(j[22] AS INTEGER) AS client_pid,
       j[23] AS client_exe, j[24] AS client_cmdline, TRY_CAST(j[21] AS VARCHAR[]) AS secrets_in_clear,
       j[4] AS method, j[5] AS scheme, j[6] AS host, TRY_CAST(j[7] AS INTEGER) AS port, j[8] AS path,
       j[9] AS model, j[10] AS request_sha256, TRY_CAST(j[11] AS BIGINT) AS request_bytes,
       j[12] AS client_request_id, j[13] AS idempotency_key, j[14] AS payment_identifier,
       j[15] AS upto_session, j[16] AS settlement_type, j[17] AS source, j[18] IS NOT NULL AS paid,
       TRY_CAST(j[19] AS VARCHAR[]) AS errors, j[20]::JSON AS tee_request_hashes,
       coalesce(j[26], j[34]) AS rpc_method, j[27] AS mcp_tool, coalesce(j[28], j[35]) AS rpc_id,
       j[29] AS sign_in_address, j[30] AS sign_in_chain, j[31] AS sign_in_signer, j[32] AS sign_in_error,
       j[33] AS sign_in_expires, j[36] AS a2a_task, j[37] IS NOT NULL AS ohttp, j[38] AS ohttp_tee_id
FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
        '$.logical_id', '$.client', '$.app', '$.method', '$.scheme', '$.host', '$.port', '$.path', '$.model',  -- 1-9
        '$.body.sha256', '$.body.size', '$.ids.client_request_id', '$.ids.idempotency_key',                 -- 10-13
        '$.payment.payment_identifier', '$.upto_session', '$.settlement_type', '$.source', '$.payment',       -- 14-18
        '$.errors', '$.tee_request_hashes', '$.secrets_in_clear', '$.process.pid', '$.process.exe',          -- 19-23
        '$.process.cmdline', '$.app_name', '$.mcp.method', '$.mcp.tool', '$.mcp.id',                         -- 24-28
        '$.siwx.address', '$.siwx.chainId', '$.siwx.signer', '$.siwx.signer_error', '$.siwx.expirationTime', -- 29-33
        '$.a2a.method', '$.a2a.id', '$.a2a.task_id', '$.ohttp', '$.ohttp.tee_id']) AS j                          -- 34-38
      FROM {events} WHERE type = 'request');

-- table: payments
-- The signed x402 payment a request carried (decoded, non-secret fields; the header is kept as a hash).
-- On Solana: `memo`, `token_account` (the transfer's destination) and `recent_blockhash` (its lifetime)
-- are the transaction's; `payee_token_account` is the offer's payTo's associated token account.
-- A payment channel's call (kind channel_deposit/voucher/refund): `channel_id`, the voucher's cumulative
-- `voucher_amount`, and what a deposit puts in or a refund asks back. `payment_tx`: the transaction a payment
-- is itself (an MPP credential's signed transaction, by its hash).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS sent_at,
    TRY_CAST(p[1] AS INTEGER) AS x402_version, p[2] AS header, p[3] AS scheme, p[4] AS kind, p[5] AS network,
    p[6] AS payer, p[7] AS pay_to, p[8] AS asset, TRY_CAST(p[9] AS DECIMAL(38, 0)) AS amount,
    TRY_CAST(p[10] AS INTEGER) AS decimals, p[11] AS symbol, p[12] AS nonce,
    TRY_CAST(p[13] AS BIGINT) AS valid_after, TRY_CAST(p[14] AS BIGINT) AS valid_before,
    TRY_CAST(p[15] AS BIGINT) AS deadline, p[16] AS spender, p[17] AS facilitator, p[18] AS payment_identifier,
    p[19] AS header_sha256, p[20] AS signature_sha256, p[21] AS signer, p[22] AS signer_error,
    TRY_CAST(p[23] AS VARCHAR[]) AS errors, p[25] AS memo, p[26] AS token_account, p[27] AS recent_blockhash,
    p[28] AS payee_token_account, p[29] AS channel_id, TRY_CAST(p[30] AS DECIMAL(38, 0)) AS voucher_amount,
    TRY_CAST(p[31] AS DECIMAL(38, 0)) AS deposit_amount, TRY_CAST(p[32] AS DECIMAL(38, 0)) AS refund_amount,
    p[33] AS payment_tx
FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
        '$.payment.x402_version', '$.payment.header', '$.payment.scheme', '$.payment.kind', '$.payment.network',
        '$.payment.payer', '$.payment.pay_to', '$.payment.asset', '$.payment.amount', '$.payment.decimals',
        '$.payment.symbol', '$.payment.nonce', '$.payment.valid_after', '$.payment.valid_before',
        '$.payment.deadline', '$.payment.spender', '$.payment.facilitator', '$.payment.payment_identifier',
        '$.payment.header_sha256', '$.payment.signature_sha256', '$.payment.signer', '$.payment.signer_error',
        '$.payment.errors', '$.payment', '$.payment.memo', '$.payment.token_account',
        '$.payment.recent_blockhash', '$.payment.payee_token_account', '$.payment.channel_id',
        '$.payment.voucher_amount', '$.payment.deposit_amount', '$.payment.refund_amount',
        '$.payment.payment_tx']) AS p
      FROM {events} WHERE type = 'request')
WHERE p[24] IS NOT NULL;

-- table: responses
-- One row per response (or a stream's headers).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts,
       TRY_CAST(p[1] AS INTEGER) AS status, TRY_CAST(p[2] AS DOUBLE) AS latency_ms, p[3] AS model,
       TRY_CAST(p[4] AS BIGINT) AS prompt_tokens, TRY_CAST(p[5] AS BIGINT) AS completion_tokens,
       TRY_CAST(p[6] AS BIGINT) AS total_tokens, p[21] IS NOT NULL AS has_usage,
       TRY_CAST(p[7] AS BOOLEAN) AS stream, p[8] AS response_sha256, TRY_CAST(p[9] AS BIGINT) AS response_bytes,
       p[10] AS provider_request_id, p[11] AS response_id, p[12] AS og_upto_session, p[13] AS tee_id,
       TRY_CAST(p[14] AS BIGINT) AS tee_timestamp, p[15] AS tee_request_hash, p[16] AS tee_output_hash,
       p[17] AS tee_signature, p[18] AS og_settlement_tx_hash, p[19] AS og_walrus_blob_id,
       p[20] AS processing_hash, TRY_CAST(p[22] AS VARCHAR[]) AS errors, p[23] AS upstream_pin,
       p[24] AS upstream_tee_id, p[25] AS tee_output_seen, p[26] AS request_sha256,
       TRY_CAST(p[27] AS BIGINT) AS request_bytes, TRY_CAST(p[28] AS DECIMAL(38, 18)) AS cost,
       p[29] AS cost_currency, p[30] AS price_table, p[31] AS a2a_task
FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
        '$.status', '$.latency_ms', '$.model', '$.usage.prompt_tokens', '$.usage.completion_tokens',             -- 1-5
        '$.usage.total_tokens', '$.stream', '$.body.sha256', '$.body.size', '$.provider_request_id',            -- 6-10
        '$.response_id', '$.og.upto_session', '$.tee.tee_id', '$.tee.tee_timestamp', '$.tee.tee_request_hash',   -- 11-15
        '$.tee.tee_output_hash', '$.tee.tee_signature', '$.og.settlement_tx_hash', '$.og.walrus_blob_id',        -- 16-19
        '$.og.processing_hash', '$.usage', '$.errors', '$.upstream.result', '$.upstream.tee_id',                -- 20-24
        '$.tee_output_seen', '$.request_body.sha256', '$.request_body.size', '$.cost.amount',                   -- 25-28
        '$.cost.currency', '$.cost.table', '$.a2a.task_id']) AS p                                               -- 29-31
      FROM {events} WHERE type = 'response');

-- table: offers
-- The x402 terms a 402 answer offered: one row per `accepts` entry (`item`: its position, from 0). An MCP
-- answer's challenge (a tool result) is the answer's, or its stream end's when the answer was an event stream.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS seen_at,
       TRY_CAST(c[1] AS INTEGER) AS x402_version, c[2] AS source, c[3] AS error, item,
       a[1] AS scheme, a[2] AS network, a[3] AS asset, TRY_CAST(a[4] AS DECIMAL(38, 0)) AS amount, a[5] AS pay_to,
       TRY_CAST(a[6] AS BIGINT) AS max_timeout_seconds, a[7] AS resource, a[8] AS asset_name, a[9] AS asset_version
FROM (
    SELECT id, receipt_id, ts, c, unnest(range(len(accepts))) AS item,
           json_extract_string(unnest(accepts), ['$.scheme', '$.network', '$.asset', '$.amount', '$.pay_to',
                                                 '$.max_timeout_seconds', '$.resource', '$.extra.name',
                                                 '$.extra.version']) AS a
    FROM (SELECT id, receipt_id, ts, c, TRY_CAST(c[4] AS JSON[]) AS accepts
          FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
                    '$.challenge.x402_version', '$.challenge.source', '$.challenge.error', '$.challenge.accepts']) AS c
                FROM {events} WHERE type IN ('response', 'stream_end'))
          WHERE c[4] IS NOT NULL));

-- table: settlements
-- Settlement results servers returned (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE). `seller_receipt`: the
-- seller's signed receipt (the `offer-receipt` extension) as it came, with the address that signed it.
-- A payment channel's answer: `amount` is the call's charge; `channel_tx`/`channel_amount` the deposit or
-- refund it names; `charged_cumulative`, `channel_balance`, `channel_claimed` the channel as the server saw it.
-- An MCP settlement (a tool result's `_meta`) is the answer's, or its stream end's (an event stream).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS seen_at,
       x[1] AS header, TRY_CAST(x[2] AS BOOLEAN) AS success, x[3] AS tx_hash, x[4] AS job_id, x[5] AS network,
       x[6] AS payer, TRY_CAST(x[7] AS DECIMAL(38, 0)) AS amount, x[8] AS error_reason, x[9] AS error_message,
       TRY_CAST(x[10] AS VARCHAR[]) AS errors, x[11]::JSON AS seller_receipt, x[12] AS channel_id,
       x[13] AS channel_tx, TRY_CAST(x[14] AS DECIMAL(38, 0)) AS channel_amount,
       TRY_CAST(x[15] AS DECIMAL(38, 0)) AS charged_cumulative, TRY_CAST(x[16] AS DECIMAL(38, 0)) AS channel_balance,
       TRY_CAST(x[17] AS DECIMAL(38, 0)) AS channel_claimed
FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
        '$.settlement.header', '$.settlement.success', '$.settlement.tx_hash', '$.settlement.job_id',
        '$.settlement.network', '$.settlement.payer', '$.settlement.amount', '$.settlement.error_reason',
        '$.settlement.error_message', '$.settlement.errors', '$.settlement.seller_receipt',
        '$.settlement.channel_id', '$.settlement.channel_tx', '$.settlement.channel_amount',
        '$.settlement.charged_cumulative', '$.settlement.channel_balance', '$.settlement.channel_claimed']) AS x
      FROM {events} WHERE type IN ('response', 'stream_end'))
WHERE x[1] IS NOT NULL;

-- table: stream_ends
-- What a streamed answer told at its end.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts,
       TRY_CAST(f[1] AS DOUBLE) AS latency_ms, f[2] AS model, TRY_CAST(f[3] AS BIGINT) AS prompt_tokens,
       TRY_CAST(f[4] AS BIGINT) AS completion_tokens, TRY_CAST(f[5] AS BIGINT) AS total_tokens,
       f[17] IS NOT NULL AS has_usage, TRY_CAST(f[6] AS BIGINT) AS bytes, f[7] AS response_id, f[8] AS tee_id,
       TRY_CAST(f[9] AS BIGINT) AS tee_timestamp, f[10] AS tee_request_hash, f[11] AS tee_output_hash,
       f[12] AS tee_signature, f[13] AS og_settlement_tx_hash, f[14] AS og_walrus_blob_id,
       f[15] AS output_text_sha256, coalesce(TRY_CAST(f[16] AS BOOLEAN), false) AS done,
       TRY_CAST(f[18] AS VARCHAR[]) AS errors, f[19] AS tee_output_seen, f[20] AS response_sha256,
       f[21] AS request_sha256, TRY_CAST(f[22] AS BIGINT) AS request_bytes,
       TRY_CAST(f[23] AS DECIMAL(38, 18)) AS cost, f[24] AS cost_currency, f[25] AS price_table, f[26] AS a2a_task
FROM (SELECT id, receipt_id, ts, json_extract_string(data, [
        '$.latency_ms', '$.model', '$.usage.prompt_tokens', '$.usage.completion_tokens', '$.usage.total_tokens', -- 1-5
        '$.bytes', '$.id', '$.tee.tee_id', '$.tee.tee_timestamp', '$.tee.tee_request_hash',                      -- 6-10
        '$.tee.tee_output_hash', '$.tee.tee_signature', '$.og.settlement_tx_hash', '$.og.walrus_blob_id',        -- 11-14
        '$.output_text_sha256', '$.done', '$.usage', '$.errors', '$.output_text_keccak',                       -- 15-19
        '$.sha256', '$.request_body.sha256', '$.request_body.size', '$.cost.amount', '$.cost.currency',         -- 20-24
        '$.cost.table', '$.a2a.task_id']) AS f                                                                   -- 25-26
      FROM {events} WHERE type = 'stream_end');

-- table: errors
-- How an exchange failed (client gone, upstream refused or timed out, TLS).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, e[1] AS kind, e[2] AS message,
       e[3] AS phase, e[4] AS client, e[5] AS host, TRY_CAST(e[6] AS INTEGER) AS port
FROM (SELECT id, receipt_id, ts, json_extract_string(data, ['$.kind', '$.message', '$.phase', '$.client', '$.host',
                                                            '$.port']) AS e
      FROM {events} WHERE type = 'error');

-- table: checks
-- Verifier observations: a check event holds the checks that changed in one pass, and the verdict if it did.
SELECT event_id, receipt_id, x[1] AS "check", x[2] AS result, x[3] AS proof_status, x[4] AS resolution,
       x[5] AS reason, x[6]::JSON AS detail, TRY_CAST(x[7] AS BIGINT) AS block, x[8] AS tx,
       TRY_CAST(x[9] AS DECIMAL(38, 0)) AS session_amount, observed_at, item
FROM (SELECT event_id, receipt_id, observed_at, item,
             json_extract_string(c, ['$.check', '$.result', '$.status', '$.resolution', '$.reason', '$.detail',
                                     '$.block', '$.tx', '$.session_amount']) AS x
      FROM (SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS observed_at,
                   unnest(range(len(cs))) AS item, unnest(cs) AS c
            FROM (SELECT id, receipt_id, ts, TRY_CAST(json_extract(data, '$.checks') AS JSON[]) AS cs
                  FROM {events} WHERE type = 'check')));
