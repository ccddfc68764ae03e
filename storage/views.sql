-- The views users query, over the folded tables (storage/fold.sql defines every field; storage/fold.py
-- keeps the tables; storage/db.py binds `folded.<table>` to their Parquet files plus the unfolded tail).
-- No view reads event JSON.

-- An amount of atomic units as exact decimal text in whole tokens (1500000 with 6 decimals: '1.5'), for
-- tools that would turn a big integer into a float (pandas: 1000000000000000000001 -> 1e+21).
CREATE OR REPLACE MACRO decimal_text(amount, decimals) AS CASE
    WHEN amount IS NULL THEN NULL
    WHEN coalesce(decimals, 0) <= 0 THEN amount::VARCHAR
    ELSE (CASE WHEN amount < 0 THEN '-' ELSE '' END)
         || left(lpad(abs(amount)::VARCHAR, greatest(length(abs(amount)::VARCHAR), decimals + 1)::INTEGER, '0'), -decimals)
         || rtrim(rtrim('.' || right(lpad(abs(amount)::VARCHAR, greatest(length(abs(amount)::VARCHAR), decimals + 1)::INTEGER, '0'), decimals), '0'), '.') END;

-- Whether a logical call is one a scoped macro computes (below): all of them, or those in folded.scope_ids.
-- An amount of atomic units in whole tokens, exact (DECIMAL(38, 18)); NULL when the decimals are unknown.
CREATE OR REPLACE MACRO whole_tokens(amount, decimals) AS
    CASE WHEN decimals IS NOT NULL THEN TRY_CAST(decimal_text(amount, decimals) AS DECIMAL(38, 18)) END;

