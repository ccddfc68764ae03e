"""Tests for addon.solana: Solana wire transactions of x402 exact SVM payments, base58, PDAs.

Transactions are built with the real ``solders`` library and, where installed, by the real x402
SDK's SVM client (``x402[svm]``); the decoder itself uses neither.  A golden transaction (built
by solders from fixed seeds, signatures being deterministic) keeps the structural tests running
where solders is missing.
"""

from __future__ import annotations

import base64
import hashlib
import os

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receipts.addon import solana as S
from receipts.addon import x402

# solders (a test dependency: pyproject's `test` extra) builds the transactions the decoder is checked against
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDC_DEVNET = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
SOLANA_DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"

# Built by golden_build() below: payer seed 01*32, facilitator seed 02*32, payTo seed 03*32,
# 10000 USDC base units (6 decimals) with SPL Token, memo "x402 golden", blockhash 07*32, v0.
GOLDEN = (
    "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABWErHT97"
    "3sn55oSUFcmQwszdfqBKeoM5WURyP3Hpu51QVDI8iFFDDZ+wVjGuvc5UmxDm6gVyAfjr1giknbPZ8IgAIBBAiBOXcOqH0X"
    "X1ajVGbDTH7My42KkbTuN6Jd9g9bj8mzlIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29cK8kCOGhpAsJh82TGFP"
    "Hsq0/z4F9YGhwIBT/HU9NN52y3u4T1/jPeFaQeWwjr0hpa8fhuRvZTRT6HDzBHpR7Q4AMGRm/lIRcy/+ytunLDm+e8jOW7"
    "xfcSayxDmzpAAAAABUpTWpkpIQZNJOhxYNo4fHw1td28kruB5B+oQEEFRI0G3fbh12Whk9nL4UbO63msHLSF7V9bN5E6jP"
    "WFfv8Aqcb6evO+2606PWXzaqvJdDGxu+TC0vbg5HymAgNFL11hBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcE"
    "BAAFAiBOAAAEAAkDAQAAAAAAAAAGBAIHAwEKDBAnAAAAAAAABgUAC3g0MDIgZ29sZGVuAA=="
)
GOLDEN_FIELDS = {
    "version": 0,
    "size": 475,
    "num_required_signatures": 2,
    "num_readonly_signed": 1,
    "num_readonly_unsigned": 4,
    "fee_payer": "9hSR6S7WPtxmTojgo6GG3k4yDPecgJY292j7xrsUGWBu",
    "signers": ["9hSR6S7WPtxmTojgo6GG3k4yDPecgJY292j7xrsUGWBu",
                "AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9"],
    "recent_blockhash": "US517G5965aydkZ46HS38QLi7UQiSojurfbQfKCELFx",
    "token_program": S.TOKEN_PROGRAM,
    "source": "3wvJdyFnGvaMWpbq93NU91SggiVRveULUXL6iX5VZDGP",
    "mint": USDC,
    "destination": "DNDTCnZkNk358qDFZd9unHtnrc73SsXcpVWtwJJMrR4B",
    "authority": "AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9",
    "payer": "AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9",
    "amount": "10000",
    "decimals": 6,
    "memo": "x402 golden",
    "memos": 1,
    "compute_unit_limit": 20000,
    "compute_unit_price": 1,
    "transfers": 1,
    "tx_signature": None,
    "payer_signature_valid": True,
    "address_table_lookups": [],
    "errors": [],
}
GOLDEN_PAY_TO = "GyGKxMyg1p9SsHfm15MkNUu1u9TN2JtTspcdmrtGUdse"
GOLDEN_PAYER_SIGNATURE = ("2ip2TT4WHzWsKsVZKafWQXo8vu1sCQTEKHzMcjp33WqHDp2AQzn"
                          "VgS4BRPx3gqPZfiD3dG8RQUcWHXVYzCWH2Dfu")

OUTPUT_KEYS = {
    "size", "version", "num_required_signatures", "num_readonly_signed", "num_readonly_unsigned",
    "account_keys", "fee_payer", "signers", "signatures", "tx_signature", "recent_blockhash",
    "message_sha256", "instructions", "address_table_lookups", "token_program", "source", "mint",
    "destination", "authority", "payer", "amount", "decimals", "transfers", "memo", "memos",
    "compute_unit_limit", "compute_unit_price", "payer_signature_valid", "errors",
}


def no_internal_error(result: dict) -> dict:
    assert set(result) == OUTPUT_KEYS
    assert all(isinstance(e, str) and "internal error" not in e for e in result["errors"]), result["errors"]
    assert orjson.loads(orjson.dumps(result)) == result  # storable as JSON as it is
    return result


def golden_raw() -> bytes:
    return base64.b64decode(GOLDEN)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ---------------------------------------------------------------- builders (solders)

