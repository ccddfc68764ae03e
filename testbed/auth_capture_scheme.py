"""x402 ``auth-capture`` (escrow) on EVM for the test bed: the wire, the hashes, and the server and facilitator
halves of the scheme as plug-ins for the ``x402`` Python SDK (which ships no such mechanism in 2.25.0; only
the npm client exists, ``@x402/evm`` 2.27.0 ``./auth-capture/client``).

What the npm client does (read from its dist code, ``AuthCaptureEvmScheme.createPaymentPayload``):

- it needs ``extra.name``/``version`` (the token's EIP-712 domain), ``captureAuthorizer``, ``feeRecipient``
  (strings), ``captureDeadline``, ``refundDeadline``, ``minFeeBps``, ``maxFeeBps`` (JSON numbers) and the
  requirement's ``maxTimeoutSeconds``; optional ``authCaptureEscrow`` (must be the v1.1 or v1.0 escrow
  address, default v1.1), ``assetTransferMethod`` (``eip3009`` default, or ``permit2``),
  ``receiverAuthorizer`` and ``policy`` (either non-zero turns the salt binding on);
- it builds ``PaymentInfo{operator: captureAuthorizer, payer: itself, receiver: payTo, token: asset,
  maxAmount: amount, preApprovalExpiry: now + maxTimeoutSeconds, authorizationExpiry: captureDeadline,
  refundExpiry: refundDeadline, minFeeBps, maxFeeBps, feeReceiver: feeRecipient, salt}`` where ``salt`` is
  32 random bytes, or (bound) ``keccak256(abi.encode(SALT_BINDING_TYPEHASH, receiverAuthorizer, policy,
  saltNonce))`` with ``saltNonce`` the random bytes;
- the ERC-3009 nonce is the *payer-agnostic* payment hash: :func:`payment_info_hash` with ``payer`` = 0;
- it signs ``ReceiveWithAuthorization(from: payer, to: the EIP-3009 token collector, value: maxAmount,
  validAfter: 0, validBefore: preApprovalExpiry, nonce)`` and sends ``{authorization, signature, salt}``
  (+ ``saltNonce`` when bound).

The facilitator here is the ``"delegated"`` operator (it submits from ``captureAuthorizer``); the server holds
the receiver-authorizer key and asks for lifecycle operations (``capture``, ``void``) with ``POST /settle``
payloads ``{type, paymentInfo, saltNonce, ...authorizerSignature}`` signed under the EIP-712 domain
``{name: "x402 Auth Capture Operator", version: "1", chainId, verifyingContract: captureAuthorizer}``, as the
x402 scheme text (specs/schemes/auth-capture/scheme_auth_capture_evm.md) describes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

SCHEME = "auth-capture"

# The npm client's constants (@x402/evm 2.27.0, src/auth-capture/constants.ts as bundled in its dist).
AUTH_CAPTURE_ESCROW_V1_1 = "0xf96815976523E00e65Be8f34cA5e64b4f41EB19c"
EIP3009_TOKEN_COLLECTOR_V1_1 = "0x8612dfdc421f80336cd14E8EF9cb1E765dB5ab88"
PERMIT2_TOKEN_COLLECTOR_V1_1 = "0xD69831Aed5bfe262067ec4c751f4F830EcdD446e"
OPERATOR_REFUND_COLLECTOR_V1_1 = "0x7a03443724d14798c4AB4622F1DAAcA761Fea486"
AUTH_CAPTURE_ESCROW_V1_0 = "0xBdEA0D1bcC5966192B070Fdf62aB4EF5b4420cff"
EIP3009_TOKEN_COLLECTOR_V1_0 = "0x0E3dF9510de65469C4518D7843919c0b8C7A7757"
PERMIT2_TOKEN_COLLECTOR_V1_0 = "0x992476B9Ee81d52a5BdA0622C333938D0Af0aB26"
OPERATOR_REFUND_COLLECTOR_V1_0 = "0x934907bffd0901b6A21e398B9C53A4A38F02fa5d"
# The test bed installs its contracts at the v1.1 set (the client's default).
AUTH_CAPTURE_ESCROW = AUTH_CAPTURE_ESCROW_V1_1
EIP3009_TOKEN_COLLECTOR = EIP3009_TOKEN_COLLECTOR_V1_1
OPERATOR_REFUND_COLLECTOR = OPERATOR_REFUND_COLLECTOR_V1_1

ZERO_ADDRESS = "0x" + "00" * 20
PAYMENT_INFO_TYPE = (
    "PaymentInfo(address operator,address payer,address receiver,address token,uint120 maxAmount,"
    "uint48 preApprovalExpiry,uint48 authorizationExpiry,uint48 refundExpiry,uint16 minFeeBps,uint16 maxFeeBps,"
    "address feeReceiver,uint256 salt)"
)
PAYMENT_INFO_TYPEHASH = keccak(text=PAYMENT_INFO_TYPE)
SALT_BINDING_TYPEHASH = keccak(
    text="x402AuthCaptureSaltBinding(address receiverAuthorizer,address policy,uint256 saltNonce)")
PAYMENT_INFO_FIELDS = ("operator", "payer", "receiver", "token", "maxAmount", "preApprovalExpiry",
                       "authorizationExpiry", "refundExpiry", "minFeeBps", "maxFeeBps", "feeReceiver", "salt")
PAYMENT_INFO_ABI_TYPES = ["address", "address", "address", "address", "uint120", "uint48", "uint48", "uint48",
                          "uint16", "uint16", "address", "uint256"]

RECEIVE_WITH_AUTHORIZATION_TYPES = {"ReceiveWithAuthorization": [
    {"name": "from", "type": "address"}, {"name": "to", "type": "address"}, {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"}, {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"}]}
OPERATOR_DOMAIN_NAME, OPERATOR_DOMAIN_VERSION = "x402 Auth Capture Operator", "1"
CAPTURE_TYPES = {"Capture": [
    {"name": "paymentInfoHash", "type": "bytes32"}, {"name": "amount", "type": "uint256"},
    {"name": "feeAmount", "type": "uint256"}, {"name": "feeReceiver", "type": "address"},
    {"name": "expectedCapturableAmount", "type": "uint256"}, {"name": "expectedRefundableAmount", "type": "uint256"}]}
VOID_TYPES = {"Void": [{"name": "paymentInfoHash", "type": "bytes32"}]}

SAFETY_MARGIN_SECONDS = 6

# The escrow's custom errors -> the scheme's invalid reasons (the spec's "Typed simulation reverts").
ESCROW_ERRORS = {
    "InvalidSender(address,address)": "invalid_auth_capture_evm_operator_mismatch",
    "ZeroAmount()": "invalid_auth_capture_evm_amount_mismatch",
    "AmountOverflow(uint256,uint256)": "invalid_auth_capture_evm_amount_overflow",
    "ExceedsMaxAmount(uint256,uint256)": "invalid_auth_capture_evm_amount_mismatch",
    "AfterPreApprovalExpiry(uint48,uint48)": "invalid_auth_capture_evm_authorization_expired",
    "InvalidExpiries(uint48,uint48,uint48)": "invalid_auth_capture_evm_deadline_ordering",
    "FeeBpsOverflow(uint16)": "invalid_auth_capture_evm_fee_bps",
    "InvalidFeeBpsRange(uint16,uint16)": "invalid_auth_capture_evm_fee_bps_range",
    "FeeAmountOutOfRange(uint256,uint256,uint256)": "invalid_auth_capture_evm_fee_bps_out_of_range",
    "ZeroFeeReceiver()": "invalid_auth_capture_evm_zero_fee_receiver",
    "InvalidFeeReceiver(address,address)": "invalid_auth_capture_evm_fee_receiver",
    "InvalidCollectorForOperation()": "invalid_auth_capture_evm_collector",
    "TokenCollectionFailed()": "invalid_auth_capture_evm_token_collection_failed",
    "PaymentAlreadyCollected(bytes32)": "invalid_auth_capture_evm_payment_already_collected",
    "AfterAuthorizationExpiry(uint48,uint48)": "invalid_auth_capture_evm_capture_deadline_expired",
    "BeforeAuthorizationExpiry(uint48,uint48)": "invalid_auth_capture_evm_before_capture_deadline",
    "InsufficientAuthorization(bytes32,uint256,uint256)": "invalid_auth_capture_evm_insufficient_authorization",
    "ZeroAuthorization(bytes32)": "invalid_auth_capture_evm_zero_authorization",
    "AfterRefundExpiry(uint48,uint48)": "invalid_auth_capture_evm_refund_deadline_expired",
    "RefundExceedsCapture(uint256,uint256)": "invalid_auth_capture_evm_refund_exceeds_capture",
}
ERROR_SELECTORS = {"0x" + keccak(text=sig)[:4].hex(): sig for sig in ESCROW_ERRORS}


def error_name(revert_data: str | None) -> str | None:
    """The escrow custom error (``Name(types)``) a revert's data starts with, if it is one of ours."""
    if not revert_data or len(revert_data) < 10:
        return None
    return ERROR_SELECTORS.get(revert_data[:10].lower())


