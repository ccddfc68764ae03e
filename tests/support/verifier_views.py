"""The verifier's query as it reads over the user-facing views (payments, settlements, challenges,
checks, calls): the narrow single-scan read in verifier/verify.py must give exactly these rows."""
from storage import db
from verifier import verify as V

VIEWS_TO_VERIFY = """
WITH pay AS (
    SELECT logical_id, count(*) AS payment_count,
           arg_max({'payer': payer, 'pay_to': pay_to, 'asset': asset, 'amount': amount, 'scheme': scheme,
                    'kind': kind, 'nonce': nonce, 'network': network, 'valid_after': valid_after,
                    'valid_before': valid_before, 'signer': signer, 'signer_error': signer_error,
                    'paid_at': epoch(sent_at)}, sent_at) AS p
    FROM payments GROUP BY logical_id
), settle AS (
    SELECT logical_id, arg_max(tx_hash, seen_at) FILTER (WHERE tx_hash IS NOT NULL) AS payment_hash,
           arg_max(job_id, seen_at) FILTER (WHERE job_id IS NOT NULL) AS settlement_job_id,
           count(DISTINCT tx_hash) AS settlement_count
    FROM settlements GROUP BY logical_id
), chal AS (
    SELECT logical_id, arg_max({'amount': amount, 'pay_to': pay_to, 'asset': asset, 'network': network},
                               seen_at) AS c
    FROM challenges GROUP BY logical_id
), answer AS (
    SELECT r.logical_id, arg_max({'status': TRY_CAST(json_extract_string(e.data, '$.status') AS INTEGER)},
                                 r.ts).status AS status
    FROM requests r LEFT JOIN events e ON e.receipt_id = r.receipt_id AND e.type = 'response'
    WHERE r.logical_id IN (SELECT logical_id FROM pay)
    GROUP BY r.logical_id
), verdict AS (
    SELECT receipt_id AS logical_id,
           arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason}, observed_at) AS v
    FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id
)
SELECT pay.logical_id AS receipt_id, p.payer, p.pay_to, p.asset, p.scheme, p.kind, p.nonce,
       coalesce(p.network, c.network) AS network, p.valid_after, p.valid_before, p.paid_at, p.signer, p.signer_error,
       CASE WHEN p.scheme = 'exact' THEN p.amount END AS signed_amount,
       CASE WHEN p.scheme = 'upto' THEN p.amount END AS amount_cap,
       c.amount AS max_amount_required, c.pay_to AS challenge_pay_to, c.asset AS challenge_asset,
       c.network AS challenge_network, settle.payment_hash, settle.settlement_job_id,
       coalesce(settle.settlement_count, 0) AS settlement_count, payment_count, answer.status,
       v.proof_status AS last_status, v.resolution AS last_resolution, v.reason AS last_reason
FROM pay
LEFT JOIN settle USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN answer USING (logical_id)
LEFT JOIN verdict USING (logical_id)
WHERE p.payer IS NOT NULL AND coalesce(v.proof_status, 'pending') IN ('pending', 'passed')
  AND pay.logical_id NOT IN (SELECT logical_id FROM calls WHERE upto_session IS NOT NULL OR tee_id IS NOT NULL)
ORDER BY receipt_id
"""
VIEWS_LAST_CHECKS = """
SELECT receipt_id, "check", l.result, l.reason, ever_passed FROM (
    SELECT receipt_id, "check", arg_max({'result': result, 'reason': reason}, observed_at) AS l,
           bool_or(result = 'pass') AS ever_passed
    FROM checks GROUP BY ALL)
ORDER BY ALL
"""


def narrow_read_and_views(data_dir) -> tuple[list, list, list, list]:
    """(the verifier's rows, the views' rows, the verifier's check history, the views' check history)."""
    with db.connect(data_dir) as con:
        want, history = con.execute(VIEWS_TO_VERIFY).fetchall(), con.execute(VIEWS_LAST_CHECKS).fetchall()
    with db.connect(data_dir, snapshot=False, views=False) as con:
        V._prepare(con)
        got = [row[:-1] for row in con.execute(V.TO_VERIFY + " ORDER BY receipt_id", {"lo": None, "hi": None})
               .fetchall()]  # all parts at once, less the `history` column
        got_history = con.execute("SELECT * FROM last_checks ORDER BY ALL").fetchall()
    return got, want, got_history, history