TOKEN = Pubkey.from_string(S.TOKEN_PROGRAM)
TOKEN_2022 = Pubkey.from_string(S.TOKEN_2022_PROGRAM)
COMPUTE_BUDGET = Pubkey.from_string(S.COMPUTE_BUDGET_PROGRAM)
MEMO = Pubkey.from_string(S.MEMO_PROGRAM)
LIGHTHOUSE = Pubkey.from_string(S.LIGHTHOUSE_PROGRAM)


def payment_instructions(payer, pay_to, mint, *, token_program=None, amount=10_000, decimals=6,
                         memo=b"x402 golden", cu_limit=20_000, cu_price=1, lighthouse=False):
    token_program = token_program or TOKEN
    source = get_associated_token_address(payer, mint, token_program)
    destination = get_associated_token_address(pay_to, mint, token_program)
    ixs = [
        Instruction(COMPUTE_BUDGET, bytes([2]) + cu_limit.to_bytes(4, "little"), []),
        Instruction(COMPUTE_BUDGET, bytes([3]) + cu_price.to_bytes(8, "little"), []),
        Instruction(token_program, bytes([12]) + amount.to_bytes(8, "little") + bytes([decimals]),
                    [AccountMeta(source, False, True), AccountMeta(mint, False, False),
                     AccountMeta(destination, False, True), AccountMeta(payer, True, False)]),
        Instruction(MEMO, memo, []),
    ]
    if lighthouse:
        ixs.append(Instruction(LIGHTHOUSE, bytes([9, 1, 2, 3]), [AccountMeta(source, False, False)]))
    return ixs, source, destination


def build(ixs, fee_payer: Keypair, signers: list[Keypair], *, legacy=False, blockhash=bytes([7]) * 32,
          lookups=(), sign_fee_payer=False):
    """A partially signed transaction: the fee payer's slot empty unless sign_fee_payer."""
    if legacy:
        message = Message.new_with_blockhash(ixs, fee_payer.pubkey(), Hash(blockhash))
    else:
        message = MessageV0.try_compile(fee_payer.pubkey(), ixs, list(lookups), Hash(blockhash))
    signed = to_bytes_versioned(message)
    by_key = {kp.pubkey(): kp for kp in [*signers, fee_payer]}
    n = message.header.num_required_signatures
    sigs = []
    for i, key in enumerate(message.account_keys[:n]):
        if i == 0 and not sign_fee_payer:
            sigs.append(Signature.default())
        else:
            sigs.append(by_key[key].sign_message(signed))
    tx = VersionedTransaction.populate(message, sigs)
    return tx, b64(bytes(tx))


def golden_build() -> str:
    payer = Keypair.from_seed(bytes([1]) * 32)
    fac = Keypair.from_seed(bytes([2]) * 32)
    pay_to = Keypair.from_seed(bytes([3]) * 32).pubkey()
    ixs, _, _ = payment_instructions(payer.pubkey(), pay_to, Pubkey.from_string(USDC))
    return build(ixs, fac, [payer])[1]


def assert_payment(result, tx, *, payer, fee_payer, mint, source, destination, token_program,
                   amount, decimals, memo, cu_limit=20_000, cu_price=1, version=0):
    no_internal_error(result)
    assert result["errors"] == []
    message = tx.message
    assert result["version"] == version
    assert result["size"] == len(bytes(tx))
    assert result["fee_payer"] == str(fee_payer) == str(message.account_keys[0])
    assert result["account_keys"] == [str(k) for k in message.account_keys]
    n = message.header.num_required_signatures
    assert result["num_required_signatures"] == n
    assert result["num_readonly_signed"] == message.header.num_readonly_signed_accounts
    assert result["num_readonly_unsigned"] == message.header.num_readonly_unsigned_accounts
    assert result["signers"] == [str(k) for k in message.account_keys[:n]]
    assert [s["signature"] for s in result["signatures"]] == [str(s) for s in tx.signatures]
    assert [s["signer"] for s in result["signatures"]] == result["signers"]
    assert result["recent_blockhash"] == str(message.recent_blockhash)
    assert result["message_sha256"] == hashlib.sha256(to_bytes_versioned(message)).hexdigest()
    assert result["token_program"] == str(token_program)
    assert result["source"] == str(source)
    assert result["mint"] == str(mint)
    assert result["destination"] == str(destination)
    assert result["authority"] == result["payer"] == str(payer)
    assert result["amount"] == str(amount) and isinstance(result["amount"], str)
    assert result["decimals"] == decimals
    assert result["memo"] == memo and result["memos"] == 1
    assert result["compute_unit_limit"] == cu_limit
    assert result["compute_unit_price"] == cu_price
    assert result["transfers"] == 1
    assert result["payer_signature_valid"] is True
    assert S.payer_signature_valid(result) is True
    kinds = [i["kind"] for i in result["instructions"]]
    assert kinds[:4] == ["set_compute_unit_limit", "set_compute_unit_price", "transfer_checked", "memo"]
    assert [i["program_id"] for i in result["instructions"]] == [
        str(message.account_keys[ix.program_id_index]) for ix in message.instructions]
    assert [i["accounts"] for i in result["instructions"]] == [
        [str(message.account_keys[a]) for a in ix.accounts] for ix in message.instructions]
    assert [i["data_len"] for i in result["instructions"]] == [len(ix.data) for ix in message.instructions]