# ---------------------------------------------------------------------------------------------
# PaymentInfo and its hashes
# ---------------------------------------------------------------------------------------------


def salt_hex(value: int | str) -> str:
    """A salt (or saltNonce) as the wire spells it: 0x + 64 hex digits."""
    n = int(value, 16) if isinstance(value, str) else int(value)
    return "0x" + n.to_bytes(32, "big").hex()


def is_nonzero_address(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("0x") and len(value) == 42 and int(value, 16) != 0


def salt_binding_on(extra: dict) -> bool:
    return is_nonzero_address(extra.get("receiverAuthorizer")) or is_nonzero_address(extra.get("policy"))


def _addr_or_zero(value: Any) -> str:
    return to_checksum_address(value) if is_nonzero_address(value) else ZERO_ADDRESS


def derive_bound_salt(receiver_authorizer: str | None, policy: str | None, salt_nonce: str) -> str:
    """``keccak256(abi.encode(SALT_BINDING_TYPEHASH, receiverAuthorizer, policy, saltNonce))`` as 0x hex."""
    encoded = abi_encode(["bytes32", "address", "address", "uint256"],
                         [SALT_BINDING_TYPEHASH, _addr_or_zero(receiver_authorizer), _addr_or_zero(policy),
                          int(salt_nonce, 16)])
    return "0x" + keccak(encoded).hex()


def payment_info_tuple(info: dict) -> tuple:
    """A wire ``paymentInfo`` dict as the escrow's ABI tuple."""
    return (to_checksum_address(info["operator"]), to_checksum_address(info["payer"]),
            to_checksum_address(info["receiver"]), to_checksum_address(info["token"]), int(info["maxAmount"]),
            int(info["preApprovalExpiry"]), int(info["authorizationExpiry"]), int(info["refundExpiry"]),
            int(info["minFeeBps"]), int(info["maxFeeBps"]), to_checksum_address(info["feeReceiver"]),
            int(info["salt"], 16) if isinstance(info["salt"], str) else int(info["salt"]))


def payment_info_hash(chain_id: int, info: dict, *, escrow: str = AUTH_CAPTURE_ESCROW,
                      payer_agnostic: bool = False) -> str:
    """``keccak256(abi.encode(chainId, escrow, keccak256(abi.encode(PAYMENT_INFO_TYPEHASH, paymentInfo))))``:
    the escrow's ``getHash`` (the payment's id); ``payer_agnostic`` zeroes ``payer`` first, which gives the
    ERC-3009 nonce the client signs."""
    values = list(payment_info_tuple(info))
    if payer_agnostic:
        values[1] = ZERO_ADDRESS
    struct_hash = keccak(abi_encode(["bytes32", *PAYMENT_INFO_ABI_TYPES], [PAYMENT_INFO_TYPEHASH, *values]))
    return "0x" + keccak(abi_encode(["uint256", "address", "bytes32"],
                                    [int(chain_id), to_checksum_address(escrow), struct_hash])).hex()


def chain_id_of(network: str) -> int:
    if not network.startswith("eip155:"):
        raise ValueError(f"not an EVM network: {network}")
    return int(network.split(":", 1)[1])


def reconstruct_payment_info(requirements: dict, payload: dict) -> dict:
    """The ``PaymentInfo`` a collect payload commits to, rebuilt from the requirements and the payload (as the
    facilitator must: nothing else is stored). Wire spelling: amounts as strings, expiries and bps as numbers."""
    extra = requirements.get("extra") or {}
    auth = payload["authorization"]
    return {
        "operator": to_checksum_address(extra["captureAuthorizer"]),
        "payer": to_checksum_address(auth["from"]),
        "receiver": to_checksum_address(requirements["payTo"]),
        "token": to_checksum_address(requirements["asset"]),
        "maxAmount": str(int(requirements["amount"])),
        "preApprovalExpiry": int(auth["validBefore"]),
        "authorizationExpiry": int(extra["captureDeadline"]),
        "refundExpiry": int(extra["refundDeadline"]),
        "minFeeBps": int(extra["minFeeBps"]),
        "maxFeeBps": int(extra["maxFeeBps"]),
        "feeReceiver": to_checksum_address(extra["feeRecipient"]),
        "salt": salt_hex(payload["salt"]),
    }


# ---------------------------------------------------------------------------------------------
# EIP-712: the client's ReceiveWithAuthorization, the receiver authorizer's Capture and Void
# ---------------------------------------------------------------------------------------------


def _typed(domain: dict, types: dict, primary: str, message: dict) -> Any:
    domain_fields = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]
    return encode_typed_data(full_message={"types": {"EIP712Domain": domain_fields, **types}, "domain": domain,
                                           "primaryType": primary, "message": message})


