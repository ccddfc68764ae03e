"""The verifier's reads, written again as plain queries over the user-facing views (payments, settlements,
challenges, checks, calls, sessions): what each pass reads from the folded tables (verifier/verify.py,
verifier/og.py) must be exactly these rows."""
from concurrent.futures import ThreadPoolExecutor

from receipts.storage import db
from receipts.verifier import og as OG
from receipts.verifier import verify as V

# The OpenGradient calls: the x402 pass leaves them to verifier/og.py.
VIEWS_OG_CALLS = "SELECT DISTINCT logical_id FROM calls WHERE upto_session IS NOT NULL OR tee_id IS NOT NULL"
# The calls paid from a payment channel: verifier/channels.py's.
VIEWS_CHANNEL_CALLS = "SELECT DISTINCT logical_id FROM payments WHERE channel_id IS NOT NULL AND kind LIKE 'channel_%'"
# The offer that applies to a call: of its latest 402, the first `accepts` entry.
VIEWS_OFFER = """
SELECT logical_id, arg_max({'amount': amount, 'pay_to': pay_to, 'asset': asset, 'network': network},
                           {'seen_at': seen_at, 'first': -item}) AS c
FROM challenges GROUP BY logical_id
"""
VIEWS_VERDICT = """
SELECT receipt_id AS logical_id,
       arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason}, observed_at) AS v
FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id
"""
# The x402 pass: every paid call not final yet, with its payment, the offer it answered, its
# settlements, the status of its last attempt and its latest verdict.
VIEWS_TO_VERIFY = f"""
WITH pay AS (
    SELECT logical_id, count(*) AS payment_count,
           arg_max({{'payer': payer, 'pay_to': pay_to, 'asset': asset, 'amount': amount, 'scheme': scheme,
                    'kind': kind, 'nonce': nonce, 'network': network, 'valid_after': valid_after,
                    'valid_before': valid_before, 'signer': signer, 'signer_error': signer_error,
                    'paid_at': epoch(sent_at), 'signature_sha256': signature_sha256, 'payment_tx': payment_tx,
                    'spender': spender, 'channel_id': channel_id}},
                   sent_at) AS p
    FROM payments GROUP BY logical_id
), settle AS (
    SELECT logical_id, arg_max(tx_hash, seen_at) FILTER (WHERE tx_hash IS NOT NULL) AS payment_hash,
           arg_max(job_id, seen_at) FILTER (WHERE job_id IS NOT NULL) AS settlement_job_id,
           count(DISTINCT tx_hash) AS settlement_count,
           arg_max(amount, seen_at) FILTER (WHERE amount IS NOT NULL) AS settled_amount
    FROM settlements GROUP BY logical_id
), chal AS ({VIEWS_OFFER}
), answer AS (  -- the status of the last attempt, NULL if it had no answer (packed: arg_max skips NULLs)
    SELECT logical_id, arg_max({{'status': status}}, started_at).status AS status FROM calls GROUP BY logical_id
), verdict AS ({VIEWS_VERDICT})
SELECT pay.logical_id AS receipt_id, p.payer, p.pay_to, p.asset, p.scheme, p.kind, p.nonce,
       coalesce(p.network, c.network) AS network, p.valid_after, p.valid_before, p.paid_at, p.signer, p.signer_error,
       CASE WHEN p.scheme IN ('exact', 'mpp', 'auth-capture') THEN p.amount END AS signed_amount,
       CASE WHEN p.scheme = 'upto' THEN p.amount END AS amount_cap,
       c.amount AS max_amount_required, c.pay_to AS challenge_pay_to, c.asset AS challenge_asset,
       c.network AS challenge_network, settle.payment_hash, settle.settlement_job_id,
       coalesce(settle.settlement_count, 0) AS settlement_count, payment_count, answer.status,
       v.proof_status AS last_status, v.resolution AS last_resolution, v.reason AS last_reason, p.signature_sha256, p.payment_tx, settle.settled_amount, p.spender, p.channel_id
FROM pay
LEFT JOIN settle USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN answer USING (logical_id)
LEFT JOIN verdict USING (logical_id)
WHERE p.payer IS NOT NULL AND coalesce(v.proof_status, 'pending') IN ('pending', 'passed')
  AND pay.logical_id NOT IN ({VIEWS_OG_CALLS}) AND pay.logical_id NOT IN ({VIEWS_CHANNEL_CALLS})
ORDER BY receipt_id
"""
# The latest result of each check of each receipt, and whether it ever passed.
VIEWS_LAST_CHECKS = """
SELECT receipt_id, "check", l.result, l.reason, ever_passed FROM (
    SELECT receipt_id, "check", arg_max({'result': result, 'reason': reason}, observed_at) AS l,
           bool_or(result = 'pass') AS ever_passed
    FROM checks GROUP BY ALL)
ORDER BY ALL
"""
# The OpenGradient pass: every call with an upto session or a TEE proof not final yet, with its latest
# such exchange, its session (and the payment that opened it) and, for the call that opened it, the offer.
VIEWS_OG_TO_VERIFY = f"""
WITH og AS (
    SELECT logical_id, arg_max({{'session_id': upto_session, 'settlement_type': settlement_type, 'tee_id': tee_id,
                                'tee_timestamp': tee_timestamp, 'tee_request_hash': tee_request_hash,
                                'tee_output_hash': tee_output_hash, 'tee_signature': tee_signature,
                                'request_hashes': tee_request_hashes, 'output_seen': tee_output_seen,
                                'anchor_tx': og_settlement_tx_hash}}, started_at) AS x,
           max(upto_session) AS any_session
    FROM calls WHERE upto_session IS NOT NULL OR tee_id IS NOT NULL
    GROUP BY logical_id
), verdict AS ({VIEWS_VERDICT}
), chal AS ({VIEWS_OFFER})
SELECT og.logical_id AS receipt_id, x.settlement_type, x.tee_id, x.tee_timestamp, x.tee_request_hash,
       x.tee_output_hash, x.tee_signature, x.request_hashes, x.output_seen, x.anchor_tx,
       coalesce(x.session_id, any_session) AS session,
       s.payer, s.pay_to, s.asset, s.network, s.amount_cap, s.nonce, s.deadline, s.valid_after, s.signer,
       epoch(s.opened_at) AS paid_at, s.opened_by,
       CASE WHEN s.opened_by = og.logical_id THEN c.amount END AS max_amount_required,
       CASE WHEN s.opened_by = og.logical_id THEN c.pay_to END AS challenge_pay_to,
       CASE WHEN s.opened_by = og.logical_id THEN c.asset END AS challenge_asset,
       CASE WHEN s.opened_by = og.logical_id THEN c.network END AS challenge_network,
       v.proof_status AS last_status, v.resolution AS last_resolution, v.reason AS last_reason
FROM og
LEFT JOIN sessions s ON s.session_id = coalesce(x.session_id, og.any_session)
LEFT JOIN chal ON chal.logical_id = og.logical_id
LEFT JOIN verdict ON verdict.logical_id = og.logical_id
WHERE coalesce(v.proof_status, 'pending') IN ('pending', 'passed')
ORDER BY og.logical_id
"""