# ---------------------------------------------------------------- golden (no solders needed)

def test_golden_transaction_decodes_to_every_built_field():
    result = no_internal_error(S.decode_transaction(GOLDEN))
    for key, value in GOLDEN_FIELDS.items():
        assert result[key] == value, key
    assert result["message_sha256"] == hashlib.sha256(golden_raw()[1 + 2 * 64:]).hexdigest()
    fee, payer = result["signatures"]
    assert fee == {"signer": GOLDEN_FIELDS["fee_payer"], "signature": "1" * 64, "empty": True, "valid": None}
    assert payer == {"signer": GOLDEN_FIELDS["payer"], "signature": GOLDEN_PAYER_SIGNATURE,
                     "empty": False, "valid": True}
    assert [(i["program"], i["kind"], i["tag"], i["data_len"]) for i in result["instructions"]] == [
        ("compute_budget", "set_compute_unit_limit", 2, 5),
        ("compute_budget", "set_compute_unit_price", 3, 9),
        ("spl_token", "transfer_checked", 12, 10),
        ("memo", "memo", None, 11),
    ]
    assert S.ata_address(GOLDEN_PAY_TO, USDC) == GOLDEN_FIELDS["destination"]
    assert S.ata_address(GOLDEN_FIELDS["payer"], USDC, S.TOKEN_PROGRAM) == GOLDEN_FIELDS["source"]


def test_decode_wire_and_input_forms_agree():
    expected = S.decode_transaction(GOLDEN)
    assert S.decode_wire(golden_raw()) == expected
    assert S.decode_transaction(GOLDEN.encode("ascii")) == expected
    assert S.decode_transaction("  " + GOLDEN.rstrip("=") + "\n") == expected
    urlsafe = GOLDEN.replace("+", "-").replace("/", "_")
    assert urlsafe != GOLDEN and S.decode_transaction(urlsafe) == expected


def test_payer_signature_flipped_bytes_fail():
    raw = bytearray(golden_raw())
    payer_sig_at = 1 + 64
    bad_sig = bytearray(raw)
    bad_sig[payer_sig_at + 10] ^= 0x01
    result = no_internal_error(S.decode_transaction(b64(bytes(bad_sig))))
    assert result["payer_signature_valid"] is False
    assert S.payer_signature_valid(b64(bytes(bad_sig))) is False
    assert result["signatures"][1]["valid"] is False and result["errors"] == []

    # a byte of the message (the amount) changed after signing
    amount_at = bytes(raw).index(bytes([12]) + (10_000).to_bytes(8, "little")) + 1
    bad_msg = bytearray(raw)
    bad_msg[amount_at] ^= 0x01
    result = no_internal_error(S.decode_transaction(b64(bytes(bad_msg))))
    assert result["amount"] == str(10_000 ^ 0x01)
    assert result["payer_signature_valid"] is False
    assert S.payer_signature_valid(GOLDEN) is True


def test_settlement_signature_of_golden():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    facilitator = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)  # solders' Keypair.from_seed
    message = golden_raw()[1 + 2 * 64:]
    tx_id = S.b58encode(facilitator.sign(message))
    assert S.is_signature(tx_id)
    assert S.settlement_signature_valid(GOLDEN, tx_id) is True
    assert S.settlement_signature_valid(GOLDEN, GOLDEN_PAYER_SIGNATURE) is False
    assert S.settlement_signature_valid(GOLDEN + "AA", tx_id) is None  # not base64
    assert S.settlement_signature_valid(b64(golden_raw() + b"\0"), tx_id) is True  # the message is whole
    assert S.settlement_signature_valid(b64(golden_raw()[:-1]), tx_id) is None
    assert S.settlement_signature_valid(GOLDEN, tx_id + "1") is None


def test_payer_signature_unknown_cases():
    assert S.payer_signature_valid({}) is None
    assert S.payer_signature_valid({"payer_signature_valid": "yes"}) is None
    assert S.payer_signature_valid(None) is None
    assert S.payer_signature_valid("not base64!") is None
    assert S.payer_signature_valid(GOLDEN[:200]) is None  # truncated: no complete message


def test_amount_is_little_endian_u64():
    raw = bytearray(golden_raw())
    at = bytes(raw).index(bytes([12]) + (10_000).to_bytes(8, "little")) + 1
    raw[at:at + 8] = (2**64 - 2).to_bytes(8, "little")
    raw[at + 8] = 9
    result = no_internal_error(S.decode_transaction(b64(bytes(raw))))
    assert result["amount"] == str(2**64 - 2) and result["decimals"] == 9