def receive_authorization_signable(auth: dict, *, token_name: str, token_version: str, chain_id: int, token: str):
    domain = {"name": token_name, "version": token_version, "chainId": chain_id,
              "verifyingContract": to_checksum_address(token)}
    message = {"from": to_checksum_address(auth["from"]), "to": to_checksum_address(auth["to"]),
               "value": int(auth["value"]), "validAfter": int(auth["validAfter"]),
               "validBefore": int(auth["validBefore"]), "nonce": bytes.fromhex(auth["nonce"].removeprefix("0x"))}
    return _typed(domain, RECEIVE_WITH_AUTHORIZATION_TYPES, "ReceiveWithAuthorization", message)


def operator_domain(chain_id: int, capture_authorizer: str) -> dict:
    return {"name": OPERATOR_DOMAIN_NAME, "version": OPERATOR_DOMAIN_VERSION, "chainId": chain_id,
            "verifyingContract": to_checksum_address(capture_authorizer)}


def capture_signable(chain_id: int, capture_authorizer: str, *, payment_info_hash: str, amount: int,
                     fee_amount: int, fee_receiver: str, expected_capturable: int, expected_refundable: int):
    message = {"paymentInfoHash": bytes.fromhex(payment_info_hash.removeprefix("0x")), "amount": int(amount),
               "feeAmount": int(fee_amount), "feeReceiver": to_checksum_address(fee_receiver),
               "expectedCapturableAmount": int(expected_capturable),
               "expectedRefundableAmount": int(expected_refundable)}
    return _typed(operator_domain(chain_id, capture_authorizer), CAPTURE_TYPES, "Capture", message)


