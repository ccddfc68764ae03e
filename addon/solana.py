"""Decoding of the Solana transactions that x402 ``exact`` SVM payments carry.

An x402 SVM payment's ``payload.transaction`` is standard base64 of a partially
signed Solana wire transaction.  The layout (Solana's "transaction format";
compact-u16 is a little-endian base-128 varint of at most three bytes, the
third carrying only two bits, always in its shortest form):

* ``signatures``: compact-u16 count, then ``count`` x 64-byte ed25519
  signatures, one per required signer, in account-key order.  An unsigned slot
  is 64 zero bytes.
* ``message`` (everything after the signatures; the bytes every signer signs):

  - version: a first byte with the high bit set is a version prefix
    (``0x80`` = v0; other versions are not defined).  Otherwise the message is
    "legacy" and that byte already belongs to the header.
  - header: 3 x u8 ``num_required_signatures``, ``num_readonly_signed``,
    ``num_readonly_unsigned``.
  - account keys: compact-u16 count, then 32-byte public keys.  The first
    ``num_required_signatures`` keys are the signers; key 0 is the fee payer.
  - ``recent_blockhash``: 32 bytes.
  - instructions: compact-u16 count, each ``u8 program_id_index``, compact-u16
    count + u8 account indexes, compact-u16 length + data bytes.
  - v0 only, address table lookups: compact-u16 count, each 32-byte table
    address, compact-u16 count + u8 writable indexes, compact-u16 count + u8
    readonly indexes.  An instruction's account index past the static keys
    points into those tables (all writable entries first, then all readonly),
    whose contents live on chain: they cannot be resolved offline.

The x402 ``exact`` client builds: ComputeBudget ``SetComputeUnitLimit``
(tag 2, u32 LE) and ``SetComputeUnitPrice`` (tag 3, u64 LE micro-lamports), an
SPL Token or Token-2022 ``TransferChecked`` (tag 12, u64 LE amount, u8
decimals; accounts ``[source, mint, destination, authority, ...]``) from the
payer's token account to the payee's associated token account, then a Memo
(UTF-8 text), and optionally Lighthouse instructions.  The fee payer is the
facilitator, whose signature slot is still empty; the payer (the transfer's
authority) has signed.  The settlement later returns the transaction
signature, i.e. the fee payer's signature, in base58.

Every public function is total: it never raises, whatever it is given, and
reports problems as short strings in ``errors``.  The transaction as a whole is
only ever to be stored as a SHA-256 digest (:func:`transaction_sha256`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_B64_BYTES = 64 * 1024
PACKET_DATA_SIZE = 1232  # Solana's limit on a serialized transaction (larger: an error, still decoded)
MAX_WIRE_BYTES = 4096  # larger wire transactions are refused (bounds the summary's size)
MAX_ERRORS = 32
MAX_SIGNATURES = 127  # a legacy header's first byte must stay below 0x80
MAX_ACCOUNT_KEYS = 256  # instructions address accounts with a u8
MAX_INSTRUCTIONS = 256
MAX_LOOKUPS = 256
_MAX_B58_CHARS = 1024
_SIGNATURE_LEN = 64
_KEY_LEN = 32

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
ASSOCIATED_TOKEN_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
MEMO_V1_PROGRAM = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
LIGHTHOUSE_PROGRAM = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95"
SYSTEM_PROGRAM = "11111111111111111111111111111111"

_PROGRAM_NAMES: dict[str, str] = {
    TOKEN_PROGRAM: "spl_token",
    TOKEN_2022_PROGRAM: "token_2022",
    ASSOCIATED_TOKEN_PROGRAM: "associated_token",
    COMPUTE_BUDGET_PROGRAM: "compute_budget",
    MEMO_PROGRAM: "memo",
    MEMO_V1_PROGRAM: "memo",
    LIGHTHOUSE_PROGRAM: "lighthouse",
    SYSTEM_PROGRAM: "system",
}
_TOKEN_PROGRAMS = (TOKEN_PROGRAM, TOKEN_2022_PROGRAM)
_COMPUTE_BUDGET_KINDS: dict[int | None, str] = {  # (looked up by an instruction's tag: None when it has no data)
    1: "request_heap_frame",
    2: "set_compute_unit_limit",
    3: "set_compute_unit_price",
    4: "set_loaded_accounts_data_size_limit",
}
_TOKEN_KINDS: dict[int | None, str] = {3: "transfer", 12: "transfer_checked"}
_TRANSFER_CHECKED = 12
_TRANSFER_ROLES = ("source", "mint", "destination", "authority")

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B64_TRANSLATE = bytes.maketrans(b"-_", b"+/")

# ed25519 (RFC 8032): the field prime and the twisted Edwards curve constant d
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_PDA_MARKER = b"ProgramDerivedAddress"
_MAX_SEEDS = 16
_MAX_SEED_LEN = 32


# --------------------------------------------------------------------------
# small total helpers


def _never_raising(parse, empty, *args) -> dict[str, Any]:
    """Run a parser; a bug in it becomes an error entry, never an exception in the proxy."""
    try:
        return parse(*args)
    except Exception as exc:
        result = empty()
        result["errors"].append(f"internal error: {type(exc).__name__}")
        return result


def _type_name(value: object) -> str:
    return type(value).__name__


def transaction_sha256(b64: object) -> str | None:
    """SHA-256 hex of the transaction exactly as given (a str's UTF-8, or the bytes); None otherwise.

    The same digest as ``addon.x402``'s ``signed_tx_sha256`` for a string."""
    if isinstance(b64, str):
        return hashlib.sha256(b64.encode("utf-8", "surrogatepass")).hexdigest()
    if isinstance(b64, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(b64)).hexdigest()
    return None


# --------------------------------------------------------------------------
# base58 (bitcoin alphabet)


def b58encode(data: object) -> str | None:
    """Base58 of bytes (leading zero bytes become ``1``s); None for a non-bytes value."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    raw = bytes(data)
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    number = int.from_bytes(raw, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: object) -> bytes | None:
    """Bytes of a base58 string (at most 1024 characters); None when it is not base58."""
    if not isinstance(text, str) or len(text) > _MAX_B58_CHARS:
        return None
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            return None
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body


def _b58_of_len(text: object, length: int) -> bytes | None:
    raw = b58decode(text) if isinstance(text, str) and len(text) <= 2 * length else None
    return raw if raw is not None and len(raw) == length else None


def is_address(s: object) -> bool:
    """True for a base58 string of a 32-byte public key (on or off the curve)."""
    return _b58_of_len(s, _KEY_LEN) is not None


def is_signature(s: object) -> bool:
    """True for a base58 string of a 64-byte, not all-zero, signature (a transaction id)."""
    raw = _b58_of_len(s, _SIGNATURE_LEN)
    return raw is not None and any(raw)


# --------------------------------------------------------------------------
# ed25519 curve membership, program derived addresses


def is_on_curve(key: object) -> bool:
    """True when 32 bytes (or their base58) decompress to an ed25519 point, as curve25519-dalek decides.

    The y coordinate is the little-endian number without the top (sign) bit,
    taken mod p; the point exists iff x^2 = (y^2 - 1) / (d y^2 + 1) has a
    root, i.e. that ratio is zero or a quadratic residue (Euler's criterion).
    The denominator is never zero: -1/d is not a square mod p."""
    if isinstance(key, str):
        key = _b58_of_len(key, _KEY_LEN)
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != _KEY_LEN:
        return False
    y = (int.from_bytes(bytes(key), "little") & ((1 << 255) - 1)) % _P
    y2 = y * y % _P
    ratio = (y2 - 1) * pow(_D * y2 + 1, _P - 2, _P) % _P
    return ratio == 0 or pow(ratio, (_P - 1) // 2, _P) == 1


def _key_bytes(value: object) -> bytes | None:
    if isinstance(value, str):
        return _b58_of_len(value, _KEY_LEN)
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == _KEY_LEN:
        return bytes(value)
    return None


def create_program_address(seeds: object, program_id: object) -> str | None:
    """The address ``sha256(seeds.. || program_id || "ProgramDerivedAddress")``; None if on the curve or invalid."""
    program = _key_bytes(program_id)
    if program is None or not isinstance(seeds, (list, tuple)) or len(seeds) > _MAX_SEEDS:
        return None
    digest = hashlib.sha256()
    for seed in seeds:
        if not isinstance(seed, (bytes, bytearray, memoryview)) or len(seed) > _MAX_SEED_LEN:
            return None
        digest.update(bytes(seed))
    digest.update(program + _PDA_MARKER)
    address = digest.digest()
    return None if is_on_curve(address) else b58encode(address)


def find_program_address(seeds: object, program_id: object) -> tuple[str, int] | None:
    """The first off-curve address for bump 255 down to 1, with its bump; None for invalid input."""
    if not isinstance(seeds, (list, tuple)) or len(seeds) >= _MAX_SEEDS:
        return None
    for bump in range(255, 0, -1):
        address = create_program_address([*seeds, bytes([bump])], program_id)
        if address is not None:
            return address, bump
    return None


def ata_address(owner: object, mint: object, token_program: object = TOKEN_PROGRAM) -> str | None:
    """The associated token account of ``owner`` for ``mint`` (base58 keys); None for invalid keys."""
    keys = [_key_bytes(owner), _key_bytes(token_program), _key_bytes(mint)]
    if any(key is None for key in keys):
        return None
    found = find_program_address(keys, ASSOCIATED_TOKEN_PROGRAM)
    return found[0] if found else None


# --------------------------------------------------------------------------
# wire reader


class _Malformed(Exception):
    """A structural problem; its message goes into ``errors`` as is."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Malformed(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def shortvec(self, what: str, limit: int) -> int:
        """A compact-u16 length, in its shortest encoding, at most ``limit``."""
        value = 0
        for i in range(3):
            byte = self.u8(f"{what} length")
            if i == 2 and byte > 0x03:
                raise _Malformed(f"{what} length overflows compact-u16")
            if i > 0 and byte == 0:
                raise _Malformed(f"{what} length is not in shortest form")
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
        if value > limit:
            raise _Malformed(f"{what} count {value} exceeds {limit}")
        return value

    def u8_list(self, what: str) -> list[int]:
        count = self.shortvec(what, MAX_ACCOUNT_KEYS)
        return list(self.take(count, what))

    def remaining(self) -> int:
        return len(self.data) - self.pos


# --------------------------------------------------------------------------
# transaction


_TRANSFER_KEYS = ("token_program", "source", "mint", "destination", "authority", "payer", "amount", "decimals")


def _empty_transaction() -> dict[str, Any]:
    keys = (
        "size",
        "version",
        "num_required_signatures",
        "num_readonly_signed",
        "num_readonly_unsigned",
        "fee_payer",
        "recent_blockhash",
        "message_sha256",
        "tx_signature",
        "payer_signature_valid",
        "memo",
        "compute_unit_limit",
        "compute_unit_price",
    ) + _TRANSFER_KEYS
    result: dict[str, Any] = dict.fromkeys(keys)
    result.update(
        account_keys=[],
        signers=[],
        signatures=[],
        instructions=[],
        address_table_lookups=[],
        transfers=0,
        memos=0,
        errors=[],
    )
    return result


def decode_transaction(b64: object) -> dict[str, Any]:
    """Decode a base64 wire transaction (str, or its ASCII bytes) into a flat summary.

    Keys (None / empty where unknown): ``size`` (wire bytes), ``version``
    (``"legacy"`` or 0), the three header counts, ``account_keys`` (static,
    base58), ``fee_payer``, ``signers``, ``signatures`` (``[{signer,
    signature, empty, valid}]``), ``tx_signature`` (the fee payer's, when
    signed), ``recent_blockhash``, ``message_sha256`` (hex, of the signed
    message bytes), ``instructions`` (``[{program_id, program, kind, tag,
    accounts, data_len}]``: ``tag`` is the first data byte, None for a memo;
    an account from a lookup table is None), ``address_table_lookups``, the first
    TransferChecked's ``token_program``, ``source``, ``mint``,
    ``destination``, ``authority`` (= ``payer``), ``amount`` (decimal string),
    ``decimals``; ``transfers`` (their count), ``memo``/``memos``,
    ``compute_unit_limit``, ``compute_unit_price`` (micro-lamports),
    ``payer_signature_valid`` and ``errors``."""
    return _never_raising(_decode_b64_transaction, _empty_transaction, b64)


def decode_wire(raw: object) -> dict[str, Any]:
    """Like :func:`decode_transaction`, for the raw wire bytes."""
    return _never_raising(_decode_raw, _empty_transaction, raw)


def _b64_bytes(value: object) -> tuple[bytes | None, str | None]:
    """Standard or url-safe base64, padding optional, surrounding whitespace ignored."""
    if isinstance(value, str):
        if len(value) > MAX_B64_BYTES:
            return None, "transaction larger than 64 KiB"
        try:
            text = value.strip().encode("ascii")
        except UnicodeEncodeError:
            return None, "invalid base64: non-ASCII characters"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_B64_BYTES:
            return None, "transaction larger than 64 KiB"
        text = bytes(value).strip()
    else:
        return None, f"transaction is {_type_name(value)}, expected base64 string"
    if not text:
        return None, "empty transaction"
    text = text.translate(_B64_TRANSLATE).rstrip(b"=")
    if len(text) % 4 == 1:
        return None, "invalid base64: bad length"
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True), None
    except (binascii.Error, ValueError):
        return None, "invalid base64"


def _decode_b64_transaction(value: object) -> dict[str, Any]:
    raw, problem = _b64_bytes(value)
    if raw is None:
        result = _empty_transaction()
        result["errors"].append(problem or "invalid base64")
        return result
    return _decode_raw(raw)


def _decode_raw(raw: object) -> dict[str, Any]:
    result = _empty_transaction()
    errors: list[str] = result["errors"]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        errors.append(f"transaction is {_type_name(raw)}, expected bytes")
        return result
    raw = bytes(raw)
    if len(raw) > MAX_WIRE_BYTES:
        errors.append(f"transaction is {len(raw)} bytes, refused (over {MAX_WIRE_BYTES})")
        return result
    result["size"] = len(raw)
    if len(raw) > PACKET_DATA_SIZE:
        errors.append(f"transaction is {len(raw)} bytes, over Solana's {PACKET_DATA_SIZE}")
    reader = _Reader(raw)
    parsed: dict[str, Any] = {"signatures": [], "message": None, "keys": [], "instructions": [], "lookups": []}
    try:
        _read_wire(reader, parsed, result)
    except _Malformed as exc:
        errors.append(str(exc))
    if parsed["message"] is not None and reader.remaining():
        errors.append(f"{reader.remaining()} trailing bytes after the message")
    _summarize(parsed, result)
    if len(errors) > MAX_ERRORS:
        errors[MAX_ERRORS - 1 :] = [f"and {len(errors) - MAX_ERRORS + 1} more errors"]
    return result


def _read_wire(reader: _Reader, parsed: dict, result: dict) -> None:
    count = reader.shortvec("signatures", MAX_SIGNATURES)
    parsed["signatures"] = [reader.take(_SIGNATURE_LEN, "signature") for _ in range(count)]
    start = reader.pos
    first = reader.u8("message")
    if first & 0x80:
        version = first & 0x7F
        if version != 0:
            raise _Malformed(f"unsupported transaction version {version}")
        result["version"] = 0
        first = reader.u8("message header")
    else:
        result["version"] = "legacy"
    result["num_required_signatures"] = first
    result["num_readonly_signed"] = reader.u8("message header")
    result["num_readonly_unsigned"] = reader.u8("message header")
    keys = reader.shortvec("account keys", MAX_ACCOUNT_KEYS)
    parsed["keys"] = [reader.take(_KEY_LEN, "account key") for _ in range(keys)]
    result["recent_blockhash"] = b58encode(reader.take(_KEY_LEN, "recent blockhash"))
    for _ in range(reader.shortvec("instructions", MAX_INSTRUCTIONS)):
        program = reader.u8("instruction program id index")
        accounts = reader.u8_list("instruction accounts")
        data = reader.take(reader.shortvec("instruction data", 0xFFFF), "instruction data")
        parsed["instructions"].append((program, accounts, data))
    if result["version"] == 0:
        for _ in range(reader.shortvec("address table lookups", MAX_LOOKUPS)):
            table = reader.take(_KEY_LEN, "lookup table address")
            writable = reader.u8_list("lookup writable indexes")
            readonly = reader.u8_list("lookup readonly indexes")
            parsed["lookups"].append((table, writable, readonly))
    parsed["message"] = reader.data[start : reader.pos]


def _summarize(parsed: dict, result: dict) -> None:
    """Fill the result from whatever was parsed (possibly only a prefix)."""
    keys = [b58encode(key) for key in parsed["keys"]]
    result["account_keys"] = keys
    result["fee_payer"] = keys[0] if keys else None
    message = parsed["message"]  # None unless the whole message was read
    if message is not None:
        result["message_sha256"] = hashlib.sha256(message).hexdigest()
    result["address_table_lookups"] = [
        {"account_key": b58encode(table), "writable_indexes": writable, "readonly_indexes": readonly}
        for table, writable, readonly in parsed["lookups"]
    ]
    if message is not None:
        _check_header(parsed, result)
    _signatures(parsed, result, message)
    resolver = _Resolver(keys, parsed["lookups"])
    for index, (program, accounts, data) in enumerate(parsed["instructions"]):
        result["instructions"].append(_instruction(index, program, accounts, data, resolver, result))
    if message is not None:
        _check_totals(result)
    result["payer_signature_valid"] = _authority_signature(result)


def _check_header(parsed: dict, result: dict) -> None:
    errors: list[str] = result["errors"]
    required = result["num_required_signatures"]
    keys = len(parsed["keys"])
    if required + result["num_readonly_unsigned"] > keys:
        errors.append(
            f"header needs {required} signers + {result['num_readonly_unsigned']} "
            f"readonly unsigned keys, only {keys} account keys"
        )
    if required == 0:
        errors.append("no required signatures (no fee payer)")
    elif result["num_readonly_signed"] >= required:
        errors.append("fee payer is readonly")
    if len(parsed["signatures"]) != required:
        errors.append(f"{len(parsed['signatures'])} signatures for {required} required signers")
    if len(set(parsed["keys"])) != keys:
        errors.append("duplicate account keys")


def _signatures(parsed: dict, result: dict, message: bytes | None) -> None:
    keys = result["account_keys"]
    required = result["num_required_signatures"] or 0
    result["signers"] = keys[:required]
    for i, signature in enumerate(parsed["signatures"]):
        signer = parsed["keys"][i] if i < min(required, len(parsed["keys"])) else None
        empty = not any(signature)
        valid = None
        if not empty and signer is not None and message is not None:
            valid = ed25519_valid(signer, signature, message)
        result["signatures"].append(
            {
                "signer": b58encode(signer) if signer else None,
                "signature": b58encode(signature),
                "empty": empty,
                "valid": valid,
            }
        )
    first = result["signatures"][0] if result["signatures"] else None
    if first is not None and not first["empty"]:
        result["tx_signature"] = first["signature"]


def ed25519_valid(key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class _Resolver:
    """Account indexes to base58 keys; lookup-table entries resolve to None."""

    def __init__(self, keys: list[str | None], lookups: list) -> None:
        self.keys = keys
        writable = [(b58encode(t), i) for t, w, _ in lookups for i in w]
        readonly = [(b58encode(t), i) for t, _, r in lookups for i in r]
        self.looked_up = writable + readonly

    def total(self) -> int:
        return len(self.keys) + len(self.looked_up)

    def key(self, index: int) -> str | None:
        return self.keys[index] if index < len(self.keys) else None

    def describe(self, index: int) -> str:
        if index < len(self.keys):
            return f"account {index}"
        offset = index - len(self.keys)
        if offset < len(self.looked_up):
            table, entry = self.looked_up[offset]
            return f"address lookup table {table}[{entry}]"
        return f"account index {index} (out of range)"


def _instruction(
    index: int, program: int, accounts: list[int], data: bytes, resolver: _Resolver, result: dict
) -> dict[str, Any]:
    errors: list[str] = result["errors"]
    where = f"instruction {index}"
    program_id = resolver.key(program)
    if program_id is None:
        errors.append(f"{where}: program id is {resolver.describe(program)}, not a static key")
    elif program == 0:
        errors.append(f"{where}: program id is the fee payer")
    bad = [i for i in accounts if i >= resolver.total()]
    if bad:
        errors.append(f"{where}: account index {bad[0]} out of range")
    name = _PROGRAM_NAMES.get(program_id or "")
    tag = data[0] if data else None
    summary = {
        "program_id": program_id,
        "program": name,
        "kind": None,
        "tag": tag,
        "accounts": [resolver.key(i) for i in accounts],
        "data_len": len(data),
    }
    if name == "compute_budget":
        summary["kind"] = _COMPUTE_BUDGET_KINDS.get(tag)
        _compute_budget(where, data, result)
    elif name in ("spl_token", "token_2022"):
        summary["kind"] = _TOKEN_KINDS.get(tag)
        if tag == _TRANSFER_CHECKED:
            _transfer_checked(where, cast(str, program_id), accounts, data, resolver, result)  # (named: so known)
    elif name == "memo":
        summary.update(kind="memo", tag=None)
        _memo(where, data, result)
    elif name == "lighthouse":
        summary["kind"] = "lighthouse"
    return summary


def _compute_budget(where: str, data: bytes, result: dict) -> None:
    errors: list[str] = result["errors"]
    tag = data[0] if data else None
    if tag not in (2, 3):
        return
    field, size = ("compute_unit_limit", 5) if tag == 2 else ("compute_unit_price", 9)
    if len(data) != size:
        errors.append(f"{where}: {field} data is {len(data)} bytes, expected {size}")
        return
    if result[field] is not None:
        errors.append(f"{where}: duplicate {field} instruction")
        return
    result[field] = int.from_bytes(data[1:], "little")


def _transfer_checked(
    where: str, program_id: str, accounts: list[int], data: bytes, resolver: _Resolver, result: dict
) -> None:
    errors: list[str] = result["errors"]
    result["transfers"] += 1
    if result["transfers"] > 1:
        return
    result["token_program"] = program_id
    if len(data) < 10:
        errors.append(f"{where}: TransferChecked data is {len(data)} bytes, expected 10")
    else:
        result["amount"] = str(int.from_bytes(data[1:9], "little"))
        result["decimals"] = data[9]
    if len(accounts) < len(_TRANSFER_ROLES):
        errors.append(f"{where}: TransferChecked has {len(accounts)} accounts, expected at least 4")
    for role, index in zip(_TRANSFER_ROLES, accounts):
        key = resolver.key(index)
        if key is None:
            errors.append(f"{where}: TransferChecked {role} is {resolver.describe(index)}, not resolvable offline")
        result[role] = key
    result["payer"] = result["authority"]


def _memo(where: str, data: bytes, result: dict) -> None:
    result["memos"] += 1
    if result["memos"] > 1:
        return
    try:
        result["memo"] = data.decode("utf-8")
    except UnicodeDecodeError:
        result["errors"].append(f"{where}: memo is not valid UTF-8")


def _check_totals(result: dict) -> None:
    errors: list[str] = result["errors"]
    if result["transfers"] == 0:
        errors.append("no TransferChecked instruction")
    elif result["transfers"] > 1:
        errors.append(f"{result['transfers']} TransferChecked instructions, expected one")
    if result["memos"] > 1:
        errors.append(f"{result['memos']} memo instructions, expected at most one")


def _authority_signature(result: dict) -> bool | None:
    authority = result["authority"]
    for entry in result["signatures"]:
        if authority is not None and entry["signer"] == authority:
            return bool(entry["valid"]) if result["message_sha256"] else None
    return None


def payer_signature_valid(decoded_or_raw: object) -> bool | None:
    """Whether the TransferChecked authority's ed25519 signature over the message verifies.

    Takes a :func:`decode_transaction` result (its verdict, computed when
    decoding: the result keeps no message bytes) or the base64 transaction.  None
    when the authority is unknown or not among the signers (or the message is
    incomplete); False for an empty or wrong signature."""
    try:
        if isinstance(decoded_or_raw, dict):
            value = decoded_or_raw.get("payer_signature_valid")
            return value if isinstance(value, bool) else None
        return decode_transaction(decoded_or_raw)["payer_signature_valid"]
    except Exception:
        return None


def settlement_signature_valid(b64: object, signature: object) -> bool | None:
    """Whether a settlement's ``transaction`` (base58) is the fee payer's signature of this message.

    The facilitator fills the empty fee-payer slot and broadcasts; the
    transaction id is that signature, so it verifies against ``fee_payer``
    over the very message the payer signed.  None when the transaction does
    not decode to a whole message or ``signature`` is not a signature."""
    try:
        raw, _ = _b64_bytes(b64)
        sig = _b58_of_len(signature, _SIGNATURE_LEN) if is_signature(signature) else None
        if raw is None or sig is None or len(raw) > MAX_WIRE_BYTES:
            return None
        parsed: dict[str, Any] = {"signatures": [], "message": None, "keys": [], "instructions": [], "lookups": []}
        _read_wire(_Reader(raw), parsed, _empty_transaction())
        if parsed["message"] is None or not parsed["keys"]:
            return None
        return ed25519_valid(parsed["keys"][0], sig, parsed["message"])
    except Exception:  # _Malformed, or a bug: never raise
        return None