def test_every_truncation_reports_and_never_raises():
    raw = golden_raw()
    for n in range(len(raw)):
        result = no_internal_error(S.decode_wire(raw[:n]))
        assert result["errors"], n
        assert result["message_sha256"] is None and result["payer_signature_valid"] is None
    result = no_internal_error(S.decode_wire(raw + b"\0"))
    assert result["errors"] == ["1 trailing bytes after the message"]


def test_every_single_byte_mutation_never_raises():
    raw = golden_raw()
    for i in range(len(raw)):
        for value in (0x00, 0x7F, 0x80, 0xFF, raw[i] ^ 0x01):
            mutated = raw[:i] + bytes([value]) + raw[i + 1:]
            no_internal_error(S.decode_wire(mutated))


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data):
    no_internal_error(S.decode_wire(data))
    no_internal_error(S.decode_transaction(b64(data)))


@SETTINGS
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=474))
def test_spliced_golden_never_raises(chunk, at):
    raw = golden_raw()
    no_internal_error(S.decode_wire(raw[:at] + chunk + raw[at + len(chunk):]))


@pytest.mark.parametrize("value, error", [
    (None, "transaction is NoneType, expected base64 string"),
    (12, "transaction is int, expected base64 string"),
    ({"transaction": GOLDEN}, "transaction is dict, expected base64 string"),
    ("", "empty transaction"),
    ("   ", "empty transaction"),
    ("AAAAA", "invalid base64: bad length"),
    ("not base64!", "invalid base64"),
    ("Zm9v\u00e9", "invalid base64: non-ASCII characters"),
    ("A" * (64 * 1024 + 4), "transaction larger than 64 KiB"),
    (b"A" * (64 * 1024 + 4), "transaction larger than 64 KiB"),
])
def test_bad_inputs_report_errors(value, error):
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == [error]
    assert result["version"] is None and result["amount"] is None


def test_oversized_wire_bytes():
    result = no_internal_error(S.decode_wire(b"\0" * (64 * 1024 + 1)))
    assert result["errors"] == ["transaction is 65537 bytes, refused (over 4096)"]
    result = no_internal_error(S.decode_transaction(b64(b"\1" * 4097)))
    assert result["errors"] == ["transaction is 4097 bytes, refused (over 4096)"] and result["size"] is None
    assert no_internal_error(S.decode_wire("text"))["errors"] == ["transaction is str, expected bytes"]
    big = no_internal_error(S.decode_wire(golden_raw() + b"\0" * 800))
    assert any("over Solana's 1232" in e for e in big["errors"])
    assert big["amount"] == "10000"  # still decoded


def test_compact_u16_rules():
    raw = golden_raw()
    # signature count 2 as the non-canonical two-byte encoding 0x82 0x00
    result = no_internal_error(S.decode_wire(b"\x82\x00" + raw[1:]))
    assert result["errors"] == ["signatures length is not in shortest form"]
    result = no_internal_error(S.decode_wire(b"\xff\xff\xff" + raw[1:]))
    assert result["errors"] == ["signatures length overflows compact-u16"]
    result = no_internal_error(S.decode_wire(b"\xff\x03" + raw[1:]))
    assert result["errors"] == ["signatures count 511 exceeds 127"]


def test_unsupported_version_and_header_checks():
    raw = bytearray(golden_raw())
    message_at = 1 + 2 * 64
    v1 = bytes(raw[:message_at]) + b"\x81" + bytes(raw[message_at + 1:])
    result = no_internal_error(S.decode_wire(v1))
    assert result["errors"] == ["unsupported transaction version 1"]
    one_sig = bytes([1]) + bytes(raw[1 + 64:])  # only the payer's signature, header still says 2
    result = no_internal_error(S.decode_wire(one_sig))
    assert "1 signatures for 2 required signers" in result["errors"]


def test_instruction_index_out_of_range_and_fee_payer_program():
    raw = bytearray(golden_raw())
    # the memo instruction: program id index 5 (Memo) -> 0 (the fee payer), then 200 (no such key)
    memo_at = len(raw) - 1 - len(b"x402 golden") - 1 - 1 - 1
    assert raw[memo_at] == 5
    raw[memo_at] = 0
    result = no_internal_error(S.decode_wire(bytes(raw)))
    assert result["errors"] == ["instruction 3: program id is the fee payer"]
    assert result["memo"] is None and result["memos"] == 0
    raw[memo_at] = 200
    result = no_internal_error(S.decode_wire(bytes(raw)))
    assert result["errors"] == ["instruction 3: program id is account index 200 (out of range), not a static key"]
    assert result["instructions"][3]["program_id"] is None


