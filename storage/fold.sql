-- The fold: what each event becomes, in typed rows. The one place where a field of an event is read.
-- storage/fold.py runs each statement below over `{events}`, a relation of events (id, type, ts, receipt_id,
-- writer, seq, data JSON): sealed journal segments when it folds them into the Parquet files of
-- `<data>/tables/`, and the unfolded tail when a reader opens (storage/db.py). The views users query
-- (storage/views.sql) read these tables only.
--
-- A `-- parse:` statement reads each event of a type ONCE: `json_transform` turns its JSON into a STRUCT of
-- the shape given (every field a VARCHAR, a list, or JSON), in one pass over the document. The `-- table:`
-- statements after it read that struct by name (`{p}request`: the parse, materialized once per fold step or
-- tail) and give each field its type; an event's field is named in exactly one shape below.
-- (A field that is missing, null, or of another shape is NULL; a non-object where an object is expected is
-- a struct of NULLs, so `j.payment IS NOT NULL` says that the event has a payment, whatever it holds.)

-- Money is DECIMAL(38, 0) here: Parquet has no 128-bit integer (DuckDB would write a HUGEINT as a DOUBLE);
-- the views turn it back into HUGEINT.

-- parse: request
-- A request (addon/exchange.py `request_data`), with the payment it carried.
SELECT id, receipt_id, ts, json_transform(data, '{
    "logical_id": "VARCHAR", "client": "VARCHAR", "app": "VARCHAR", "app_name": "VARCHAR",
    "process": {"pid": "VARCHAR", "exe": "VARCHAR", "cmdline": "VARCHAR"}, "secrets_in_clear": ["VARCHAR"],
    "method": "VARCHAR", "scheme": "VARCHAR", "host": "VARCHAR", "port": "VARCHAR", "path": "VARCHAR",
    "model": "VARCHAR", "body": {"sha256": "VARCHAR", "size": "VARCHAR"},
    "ids": {"client_request_id": "VARCHAR", "idempotency_key": "VARCHAR"},
    "upto_session": "VARCHAR", "settlement_type": "VARCHAR", "source": "VARCHAR", "errors": ["VARCHAR"],
    "tee_request_hashes": "JSON",
    "mcp": {"method": "VARCHAR", "tool": "VARCHAR", "id": "VARCHAR"},
    "a2a": {"method": "VARCHAR", "id": "VARCHAR", "task_id": "VARCHAR"},
    "siwx": {"address": "VARCHAR", "chainId": "VARCHAR", "signer": "VARCHAR", "signer_error": "VARCHAR",
             "expirationTime": "VARCHAR"},
    "ohttp": {"tee_id": "VARCHAR"},
    "payment": {"x402_version": "VARCHAR", "header": "VARCHAR", "scheme": "VARCHAR", "kind": "VARCHAR",
                "network": "VARCHAR", "payer": "VARCHAR", "pay_to": "VARCHAR", "asset": "VARCHAR",
                "amount": "VARCHAR", "decimals": "VARCHAR", "symbol": "VARCHAR", "nonce": "VARCHAR",
                "valid_after": "VARCHAR", "valid_before": "VARCHAR", "deadline": "VARCHAR", "spender": "VARCHAR",
                "facilitator": "VARCHAR", "payment_identifier": "VARCHAR", "header_sha256": "VARCHAR",
                "signature_sha256": "VARCHAR", "signer": "VARCHAR", "signer_error": "VARCHAR",
                "errors": ["VARCHAR"], "memo": "VARCHAR", "token_account": "VARCHAR",
                "recent_blockhash": "VARCHAR", "payee_token_account": "VARCHAR", "channel_id": "VARCHAR",
                "voucher_amount": "VARCHAR", "deposit_amount": "VARCHAR", "refund_amount": "VARCHAR",
                "payment_tx": "VARCHAR"}
}') AS j
FROM {events} WHERE type = 'request';