-- The amount a payment fixes by itself (an x402 `exact` payment's signed amount, an L402 invoice's, an MPP
-- charge's), else
-- NULL (a cap, a share of a session or channel: what was charged comes from the settlement).
CREATE OR REPLACE MACRO fixed_amount(scheme, amount) AS CASE WHEN scheme IN ('exact', 'l402', 'mpp') THEN amount END;

-- What a call was charged: what its settlement said, else the amount its payment fixed; for an auth-capture
-- (escrow) payment, what the operator captured (the verifier's `session_amount`): its settlement is the hold.
CREATE OR REPLACE MACRO call_amount(scheme, settled, paid, captured) AS
    CASE WHEN scheme = 'auth-capture' THEN captured ELSE coalesce(settled, fixed_amount(scheme, paid)) END;

CREATE OR REPLACE MACRO in_scope(scoped, id) AS NOT scoped OR id IN (SELECT logical_id FROM folded.scope_ids);

-- A settlement transaction as one key: an EVM hash (0x-hex) in lower case; a Solana signature (base58) as
-- it is, its case being part of it.
CREATE OR REPLACE MACRO tx_key(tx) AS CASE WHEN starts_with(tx, '0x') THEN lower(tx) ELSE tx END;

-- Every event, once (`data`: the event whole, for exports; the tables below hold its fields typed).
CREATE OR REPLACE VIEW events AS SELECT * FROM folded.events;

-- One row per HTTP exchange the recorder saw: its request, with the latest response, stream end and error.
-- (`scoped`: only the exchanges of the logical calls in folded.scope_ids. `in_session`: at least those
-- that name an OpenGradient session, by their request or an answer (sessions_of keeps those whose
-- `upto_session` is set), and few others. `started_after`: only those whose request came after then, their
-- answers found by receipt id: `receipts tail`. The latest response, stream end and error of each exchange
-- by row_number(), not arg_max of a struct: a query reads only its columns.)
CREATE OR REPLACE MACRO calls_of(scoped, in_session := false, started_after := NULL) AS TABLE
WITH req AS (
    SELECT * FROM folded.requests WHERE in_scope(scoped, logical_id)
        AND (started_after IS NULL OR ts > started_after)
        AND (NOT in_session OR upto_session IS NOT NULL
             OR receipt_id IN (SELECT receipt_id FROM folded.responses WHERE og_upto_session IS NOT NULL))
), ex AS (
    SELECT receipt_id FROM req WHERE scoped OR in_session OR started_after IS NOT NULL
), p AS (
    SELECT * FROM folded.responses WHERE NOT (scoped OR in_session OR started_after IS NOT NULL)
        OR receipt_id IN (SELECT receipt_id FROM ex)
    QUALIFY row_number() OVER (PARTITION BY receipt_id ORDER BY ts DESC) = 1
), f AS (
    SELECT * FROM folded.stream_ends WHERE NOT (scoped OR in_session OR started_after IS NOT NULL)
        OR receipt_id IN (SELECT receipt_id FROM ex)
    QUALIFY row_number() OVER (PARTITION BY receipt_id ORDER BY ts DESC) = 1
), e AS (
    SELECT * FROM folded.errors WHERE NOT (scoped OR in_session OR started_after IS NOT NULL)
        OR receipt_id IN (SELECT receipt_id FROM ex)
    QUALIFY row_number() OVER (PARTITION BY receipt_id ORDER BY ts DESC) = 1
)
SELECT
    r.receipt_id,
    r.logical_id,
    r.ts                                                             AS started_at,
    greatest(p.ts, f.ts, e.ts)                                AS ended_at,
    r.client,
    r.app,
    coalesce(r.app_name, r.app, r.client)                            AS app_name,
    r.client_pid,
    r.client_exe,
    r.client_cmdline,
    r.secrets_in_clear,
    r.method,
    r.scheme,
    r.host,
    r.port,
    r.path,
    p.status,
    coalesce(f.latency_ms, p.latency_ms)                    AS latency_ms,
    coalesce(f.model, p.model, r.model)                     AS model,
    CASE WHEN f.has_usage THEN f.prompt_tokens ELSE p.prompt_tokens END AS prompt_tokens,
    CASE WHEN f.has_usage THEN f.completion_tokens ELSE p.completion_tokens END AS completion_tokens,
    CASE WHEN f.has_usage THEN f.total_tokens ELSE p.total_tokens END AS total_tokens,
    CASE WHEN p.receipt_id IS NULL THEN NULL
         WHEN coalesce(f.has_usage, false) OR p.has_usage THEN 'provider'
         ELSE 'missing' END                                          AS usage_source,
    CASE WHEN f.has_usage THEN f.cost ELSE p.cost END               AS cost,  -- the price table's (addon/pricing.py)
    CASE WHEN f.has_usage THEN f.cost_currency ELSE p.cost_currency END AS cost_currency,
    CASE WHEN f.has_usage THEN f.price_table ELSE p.price_table END AS price_table,
    coalesce(p.stream, false)                                   AS stream,
    coalesce(e.kind || ': ' || e.message,
             CASE WHEN f.receipt_id IS NOT NULL AND NOT f.done THEN 'stream_incomplete' END) AS error,
    coalesce(r.request_sha256, p.request_sha256, f.request_sha256) AS request_sha256,  -- streamed uploads:
    coalesce(r.request_bytes, p.request_bytes, f.request_bytes)    AS request_bytes,   -- told with the answer
    coalesce(p.response_sha256, f.response_sha256)          AS response_sha256,
    coalesce(f.bytes, p.response_bytes)                     AS response_bytes,
    r.client_request_id,
    r.idempotency_key,
    r.payment_identifier,
    p.provider_request_id,
    coalesce(f.response_id, p.response_id)                  AS response_id,
    r.paid,
    coalesce(r.upto_session, p.og_upto_session)                 AS upto_session,
    r.settlement_type,
    coalesce(f.tee_id, p.tee_id)                            AS tee_id,
    coalesce(f.tee_timestamp, p.tee_timestamp)              AS tee_timestamp,
    coalesce(f.tee_request_hash, p.tee_request_hash)        AS tee_request_hash,
    coalesce(f.tee_output_hash, p.tee_output_hash)          AS tee_output_hash,
    coalesce(f.tee_signature, p.tee_signature)              AS tee_signature,
    coalesce(f.og_settlement_tx_hash, p.og_settlement_tx_hash) AS og_settlement_tx_hash,
    coalesce(f.og_walrus_blob_id, p.og_walrus_blob_id)      AS og_walrus_blob_id,
    p.processing_hash,
    f.output_text_sha256,
    r.tee_request_hashes,
    coalesce(f.tee_output_seen, p.tee_output_seen)          AS tee_output_seen,
    p.upstream_pin,
    p.upstream_tee_id,
    r.rpc_method,
    r.mcp_tool,
    r.rpc_id,
    coalesce(r.a2a_task, f.a2a_task, p.a2a_task)              AS a2a_task,
    r.sign_in_address,
    r.sign_in_chain,
    r.sign_in_signer,
    r.sign_in_error,
    r.sign_in_expires,
    r.ohttp,
    r.ohttp_tee_id,
    list_concat(coalesce(r.errors, []), coalesce(p.errors, []), coalesce(f.errors, [])) AS parse_errors,
    r.source
FROM req r
LEFT JOIN p USING (receipt_id)
LEFT JOIN f USING (receipt_id)
LEFT JOIN e USING (receipt_id);

CREATE OR REPLACE VIEW calls AS FROM calls_of(false);

-- The attempts (receipt id, logical id) of the logical calls a scoped macro computes: the three views below
-- join their table to these, so that a scoped computation reads only its calls' requests before joining.
CREATE OR REPLACE MACRO attempts_of(scoped) AS TABLE
SELECT receipt_id, logical_id FROM folded.requests WHERE in_scope(scoped, logical_id);

-- x402 terms offered in 402 answers: one row per `accepts` entry.
CREATE OR REPLACE MACRO challenges_of(scoped) AS TABLE
SELECT o.receipt_id, r.logical_id, o.seen_at, o.x402_version, o.source, o.error, o.scheme, o.network, o.asset,
       o.amount::HUGEINT AS amount, o.pay_to, o.max_timeout_seconds, o.resource, o.asset_name, o.asset_version, o.item
FROM folded.offers o JOIN attempts_of(scoped) r USING (receipt_id);
CREATE OR REPLACE VIEW challenges AS FROM challenges_of(false);

-- Signed x402 payments sent by clients (decoded, non-secret fields; the header is kept as a hash).
-- (`payment_rows`: by exchange, without the logical id, for a reader that has it already: storage/audit.sql)
CREATE OR REPLACE MACRO payment_rows() AS TABLE
SELECT p.* EXCLUDE (event_id) REPLACE (
    p.amount::HUGEINT AS amount, p.voucher_amount::HUGEINT AS voucher_amount,
    p.deposit_amount::HUGEINT AS deposit_amount, p.refund_amount::HUGEINT AS refund_amount)
FROM folded.payments p;
CREATE OR REPLACE MACRO payments_of(scoped) AS TABLE
SELECT p.receipt_id, r.logical_id, p.* EXCLUDE (receipt_id)
FROM payment_rows() p JOIN attempts_of(scoped) r USING (receipt_id);
CREATE OR REPLACE VIEW payments AS FROM payments_of(false);

-- Settlement results servers returned (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE). (`settlement_rows`: as
-- `payment_rows`)
CREATE OR REPLACE MACRO settlement_rows() AS TABLE
SELECT s.* EXCLUDE (event_id) REPLACE (
    s.amount::HUGEINT AS amount, s.channel_amount::HUGEINT AS channel_amount,
    s.charged_cumulative::HUGEINT AS charged_cumulative, s.channel_balance::HUGEINT AS channel_balance,
    s.channel_claimed::HUGEINT AS channel_claimed)
FROM folded.settlements s;
CREATE OR REPLACE MACRO settlements_of(scoped) AS TABLE
SELECT s.receipt_id, r.logical_id, s.* EXCLUDE (receipt_id)
FROM settlement_rows() s JOIN attempts_of(scoped) r USING (receipt_id);
CREATE OR REPLACE VIEW settlements AS FROM settlements_of(false);

-- x402 payment channels (`batch-settlement`): one row per channel, from the calls paid from it. `charged`
-- sums what each answer said its call cost; `voucher_amount` is the largest cumulative voucher the payer
-- signed; `deposited` what deposit calls put in; the rest is the channel as the server last told it.
-- What the chain says (claims, refunds) is in each call's checks (`receipts verify`).
CREATE OR REPLACE VIEW channels AS
WITH p AS (
    SELECT channel_id, any_value(payer) AS payer, any_value(pay_to) AS pay_to, any_value(asset) AS asset,
           any_value(network) AS network, any_value(decimals) AS decimals, any_value(symbol) AS symbol,
           count(DISTINCT logical_id) FILTER (WHERE kind <> 'channel_refund') AS calls,
           min(sent_at) AS opened_at, max(sent_at) AS last_call_at, max(voucher_amount) AS voucher_amount,
           coalesce(sum(deposit_amount), 0) AS deposited,
           bool_or(kind = 'channel_refund') AS refund_asked
    FROM payments WHERE channel_id IS NOT NULL AND kind LIKE 'channel_%' GROUP BY channel_id
), s AS (
    SELECT channel_id, sum(amount) AS charged, max(charged_cumulative) AS charged_cumulative,
           arg_max(channel_balance, seen_at) AS balance, arg_max(channel_claimed, seen_at) AS claimed,
           list(DISTINCT channel_tx ORDER BY channel_tx) FILTER (WHERE channel_tx IS NOT NULL) AS channel_txs
    FROM settlements WHERE channel_id IS NOT NULL GROUP BY channel_id
)
SELECT channel_id, p.payer, p.pay_to, p.asset, p.network, p.calls, p.opened_at, p.last_call_at, s.charged,
       decimal_text(s.charged, p.decimals) AS charged_decimal, p.symbol, p.voucher_amount, s.charged_cumulative,
       p.deposited, s.balance, s.claimed, p.refund_asked, s.channel_txs
FROM p LEFT JOIN s USING (channel_id);

-- Verifier observations (written by `receipts verify`).
CREATE OR REPLACE VIEW checks AS
SELECT receipt_id, "check", result, proof_status, resolution, reason, detail, block, tx,
       session_amount::HUGEINT AS session_amount, observed_at
FROM folded.checks;

-- OpenGradient upto sessions: the payment that opened each one (its request paid, its answer named the
-- session in X-Upto-Session) and the calls made under it, until a 402 ended it.
-- (`scoped`: only the sessions of the logical calls in folded.scope_ids, as for receipts_of below)
CREATE OR REPLACE MACRO sessions_of(scoped) AS TABLE
WITH member AS (
    SELECT receipt_id, logical_id, upto_session AS session_id, started_at, status, paid, payment_identifier
    FROM calls_of(scoped, in_session := true) WHERE upto_session IS NOT NULL
), opener AS (
    SELECT m.session_id, arg_min({'logical_id': p.logical_id, 'payer': p.payer, 'pay_to': p.pay_to,
                                  'asset': p.asset, 'network': p.network, 'scheme': p.scheme, 'amount': p.amount,
                                  'nonce': p.nonce, 'deadline': coalesce(p.deadline, p.valid_before),
                                  'valid_after': p.valid_after, 'facilitator': p.facilitator,
                                  'spender': p.spender, 'decimals': p.decimals, 'symbol': p.symbol,
                                  'signer': p.signer, 'sent_at': p.sent_at}, p.sent_at) AS o
    FROM member m JOIN payments_of(scoped) p USING (receipt_id) GROUP BY m.session_id
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

CREATE OR REPLACE VIEW sessions AS FROM sessions_of(false);

-- One row per logical call: the 402 challenge, the paid attempt and any retries together.
-- Computed here for the logical calls in folded.scope_ids (`scoped`), or all: the fold keeps the rows
-- (storage/fold.py), and a reader computes those of the calls its tail touched (storage/db.py). A session's
-- calls are in the scope together (`touched`), so each row is whole.
CREATE OR REPLACE MACRO receipts_of(scoped) AS TABLE
WITH c AS (FROM calls_of(scoped)),
grp AS (
    SELECT
        logical_id,
        count(*)                                                   AS attempts,
        min(started_at)                                            AS first_seen,
        max(coalesce(ended_at, started_at))                        AS last_seen,
        arg_max(status, started_at)                                AS status,
        arg_max(model, started_at) FILTER (WHERE model IS NOT NULL) AS model,
        arg_max(total_tokens, started_at) FILTER (WHERE total_tokens IS NOT NULL) AS total_tokens,
        arg_max(prompt_tokens, started_at) FILTER (WHERE total_tokens IS NOT NULL) AS prompt_tokens,
        arg_max(completion_tokens, started_at) FILTER (WHERE total_tokens IS NOT NULL) AS completion_tokens,
        arg_max(latency_ms, started_at) FILTER (WHERE latency_ms IS NOT NULL) AS latency_ms,
        arg_max({'cost': cost, 'currency': cost_currency, 'table': price_table}, started_at)
            FILTER (WHERE cost IS NOT NULL)                        AS priced,
        arg_max(host, started_at)                                  AS host,
        arg_max(path, started_at)                                  AS path,
        arg_max(mcp_tool, started_at) FILTER (WHERE mcp_tool IS NOT NULL) AS mcp_tool,
        arg_max(a2a_task, started_at) FILTER (WHERE a2a_task IS NOT NULL) AS a2a_task,
        arg_max({'address': sign_in_address, 'signer': sign_in_signer, 'error': sign_in_error, 'host': host,
                 'at': started_at}, started_at) FILTER (WHERE sign_in_address IS NOT NULL) AS sign_in,
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
        arg_max(og_walrus_blob_id, started_at) FILTER (WHERE og_walrus_blob_id IS NOT NULL) AS anchor_blob_id,
        arg_max(ohttp_tee_id, started_at) FILTER (WHERE ohttp)      AS ohttp_tee_id,
        arg_max(request_sha256, started_at) FILTER (WHERE ohttp)    AS ohttp_sha256,
        bool_or(ohttp)                                              AS ohttp
    FROM c GROUP BY logical_id
), idlist AS (  -- every id that finds the logical call, from every attempt and every settlement
    SELECT logical_id, flatten(list(x)) AS _ids FROM (
        SELECT logical_id, [receipt_id, client_request_id, idempotency_key, payment_identifier, provider_request_id,
                            response_id, upto_session, og_settlement_tx_hash, a2a_task] AS x FROM c
        UNION ALL SELECT logical_id, [tx_hash, job_id, channel_tx] FROM settlements_of(scoped)
        UNION ALL SELECT logical_id, [payer, nonce, channel_id] FROM payments_of(scoped))
    GROUP BY logical_id
), pay AS (
    SELECT logical_id, arg_max(COLUMNS(* EXCLUDE (logical_id, receipt_id)), sent_at), count(*) AS payments
    FROM payments_of(scoped) GROUP BY logical_id
), chal AS (  -- the offer the payment answers, whole: of the latest 402's entries, the last one for the
            -- payment's asset and network, else the first one
    SELECT o.logical_id, o.amount AS max_amount_required, o.network AS challenge_network,
           o.pay_to AS challenge_pay_to, o.asset AS challenge_asset
    FROM challenges_of(scoped) o LEFT JOIN pay USING (logical_id)
    QUALIFY row_number() OVER (PARTITION BY o.logical_id ORDER BY o.seen_at DESC, o.receipt_id DESC,
            (lower(o.asset) = lower(pay.asset) AND o.network = pay.network) DESC NULLS LAST,
            CASE WHEN lower(o.asset) = lower(pay.asset) AND o.network = pay.network THEN -o.item ELSE o.item END) = 1
), settle AS (
    SELECT logical_id,
           arg_max(tx_hash, seen_at) FILTER (WHERE tx_hash IS NOT NULL) AS tx_hash,
           arg_max(job_id, seen_at) FILTER (WHERE job_id IS NOT NULL)   AS job_id,
           arg_max(amount, seen_at) FILTER (WHERE amount IS NOT NULL)   AS amount,
           arg_max(payer, seen_at)                                      AS payer,
           arg_max(network, seen_at)                                    AS network,
           bool_or(success)                                             AS success,
           count(DISTINCT tx_hash)                                      AS settlements,
           list(DISTINCT tx_key(tx_hash) ORDER BY tx_key(tx_hash)) FILTER (WHERE tx_hash IS NOT NULL) AS txs,
           max(amount)                                                  AS max_settled,
           bool_or(seller_receipt IS NOT NULL)                          AS has_seller_receipt,
           arg_max({'channel_id': channel_id, 'tx': channel_tx, 'amount': channel_amount,
                    'charged_cumulative': charged_cumulative}, seen_at) FILTER (WHERE channel_id IS NOT NULL) AS channel
    FROM settlements_of(scoped) GROUP BY logical_id
), last_check AS (  -- the latest verdict, as a whole (arg_max skips NULLs, so pack the fields)
    SELECT logical_id, v.proof_status, v.resolution, v.reason, v.tx, v.session_amount, verdict_at FROM (
        SELECT receipt_id AS logical_id, max(observed_at) AS verdict_at,
               arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason, 'tx': tx,
                        'session_amount': session_amount},
                       observed_at) AS v
        FROM checks WHERE "check" = 'verdict' AND in_scope(scoped, receipt_id) GROUP BY receipt_id)
), settled AS (  -- the latest result of the settlement check (x402's, an OpenGradient session's, a channel's claim)
    SELECT receipt_id AS logical_id, arg_max(result, observed_at) AS result, max(observed_at) AS checked_at
    FROM checks WHERE "check" IN ('settlement_tx', 'session_settlement', 'channel_claim') AND in_scope(scoped, receipt_id)
    GROUP BY receipt_id
), trust AS (  -- what the latest passing settlement check rested on: single-node, or quorum-N endpoints
    SELECT receipt_id AS logical_id, arg_max(detail->>'trust', observed_at) AS trust
    FROM checks WHERE "check" IN ('settlement_tx', 'session_settlement', 'channel_claim') AND result = 'pass' AND in_scope(scoped, receipt_id)
    GROUP BY receipt_id
), seller AS (  -- the latest result of the check of the seller's signed receipt
    SELECT receipt_id AS logical_id, arg_max(result, observed_at) AS result
    FROM checks WHERE "check" = 'seller_receipt' AND in_scope(scoped, receipt_id) GROUP BY receipt_id
), sess AS (SELECT * FROM sessions_of(scoped))
, granted AS (  -- the payment that granted a sign-in's access: the latest payment by that account to the same
                -- host before it (x402 `sign-in-with-x`)
    SELECT g.logical_id, arg_max(r.logical_id, p.sent_at) AS access_by
    FROM grp g JOIN folded.payments p ON lower(p.payer) = lower(g.sign_in.address) AND p.sent_at < g.sign_in.at
    JOIN folded.requests r ON r.receipt_id = p.receipt_id AND r.host = g.sign_in.host
    WHERE g.sign_in IS NOT NULL GROUP BY g.logical_id
), relayed AS (  -- an OHTTP call's relay hop: the paid call that forwarded the same sealed bytes (addon/ohttp.py)
    SELECT g.logical_id, arg_max(r.logical_id, r.ts) AS relay_receipt
    FROM grp g JOIN folded.requests r ON r.request_sha256 = g.ohttp_sha256 AND r.logical_id <> g.logical_id
    WHERE g.ohttp_sha256 IS NOT NULL AND (r.paid OR r.upto_session IS NOT NULL) GROUP BY g.logical_id
)
SELECT
    grp.logical_id                                                  AS receipt_id,
    coalesce(grp.client_id, grp.provider_id)                        AS request_id,
    coalesce(settle.tx_hash, last_check.tx)                         AS payment_hash,
    coalesce(pay.payer, settle.payer, sess.payer)                   AS payer,
    coalesce(pay.pay_to, sess.pay_to)                               AS pay_to,
    coalesce(pay.asset, sess.asset)                                 AS asset,
    call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount) AS amount,
    decimal_text(call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount),
                 coalesce(pay.decimals, sess.decimals))             AS amount_decimal,
    CASE WHEN coalesce(pay.scheme, sess.scheme) IN ('upto', 'auth-capture') THEN coalesce(pay.amount, sess.amount_cap) END AS amount_cap,
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
    fixed_amount(pay.scheme, pay.amount)             AS signed_amount,
    coalesce(pay.payments, 0)                                       AS payment_count,
    coalesce(settle.settlements, 0)                                 AS settlement_count,
    grp.session_id,
    sess.opened_by                                                  AS session_opened_by,
    sess.calls                                                      AS session_calls,
    sess.deadline                                                   AS session_deadline,
    last_check.session_amount,
    coalesce(pay.channel_id, settle.channel.channel_id)             AS channel_id,
    pay.voucher_amount::HUGEINT                                     AS voucher_amount,
    settle.channel.charged_cumulative::HUGEINT                      AS charged_cumulative,
    pay.deposit_amount::HUGEINT                                     AS deposit_amount,
    settle.channel.tx                                               AS channel_tx,
    settle.channel.amount::HUGEINT                                  AS channel_tx_amount,
    grp.settlement_type,
    grp.tee_id,
    grp.tee_timestamp,
    grp.anchor_tx,
    grp.anchor_blob_id,
    grp.model,
    grp.total_tokens,
    grp.prompt_tokens,
    grp.completion_tokens,
    grp.latency_ms,
    -- what the call cost: what it paid on chain (x402, in whole tokens of its asset); for a call paid on
    -- chain whose own charge is not known (a cap, a share of a session), nothing; for a call not paid on
    -- chain, what the price table says its tokens cost (API-key billing). Unknown is NULL, never 0.
    CASE WHEN call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount) IS NOT NULL
         THEN whole_tokens(call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount),
                           coalesce(pay.decimals, sess.decimals))
         WHEN pay.logical_id IS NULL AND grp.session_id IS NULL THEN grp.priced.cost END AS cost,
    CASE WHEN call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount) IS NOT NULL
         THEN coalesce(pay.symbol, sess.symbol)
         WHEN pay.logical_id IS NULL AND grp.session_id IS NULL THEN grp.priced.currency END AS cost_currency,
    CASE WHEN call_amount(pay.scheme, settle.amount, pay.amount, last_check.session_amount) IS NOT NULL
         THEN CASE WHEN coalesce(pay.decimals, sess.decimals) IS NOT NULL THEN 'x402' ELSE 'unknown' END
         WHEN pay.logical_id IS NULL AND grp.session_id IS NULL AND grp.priced.cost IS NOT NULL THEN 'price_table'
         ELSE 'unknown' END                                         AS cost_source,
    CASE WHEN pay.logical_id IS NULL AND grp.session_id IS NULL THEN grp.priced.table END AS price_table,
    grp.status,
    grp.attempts,
    coalesce(last_check.proof_status,
             CASE WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
                       OR grp.session_id IS NOT NULL THEN 'pending' ELSE 'unpaid' END) AS proof_status,
    last_check.resolution,
    CASE WHEN last_check.logical_id IS NOT NULL THEN last_check.reason
         WHEN pay.logical_id IS NOT NULL OR settle.logical_id IS NOT NULL
              OR grp.session_id IS NOT NULL THEN 'not_verified'
         WHEN grp.ohttp THEN 'sealed' END                           AS reason,  -- (OHTTP: the proof is in the ciphertext)
    CASE WHEN last_check.proof_status = 'passed' THEN trust.trust END AS trust,
    last_check.verdict_at                                           AS proof_status_at,
    settled.result                                                  AS settlement_check,
    settled.checked_at                                              AS settlement_checked_at,
    settle.txs                                                      AS settlement_txs,
    settle.max_settled                                              AS max_settled_amount,
    pay.amount                                                      AS payment_amount,
    coalesce(pay.deadline, pay.valid_before, sess.deadline)         AS deadline,
    grp.first_seen,
    grp.last_seen,
    settle.job_id                                                   AS settlement_job_id,
    settle.success                                                  AS settlement_success,
    CASE seller.result WHEN 'pass' THEN 'valid' WHEN 'fail' THEN 'invalid'
         ELSE CASE WHEN settle.has_seller_receipt THEN 'not_verified' ELSE 'absent' END END AS seller_receipt,
    grp.host,
    grp.path,
    grp.mcp_tool,
    grp.a2a_task,
    CASE WHEN grp.sign_in IS NULL THEN NULL WHEN grp.sign_in.signer IS NOT NULL THEN 'valid' ELSE 'invalid' END AS sign_in,
    grp.sign_in.address                                             AS sign_in_address,
    grp.sign_in.error                                               AS sign_in_error,
    granted.access_by,
    grp.ohttp_tee_id,
    relayed.relay_receipt,
    grp.app,
    grp.app_name,
    grp.client_pid,
    grp.client,
    list_sort(list_distinct(list_transform(list_filter(list_concat(idlist._ids, [grp.logical_id, settle.tx_hash,
        settle.job_id, pay.payer, pay.nonce, pay.channel_id, settle.channel.tx]), lambda x: x IS NOT NULL),
        lambda x: lower(x)))) AS ids  -- (sorted: one order wherever it is computed)