def test_errors_are_capped():
    # 255 instructions whose program id is the fee payer: one error each, capped at 32 entries
    message = bytes([0x80, 1, 0, 0, 1]) + bytes(32) + bytes(32) + b"\xff\x01" + b"\0\0\0" * 255 + b"\0"
    result = no_internal_error(S.decode_wire(b"\x01" + bytes(64) + message))
    assert len(result["instructions"]) == 255
    assert len(result["errors"]) == 32
    assert result["errors"][:31] == [f"instruction {i}: program id is the fee payer" for i in range(31)]
    assert result["errors"][31] == "and 225 more errors"  # 255 + "no TransferChecked instruction" - 31


def test_invalid_utf8_memo():
    raw = golden_raw()
    bad = raw.replace(b"x402 golden", b"x402 \xff\xfelden")
    result = no_internal_error(S.decode_wire(bad))
    assert result["memo"] is None and result["memos"] == 1
    assert result["errors"] == ["instruction 3: memo is not valid UTF-8"]
    assert result["payer_signature_valid"] is False


# ---------------------------------------------------------------- built with solders

def test_golden_is_what_solders_builds():
    assert golden_build() == GOLDEN


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("token_program_id", [S.TOKEN_PROGRAM, S.TOKEN_2022_PROGRAM])
def test_payment_transaction_fields(legacy, token_program_id):
    payer, fac, pay_to = Keypair(), Keypair(), Keypair().pubkey()
    mint = Pubkey.new_unique()
    program = Pubkey.from_string(token_program_id)
    memo = "order 42 · café"
    ixs, source, destination = payment_instructions(
        payer.pubkey(), pay_to, mint, token_program=program, amount=123_456_789_012, decimals=9,
        memo=memo.encode("utf-8"), cu_limit=45_000, cu_price=4_999_999, lighthouse=True)
    tx, value = build(ixs, fac, [payer], legacy=legacy, blockhash=os.urandom(32))
    result = S.decode_transaction(value)
    assert_payment(result, tx, payer=payer.pubkey(), fee_payer=fac.pubkey(), mint=mint, source=source,
                   destination=destination, token_program=program, amount=123_456_789_012, decimals=9,
                   memo=memo, cu_limit=45_000, cu_price=4_999_999,
                   version="legacy" if legacy else 0)
    assert result["instructions"][4]["kind"] == "lighthouse"
    assert result["instructions"][4]["program"] == "lighthouse"
    assert result["signatures"][0]["empty"] is True and result["tx_signature"] is None
    assert S.ata_address(str(pay_to), str(mint), token_program_id) == result["destination"]
    assert S.ata_address(str(payer.pubkey()), str(mint), token_program_id) == result["source"]
    assert S.ata_address(pay_to, mint, program) is None  # not str or bytes


def test_fully_signed_transaction_gives_tx_signature():
    payer, fac = Keypair(), Keypair()
    ixs, _, _ = payment_instructions(payer.pubkey(), Keypair().pubkey(), Pubkey.new_unique())
    tx, value = build(ixs, fac, [payer], sign_fee_payer=True)
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == []
    assert result["tx_signature"] == str(tx.signatures[0])
    assert S.is_signature(result["tx_signature"])
    assert [s["valid"] for s in result["signatures"]] == [True, True]
    assert [s["empty"] for s in result["signatures"]] == [False, False]


def test_settlement_signature_matches_the_payment():
    payer, fac = Keypair(), Keypair()
    ixs, _, _ = payment_instructions(payer.pubkey(), Keypair().pubkey(), Pubkey.new_unique())
    partial, value = build(ixs, fac, [payer])
    settled, _ = build(ixs, fac, [payer], sign_fee_payer=True)  # what the facilitator broadcasts
    tx_id = str(settled.signatures[0])
    assert S.settlement_signature_valid(value, tx_id) is True
    assert S.settlement_signature_valid(value, str(partial.signatures[1])) is False  # the payer's
    other, _ = build(ixs[:2] + ixs[3:] + ixs[2:3], fac, [payer], sign_fee_payer=True)
    assert S.settlement_signature_valid(value, str(other.signatures[0])) is False
    assert S.settlement_signature_valid(value, "1" * 64) is None
    assert S.settlement_signature_valid(value, "0x" + "ab" * 32) is None
    assert S.settlement_signature_valid(value[:100], tx_id) is None
    assert S.settlement_signature_valid(None, tx_id) is None


def test_authority_not_a_signer():
    payer, fac = Keypair(), Keypair()
    mint = Pubkey.new_unique()
    source = get_associated_token_address(payer.pubkey(), mint)
    ix = Instruction(TOKEN, bytes([12]) + (5).to_bytes(8, "little") + bytes([6]),
                     [AccountMeta(source, False, True), AccountMeta(mint, False, False),
                      AccountMeta(Pubkey.new_unique(), False, True),
                      AccountMeta(payer.pubkey(), False, False)])
    _, value = build([ix], fac, [], sign_fee_payer=True)
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == []
    assert result["authority"] == str(payer.pubkey())
    assert result["signers"] == [str(fac.pubkey())]
    assert result["payer_signature_valid"] is None and S.payer_signature_valid(value) is None
    assert result["memo"] is None and result["memos"] == 0
    assert result["compute_unit_limit"] is None and result["compute_unit_price"] is None