-- parse: answer
-- A response (or a stream's headers) and a stream's end: what each tells, and the x402 challenge and
-- settlement either may carry (an MCP tool result's, in an event stream, comes with its end).
SELECT id, type, receipt_id, ts, json_transform(data, '{
    "status": "VARCHAR", "latency_ms": "VARCHAR", "model": "VARCHAR", "stream": "VARCHAR",
    "usage": {"prompt_tokens": "VARCHAR", "completion_tokens": "VARCHAR", "total_tokens": "VARCHAR"},
    "body": {"sha256": "VARCHAR", "size": "VARCHAR"}, "request_body": {"sha256": "VARCHAR", "size": "VARCHAR"},
    "provider_request_id": "VARCHAR", "response_id": "VARCHAR", "id": "VARCHAR", "bytes": "VARCHAR",
    "sha256": "VARCHAR", "done": "VARCHAR", "output_text_sha256": "VARCHAR", "output_text_keccak": "VARCHAR",
    "og": {"upto_session": "VARCHAR", "settlement_tx_hash": "VARCHAR", "walrus_blob_id": "VARCHAR",
           "processing_hash": "VARCHAR"},
    "tee": {"tee_id": "VARCHAR", "tee_timestamp": "VARCHAR", "tee_request_hash": "VARCHAR",
            "tee_output_hash": "VARCHAR", "tee_signature": "VARCHAR"},
    "tee_output_seen": "VARCHAR", "upstream": {"result": "VARCHAR", "tee_id": "VARCHAR"},
    "errors": ["VARCHAR"], "cost": {"amount": "VARCHAR", "currency": "VARCHAR", "table": "VARCHAR"},
    "a2a": {"task_id": "VARCHAR"},
    "challenge": {"x402_version": "VARCHAR", "source": "VARCHAR", "error": "VARCHAR",
                  "accepts": [{"scheme": "VARCHAR", "network": "VARCHAR", "asset": "VARCHAR", "amount": "VARCHAR",
                               "pay_to": "VARCHAR", "max_timeout_seconds": "VARCHAR", "resource": "VARCHAR",
                               "extra": {"name": "VARCHAR", "version": "VARCHAR"}}]},
    "settlement": {"header": "VARCHAR", "success": "VARCHAR", "tx_hash": "VARCHAR", "job_id": "VARCHAR",
                   "network": "VARCHAR", "payer": "VARCHAR", "amount": "VARCHAR", "error_reason": "VARCHAR",
                   "error_message": "VARCHAR", "errors": ["VARCHAR"], "seller_receipt": "JSON",
                   "channel_id": "VARCHAR", "channel_tx": "VARCHAR", "channel_amount": "VARCHAR",
                   "charged_cumulative": "VARCHAR", "channel_balance": "VARCHAR", "channel_claimed": "VARCHAR"}
}') AS j
FROM {events} WHERE type IN ('response', 'stream_end');

-- table: events
-- Every event, whole: the lossless record (headers, bodies as configured, fields no table below types).
-- Readers use the typed tables; `data` is read only to export an exchange as it was (HAR).
SELECT id, type, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, receipt_id, writer, seq, data
FROM {events};

-- table: requests
-- One row per request; an MCP tool call's or an A2A message send's JSON-RPC method and id, the MCP tool, the
-- A2A task it is sent to; an x402 sign-in's account, chain, the signer its signature verifies for (else why
-- not: addon/siwx.py), expiry; an OHTTP call's (addon/ohttp.py: `ohttp`, its body sealed) TEE, as the client
-- names it.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, j.logical_id,
       j.client, j.app, j.app_name, TRY_CAST(j.process.pid AS INTEGER) AS client_pid,
       j.process.exe AS client_exe, j.process.cmdline AS client_cmdline, j.secrets_in_clear,
       j.method, j.scheme, j.host, TRY_CAST(j.port AS INTEGER) AS port, j.path,
       j.model, j.body.sha256 AS request_sha256, TRY_CAST(j.body.size AS BIGINT) AS request_bytes,
       j.ids.client_request_id, j.ids.idempotency_key, j.payment.payment_identifier,
       j.upto_session, j.settlement_type, j.source, j.payment IS NOT NULL AS paid,
       j.errors, j.tee_request_hashes,
       coalesce(j.mcp.method, j.a2a.method) AS rpc_method, j.mcp.tool AS mcp_tool,
       coalesce(j.mcp.id, j.a2a.id) AS rpc_id,
       j.siwx.address AS sign_in_address, j.siwx.chainId AS sign_in_chain, j.siwx.signer AS sign_in_signer,
       j.siwx.signer_error AS sign_in_error, j.siwx.expirationTime AS sign_in_expires,
       j.a2a.task_id AS a2a_task, j.ohttp IS NOT NULL AS ohttp, j.ohttp.tee_id AS ohttp_tee_id
FROM {p}request;

-- table: payments
-- The signed x402 payment a request carried (decoded, non-secret fields; the header is kept as a hash).
-- On Solana: `memo`, `token_account` (the transfer's destination) and `recent_blockhash` (its lifetime)
-- are the transaction's; `payee_token_account` is the offer's payTo's associated token account.
-- A payment channel's call (kind channel_deposit/voucher/refund): `channel_id`, the voucher's cumulative
-- `voucher_amount`, and what a deposit puts in or a refund asks back. `payment_tx`: the transaction a payment
-- is itself (an MPP credential's signed transaction, by its hash).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS sent_at,
    TRY_CAST(p.x402_version AS INTEGER) AS x402_version, p.header, p.scheme, p.kind, p.network,
    p.payer, p.pay_to, p.asset, TRY_CAST(p.amount AS DECIMAL(38, 0)) AS amount,
    TRY_CAST(p.decimals AS INTEGER) AS decimals, p.symbol, p.nonce,
    TRY_CAST(p.valid_after AS BIGINT) AS valid_after, TRY_CAST(p.valid_before AS BIGINT) AS valid_before,
    TRY_CAST(p.deadline AS BIGINT) AS deadline, p.spender, p.facilitator, p.payment_identifier,
    p.header_sha256, p.signature_sha256, p.signer, p.signer_error,
    p.errors, p.memo, p.token_account, p.recent_blockhash,
    p.payee_token_account, p.channel_id, TRY_CAST(p.voucher_amount AS DECIMAL(38, 0)) AS voucher_amount,
    TRY_CAST(p.deposit_amount AS DECIMAL(38, 0)) AS deposit_amount,
    TRY_CAST(p.refund_amount AS DECIMAL(38, 0)) AS refund_amount, p.payment_tx
FROM (SELECT id, receipt_id, ts, j.payment AS p FROM {p}request)
WHERE p IS NOT NULL;

-- table: responses
-- One row per response (or a stream's headers).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts,
       TRY_CAST(j.status AS INTEGER) AS status, TRY_CAST(j.latency_ms AS DOUBLE) AS latency_ms, j.model,
       TRY_CAST(j.usage.prompt_tokens AS BIGINT) AS prompt_tokens,
       TRY_CAST(j.usage.completion_tokens AS BIGINT) AS completion_tokens,
       TRY_CAST(j.usage.total_tokens AS BIGINT) AS total_tokens, j.usage IS NOT NULL AS has_usage,
       TRY_CAST(j.stream AS BOOLEAN) AS stream, j.body.sha256 AS response_sha256,
       TRY_CAST(j.body.size AS BIGINT) AS response_bytes,
       j.provider_request_id, j.response_id, j.og.upto_session AS og_upto_session, j.tee.tee_id,
       TRY_CAST(j.tee.tee_timestamp AS BIGINT) AS tee_timestamp, j.tee.tee_request_hash, j.tee.tee_output_hash,
       j.tee.tee_signature, j.og.settlement_tx_hash AS og_settlement_tx_hash,
       j.og.walrus_blob_id AS og_walrus_blob_id, j.og.processing_hash, j.errors,
       j.upstream.result AS upstream_pin, j.upstream.tee_id AS upstream_tee_id, j.tee_output_seen,
       j.request_body.sha256 AS request_sha256, TRY_CAST(j.request_body.size AS BIGINT) AS request_bytes,
       TRY_CAST(j.cost.amount AS DECIMAL(38, 18)) AS cost, j.cost.currency AS cost_currency,
       j.cost.table AS price_table, j.a2a.task_id AS a2a_task
FROM {p}answer WHERE type = 'response';

-- table: offers
-- The x402 terms a 402 answer offered: one row per `accepts` entry (`item`: its position, from 0). An MCP
-- answer's challenge (a tool result) is the answer's, or its stream end's when the answer was an event stream.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS seen_at,
       TRY_CAST(c.x402_version AS INTEGER) AS x402_version, c.source, c.error, item,
       a.scheme, a.network, a.asset, TRY_CAST(a.amount AS DECIMAL(38, 0)) AS amount, a.pay_to,
       TRY_CAST(a.max_timeout_seconds AS BIGINT) AS max_timeout_seconds, a.resource, a.extra.name AS asset_name,
       a.extra.version AS asset_version
FROM (SELECT id, receipt_id, ts, j.challenge AS c, unnest(range(len(j.challenge.accepts))) AS item,
             unnest(j.challenge.accepts) AS a
      FROM {p}answer WHERE j.challenge.accepts IS NOT NULL);

-- table: settlements
-- Settlement results servers returned (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE). `seller_receipt`: the
-- seller's signed receipt (the `offer-receipt` extension) as it came, with the address that signed it.
-- A payment channel's answer: `amount` is the call's charge; `channel_tx`/`channel_amount` the deposit or
-- refund it names; `charged_cumulative`, `channel_balance`, `channel_claimed` the channel as the server saw it.
-- An MCP settlement (a tool result's `_meta`) is the answer's, or its stream end's (an event stream).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS seen_at,
       x.header, TRY_CAST(x.success AS BOOLEAN) AS success, x.tx_hash, x.job_id, x.network,
       x.payer, TRY_CAST(x.amount AS DECIMAL(38, 0)) AS amount, x.error_reason, x.error_message,
       x.errors, x.seller_receipt, x.channel_id,
       x.channel_tx, TRY_CAST(x.channel_amount AS DECIMAL(38, 0)) AS channel_amount,
       TRY_CAST(x.charged_cumulative AS DECIMAL(38, 0)) AS charged_cumulative,
       TRY_CAST(x.channel_balance AS DECIMAL(38, 0)) AS channel_balance,
       TRY_CAST(x.channel_claimed AS DECIMAL(38, 0)) AS channel_claimed
FROM (SELECT id, receipt_id, ts, j.settlement AS x FROM {p}answer)
WHERE x.header IS NOT NULL;

-- table: stream_ends
-- What a streamed answer told at its end.
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts,
       TRY_CAST(j.latency_ms AS DOUBLE) AS latency_ms, j.model,
       TRY_CAST(j.usage.prompt_tokens AS BIGINT) AS prompt_tokens,
       TRY_CAST(j.usage.completion_tokens AS BIGINT) AS completion_tokens,
       TRY_CAST(j.usage.total_tokens AS BIGINT) AS total_tokens, j.usage IS NOT NULL AS has_usage,
       TRY_CAST(j.bytes AS BIGINT) AS bytes, j.id AS response_id, j.tee.tee_id,
       TRY_CAST(j.tee.tee_timestamp AS BIGINT) AS tee_timestamp, j.tee.tee_request_hash, j.tee.tee_output_hash,
       j.tee.tee_signature, j.og.settlement_tx_hash AS og_settlement_tx_hash,
       j.og.walrus_blob_id AS og_walrus_blob_id, j.output_text_sha256,
       coalesce(TRY_CAST(j.done AS BOOLEAN), false) AS done, j.errors,
       j.output_text_keccak AS tee_output_seen, j.sha256 AS response_sha256,
       j.request_body.sha256 AS request_sha256, TRY_CAST(j.request_body.size AS BIGINT) AS request_bytes,
       TRY_CAST(j.cost.amount AS DECIMAL(38, 18)) AS cost, j.cost.currency AS cost_currency,
       j.cost.table AS price_table, j.a2a.task_id AS a2a_task
FROM {p}answer WHERE type = 'stream_end';

-- table: errors
-- How an exchange failed (client gone, upstream refused or timed out, TLS).
SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS ts, e.kind, e.message,
       e.phase, e.client, e.host, TRY_CAST(e.port AS INTEGER) AS port
FROM (SELECT id, receipt_id, ts, json_transform(data, '{"kind": "VARCHAR", "message": "VARCHAR", "phase": "VARCHAR",
                                                   "client": "VARCHAR", "host": "VARCHAR", "port": "VARCHAR"}') AS e
      FROM {events} WHERE type = 'error');

-- table: checks
-- Verifier observations: a check event holds the checks that changed in one pass, and the verdict if it did.
SELECT event_id, receipt_id, x."check", x.result, x.status AS proof_status, x.resolution, x.reason, x.detail,
       TRY_CAST(x.block AS BIGINT) AS block, x.tx, TRY_CAST(x.session_amount AS DECIMAL(38, 0)) AS session_amount,
       observed_at, item
FROM (SELECT id AS event_id, receipt_id, make_timestamp(CAST(ts * 1000000 AS BIGINT)) AS observed_at,
             unnest(range(len(cs))) AS item, unnest(cs) AS x
      FROM (SELECT id, receipt_id, ts, json_transform(data, '{"checks": [{
                "check": "VARCHAR", "result": "VARCHAR", "status": "VARCHAR", "resolution": "VARCHAR",
                "reason": "VARCHAR", "detail": "JSON", "block": "VARCHAR", "tx": "VARCHAR",
                "session_amount": "VARCHAR"}]}').checks AS cs
            FROM {events} WHERE type = 'check'));
