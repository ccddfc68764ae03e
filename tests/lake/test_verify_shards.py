"""Verifiers scale out over a lake: `receipts verify --lake … --shard k/K` on separate data directories
(as on separate hosts) decide every receipt once between them, and their union equals one verifier's
run over the same data. The data: a synthetic journal with every kind of call and a check history
(testbed/synthetic.py), shipped to two lakes; no node is configured (tests talk to 127.0.0.1 only), so
the verdicts are those the verifier reaches from the records alone."""
import json
import sys

from support.proc import ROOT

sys.path.insert(0, str(ROOT))
from testbed.synthetic import generate

DECISION = ("SELECT c.receipt_id, c.\"check\", c.result, c.proof_status, c.resolution, c.reason, c.detail "
            "FROM folded.checks c JOIN events e ON e.id = c.event_id WHERE starts_with(e.writer, '{name}/') ORDER BY ALL")


def verify(lake, data, config, *extra):
    out = lake.cli("verify", "--once", "--lake", lake.url, "--data", str(data), "--config", str(config), "--name",
                   data.name, *extra, timeout=300)
    # (1: no node is configured, which the pass reports as faults; its decisions are made and shipped)
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr, out.stderr + out.stdout
    assert "shipped" in out.stdout, out.stdout
    return out.stdout


def test_two_shards_decide_every_receipt_once_and_agree_with_one_verifier(lakebed, tmp_path):
    from conftest import Lake

    pg, s3 = lakebed
    config = tmp_path / "no-nodes.yaml"
    config.write_text(json.dumps({"networks": {}}))
    recorded = tmp_path / "recorded"
    generate(str(recorded), 1500, seed=7)
    one, sharded = Lake(pg, s3, "shards_one"), Lake(pg, s3, "shards_two")
    for lake in (one, sharded):
        assert lake.cli("lake", "init", "--data-path", lake.path).returncode == 0
        assert lake.ship(recorded).returncode == 0

    verify(one, tmp_path / "single", config)
    verify(sharded, tmp_path / "shard1", config, "--shard", "1/2")
    verify(sharded, tmp_path / "shard2", config, "--shard", "2/2")

    single = one.sql(DECISION.format(name="single"))
    first, second = (sharded.sql(DECISION.format(name=n)) for n in ("shard1", "shard2"))
    assert single and first and second  # each shard decided some receipts
    assert not {r["receipt_id"] for r in first} & {r["receipt_id"] for r in second}  # never the same one twice
    key = lambda r: tuple(str(v) for v in r.values())
    assert sorted(first + second, key=key) == sorted(single, key=key)
    # a second pass of each shard decides nothing again: its first pass's checks are in the lake
    again = verify(sharded, tmp_path / "shard1", config, "--shard", "1/2")
    assert "0 changed" in again and sharded.sql(DECISION.format(name="shard1")) == first


def test_a_shard_needs_a_lake_and_a_valid_k_of_k(lake, tmp_path):
    out = lake.cli("verify", "--once", "--data", str(tmp_path), "--shard", "1/2", env={"RECEIPTS_LAKE": ""})
    assert out.returncode == 1 and "give --lake too" in out.stderr
    for bad in ("0/2", "3/2", "1-2", "a/b"):
        out = lake.cli("verify", "--once", "--data", str(tmp_path), "--shard", bad)
        assert out.returncode == 1 and "--shard takes k/K" in out.stderr, out.stderr