def test_lookup_table_accounts_are_not_resolved():
    payer, fac, pay_to = Keypair(), Keypair(), Keypair().pubkey()
    mint = Pubkey.new_unique()
    ixs, source, destination = payment_instructions(payer.pubkey(), pay_to, mint)
    table_key = Pubkey.new_unique()
    table = AddressLookupTableAccount(table_key, [Pubkey.new_unique(), mint, destination])
    tx, value = build(ixs, fac, [payer], lookups=[table])
    result = no_internal_error(S.decode_transaction(value))
    assert result["version"] == 0
    assert result["address_table_lookups"] == [
        {"account_key": str(table_key), "writable_indexes": [2], "readonly_indexes": [1]}]
    assert result["source"] == str(source) and result["authority"] == str(payer.pubkey())
    assert result["destination"] is None and result["mint"] is None
    assert result["amount"] == "10000" and result["transfers"] == 1
    assert result["errors"] == [
        f"instruction 2: TransferChecked mint is address lookup table {table_key}[1], not resolvable offline",
        f"instruction 2: TransferChecked destination is address lookup table {table_key}[2], "
        "not resolvable offline",
    ]
    transfer = result["instructions"][2]
    assert transfer["accounts"] == [str(source), None, None, str(payer.pubkey())]
    assert result["payer_signature_valid"] is True
    assert result["account_keys"] == [str(k) for k in tx.message.account_keys]


def test_two_transfers_and_two_memos_are_flagged():
    payer, fac = Keypair(), Keypair()
    ixs, _, _ = payment_instructions(payer.pubkey(), Keypair().pubkey(), Pubkey.new_unique(), amount=7)
    more, _, _ = payment_instructions(payer.pubkey(), Keypair().pubkey(), Pubkey.new_unique(), amount=8,
                                      memo=b"second")
    _, value = build(ixs + more[2:], fac, [payer])
    result = no_internal_error(S.decode_transaction(value))
    assert result["transfers"] == 2 and result["amount"] == "7"
    assert result["memos"] == 2 and result["memo"] == "x402 golden"
    assert result["errors"] == ["2 TransferChecked instructions, expected one",
                                "2 memo instructions, expected at most one"]


def test_no_transfer_and_short_transfer_data():
    payer, fac = Keypair(), Keypair()
    ixs, _, _ = payment_instructions(payer.pubkey(), Keypair().pubkey(), Pubkey.new_unique())
    _, value = build(ixs[:2] + ixs[3:], fac, [payer])
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == ["no TransferChecked instruction"] and result["transfers"] == 0
    short = Instruction(TOKEN, bytes([12, 1, 2]), ixs[2].accounts[:3])
    _, value = build([ixs[0], short], fac, [payer])
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == ["instruction 1: TransferChecked data is 3 bytes, expected 10",
                                "instruction 1: TransferChecked has 3 accounts, expected at least 4"]
    assert result["amount"] is None and result["authority"] is None and result["transfers"] == 1


def test_mutations_agree_with_solders():
    """Wherever solders accepts a mutated transaction, the structure decoded matches it."""
    raw = golden_raw()
    accepted = 0
    for i in range(len(raw)):
        for value in (0x00, 0x01, 0x80, 0xFF, raw[i] ^ 0x04):
            mutated = raw[:i] + bytes([value]) + raw[i + 1:]
            result = no_internal_error(S.decode_wire(mutated))
            try:
                tx = VersionedTransaction.from_bytes(mutated)
            except Exception:
                assert result["errors"], (i, value)
                continue
            accepted += 1
            message = tx.message
            assert result["account_keys"] == [str(k) for k in message.account_keys]
            assert result["recent_blockhash"] == str(message.recent_blockhash)
            assert [s["signature"] for s in result["signatures"]] == [str(s) for s in tx.signatures]
            assert result["message_sha256"] == hashlib.sha256(to_bytes_versioned(message)).hexdigest()
            assert len(result["instructions"]) == len(message.instructions)
            for got, ix in zip(result["instructions"], message.instructions):
                assert got["data_len"] == len(ix.data)
                assert len(got["accounts"]) == len(ix.accounts)
    assert accepted > 1000


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 7), max_size=4),
                          st.binary(max_size=40)), max_size=6),
       st.booleans())
