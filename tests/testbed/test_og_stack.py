"""The OpenGradient test bed end to end: the real opengradient SDK (1.1.4, in .venv-og) paying the local
TEE gateway (og-x402's session middleware) on real anvil chains, no recorder in between.

Everything a verifier needs is recomputed here from what the SDK returned, the registry and the
chains, with ``cryptography`` and ``eth_abi`` (not with the test bed's own helpers)."""

import base64
import json
import ssl
import urllib.error
import urllib.request

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from testbed import og_chain
from testbed.chain import TRANSFER_TOPIC, topic_address
from testbed.node import rpc_call
from testbed.og_stack import COST_PER_REQUEST, SESSION_CAP, pinned_context, start_og_stack

SETTLED_TOPIC = "0x" + keccak(b"Settled()").hex()
INDIVIDUAL_TOPIC = "0x74e71a1981c03bd0c36f3b1227f3ee2a34dca5d6fef25c4b2787e033ab60b782"
BATCH_TOPIC = "0xc2aff8d8a10a4543baabf39bd9ff45e7fc3881d19098df350a3b7f339e911127"


@pytest.fixture(scope="module")
def og():
    # without .venv-og (scripts/bootstrap makes it) this fails loudly: OgStackError names the fix
    with start_og_stack(session_idle=1.0, reaper_interval=0.1, batch_idle=60.0) as stack:
        yield stack


# --------------------------------------------------------------------------------------------
# Independent verification helpers
# --------------------------------------------------------------------------------------------


def canonical_request(body: dict) -> dict:
    """The request the gateway commits to (tee-gateway since March 2026, SDK 1.1.4 tee_verify)."""
    out = {"model": body["model"], "messages": [{"role": m["role"], "content": m["content"]} for m in body["messages"]],
           "temperature": float(body.get("temperature") or 0.0)}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    return out


def request_hash(body: dict) -> bytes:
    return keccak(json.dumps(canonical_request(body), sort_keys=True).encode())


def registered_key(og):
    record = og_chain.get_tee(og.og_url, og.registry, og.tee_id)
    assert record is not None and record["enabled"]
    return record, serialization.load_der_public_key(bytes(record["publicKey"]))


def signature_ok(public_key, signature_b64: str, req_hash: bytes, out_hash: bytes, timestamp: int) -> bool:
    message = keccak(req_hash + out_hash + int(timestamp).to_bytes(32, "big"))
    try:
        public_key.verify(base64.b64decode(signature_b64), message,
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def response_headers(line: dict) -> dict:
    return {k.lower(): v for k, v in (line["wire"][-1].get("headers") or {}).items()}


def raw_post(og, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A plain HTTPS POST to the gateway's chat route (TLS pinned to its certificate)."""
    req = urllib.request.Request(og.chat_url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=pinned_context(og.tls_cert_der)))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def logs(url: str, address: str, topics: list) -> list[dict]:
    return rpc_call(url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest", "address": address,
                                          "topics": topics}])


def leaf(values: list) -> bytes:
    types = ["bytes32", "bytes32", "bytes32", "bytes", "uint256"]
    decoded = [bytes.fromhex(values[0][2:]), bytes.fromhex(values[1][2:]), bytes.fromhex(values[2][2:]),
               bytes.fromhex(values[3][2:]), int(values[4])]
    return keccak(keccak(abi_encode(types, decoded)))


def proof_from_dump(dump: dict, index: int) -> list[bytes]:
    tree = [bytes.fromhex(node[2:]) for node in dump["tree"]]
    proof = []
    while index > 0:
        sibling = index - 1 if index % 2 == 0 else index + 1
        proof.append(tree[sibling])
        index = (index - 1) // 2
    return proof