def void_signable(chain_id: int, capture_authorizer: str, *, payment_info_hash: str):
    message = {"paymentInfoHash": bytes.fromhex(payment_info_hash.removeprefix("0x"))}
    return _typed(operator_domain(chain_id, capture_authorizer), VOID_TYPES, "Void", message)


def sign(signable: Any, private_key: str) -> str:
    return "0x" + Account.sign_message(signable, private_key).signature.hex()


def recover(signable: Any, signature: str) -> str | None:
    try:
        return Account.recover_message(signable, signature=bytes.fromhex(signature.removeprefix("0x")))
    except Exception:  # malformed signature
        return None


# ---------------------------------------------------------------------------------------------
# Server side: the scheme for x402ResourceServer
# ---------------------------------------------------------------------------------------------


class AuthCaptureServerScheme:
    """``SchemeNetworkServer`` for ``auth-capture``: the route gives the price as ``{amount, asset, extra}``;
    the facilitator's ``/supported`` kind adds ``captureAuthorizer`` and its fee terms; this adds the receiver
    authorizer (when the server holds one), absolute deadlines from ``captureDeadlineSeconds`` /
    ``refundDeadlineSeconds``, ``paymentFlow: "escrow"``, ``captureMode: "deferred"`` (capture and void are
    asked for later, on demand) and the escrow address the client signs for."""

    scheme = SCHEME
    default_asset_transfer_method = "eip3009"
    payment_flows = {"eip3009": {"supported": ("escrow",), "default": "escrow"}}

    def __init__(self, receiver_authorizer: str | None = None, *, escrow: str = AUTH_CAPTURE_ESCROW):
        self.receiver_authorizer = to_checksum_address(receiver_authorizer) if receiver_authorizer else None
        self.escrow = to_checksum_address(escrow)
        self._anchor = 0

    def _deadline_anchor(self, shortest: int) -> int:
        """The time the deadlines count from: fixed until half the shortest window is gone, so that a 402 and
        the paid retry a moment later carry the same requirements (counted from each request's own second, a
        retry across a second boundary matched nothing and was refused with 'No matching payment
        requirements')."""
        now = int(time.time())
        if now - self._anchor > shortest // 2:
            self._anchor = now
        return self._anchor

    def parse_price(self, price: Any, network: str):
        from x402.schemas import AssetAmount

        if isinstance(price, AssetAmount):
            return price
        if isinstance(price, dict) and "amount" in price and price.get("asset"):
            return AssetAmount(amount=str(price["amount"]), asset=price["asset"], extra=dict(price.get("extra") or {}))
        raise ValueError("auth-capture needs the price as {amount, asset, extra} (atomic units)")

    def enhance_payment_requirements(self, requirements, supported_kind, extension_keys):
        merged = {**(getattr(supported_kind, "extra", None) or {}), **(requirements.extra or {})}
        windows = {rel: int(merged.pop(rel)) for rel in ("captureDeadlineSeconds", "refundDeadlineSeconds")
                   if rel in merged}
        anchor = self._deadline_anchor(min(windows.values(), default=0))
        for rel, absolute in (("captureDeadlineSeconds", "captureDeadline"),
                              ("refundDeadlineSeconds", "refundDeadline")):
            if rel in windows:
                merged.setdefault(absolute, anchor + windows[rel])
        if self.receiver_authorizer:
            merged["receiverAuthorizer"] = self.receiver_authorizer
        merged.setdefault("operatorType", "delegated")
        merged["paymentFlow"] = "escrow"
        merged["captureMode"] = "deferred"
        merged["authCaptureEscrow"] = self.escrow
        merged.pop("operators", None)
        for key, kind in (("captureAuthorizer", str), ("feeRecipient", str), ("captureDeadline", int),
                          ("refundDeadline", int), ("minFeeBps", int), ("maxFeeBps", int)):
            if not isinstance(merged.get(key), kind):
                raise ValueError(f"auth-capture needs extra.{key} ({kind.__name__})")
        requirements.extra = merged
        return requirements