def test_random_messages_match_solders(specs, legacy):
    keys = [Pubkey(bytes([i + 1]) * 32) for i in range(8)]
    fac = Keypair.from_seed(bytes([9]) * 32)
    ixs = [Instruction(keys[p], data, [AccountMeta(keys[a], False, a % 2 == 0) for a in accounts])
           for p, accounts, data in specs]
    tx, value = build(ixs, fac, [], legacy=legacy, sign_fee_payer=True)
    result = no_internal_error(S.decode_transaction(value))
    message = tx.message
    assert result["version"] == ("legacy" if legacy else 0)
    assert result["account_keys"] == [str(k) for k in message.account_keys]
    assert [(i["program_id"], i["accounts"], i["data_len"]) for i in result["instructions"]] == [
        (str(message.account_keys[ix.program_id_index]),
         [str(message.account_keys[a]) for a in ix.accounts], len(ix.data)) for ix in message.instructions]
    assert result["tx_signature"] == str(tx.signatures[0])
    assert result["signatures"][0]["valid"] is True
    assert result["errors"] == ["no TransferChecked instruction"]


# ---------------------------------------------------------------- the real x402 SDK

SDK_WARNINGS = pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning")


def sdk_payment(monkeypatch, token_program_id: str, extra: dict):
    from x402.mechanisms.svm.exact import client as client_mod
    from x402.mechanisms.svm.mint_cache import MintMetadata
    from x402.mechanisms.svm.signers import KeypairSigner
    from x402.schemas import PaymentRequirements

    def no_rpc(client, network, mint, cache):
        return MintMetadata(decimals=6, token_program=Pubkey.from_string(token_program_id))

    monkeypatch.setattr(client_mod, "get_cached_mint_metadata", no_rpc)
    payer, fac, pay_to = Keypair(), Keypair(), Keypair().pubkey()
    requirements = PaymentRequirements(
        scheme="exact", network=SOLANA_DEVNET, asset=USDC_DEVNET, amount="12345", pay_to=str(pay_to),
        max_timeout_seconds=60,
        extra={"feePayer": str(fac.pubkey()), "recentBlockhash": str(Hash(bytes([5]) * 32)), **extra})
    payload = client_mod.ExactSvmScheme(KeypairSigner(payer)).create_payment_payload(requirements)
    return payload["transaction"], payer, fac, pay_to


@SDK_WARNINGS
@pytest.mark.parametrize("token_program_id", [S.TOKEN_PROGRAM, S.TOKEN_2022_PROGRAM])
def test_x402_sdk_svm_payment(monkeypatch, token_program_id):
    value, payer, fac, pay_to = sdk_payment(monkeypatch, token_program_id, {"memo": "order-42"})
    tx = VersionedTransaction.from_bytes(base64.b64decode(value))
    mint = Pubkey.from_string(USDC_DEVNET)
    program = Pubkey.from_string(token_program_id)
    result = S.decode_transaction(value)
    assert_payment(result, tx, payer=payer.pubkey(), fee_payer=fac.pubkey(), mint=mint,
                   source=get_associated_token_address(payer.pubkey(), mint, program),
                   destination=get_associated_token_address(pay_to, mint, program),
                   token_program=program, amount=12345, decimals=6, memo="order-42")
    assert result["recent_blockhash"] == str(Hash(bytes([5]) * 32))
    assert result["signatures"][0]["empty"] is True
    assert S.ata_address(str(pay_to), USDC_DEVNET, token_program_id) == result["destination"]
    assert S.transaction_sha256(value) == hashlib.sha256(value.encode()).hexdigest()


@SDK_WARNINGS
def test_x402_sdk_random_memo(monkeypatch):
    value, payer, _, _ = sdk_payment(monkeypatch, S.TOKEN_PROGRAM, {})
    result = no_internal_error(S.decode_transaction(value))
    assert result["errors"] == [] and result["payer"] == str(payer.pubkey())
    assert len(result["memo"]) == 32 and int(result["memo"], 16) >= 0  # 16 random bytes in hex
    assert S.transaction_sha256(value) == x402._sha256_text(value)


# ---------------------------------------------------------------- base58, signatures, PDAs

@SETTINGS
@given(st.binary(max_size=100))
def test_base58_round_trip(data):
    text = S.b58encode(data)
    assert S.b58decode(text) == data
    assert set(text) <= set(S._B58_ALPHABET)


@SETTINGS
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
def test_base58_matches_solders(key, sig):
    assert S.b58encode(key) == str(Pubkey(key))
    assert S.b58encode(sig) == str(Signature(sig))
    assert S.b58decode(str(Pubkey(key))) == key
    assert S.is_address(str(Pubkey(key)))
    assert S.is_signature(str(Signature(sig))) is any(sig)


def test_base58_known_vectors():
    assert S.b58encode(b"") == ""
    assert S.b58encode(b"\0\0\x01") == "112"
    assert S.b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert S.b58decode("StV1DL6CwTryKyV") == b"hello world"
    assert S.b58encode(bytes(32)) == S.SYSTEM_PROGRAM
    for bad in ("0", "O", "I", "l", "abc+", " 1", None, 5, b"11", "1" * 1025):
        assert S.b58decode(bad) is None
    assert S.b58encode("text") is None