def root_from(leaf_hash: bytes, proof: list[bytes]) -> bytes:
    node = leaf_hash
    for p in proof:
        node = keccak(b"".join(sorted((node, p))))
    return node


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_unpaid_request_gets_the_upto_challenge(og):
    status, headers, body = raw_post(og, {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 402
    assert "x-upto-session" not in headers
    required = json.loads(base64.b64decode(headers["payment-required"]))
    assert required["x402Version"] == 2
    assert required["resource"]["url"] == og.chat_url
    assert required["accepts"] == [{
        "scheme": "upto", "network": "eip155:8453", "asset": og_chain.OPG, "amount": str(SESSION_CAP),
        "payTo": og.payee.address, "maxTimeoutSeconds": 300,
        "extra": {"name": "OpenGradient", "version": "1", "assetTransferMethod": "permit2",
                  "facilitatorAddress": og.facilitator_address},
    }]
    assert "erc20ApprovalGasSponsoring" in required["extensions"]


def test_three_calls_share_one_session_and_settle_once_on_base(og):
    transfer_topics = [TRANSFER_TOPIC, topic_address(og.payer.address), topic_address(og.payee.address)]
    before = logs(og.base_url, og_chain.OPG, transfer_topics)

    lines = og.run_client(calls=3, settlement="private")

    assert [line["ok"] for line in lines] == [True, True, True], lines
    sessions = {response_headers(line).get("x-upto-session") for line in lines}
    assert len(sessions) == 1 and None not in sessions
    (session_id,) = sessions
    for line in lines:  # session mode: the client never sees a settlement result
        assert "payment-response" not in response_headers(line)
        assert line["data_settlement_transaction_hash"] is None

    settled = og.wait_for(lambda s: [x for x in s["settled_sessions"] if x["session_id"] == session_id],
                          what="the idle session's settlement")[0]
    assert int(settled["accumulated"]) == 3 * COST_PER_REQUEST
    rec = og_chain.receipt(og.base_url, settled["settlement_tx"])
    assert int(rec["status"], 16) == 1
    assert rec["to"].lower() == og.chains.upto_proxy.lower()
    assert rec["from"].lower() == og.facilitator_address.lower()
    assert [log["address"].lower() for log in rec["logs"] if log["topics"][0] == SETTLED_TOPIC] == \
        [og.chains.upto_proxy.lower()]
    new = [log for log in logs(og.base_url, og_chain.OPG, transfer_topics) if log not in before]
    assert len(new) == 1 and new[0]["transactionHash"] == settled["settlement_tx"]
    assert int(new[0]["data"], 16) == 3 * COST_PER_REQUEST
    assert og_chain.nonce_used(og.base_url, og.payer.address, settled["nonce"])

    # the settled session is over: reusing its id gets the real middleware's 402
    status, _, body = raw_post(og, lines[0]["request"], {"X-Upto-Session": session_id})
    assert status == 402 and json.loads(body) == {"error": "Session expired or exhausted"}


def test_signatures_verify_with_the_registered_key_streamed_or_not(og):
    record, public_key = registered_key(og)
    assert "0x" + keccak(bytes(record["publicKey"])).hex() == og.tee_id
    assert bytes(record["tlsCertificate"]) == og.tls_cert_der
    served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", int(og.url.rsplit(":", 1)[1]))))
    assert served == og.tls_cert_der

    lines = og.run_client(plan=[{"stream": True, "settlement": "private"}, {"stream": False, "settlement": "private"}])
    assert [line["ok"] for line in lines] == [True, True], lines
    calls = {c["request"]["messages"][0]["content"]: c for c in og.state()["calls"]}
    for line in lines:
        assert line["answer"].startswith("You said: ")
        req_hash, out_hash = request_hash(line["request"]), keccak(line["answer"].encode())
        assert signature_ok(public_key, line["tee_signature"], req_hash, out_hash, int(line["tee_timestamp"]))
        # the gateway's own fields agree with what we recomputed
        tee = calls[line["request"]["messages"][0]["content"]]["tee"]
        assert (tee["tee_request_hash"], tee["tee_output_hash"], tee["tee_id"]) == \
            (req_hash.hex(), out_hash.hex(), og.tee_id)
    assert lines[0]["request"].get("stream") is True and lines[0]["chunks"] > 2
    assert lines[1]["wire"][-1]["body_tee"]["tee_request_hash"] == request_hash(lines[1]["request"]).hex()


def test_individual_settlement_anchors_each_response_on_the_og_chain(og):
    _, public_key = registered_key(og)
    lines = og.run_client(plan=[{"stream": False, "settlement": "individual"},
                                {"stream": True, "settlement": "individual"}])
    assert [line["ok"] for line in lines] == [True, True], lines
    headers = response_headers(lines[0])
    assert headers["x-settlement-tx-hash"] == lines[0]["data_settlement_transaction_hash"]
    assert headers["x-settlement-walrus-blob-id"] == lines[0]["data_settlement_blob_id"]
    assert headers["x-tee-request-hash"] == "0x" + request_hash(lines[0]["request"]).hex()
    assert headers["x-tee-id"] == og.tee_id and headers["x-tee-signature"] == lines[0]["tee_signature"]
    for line in lines:
        tx = line["data_settlement_transaction_hash"]
        rec = og_chain.receipt(og.og_url, tx)
        assert int(rec["status"], 16) == 1 and rec["to"].lower() == og.relay.lower()
        (event,) = [log for log in rec["logs"] if log["topics"][0] == INDIVIDUAL_TOPIC]
        input_hash, output_hash, timestamp, blob_id, signature = abi_decode(
            ["bytes32", "bytes32", "uint256", "bytes", "bytes"], bytes.fromhex(event["data"][2:]))
        assert event["topics"][1] == og.tee_id
        # og-x402's middleware names the Permit2 spender (the upto proxy) as ethAddress, not the payer
        assert event["topics"][2] == topic_address(og.chains.upto_proxy)
        assert input_hash == request_hash(line["request"])
        assert output_hash == keccak(line["answer"].encode())
        assert timestamp == int(line["tee_timestamp"])
        assert blob_id.decode() == line["data_settlement_blob_id"]
        assert signature == base64.b64decode(line["tee_signature"])
        assert signature_ok(public_key, line["tee_signature"], input_hash, output_hash, timestamp)
        record = json.loads(og.blobs.get(line["data_settlement_blob_id"]))
        assert record["teeId"] == og.tee_id and record["teeSignature"] == line["tee_signature"]
        assert record["timestamp"] == str(timestamp)


def test_batch_settlement_root_proves_each_leaf(og):
    og.flush()  # start from an empty batch
    og.faults(omit_leaf=1)  # the first call's leaf is accepted but left out of the tree
    lines = og.run_client(calls=3, settlement="batch")
    assert [line["ok"] for line in lines] == [True, True, True], lines
    batch = og.flush(sessions=False)["batch"]
    assert batch["status"] == 1 and batch["size"] == 2
    rec = og_chain.receipt(og.og_url, batch["tx_hash"])
    (event,) = [log for log in rec["logs"] if log["topics"][0] == BATCH_TOPIC]
    size, blob_id = abi_decode(["uint256", "bytes"], bytes.fromhex(event["data"][2:]))
    root = bytes.fromhex(event["topics"][1][2:])
    assert size == 2
    dump = json.loads(og.blobs.get(blob_id.decode()))
    assert dump["format"] == "standard-v1"
    assert dump["leafEncoding"] == ["bytes32", "bytes32", "bytes32", "bytes", "uint256"]
    assert bytes.fromhex(dump["tree"][0][2:]) == root
    for n, line in enumerate(lines):
        values = [og.tee_id, "0x" + request_hash(line["request"]).hex(), "0x" + keccak(line["answer"].encode()).hex(),
                  "0x" + base64.b64decode(line["tee_signature"]).hex(), str(line["tee_timestamp"])]
        entries = [v for v in dump["values"] if v["value"] == values]
        if n == 0:
            assert entries == []
            continue
        (entry,) = entries
        assert root_from(leaf(values), proof_from_dump(dump, entry["treeIndex"])) == root
    assert logs(og.og_url, og.relay, [BATCH_TOPIC, event["topics"][1]])[0]["transactionHash"] == batch["tx_hash"]


def test_faults_altered_answer_unregistered_key_and_reverted_settlement(og):
    _, public_key = registered_key(og)
    og.faults(alter_answer=1, revert_individual=1)
    first = og.run_client(plan=[{"stream": False, "settlement": "individual"}])[0]
    og.faults(unregistered_key=1)
    second = og.run_client(plan=[{"stream": True, "settlement": "private"}])[0]
    assert first["ok"] and second["ok"]

    # the answer was changed after signing: its own hash no longer verifies, the signed one does
    assert first["answer"].endswith("(altered after signing)")
    req_hash = request_hash(first["request"])
    assert not signature_ok(public_key, first["tee_signature"], req_hash, keccak(first["answer"].encode()),
                            first["tee_timestamp"])
    signed = first["answer"].removesuffix(" (altered after signing)")
    assert signature_ok(public_key, first["tee_signature"], req_hash, keccak(signed.encode()), first["tee_timestamp"])
    # its individual settlement named a TEE the registry does not know: the announced hash lands reverted
    rec = og_chain.receipt(og.og_url, first["data_settlement_transaction_hash"])
    assert int(rec["status"], 16) == 0

    # signed by a key that is not in the registry
    assert not signature_ok(public_key, second["tee_signature"], request_hash(second["request"]),
                            keccak(second["answer"].encode()), second["tee_timestamp"])
    assert og.state()["faults"]["counts"] == {}


def test_exhausted_session_ends_and_the_sdk_pays_again(og):
    # (and the gateway hashes the February 2026 form of the request meanwhile)
    og.configure(cost_per_request=SESSION_CAP // 2, request_hash_form="pydantic-2026-02")
    og.faults(never_settle_session="next", drop_individual=1)
    try:
        lines = og.run_client(plan=[{"settlement": "individual"}, {"settlement": "private"},
                                    {"settlement": "individual"}])
    finally:
        og.configure(cost_per_request=COST_PER_REQUEST, request_hash_form="canonical")
    assert [line["ok"] for line in lines] == [True, True, True], lines
    body = lines[1]["request"]
    february = {"model": body["model"], "temperature": body["temperature"], "max_tokens": body["max_tokens"],
                "messages": [{"role": m["role"], "content": m["content"], "tool_calls": None, "tool_call_id": None,
                              "name": None} for m in body["messages"]],
                "stop": None, "tools": None, "tool_choice": "auto"}
    assert lines[1]["wire"][-1]["body_tee"]["tee_request_hash"] == \
        keccak(json.dumps(february, sort_keys=True).encode()).hex() != request_hash(body).hex()
    first, second, third = (response_headers(line)["x-upto-session"] for line in lines)
    # two calls use up the cap; the third gets "Session expired or exhausted" inside the SDK's
    # transport, which asks for a new challenge and pays again: a new session
    assert first == second != third
    status, _, body = raw_post(og, lines[0]["request"], {"X-Upto-Session": first})
    assert status == 402 and json.loads(body) == {"error": "Session expired or exhausted"}

    og.flush()
    state = og.state()
    (exhausted,) = [s for s in state["sessions"] if s["session_id"] == first]  # never settled (fault)
    assert int(exhausted["accumulated"]) == SESSION_CAP and not exhausted["settled"]
    (settled,) = [s for s in state["settled_sessions"] if s["session_id"] == third]
    assert int(settled["accumulated"]) == SESSION_CAP // 2

    # the first individual settlement was announced but never broadcast; the next one took its nonce
    dropped, landed = lines[0]["data_settlement_transaction_hash"], lines[2]["data_settlement_transaction_hash"]
    assert int(og_chain.receipt(og.og_url, landed)["status"], 16) == 1
    assert rpc_call(og.og_url, "eth_getTransactionByHash", [dropped]) is None
    (entry,) = [e for e in state["individual"] if e["tx_hash"] == dropped]
    assert entry["status"] == "dropped"
    og.faults(clear=True)  # (not before: it would forget the never-settled session too)
