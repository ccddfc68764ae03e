"""What an x402 payment channel (`batch-settlement`) is, as both the recorder and the verifier need it.

A channel is its configuration: payer, payerAuthorizer (who may sign vouchers for the payer), receiver,
receiverAuthorizer, token, withdrawDelay and salt. Its id is the EIP-712 hash of that configuration in
the channel contract's domain, so the id binds every field and the chain. The payer signs cumulative
vouchers `Voucher(channelId, maxClaimableAmount)` in the same domain; the receiver claims up to the
latest one, and the contract books the channel's `totalClaimed`.
"""

from __future__ import annotations

from eth_hash.auto import keccak

BATCH_SETTLEMENT = "0x4020074e9df2ce1dee5a9c1b5c3f541d02a10003"  # the channel contract (one address on every chain)
CONFIG = (
    b"ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,"
    b"address token,uint40 withdrawDelay,bytes32 salt)"
)
CONFIG_FIELDS = ("payer", "payerAuthorizer", "receiver", "receiverAuthorizer", "token", "withdrawDelay", "salt")
VOUCHER = b"Voucher(bytes32 channelId,uint128 maxClaimableAmount)"
_DOMAIN = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def _word(value) -> bytes:
    """An address, a bytes32 or an integer as one 32-byte ABI word."""
    if isinstance(value, str) and value.startswith("0x"):
        raw = bytes.fromhex(value[2:])
        if len(raw) not in (20, 32):
            raise ValueError(f"{value!r} is neither an address nor 32 bytes")
        return raw.rjust(32, b"\0")
    if isinstance(value, bytes):
        return value.rjust(32, b"\0")
    return int(value).to_bytes(32, "big")


def domain(chain: int) -> bytes:
    return keccak(
        keccak(_DOMAIN) + keccak(b"x402 Batch Settlement") + keccak(b"1") + _word(chain) + _word(BATCH_SETTLEMENT)
    )


def channel_id(chain: int, config: dict) -> str:
    """A channel's id (0x-prefixed, lowercase) from its configuration (the wire's camelCase keys)."""
    struct = keccak(keccak(CONFIG) + b"".join(_word(config[k]) for k in CONFIG_FIELDS))
    return "0x" + keccak(b"\x19\x01" + domain(chain) + struct).hex()


def voucher_digest(chain: int, channel: str, max_claimable: int | str) -> bytes:
    """What the payer (or its payerAuthorizer) signs for a voucher."""
    struct = keccak(keccak(VOUCHER) + _word(channel) + _word(max_claimable))
    return keccak(b"\x19\x01" + domain(chain) + struct)