FROM grp
JOIN idlist USING (logical_id)
LEFT JOIN pay USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN settle USING (logical_id)
LEFT JOIN last_check USING (logical_id)
LEFT JOIN settled USING (logical_id)
LEFT JOIN trust USING (logical_id)
LEFT JOIN seller USING (logical_id)
LEFT JOIN granted USING (logical_id)
LEFT JOIN relayed USING (logical_id)
LEFT JOIN sess ON sess.session_id = grp.session_id;

-- The logical calls whose receipts the tail changes (folded.tail_*: the events folded on the fly, or those
-- of one fold step). Base tables only: it is cheap. (storage/db.py `scope()` adds their sessions' calls.)
CREATE OR REPLACE MACRO touched() AS TABLE
WITH ex AS (
    SELECT receipt_id FROM folded.tail_requests UNION SELECT receipt_id FROM folded.tail_responses
    UNION SELECT receipt_id FROM folded.tail_stream_ends UNION SELECT receipt_id FROM folded.tail_errors
)
SELECT logical_id FROM folded.requests WHERE receipt_id IN (SELECT receipt_id FROM ex)
UNION SELECT receipt_id FROM folded.tail_checks;

-- Every call of an OpenGradient session that a call in folded.scope_ids belongs to: a session's receipts count
-- its calls, so they are computed together (a scope is always whole: storage/db.py `scope()`).
CREATE OR REPLACE MACRO session_mates() AS TABLE
WITH l AS (
    SELECT logical_id FROM folded.scope_ids
), s AS (  -- calls.upto_session: the request's, else its answer's
    SELECT upto_session AS session FROM folded.requests WHERE logical_id IN (SELECT logical_id FROM l)
    UNION SELECT og_upto_session FROM folded.responses
    WHERE receipt_id IN (SELECT receipt_id FROM folded.requests WHERE logical_id IN (SELECT logical_id FROM l))
)
SELECT logical_id FROM folded.requests WHERE upto_session IN (SELECT session FROM s)
UNION SELECT logical_id FROM folded.requests
WHERE receipt_id IN (SELECT receipt_id FROM folded.responses WHERE og_upto_session IN (SELECT session FROM s));