def x402_pass_and_views(data_dir, part: int | None = None) -> dict:
    """What the x402 pass reads (its rounds, queried `part` receipts at a time), next to the same over
    the views: {"rows", "views_rows"} (the receipts to verify, as tuples in VIEWS_TO_VERIFY's columns),
    {"history", "views_history"} (the latest result of each check of every receipt), {"og",
    "views_og"} (the OpenGradient calls), {"parts"} (the queries the pass ran)."""
    with db.connect(data_dir) as con:
        cur = con.execute(VIEWS_TO_VERIFY)
        cols = [d[0] for d in cur.description]
        out = {"views_rows": cur.fetchall(), "views_history": con.execute(VIEWS_LAST_CHECKS).fetchall(),
               "views_og": [i for i, in con.execute(VIEWS_OG_CALLS + " ORDER BY 1").fetchall()]}
    with db.connect(data_dir, views=False, settings={"threads": 1}) as con, ThreadPoolExecutor(1) as pool:
        pool.submit(V._prepare, con).result()
        out["og"] = [i for i, in con.execute("SELECT logical_id FROM og_calls ORDER BY 1").fetchall()]
        parts, rows = pool.submit(V.parts, con, V.PAID_CALLS, part or V.PART).result(), []
        histories = V.HISTORIES.replace("{part_checks}", "true")  # (every call's, as the parts read them)
        for batch, names in V._rounds(con, 7, pool, part):
            rows += [dict(zip(names, r)) for r in batch]
        out["history"] = con.execute(
            'SELECT logical_id, h."check", h.result, h.reason, h.ever_passed '
            f'FROM (SELECT logical_id, unnest(history) AS h FROM ({histories})) ORDER BY ALL').fetchall()
    out["parts"] = len(parts) or 1
    out["rows"] = sorted(tuple(r[c] for c in cols) for r in rows)
    out["round_history"] = sorted((r["receipt_id"], h["check"], h["result"], h["reason"], h["ever_passed"])
                                  for r in rows for h in r["history"] or ())
    return out


def og_pass_and_views(data_dir, part: int = OG.PART) -> dict:
    """What the OpenGradient pass reads (verifier/og.py `read`, `part` calls at a time) next to the same
    over the views: {"rows", "views_rows"} (as dicts), {"last", "views_last"} (the latest result and
    reason of each check of those receipts) and {"parts"} (how many parts were read)."""
    with db.connect(data_dir, views=False, settings={"threads": 1}) as con:
        V._prepare(con)
        rows, last, parts = [], {}, V.parts(con, "og_calls", part)
        for lo, hi in parts:
            got, got_last = OG.read(con, lo, hi)
            rows += got
            last.update(got_last)
        wanted = {r["receipt_id"] for r in rows}
        last = {k: v for k, v in last.items() if k[0] in wanted}
    with db.connect(data_dir) as con:
        cur = con.execute(VIEWS_OG_TO_VERIFY)
        cols = [d[0] for d in cur.description]
        views_rows = [OG._row(dict(zip(cols, r))) for r in cur.fetchall()]
        wanted = {r["receipt_id"] for r in views_rows}
        views_last = {(rid, name): (result, reason) for rid, name, result, reason, _ in
                      con.execute(VIEWS_LAST_CHECKS).fetchall() if rid in wanted}
    return {"rows": rows, "views_rows": views_rows, "last": last, "views_last": views_last, "parts": len(parts)}
