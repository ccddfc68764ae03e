"""The rows that cross from SQL into Python are typed, and the types are held to the queries: a column
renamed in the SQL or in the TypedDict fails here. (mypy checks r["…"] against the TypedDict and the type of
what r.get("…") gives for a known key; it lets r.get of an unknown key pass, so this test is the contract.)"""

import typing

from receipts.storage import db
from receipts.verifier import verify


def test_a_paid_calls_row_has_the_columns_of_the_query(tmp_path):
    con = db.connect(tmp_path, views=False, journal=False)
    try:
        verify._prepare(con)
        cur = con.execute(verify.to_verify(None, None) + " LIMIT 0")
        columns = [d[0] for d in cur.description]
    finally:
        con.close()
    hints = typing.get_type_hints(verify.PaidCall, include_extras=True)
    set_in_python = {k for k, v in hints.items() if typing.get_origin(v) is typing.NotRequired}
    assert columns == [k for k in hints if k not in set_in_python]  # the same names, in the query's order
    assert set_in_python == {"settlement_ever_passed"}