def test_is_signature():
    assert S.is_signature(GOLDEN_PAYER_SIGNATURE)
    assert len(GOLDEN_PAYER_SIGNATURE) in (87, 88)
    assert not S.is_signature("1" * 64)  # the empty slot is not a transaction id
    assert not S.is_signature(GOLDEN_FIELDS["payer"])  # a 32-byte key
    assert not S.is_signature("0x" + "ab" * 32)
    assert not S.is_signature(GOLDEN_PAYER_SIGNATURE + "1")
    assert not S.is_signature(GOLDEN_PAYER_SIGNATURE[:-1] + "0")
    assert not S.is_signature(None) and not S.is_signature(b"x" * 64)
    assert not S.is_signature("payment-0b2e4c7a-9c7e-4a5e-8f5d-1234567890ab")


def test_transaction_sha256():
    assert S.transaction_sha256(GOLDEN) == hashlib.sha256(GOLDEN.encode("utf-8")).hexdigest()
    assert S.transaction_sha256(GOLDEN) == x402._sha256_text(GOLDEN)
    assert S.transaction_sha256("\ud800") == hashlib.sha256("\ud800".encode("utf-8", "surrogatepass")).hexdigest()
    assert S.transaction_sha256(b"ab") == hashlib.sha256(b"ab").hexdigest()
    assert S.transaction_sha256(None) is None and S.transaction_sha256(3) is None


def test_is_on_curve_known_points():
    assert S.is_on_curve(bytes(32)) is True  # y = 0: x^2 = -1, a square as p = 1 (mod 4)
    assert S.is_on_curve((2).to_bytes(32, "little")) is False  # y = 2: (4 - 1) / (4d + 1) is no square
    one = (1).to_bytes(32, "little")
    assert S.is_on_curve(one) is True  # the identity (0, 1)
    assert S.is_on_curve(bytes(one[:31]) + b"\x80") is True  # sign bit ignored, as dalek does
    assert S.is_on_curve(S.b58decode(GOLDEN_FIELDS["payer"])) is True  # a wallet key
    assert S.is_on_curve(S.b58decode(GOLDEN_FIELDS["destination"])) is False  # a PDA
    assert S.is_on_curve(GOLDEN_FIELDS["payer"]) is True
    assert S.is_on_curve(b"short") is False and S.is_on_curve(None) is False


@SETTINGS
@given(st.binary(min_size=32, max_size=32))
def test_is_on_curve_matches_solders(key):
    assert S.is_on_curve(key) == Pubkey(key).is_on_curve()


def test_is_on_curve_non_canonical_y_matches_solders():
    p = 2**255 - 19
    for y in range(p, 2**255):
        for sign in (0, 1):
            key = (y | sign << 255).to_bytes(32, "little")
            assert S.is_on_curve(key) == Pubkey(key).is_on_curve(), y


@SETTINGS
@given(st.lists(st.binary(max_size=32), max_size=4), st.binary(min_size=32, max_size=32))
def test_find_program_address_matches_solders(seeds, program):
    got = S.find_program_address(seeds, program)
    address, bump = Pubkey.find_program_address(seeds, Pubkey(program))
    assert got == (str(address), bump)
    assert S.find_program_address(seeds, str(Pubkey(program))) == got


@pytest.mark.parametrize("program", [S.TOKEN_PROGRAM, S.TOKEN_2022_PROGRAM])
def test_ata_address_matches_solders(program):
    for _ in range(40):
        owner, mint = Keypair().pubkey(), Pubkey.new_unique()
        expected = get_associated_token_address(owner, mint, Pubkey.from_string(program))
        assert S.ata_address(str(owner), str(mint), program) == str(expected)
        assert S.ata_address(bytes(owner), bytes(mint), program) == str(expected)
    pda_owner = get_associated_token_address(owner, mint)  # an off-curve owner works too
    assert S.ata_address(str(pda_owner), str(mint), program) == str(
        get_associated_token_address(pda_owner, mint, Pubkey.from_string(program)))


def test_pda_invalid_inputs():
    assert S.ata_address("not a key", USDC) is None
    assert S.ata_address(GOLDEN_PAY_TO, USDC, "0x00") is None
    assert S.ata_address(None, None) is None
    assert S.find_program_address([b"x" * 33], S.TOKEN_PROGRAM) is None
    assert S.find_program_address([b""] * 16, S.TOKEN_PROGRAM) is None
    assert S.find_program_address("seed", S.TOKEN_PROGRAM) is None
    assert S.find_program_address([], "bad") is None
    assert S.create_program_address([b"a", 1], S.TOKEN_PROGRAM) is None
