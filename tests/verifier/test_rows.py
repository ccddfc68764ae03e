"""The rows that cross from SQL into the verifier are typed, and the types are held to the queries: a
column renamed in the SQL or in the TypedDict fails here. (mypy checks r["…"] against the TypedDict and the
type of what r.get("…") gives for a known key; it lets r.get of an unknown key pass, so this test is the
contract.)"""

import typing

import pytest

from receipts.storage import db
from receipts.verifier import channels, og, verify

QUERIES = {  # the query, and the keys the verifier sets on a row itself (written here)
    "PaidCall": (verify.PaidCall, lambda: verify.to_verify(None, None), {"settlement_ever_passed"}),
    "OgCall": (og.OgCall, lambda: og.TO_VERIFY, set()),
    "ChannelExchange": (channels.ChannelExchange, lambda: channels.EXCHANGES, {"before"}),
}


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    con = db.connect(tmp_path_factory.mktemp("data"), views=False, journal=False)
    verify._prepare(con)  # (the pass's tables: og_calls, channel_calls)
    yield con
    con.close()


@pytest.mark.parametrize("name", QUERIES)
def test_a_row_type_has_the_columns_of_its_query(con, name):
    typed, query, set_in_python = QUERIES[name]
    sql = query().replace("{part}", verify.in_part(None, None)).replace("{part_checks}",
                                                                         verify.in_part(None, None, "receipt_id"))
    columns = [d[0] for d in con.execute(sql + " LIMIT 0").description]
    hints = typing.get_type_hints(typed, include_extras=True)
    not_required = {k for k, v in hints.items() if typing.get_origin(v) is typing.NotRequired}
    assert not_required == set_in_python
    assert columns == [k for k in hints if k not in not_required]  # the same names, in the query's order
