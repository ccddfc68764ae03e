"""x402 `auth-capture` (escrow) on EVM: the payer authorizes a cap into an escrow; the merchant is paid
only when the operator later captures (all or part), and a void or a reclaim returns the rest.

The payment (x402 spec, schemes/auth-capture): an EIP-3009 `ReceiveWithAuthorization` from the payer to
the escrow's token collector for the cap, whose nonce is the escrow's payer-agnostic hash of the whole
`PaymentInfo` (operator, receiver = the offer's payTo, token, cap, expiries, fees, salt), so the nonce binds
every term. The escrow names the payment by the same hash with the payer in it (its id: topic 1 of every
escrow event). Pure; none raises (callers catch).
"""

from __future__ import annotations

ESCROWS = (
    "0xf96815976523e00e65be8f34ca5e64b4f41eb19c",  # v1.1 (the npm client's default)
    "0xbdea0d1bcc5966192b070fdf62ab4ef5b4420cff",
)  # v1.0
PAYMENT_INFO = (
    b"PaymentInfo(address operator,address payer,address receiver,address token,uint120 maxAmount,"
    b"uint48 preApprovalExpiry,uint48 authorizationExpiry,uint48 refundExpiry,uint16 minFeeBps,"
    b"uint16 maxFeeBps,address feeReceiver,uint256 salt)"
)
ZERO = "0x" + "00" * 20
# The escrow's events of a payment after its authorization (topic 1: the payment's id), by topic 0: the
# keccak256 of each event's signature, written out (computing them at import loaded a keccak backend,
# 50 ms of every `receipts verify`; tests/storage/test_authcapture.py computes them again).
EVENTS = {
    "PaymentCaptured(bytes32,uint256,uint256,address)": "0xac1e0db1957daedbc6944bcb4c8dc947ff8101d710671ac2ec26309f7f38d58e",
    "PaymentVoided(bytes32,uint256)": "0xcadce8c3acb008e3e1c64ca7f60d22a3c87069183182b7dbb9e4d8cfb3a15842",
    "PaymentReclaimed(bytes32,uint256)": "0x78e1d723d17e13b7f40eeab9bf6dd9148a630bafde4203ab7bb5fca983516d17",
    "PaymentRefunded(bytes32,uint256,address)": "0x1bf415371b303ca6b8bbb4ce479b177cba5ad15dbe0c9a7750a588aa6bcd25b2",
}
CAPTURED, VOIDED, RECLAIMED, REFUNDED = EVENTS.values()
AFTER = {CAPTURED: "captured", VOIDED: "voided", RECLAIMED: "reclaimed", REFUNDED: "refunded"}


def _word(value) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        return bytes.fromhex(value[2:]).rjust(32, b"\0")
    return int(value).to_bytes(32, "big")


def payment_info(accepted: dict, payload: dict) -> list:
    """The PaymentInfo a payment commits to, rebuilt from the offer (`accepted`, the wire's camelCase
    entry) and the payload, in the struct's order."""
    extra, auth = accepted.get("extra") or {}, payload["authorization"]
    return [
        extra["captureAuthorizer"],
        auth["from"],
        accepted["payTo"],
        accepted["asset"],
        int(accepted["amount"]),
        int(auth["validBefore"]),
        int(extra["captureDeadline"]),
        int(extra["refundDeadline"]),
        int(extra["minFeeBps"]),
        int(extra["maxFeeBps"]),
        extra["feeRecipient"],
        payload["salt"],
    ]


def payment_id(chain: int, escrow: str, info: list, payer_agnostic: bool = False) -> str:
    """The escrow's hash of a PaymentInfo (`getHash`): with the payer, the payment's id; without
    (`payer_agnostic`), the nonce the payer signs."""
    from eth_hash.auto import keccak  # (here: loading its backend is 50 ms that a verify pass rarely needs)

    fields = [ZERO if payer_agnostic and i == 1 else v for i, v in enumerate(info)]
    struct = keccak(keccak(PAYMENT_INFO) + b"".join(_word(v) for v in fields))
    return "0x" + keccak(_word(chain) + _word(escrow) + struct).hex()
