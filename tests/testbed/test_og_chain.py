"""The OpenGradient test bed: two real anvil chains, this project's contracts, real transactions."""

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from receipts.addon.eip712 import PERMIT2_DOMAIN_TYPE, permit2_digest, recover
from testbed import ROOT
from testbed import og_chain as oc
from testbed.blobstore import blob_id_of, start_blobstore
from testbed.contracts.og.build import CONTRACTS, compile_all, load_artifact, source_sha256
from testbed.og_chain import (
    FACILITATOR, OPG, PAYEE, PAYER, PERMIT2, TEE_OPERATOR, TEE_REGISTRY, UPTO_PROXY, TxReverted,
)

# Values as PROTOCOL.md §2/§3 documents them.
DOC_SETTLE_SELECTOR = "0xff11e7b4"
DOC_SETTLE_WITH_PERMIT_SELECTOR = "0x016c1748"
DOC_SETTLE_INDIVIDUAL_SELECTOR = "0x90480ad1"
DOC_SETTLED_TOPIC = "0x97088ec3606cfe8cc112180570d03fcde05f9b8e1bfef8e27784eaf5dd5691b6"
DOC_INDIVIDUAL_TOPIC = "0x74e71a1981c03bd0c36f3b1227f3ee2a34dca5d6fef25c4b2787e033ab60b782"
DOC_BATCH_TOPIC = "0xc2aff8d8a10a4543baabf39bd9ff45e7fc3881d19098df350a3b7f339e911127"
DOC_TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

CAP = 10**17  # 0.1 OPG, the gateway's session cap
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def chains():
    with oc.start_og_chains() as c:
        yield c


