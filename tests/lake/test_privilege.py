"""Least privilege, as the README's table gives it: a shipper needs SELECT, INSERT and UPDATE on the
catalog (no DELETE) and may write objects; a reader needs SELECT and may only read and list objects; only
the maintainer deletes. Real grants: PostgreSQL roles with exactly those privileges, and a SeaweedFS
identity allowed only `Read` and `List` on the bucket. A refused write is one line, loses nothing, and
the next shipment with the right credentials is still exactly once."""
import itertools

from test_ship import assert_exactly_once, make_calls, recorded

_roles = itertools.count(1)


def roles(lake) -> tuple[str, str]:
    """Catalog strings for a new shipper role and a new reader role on `lake`'s database."""
    n = next(_roles)
    db = lake.url.split("dbname=")[1].split()[0]
    shipper, reader = f"{db}_shipper{n}", f"{db}_reader{n}"
    for role, grants in ((shipper, "SELECT, INSERT, UPDATE"), (reader, "SELECT")):
        lake.pg.psql(f'CREATE ROLE "{role}" LOGIN')
        lake.pg.psql(f'GRANT USAGE ON SCHEMA public TO "{role}"; GRANT {grants} ON ALL TABLES IN SCHEMA public TO "{role}"',
                     db=db)
    return (lake.url.replace("user=receipts", f"user={shipper}"), lake.url.replace("user=receipts", f"user={reader}"))


def test_each_role_does_its_job_with_only_its_grants(recorder, upstream, lake):
    shipper, reader = roles(lake)
    reading = {"RECEIPTS_LAKE": reader, **lake.s3.env(reader=True)}
    ids = make_calls(recorder, upstream, 6)
    recorded(recorder, ids)

    # a shipper with the reader's object-store identity: refused in one line, nothing committed
    out = lake.ship(recorder.data, env={"RECEIPTS_LAKE": shipper, **lake.s3.env(reader=True)})
    assert out.returncode != 0
    assert "Error:" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert lake.sql("SELECT count(*) AS n FROM events")[0]["n"] == 0

    # a shipper with the reader's catalog role: refused too
    out = lake.ship(recorder.data, env={"RECEIPTS_LAKE": reader})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert lake.sql("SELECT count(*) AS n FROM events")[0]["n"] == 0

    # the shipper's grants (no DELETE on the catalog) are enough to ship, exactly once
    out = lake.ship(recorder.data, env={"RECEIPTS_LAKE": shipper})
    assert out.returncode == 0, out.stderr
    assert_exactly_once(lake, ids)

    # the reader's grants are enough for every reader
    out = lake.cli("sql", "--json", "SELECT count(*) AS n FROM calls", env=reading)
    assert out.returncode == 0, out.stderr
    assert '"n":%d' % len(ids) in out.stdout.replace(" ", "")
    out = lake.cli("show", ids[-1], env=reading)
    assert out.returncode == 0 and ids[-1] in out.stdout, out.stderr

    # maintenance deletes: the shipper's grants are not enough, and the refusal is one line
    out = lake.cli("lake", "maintain", "--older-than", "0", env={"RECEIPTS_LAKE": shipper})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "needs DELETE on the catalog's tables, and this role has none" in out.stderr, out.stderr
    assert lake.cli("lake", "maintain", "--older-than", "0").returncode == 0  # (the maintainer's grants)
    assert_exactly_once(lake, ids)