# ---------------------------------------------------------------------------------------------
# Facilitator side: the delegated operator
# ---------------------------------------------------------------------------------------------


class RpcRevert(Exception):
    def __init__(self, message: str, data: str | None):
        super().__init__(message)
        self.data = data


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _rpc(url: str, method: str, params: list, timeout: float = 30.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with _NO_PROXY_OPENER.open(req, timeout=timeout) as r:
        reply = json.loads(r.read())
    if reply.get("error"):
        err = reply["error"]
        data = err.get("data")
        if isinstance(data, dict):
            data = data.get("data")
        raise RpcRevert(str(err.get("message")), data if isinstance(data, str) else None)
    return reply["result"]


def escrow_abi() -> list[dict]:
    from .contracts.build import load_artifact

    return load_artifact("TestAuthCaptureEscrow")["abi"]


class AuthCaptureFacilitatorScheme:
    """``SchemeNetworkFacilitator`` for ``auth-capture``, ``operatorType: "delegated"``: this facilitator's
    account is the operator (``captureAuthorizer``); it relays the client's collect (``authorize``, the
    ``escrow`` flow) and the server's lifecycle payloads (``capture``, ``void``) signed by the receiver
    authorizer. Checks, in the spec's order where they apply: shape, scheme and network, extra, operator,
    deadlines, collector, the payer's signature, the amount, the salt binding, the nonce (the whole
    PaymentInfo), the authorizer's signature and the expected balances; then an ``eth_call`` of the exact
    escrow call (its custom error, if any, becomes the reason) before sending it."""

    scheme = SCHEME
    caip_family = "eip155:*"

    def __init__(self, rpc_url: str, private_key: str, *, fee_bps: int = 0, escrow: str = AUTH_CAPTURE_ESCROW,
                 collector: str = EIP3009_TOKEN_COLLECTOR):
        from .chain import make_web3

        self.rpc_url = rpc_url
        self.account = Account.from_key(private_key)
        self.address = self.account.address
        self.fee_bps = int(fee_bps)
        self.escrow = to_checksum_address(escrow)
        self.collector = to_checksum_address(collector)
        self.w3 = make_web3(rpc_url)
        self.contract = self.w3.eth.contract(address=self.escrow, abi=escrow_abi())
        self._lock = threading.Lock()

    # -- SchemeNetworkFacilitator ------------------------------------------------------------
    def get_extra(self, network: str) -> dict:
        return {"captureAuthorizer": self.address, "feeRecipient": self.address, "minFeeBps": self.fee_bps,
                "maxFeeBps": self.fee_bps}

    def get_signers(self, network: str) -> list[str]:
        return [self.address]

    def verify(self, payload, requirements, context=None):
        from x402.schemas import VerifyResponse

        reqs, wire = _dump_requirements(requirements), dict(payload.payload or {})
        try:
            if wire.get("type") in ("capture", "void", "refund"):
                payer = (wire.get("paymentInfo") or {}).get("payer")
                self._verify_lifecycle(payload, reqs, wire)
            else:
                payer = (wire.get("authorization") or {}).get("from")
                self._verify_collect(payload, reqs, wire)
        except Invalid as e:
            return VerifyResponse(is_valid=False, invalid_reason=e.reason, invalid_message=e.message, payer=payer)
        return VerifyResponse(is_valid=True, payer=payer)

    def settle(self, payload, requirements, context=None):
        from x402.schemas import SettleResponse

        reqs, wire = _dump_requirements(requirements), dict(payload.payload or {})
        network = reqs["network"]
        lifecycle = wire.get("type") in ("capture", "void", "refund")
        payer = ((wire.get("paymentInfo") or {}) if lifecycle else (wire.get("authorization") or {})).get(
            "payer" if lifecycle else "from")
        try:
            if lifecycle:
                fn, amount = self._verify_lifecycle(payload, reqs, wire)
            else:
                fn, amount = self._verify_collect(payload, reqs, wire)
        except Invalid as e:
            return SettleResponse(success=False, error_reason=e.reason, error_message=e.message, transaction="",
                                  network=network, payer=payer)
        tx_hash, receipt = self._send(fn)
        if receipt["status"] != 1:
            return SettleResponse(success=False, error_reason="invalid_auth_capture_evm_transaction_reverted",
                                  transaction=tx_hash, network=network, payer=payer)
        return SettleResponse(success=True, transaction=tx_hash, network=network, payer=payer,
                              amount=str(amount))

    # -- collect (authorize) -------------------------------------------------------------------
    def _verify_collect(self, payload, reqs: dict, wire: dict):
        accepted = _dump_requirements(payload.accepted)
        if reqs.get("scheme") != SCHEME or accepted.get("scheme") != SCHEME:
            raise Invalid("invalid_auth_capture_evm_scheme")
        if accepted.get("network") != reqs.get("network"):
            raise Invalid("invalid_auth_capture_evm_network_mismatch")
        chain_id = chain_id_of(reqs["network"])
        extra = self._check_extra(reqs)
        if extra.get("paymentFlow", "escrow") != "escrow":
            raise Invalid("invalid_auth_capture_evm_unsupported_payment_flow", "this facilitator relays escrow only")
        if extra.get("assetTransferMethod", "eip3009") != "eip3009":
            raise Invalid("invalid_auth_capture_evm_unsupported_asset_transfer_method")
        auth, signature, salt = wire.get("authorization"), wire.get("signature"), wire.get("salt")
        if not isinstance(auth, dict) or not isinstance(signature, str) or not isinstance(salt, str):
            raise Invalid("invalid_auth_capture_evm_payload_format", "authorization, signature and salt are needed")
        bound = salt_binding_on(extra)
        if bound != ("saltNonce" in wire):
            raise Invalid("invalid_auth_capture_evm_payload_format", "saltNonce iff the salt binding is on")
        if any(k in wire for k in ("amount", "feeAmount", "feeReceiver", "authorizerSignature")):
            raise Invalid("invalid_auth_capture_evm_payload_format", "authorize carries no completion fields")
        now = int(time.time())
        capture_deadline, refund_deadline = int(extra["captureDeadline"]), int(extra["refundDeadline"])
        valid_before = int(auth["validBefore"])
        if capture_deadline <= now + SAFETY_MARGIN_SECONDS:
            raise Invalid("invalid_auth_capture_evm_capture_deadline_expired")
        if refund_deadline < capture_deadline or now + int(reqs["maxTimeoutSeconds"]) > capture_deadline:
            raise Invalid("invalid_auth_capture_evm_deadline_ordering")
        if valid_before <= now + SAFETY_MARGIN_SECONDS:
            raise Invalid("invalid_auth_capture_evm_authorization_expired")
        if valid_before > capture_deadline:
            raise Invalid("invalid_auth_capture_evm_deadline_ordering")
        if int(auth["validAfter"]) > now:
            raise Invalid("invalid_auth_capture_evm_authorization_not_yet_valid")
        if to_checksum_address(auth["to"]) != self.collector:
            raise Invalid("invalid_auth_capture_evm_token_collector_mismatch")
        signable = receive_authorization_signable(auth, token_name=extra["name"], token_version=extra["version"],
                                                  chain_id=chain_id, token=reqs["asset"])
        if len(signature) == 132:  # a 65-byte EOA signature; a contract wallet's is checked by the token on chain
            if recover(signable, signature) != to_checksum_address(auth["from"]):
                raise Invalid("invalid_auth_capture_evm_signature")
        if int(auth["value"]) != int(reqs["amount"]) or int(accepted["amount"]) != int(reqs["amount"]):
            raise Invalid("invalid_auth_capture_evm_amount_mismatch")
        if bound and int(salt, 16) != int(derive_bound_salt(extra.get("receiverAuthorizer"), extra.get("policy"),
                                                           wire["saltNonce"]), 16):
            raise Invalid("invalid_auth_capture_evm_salt_binding_mismatch")
        info = reconstruct_payment_info(reqs, wire)
        expected_nonce = payment_info_hash(chain_id, info, escrow=self.escrow, payer_agnostic=True)
        if auth["nonce"].lower() != expected_nonce:
            raise Invalid("invalid_auth_capture_evm_nonce_mismatch")
        amount = int(reqs["amount"])
        fn = self.contract.functions.authorize(payment_info_tuple(info), amount, self.collector,
                                               bytes.fromhex(signature.removeprefix("0x")))
        self._simulate(fn)
        return fn, amount

    # -- lifecycle (capture, void) -------------------------------------------------------------
    def _verify_lifecycle(self, payload, reqs: dict, wire: dict):
        chain_id = chain_id_of(reqs["network"])
        extra = self._check_extra(reqs)
        kind = wire.get("type")
        if kind == "refund":
            raise Invalid("invalid_auth_capture_evm_refund_funding_unavailable",
                          "a delegated operator relays no refund without a funding agreement")
        if not is_nonzero_address(extra.get("receiverAuthorizer")):
            raise Invalid("invalid_auth_capture_evm_lifecycle_not_relayed")
        info = wire.get("paymentInfo")
        if not isinstance(info, dict) or set(info) != set(PAYMENT_INFO_FIELDS):
            raise Invalid("invalid_auth_capture_evm_payload_format", "paymentInfo must be the whole struct")
        if to_checksum_address(info["operator"]) != to_checksum_address(extra["captureAuthorizer"]):
            raise Invalid("invalid_auth_capture_evm_operator_mismatch")
        salt_nonce = wire.get("saltNonce")
        if not isinstance(salt_nonce, str) or int(info["salt"], 16) != int(
                derive_bound_salt(extra.get("receiverAuthorizer"), extra.get("policy"), salt_nonce), 16):
            raise Invalid("invalid_auth_capture_evm_salt_binding_mismatch")
        want = {"receiver": to_checksum_address(reqs["payTo"]), "token": to_checksum_address(reqs["asset"]),
                "maxAmount": int(reqs["amount"]), "authorizationExpiry": int(extra["captureDeadline"]),
                "refundExpiry": int(extra["refundDeadline"]), "minFeeBps": int(extra["minFeeBps"]),
                "maxFeeBps": int(extra["maxFeeBps"]), "feeReceiver": to_checksum_address(extra["feeRecipient"])}
        got = {k: (to_checksum_address(info[k]) if isinstance(want[k], str) else int(info[k])) for k in want}
        if got != want:
            raise Invalid("invalid_auth_capture_evm_extra",
                          f"paymentInfo differs from the requirements: {got} != {want}")
        hash_ = payment_info_hash(chain_id, info, escrow=self.escrow)
        authorizer = to_checksum_address(extra["receiverAuthorizer"])
        sig = wire.get("authorizerSignature")
        if not isinstance(sig, str):
            raise Invalid("invalid_auth_capture_evm_authorizer_signature", "no authorizerSignature")
        tuple_ = payment_info_tuple(info)
        if kind == "void":
            if recover(void_signable(chain_id, extra["captureAuthorizer"], payment_info_hash=hash_), sig) != authorizer:
                raise Invalid("invalid_auth_capture_evm_authorizer_signature")
            fn, amount = self.contract.functions.void(tuple_), 0
        elif kind == "capture":
            amount, fee_amount = int(wire["amount"]), int(wire.get("feeAmount", 0))
            fee_receiver = wire.get("feeReceiver") or extra["feeRecipient"]
            expected_c, expected_r = int(wire["expectedCapturableAmount"]), int(wire["expectedRefundableAmount"])
            signable = capture_signable(chain_id, extra["captureAuthorizer"], payment_info_hash=hash_, amount=amount,
                                        fee_amount=fee_amount, fee_receiver=fee_receiver,
                                        expected_capturable=expected_c, expected_refundable=expected_r)
            if recover(signable, sig) != authorizer:
                raise Invalid("invalid_auth_capture_evm_authorizer_signature")
            _, capturable, refundable = self.contract.functions.paymentState(bytes.fromhex(hash_[2:])).call()
            if (capturable, refundable) != (expected_c, expected_r):
                raise Invalid("invalid_auth_capture_evm_unexpected_payment_state",
                              f"state is ({capturable}, {refundable}), signed for ({expected_c}, {expected_r})")
            fn = self.contract.functions.capture(tuple_, amount, fee_amount, to_checksum_address(fee_receiver))
        else:
            raise Invalid("invalid_auth_capture_evm_payload_type")
        # the escrow itself bounds the amount (InsufficientAuthorization, ZeroAuthorization, deadlines, fees)
        self._simulate(fn)
        return fn, amount

    # -- common --------------------------------------------------------------------------------
    def _check_extra(self, reqs: dict) -> dict:
        extra = reqs.get("extra") or {}
        for key in ("name", "version", "captureAuthorizer", "captureDeadline", "refundDeadline", "feeRecipient",
                    "minFeeBps", "maxFeeBps"):
            if key not in extra:
                raise Invalid("invalid_auth_capture_evm_extra", f"extra.{key} is missing")
        escrow = extra.get("authCaptureEscrow")
        if escrow and to_checksum_address(escrow) != self.escrow:
            raise Invalid("invalid_auth_capture_evm_extra", f"this facilitator collects into {self.escrow} only")
        if extra.get("operatorType", "delegated") != "delegated":
            raise Invalid("invalid_auth_capture_evm_unsupported_operator_type")
        if is_nonzero_address(extra.get("policy")):
            raise Invalid("invalid_auth_capture_evm_policy")
        if to_checksum_address(extra["captureAuthorizer"]) != self.address:
            raise Invalid("invalid_auth_capture_evm_operator_not_admitted")
        return extra

    def _simulate(self, fn) -> None:
        tx = fn.build_transaction({"from": self.address, "gas": 3_000_000, "gasPrice": 0, "nonce": 0,
                                   "chainId": self.w3.eth.chain_id})
        try:
            _rpc(self.rpc_url, "eth_call", [{"from": self.address, "to": tx["to"], "data": tx["data"]}, "latest"])
        except RpcRevert as e:
            name = error_name(e.data)
            raise Invalid(ESCROW_ERRORS.get(name, "invalid_auth_capture_evm_simulation_failed"),
                          f"simulation reverted: {name or e}") from None

    def _send(self, fn) -> tuple[str, dict]:
        with self._lock:
            tx = fn.build_transaction({"from": self.address, "chainId": self.w3.eth.chain_id,
                                       "nonce": self.w3.eth.get_transaction_count(self.address, "pending")})
            tx["gas"] = int(tx["gas"] * 1.2) + 20_000
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
        return "0x" + bytes(tx_hash).hex(), dict(receipt)


class Invalid(Exception):
    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason, self.message = reason, message


def _dump_requirements(requirements: Any) -> dict:
    if isinstance(requirements, dict):
        return requirements
    return requirements.model_dump(by_alias=True, exclude_none=True, mode="json")