def _topic_address(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


def _logs(rec: dict, address: str, topic0: str) -> list[dict]:
    return [log for log in rec["logs"] if log["address"].lower() == address.lower() and log["topics"][0] == topic0]


def _tx(url: str, tx_hash: str) -> dict:
    return oc._rpc(url, "eth_getTransactionByHash", [tx_hash])


def _event_topic(contract: str, name: str) -> str:
    (event,) = [e for e in load_artifact(contract)["abi"] if e["type"] == "event" and e["name"] == name]
    return "0x" + keccak(f"{name}({','.join(oc._type(i) for i in event['inputs'])})".encode()).hex()


def _signed_upto(cap: int = CAP, **kw) -> tuple[dict, str]:
    auth = oc.upto_authorization(PAYER, PAYEE, cap, **kw)
    return auth, oc.sign_permit2(oc.BASE_CHAIN_ID, auth, PAYER.private_key)


def _rsa_tee_identity():
    """A DER SPKI RSA public key and a DER self-signed certificate, like a TEE registers."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tee.testbed.local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return spki, cert.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------------
# Selectors, topics, artifacts
# --------------------------------------------------------------------------------------------


def test_selectors_and_topics_match_the_documented_values():
    assert oc.selector("TestUptoPermit2Proxy", "settle") == DOC_SETTLE_SELECTOR
    assert oc.selector("TestUptoPermit2Proxy", "settleWithPermit") == DOC_SETTLE_WITH_PERMIT_SELECTOR
    assert oc.selector("TestSettlementRelay", "settleIndividual") == DOC_SETTLE_INDIVIDUAL_SELECTOR
    # the canonical Permit2's selectors
    assert oc.selector("TestPermit2", "permitWitnessTransferFrom") == "0x137c29fe"
    assert oc.selector("TestPermit2", "nonceBitmap") == "0x4fe02b44"
    assert oc.selector("TestPermit2", "DOMAIN_SEPARATOR") == "0x3644e515"
    # topics: from the strings, and from the compiled contracts' events
    assert "0x" + keccak(b"Settled()").hex() == DOC_SETTLED_TOPIC == oc.SETTLED_TOPIC
    assert _event_topic("TestUptoPermit2Proxy", "Settled") == DOC_SETTLED_TOPIC
    assert _event_topic("TestSettlementRelay", "IndividualSettlement") == DOC_INDIVIDUAL_TOPIC
    assert _event_topic("TestSettlementRelay", "BatchSettlement") == DOC_BATCH_TOPIC
    assert _event_topic("TestOPG", "Transfer") == DOC_TRANSFER_TOPIC == oc.TRANSFER_TOPIC


def test_the_upto_proxy_abi_is_the_one_the_x402_facilitator_calls():
    from x402.mechanisms.evm import constants

    def shape(abi, name):
        (fn,) = [e for e in abi if e.get("type") == "function" and e["name"] == name]
        return [(i["name"], oc._type(i)) for i in fn["inputs"]]

    ours = load_artifact("TestUptoPermit2Proxy")["abi"]
    assert shape(ours, "settle") == shape(constants.X402_UPTO_PERMIT2_PROXY_ABI, "settle")
    assert shape(ours, "settleWithPermit") == shape(constants.X402_UPTO_PERMIT2_PROXY_SETTLE_WITH_PERMIT_ABI,
                                                    "settleWithPermit")
    assert constants.X402_UPTO_PERMIT2_PROXY_ADDRESS == UPTO_PROXY
    assert constants.PERMIT2_ADDRESS == PERMIT2


def test_committed_artifacts_match_a_rebuild():
    for name in CONTRACTS:
        assert load_artifact(name)["sourceSha256"] == source_sha256(name), \
            f"{name} changed: run python -m testbed.contracts.og.build"
    fresh = compile_all()
    for name in CONTRACTS:
        assert fresh[name] == load_artifact(name), f"{name}: stale artifact"


# --------------------------------------------------------------------------------------------
# The chains
# --------------------------------------------------------------------------------------------


def test_two_chains_with_their_ids_and_contracts(chains):
    assert int(chains.base.rpc("eth_chainId"), 16) == 8453
    assert int(chains.og.rpc("eth_chainId"), 16) == 10740
    assert chains.base.port != chains.og.port
    for address, contract in ((OPG, "TestOPG"), (PERMIT2, "TestPermit2"), (UPTO_PROXY, "TestUptoPermit2Proxy")):
        assert chains.base.rpc("eth_getCode", address, "latest") == load_artifact(contract)["deployedBytecode"]
        assert chains.og.rpc("eth_getCode", address, "latest") == "0x"
    assert chains.registry == TEE_REGISTRY
    assert chains.og.rpc("eth_getCode", TEE_REGISTRY, "latest") == load_artifact("TestTEERegistry")["deployedBytecode"]
    assert len(chains.og.rpc("eth_getCode", chains.relay, "latest")) > 2
    # the token, although no constructor ran
    assert oc._call(chains.base.url, OPG, "TestOPG", "name") == ("OpenGradient",)
    assert oc._call(chains.base.url, OPG, "TestOPG", "symbol") == ("OPG",)
    assert oc._call(chains.base.url, OPG, "TestOPG", "decimals") == (18,)
    # the payer was funded and approved Permit2
    assert oc.opg_balance(chains.base.url, PAYER) >= oc.DEFAULT_OPG_FUNDS - 10 * CAP
    assert oc.opg_allowance(chains.base.url, PAYER, PERMIT2) == oc.MAX_UINT256
    # the extra dev account is anvil's account 4
    assert oc.address_of(TEE_OPERATOR.private_key) == TEE_OPERATOR.address
    assert chains.og.accounts()[4].lower() == TEE_OPERATOR.address.lower()


def test_permit2_domain_separator_is_the_one_addon_signs_for(chains):
    (on_chain,) = oc._call(chains.base.url, PERMIT2, "TestPermit2", "DOMAIN_SEPARATOR")
    expected = keccak(keccak(PERMIT2_DOMAIN_TYPE) + keccak(b"Permit2") + abi_encode(["uint256", "address"],
                                                                                     [8453, PERMIT2]))
    assert on_chain == expected


def test_fund_opg_works_for_any_address(chains):
    stranger = oc.address_of(secrets.token_bytes(32))
    oc.fund_opg(chains.base.url, stranger, 7 * 10**18)
    assert oc.opg_balance(chains.base.url, stranger) == 7 * 10**18
    assert oc.opg_allowance(chains.base.url, stranger, PERMIT2) == oc.MAX_UINT256


# --------------------------------------------------------------------------------------------
# x402 upto settlement on Base
# --------------------------------------------------------------------------------------------


def test_upto_settlement_moves_opg_and_leaves_the_documented_traces(chains):
    url = chains.base.url
    auth, sig = _signed_upto()
    assert recover(permit2_digest(8453, auth), sig) == PAYER.address.lower()  # the addon's view of it
    nonce = int(auth["nonce"])
    assert not oc.nonce_used(url, PAYER, nonce)
    payer_before, payee_before = oc.opg_balance(url, PAYER), oc.opg_balance(url, PAYEE)
    charge = CAP * 3 // 10  # the session cost, below the cap

    tx_hash = oc.settle_upto(url, auth, charge, PAYER, auth["witness"], sig)

    rec = oc.receipt(url, tx_hash)
    assert rec["status"] == "0x1"
    tx = _tx(url, tx_hash)
    assert tx["from"].lower() == FACILITATOR.address.lower()
    assert tx["to"].lower() == UPTO_PROXY.lower()
    assert tx["input"].startswith(DOC_SETTLE_SELECTOR)
    (transfer,) = _logs(rec, OPG, DOC_TRANSFER_TOPIC)
    assert transfer["topics"][1:] == [_topic_address(PAYER.address), _topic_address(PAYEE.address)]
    assert int(transfer["data"], 16) == charge
    assert len(_logs(rec, UPTO_PROXY, DOC_SETTLED_TOPIC)) == 1
    assert oc.opg_balance(url, PAYER) == payer_before - charge
    assert oc.opg_balance(url, PAYEE) == payee_before + charge
    # Permit2's unordered nonce: word nonce >> 8, bit nonce & 0xff
    assert oc.nonce_bitmap(url, PAYER, nonce >> 8) >> (nonce & 0xFF) & 1 == 1
    assert oc.nonce_used(url, PAYER, nonce)


def test_nonce_reuse_reverts_before_and_on_chain(chains):
    url = chains.base.url
    auth, sig = _signed_upto(nonce=(5 << 8) | 7)
    oc.settle_upto(url, auth, 1000, PAYER, auth["witness"], sig)
    assert oc.nonce_bitmap(url, PAYER, 5) >> 7 & 1 == 1
    payer_before = oc.opg_balance(url, PAYER)
    head = chains.base.block_number()

    with pytest.raises(TxReverted) as refused:
        oc.settle_upto(url, auth, 1000, PAYER, auth["witness"], sig)
    assert refused.value.reason == "InvalidNonce()" and refused.value.tx_hash is None
    assert chains.base.block_number() == head  # nothing was sent

    with pytest.raises(TxReverted) as landed:  # with gas given it goes on chain and fails there
        oc.settle_upto(url, auth, 1000, PAYER, auth["witness"], sig, gas=300_000)
    assert landed.value.receipt["status"] == "0x0"
    assert landed.value.reason == "InvalidNonce()"
    assert oc.opg_balance(url, PAYER) == payer_before


def test_charge_over_the_cap_reverts_and_keeps_the_nonce(chains):
    url = chains.base.url
    auth, sig = _signed_upto()
    with pytest.raises(TxReverted) as e:
        oc.settle_upto(url, auth, CAP + 1, PAYER, auth["witness"], sig)
    assert e.value.reason == "AmountExceedsPermitted()"
    assert not oc.nonce_used(url, PAYER, auth["nonce"])
    oc.settle_upto(url, auth, CAP, PAYER, auth["witness"], sig)  # exactly the cap is fine
    assert oc.nonce_used(url, PAYER, auth["nonce"])


@pytest.mark.parametrize("case, reason", [
    ("wrong_sender", "UnauthorizedFacilitator()"),
    ("other_recipient", "InvalidSigner()"),
    ("other_key", "InvalidSigner()"),
    ("expired", "SignatureExpired"),
    ("too_early", "PaymentTooEarly()"),
    ("zero", "InvalidAmount()"),
    ("truncated_signature", "InvalidSignatureLength()"),
])
def test_upto_settlement_guards(chains, case, reason):
    url = chains.base.url
    now = int(chains.base.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    kw = {"deadline": now - 1} if case == "expired" else {"valid_after": now + 3600} if case == "too_early" else {}
    auth, sig = _signed_upto(**kw)
    witness, sender, amount = dict(auth["witness"]), FACILITATOR, 1000
    if case == "wrong_sender":
        sender = PAYEE
    elif case == "other_recipient":
        witness["to"] = FACILITATOR.address  # the facilitator tries to redirect the money
    elif case == "other_key":
        sig = oc.sign_permit2(8453, auth, PAYEE.private_key)
    elif case == "zero":
        amount = 0
    elif case == "truncated_signature":
        sig = sig[:-4]  # 63 bytes (64 would be read as an EIP-2098 compact signature)
    with pytest.raises(TxReverted) as e:
        oc.settle_upto(url, auth, amount, PAYER, witness, sig, sender=sender)
    assert e.value.reason.startswith(reason)
    assert not oc.nonce_used(url, PAYER, auth["nonce"])


def test_the_real_x402_upto_client_and_facilitator_settle_here(chains):
    """x402 2.25.0's own upto client signs, its facilitator verifies (simulating settle) and settles."""
    from eth_account import Account
    from x402.mechanisms.evm.upto.client import UptoEvmScheme as UptoClient
    from x402.mechanisms.evm.upto.facilitator import UptoEvmScheme as UptoFacilitator
    from x402.schemas import PaymentPayload, PaymentRequirements

    from testbed.facilitator import make_signer

    url = chains.base.url
    facilitator = UptoFacilitator(make_signer(url, FACILITATOR.private_key))
    terms = PaymentRequirements(scheme="upto", network="eip155:8453", asset=OPG, amount=str(CAP),
                                pay_to=PAYEE.address, max_timeout_seconds=300,
                                extra={"name": "OpenGradient", "version": "1", **facilitator.get_extra("eip155:8453")})
    inner = UptoClient(Account.from_key(PAYER.private_key)).create_payment_payload(terms)
    payment = PaymentPayload(x402_version=2, payload=inner, accepted=terms)
    payee_before = oc.opg_balance(url, PAYEE)

    assert facilitator.verify(payment, terms).is_valid
    result = facilitator.settle(payment, terms.model_copy(update={"amount": str(CAP // 5)}))

    assert result.success, result
    rec = oc.receipt(url, result.transaction)
    assert len(_logs(rec, UPTO_PROXY, DOC_SETTLED_TOPIC)) == 1
    assert oc.opg_balance(url, PAYEE) == payee_before + CAP // 5
    assert oc.nonce_used(url, PAYER, inner["permit2Authorization"]["nonce"])


def test_settle_with_an_eip2612_permit_for_a_fresh_wallet(chains):
    url = chains.base.url
    key = secrets.token_bytes(32)
    owner = oc.address_of(key)
    oc.fund_opg(url, owner, CAP, approve_permit2=False)
    assert oc.opg_allowance(url, owner, PERMIT2) == 0
    auth = oc.upto_authorization(owner, PAYEE, CAP)
    sig = oc.sign_permit2(8453, auth, key)
    permit2612 = oc.sign_opg_permit(8453, key, PERMIT2, CAP, oc.opg_nonce(url, owner), int(auth["deadline"]))

    tx_hash = oc.settle_upto_with_permit(url, permit2612, auth, CAP // 4, owner, auth["witness"], sig)

    rec = oc.receipt(url, tx_hash)
    assert _tx(url, tx_hash)["input"].startswith(DOC_SETTLE_WITH_PERMIT_SELECTOR)
    assert len(_logs(rec, UPTO_PROXY, oc.SETTLED_WITH_PERMIT_TOPIC)) == 1
    assert len(_logs(rec, OPG, oc.APPROVAL_TOPIC)) == 1
    assert oc.opg_balance(url, owner) == CAP - CAP // 4
    assert oc.opg_nonce(url, owner) == 1


# --------------------------------------------------------------------------------------------
# The OpenGradient chain: registry and relay
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tee(chains):
    spki, cert = _rsa_tee_identity()
    tee_id = oc.register_tee(chains.og.url, chains.registry, spki, cert, "https://127.0.0.1:8443", PAYEE)
    return {"id": tee_id, "spki": spki, "cert": cert}


def test_registry_round_trip(chains, tee):
    url, registry = chains.og.url, chains.registry
    assert tee["id"] == "0x" + keccak(tee["spki"]).hex()
    (computed,) = oc._call(url, registry, "TestTEERegistry", "computeTEEId", tee["spki"])
    assert "0x" + computed.hex() == tee["id"]
    record = oc.get_tee(url, registry, tee["id"])
    assert record["owner"] == TEE_OPERATOR.address
    assert record["paymentAddress"] == PAYEE.address
    assert record["endpoint"] == "https://127.0.0.1:8443"
    assert record["publicKey"] == tee["spki"]
    assert record["tlsCertificate"] == tee["cert"]
    assert record["pcrHash"] == "0x" + "00" * 32
    assert record["teeType"] == 0 and record["enabled"] is True
    assert record["registeredAt"] > 0 and record["lastHeartbeatAt"] == record["registeredAt"]
    assert record["ohttpConfig"]["publicKey"] == b""
    (active,) = oc._call(url, registry, "TestTEERegistry", "getActiveTEEs", 0)
    assert tee["spki"] in [row[3] for row in active]
    assert oc.get_tee(url, registry, "0x" + "11" * 32) is None
    with pytest.raises(TxReverted) as again:
        oc.register_tee(url, registry, tee["spki"], tee["cert"], "https://elsewhere", PAYEE)
    assert again.value.reason == "TEEAlreadyExists()"


def test_the_opengradient_sdk_reads_the_registry_at_its_default_address(chains, tee):
    """The real SDK (opengradient 1.1.4, in .venv-og: it cannot share .venv with x402) finds the TEE."""
    sdk_python = ROOT / ".venv-og" / "bin" / "python"
    assert sdk_python.exists(), "no .venv-og with the opengradient SDK: scripts/bootstrap makes it"
    code = (
        "import json, sys\n"
        "from opengradient.client.tee_registry import TEERegistry\n"
        "from opengradient.client.llm import DEFAULT_TEE_REGISTRY_ADDRESS as default\n"
        "tees = TEERegistry(rpc_url=sys.argv[1], registry_address=default).get_active_tees_by_type(0)\n"
        "print(json.dumps([{'id': t.tee_id, 'endpoint': t.endpoint, 'pay': t.payment_address,\n"
        "                   'cert': t.tls_cert_der.hex(), 'key': t.signing_public_key_der.hex()} for t in tees]))\n"
    )
    done = subprocess.run([str(sdk_python), "-c", code, chains.og.url], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "*"})
    assert done.returncode == 0, done.stderr
    found = {t["id"].removeprefix("0x"): t for t in json.loads(done.stdout)}
    mine = found[tee["id"][2:]]
    assert mine["endpoint"] == "https://127.0.0.1:8443"
    assert mine["pay"] == PAYEE.address
    assert bytes.fromhex(mine["cert"]) == tee["cert"] and bytes.fromhex(mine["key"]) == tee["spki"]


def test_enable_disable_and_ownership(chains):
    url, registry = chains.og.url, chains.registry
    spki = b"\x30\x0d" + secrets.token_bytes(40)
    tee_id = oc.register_tee(url, registry, spki, b"cert", "https://127.0.0.1:1", PAYEE, enabled=False)
    assert oc.get_tee(url, registry, tee_id)["enabled"] is False
    (enabled_ids,) = oc._call(url, registry, "TestTEERegistry", "getEnabledTEEs", 0)
    assert bytes.fromhex(tee_id[2:]) not in enabled_ids
    with pytest.raises(TxReverted) as e:
        oc.set_tee_enabled(url, registry, tee_id, True, owner=PAYER)
    assert e.value.reason == "NotTEEOwner()"
    rec = oc.receipt(url, oc.set_tee_enabled(url, registry, tee_id, True))
    assert [log["topics"] for log in rec["logs"]] == [[oc.TEE_ENABLED_TOPIC, tee_id]]
    assert oc.get_tee(url, registry, tee_id)["enabled"] is True
    (enabled_ids,) = oc._call(url, registry, "TestTEERegistry", "getEnabledTEEs", 0)
    assert bytes.fromhex(tee_id[2:]) in enabled_ids


def test_settle_individual_emits_the_documented_event(chains, tee):
    url = chains.og.url
    input_hash, output_hash = keccak(b'{"model": "x"}'), keccak(b"the answer")
    stamp, tee_sig, blob = 1_750_000_000, secrets.token_bytes(256), "LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ"

    tx_hash = oc.settle_individual(url, chains.relay, tee["id"], input_hash, output_hash, stamp, PAYER, blob, tee_sig)

    rec = oc.receipt(url, tx_hash)
    assert rec["status"] == "0x1"
    assert _tx(url, tx_hash)["input"].startswith(DOC_SETTLE_INDIVIDUAL_SELECTOR)
    (log,) = rec["logs"]
    assert log["address"].lower() == chains.relay.lower()
    assert log["topics"] == [DOC_INDIVIDUAL_TOPIC, tee["id"], _topic_address(PAYER.address)]
    fields = abi_decode(["bytes32", "bytes32", "uint256", "bytes", "bytes"], bytes.fromhex(log["data"][2:]))
    assert fields == (input_hash, output_hash, stamp, blob.encode(), tee_sig)


def test_settle_individual_reverts_for_a_disabled_or_unknown_tee(chains):
    url, registry, relay = chains.og.url, chains.registry, chains.relay
    tee_id = oc.register_tee(url, registry, b"\x30\x0d" + secrets.token_bytes(40), b"c", "https://x", PAYEE)
    args = (b"\1" * 32, b"\2" * 32, 1, PAYER, "blob", b"sig")
    oc.settle_individual(url, relay, tee_id, *args)  # enabled: fine
    oc.set_tee_enabled(url, registry, tee_id, False)

    with pytest.raises(TxReverted) as disabled:
        oc.settle_individual(url, relay, tee_id, *args)
    assert disabled.value.reason == f"TEENotEnabled({tee_id})"
    with pytest.raises(TxReverted) as unknown:
        oc.settle_individual(url, relay, "0x" + "ab" * 32, *args)
    assert unknown.value.reason.startswith("TEENotEnabled")
    # a pre-signed settlement that lands reverted: its hash exists, its receipt says status 0
    tx_hash = oc.settle_individual(url, relay, tee_id, *args, gas=200_000, check=False)
    rec = oc.receipt(url, tx_hash)
    assert rec["status"] == "0x0" and rec["logs"] == []


def test_only_relayers_settle(chains, tee):
    with pytest.raises(TxReverted) as e:
        oc.batch_settle(chains.og.url, chains.relay, b"\7" * 32, 1, "blob", sender=PAYEE)
    assert e.value.reason == "NotRelayer()"
    with pytest.raises(TxReverted):
        oc.settle_individual(chains.og.url, chains.relay, tee["id"], b"\1" * 32, b"\2" * 32, 1, PAYER, "b", b"s",
                             sender=PAYEE)


def _leaf(values: list) -> bytes:
    """OpenZeppelin StandardMerkleTree leaf of [teeId, inputHash, outputHash, signature, timestamp]."""
    return keccak(keccak(abi_encode(["bytes32", "bytes32", "bytes32", "bytes", "uint256"], values)))


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(min(a, b) + max(a, b))


def test_batch_settle_emits_batch_settlement_and_proofs_verify(chains, tee):
    url, relay = chains.og.url, chains.relay
    tid = bytes.fromhex(tee["id"][2:])
    leaves = [_leaf([tid, keccak(bytes([i])), keccak(bytes([i, i])), b"sig%d" % i, 1_750_000_000 + i])
              for i in range(3)]
    # a 3-leaf tree: root = pair(pair(l0, l1), l2)
    n01 = _pair(leaves[0], leaves[1])
    root = _pair(n01, leaves[2])
    blob = "hQ2pM8wqz0kqQmY8yS6s2c0c5mJ5b3Qx4n1y7t9aZ0E"

    tx_hash = oc.batch_settle(url, relay, root, 3, blob)

    rec = oc.receipt(url, tx_hash)
    (log,) = rec["logs"]
    assert log["topics"] == [DOC_BATCH_TOPIC, "0x" + root.hex()]
    assert abi_decode(["uint256", "bytes"], bytes.fromhex(log["data"][2:])) == (3, blob.encode())
    assert _tx(url, tx_hash)["input"].startswith(oc.selector("TestSettlementRelay", "batchSettle"))
    ok = oc._call(url, relay, "TestSettlementRelay", "verifyProof", [leaves[1], leaves[2]], root, leaves[0])
    bad = oc._call(url, relay, "TestSettlementRelay", "verifyProof", [leaves[1], leaves[2]], root, leaves[2])
    assert ok == (True,) and bad == (False,)


# --------------------------------------------------------------------------------------------
# The blob server (Walrus stand-in)
# --------------------------------------------------------------------------------------------


def test_blobstore_round_trip():
    tree = json.dumps({"format": "standard-v1", "tree": ["0x" + "00" * 32]}).encode()
    with start_blobstore() as blobs:
        req = urllib.request.Request(f"{blobs.url}/v1/blobs?epochs=5", data=tree, method="PUT")
        with _NO_PROXY.open(req, timeout=5) as resp:
            stored = json.loads(resp.read())
        blob_id = stored["newlyCreated"]["blobObject"]["blobId"]
        assert blob_id == blob_id_of(tree)
        assert blob_id == base64.urlsafe_b64encode(hashlib.sha256(tree).digest()).rstrip(b"=").decode()
        assert stored["newlyCreated"]["blobObject"]["size"] == len(tree)
        with _NO_PROXY.open(f"{blobs.url}/v1/blobs/{blob_id}", timeout=5) as resp:
            assert resp.read() == tree
            assert resp.headers["Content-Type"] == "application/octet-stream"
        # the same bytes again: already certified, same id
        req = urllib.request.Request(f"{blobs.url}/v1/blobs", data=tree, method="POST")
        with _NO_PROXY.open(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"alreadyCertified": {"blobId": blob_id, "endEpoch": 1000}}
        with pytest.raises(urllib.error.HTTPError) as missing:
            _NO_PROXY.open(f"{blobs.url}/v1/blobs/{blob_id_of(b'never stored')}", timeout=5)
        assert missing.value.code == 404
        assert blobs.put(b"direct") == blob_id_of(b"direct") and blobs.get(blob_id_of(b"direct")) == b"direct"
        assert [r[2] for r in blobs.requests] == [200, 200, 200, 404]
        url = blobs.url
    with pytest.raises(urllib.error.URLError):  # stopped
        _NO_PROXY.open(f"{url}/v1/blobs/{blob_id}", timeout=2)


def test_start_og_chains_stops_both_nodes():
    with oc.start_og_chains(payer_funds=0) as c:
        base, og = c.base, c.og
        assert oc.opg_balance(base.url, PAYER) == 0
        assert base.alive() and og.alive()
    assert not base.alive() and not og.alive()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            oc._rpc(og.url, "eth_chainId", timeout=1)
        except oc.ChainError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the OpenGradient chain still answers after the context ended")
