// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title  Payment channels for the x402 "batch-settlement" EVM scheme (test bed)
/// @notice Written for the receipts test bed from the x402 Python SDK's ABI and behaviour
///         (x402/mechanisms/evm/batch_settlement): what its facilitator, server and client call,
///         what they read back and which checks they rely on. Not the upstream contracts.
///
///         A channel is identified by the EIP-712 hash of its ChannelConfig under the domain
///         {name: "x402 Batch Settlement", version: "1", chainId, verifyingContract: this}:
///             channelId = keccak256(0x1901 || domainSeparator || hashStruct(ChannelConfig))
///         (what the SDK's compute_channel_id() gives).
///
///         Accounting: `channels[id].balance` is everything deposited minus what was refunded or
///         withdrawn; `channels[id].totalClaimed` is the cumulative amount the receiver claimed
///         with the payer's vouchers (claimed funds stay counted in `balance`). A claim moves the
///         claimed delta to `receivers[receiver][token].totalClaimed`; `settle` pays out
///         `totalClaimed - totalSettled` to the receiver. A refund or withdrawal pays the payer at
///         most `balance - totalClaimed`.
///
/// @dev    Placed at the SDK's constant addresses with anvil_setCode: no constructor, no
///         immutables; the domain separator is computed on every call from block.chainid and
///         address(this). The only storage written before use is zero by default.
contract TestChannels {
    // ------------------------------------------------------------------ types

    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    struct Channel {
        uint128 balance;
        uint128 totalClaimed;
    }

    struct PendingWithdrawal {
        uint128 amount;
        uint40 initiatedAt;
    }

    struct ReceiverAccount {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    // ------------------------------------------------------------------ constants

    string public constant NAME = "x402 Batch Settlement";
    string public constant VERSION = "1";
    uint40 public constant MIN_WITHDRAW_DELAY = 900;
    uint40 public constant MAX_WITHDRAW_DELAY = 2_592_000;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    bytes4 private constant EIP1271_MAGIC = 0x1626ba7e;
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ------------------------------------------------------------------ state

    mapping(bytes32 => Channel) public channels;
    mapping(bytes32 => PendingWithdrawal) public pendingWithdrawals;
    mapping(address => mapping(address => ReceiverAccount)) public receivers;
    mapping(bytes32 => uint256) public refundNonce;
    mapping(bytes32 => bool) public channelOpened;
    uint256 private _entered;

    // ------------------------------------------------------------------ events

    /// @notice First deposit into a channel: its whole configuration, once.
    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed receiver,
        address payerAuthorizer,
        address receiverAuthorizer,
        address token,
        uint40 withdrawDelay,
        bytes32 salt
    );
    /// @notice `amount` was pulled from the payer through `collector`; `balance` is the channel's new balance.
    event Deposited(
        bytes32 indexed channelId, address indexed payer, address indexed token, address collector, uint128 amount, uint128 balance
    );
    /// @notice A voucher claim raised the channel's cumulative claim to `totalClaimed` (by `amount`),
    ///         under a voucher signed for at most `maxClaimableAmount`.
    event Claimed(
        bytes32 indexed channelId,
        address indexed receiver,
        address indexed token,
        uint128 amount,
        uint128 totalClaimed,
        uint128 maxClaimableAmount
    );
    /// @notice Claimed funds paid out to the receiver (the SDK's ABI fixes this event's layout).
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    /// @notice `amount` paid back to the payer by a cooperative refund; `refundNonce` is the nonce it
    ///         used (the channel's nonce is now refundNonce + 1), `balance` the channel's new balance.
    event Refunded(
        bytes32 indexed channelId, address indexed payer, address indexed token, uint128 amount, uint256 refundNonce, uint128 balance
    );
    event WithdrawInitiated(bytes32 indexed channelId, address indexed payer, uint128 amount, uint40 finalizableAt);
    event WithdrawFinalized(
        bytes32 indexed channelId, address indexed payer, address indexed token, uint128 amount, uint128 balance
    );
    event WithdrawCanceled(bytes32 indexed channelId);

    modifier nonReentrant() {
        require(_entered == 0, "TestChannels: reentrant call");
        _entered = 1;
        _;
        _entered = 0;
    }

    // ------------------------------------------------------------------ EIP-712

    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(NAME)), keccak256(bytes(VERSION)), block.chainid, address(this))
        );
    }

    function _hashTyped(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice The channel id: the EIP-712 hash of `config`.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        return _hashTyped(
            keccak256(
                abi.encode(
                    CHANNEL_CONFIG_TYPEHASH,
                    config.payer,
                    config.payerAuthorizer,
                    config.receiver,
                    config.receiverAuthorizer,
                    config.token,
                    config.withdrawDelay,
                    config.salt
                )
            )
        );
    }

    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTyped(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTyped(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        bytes32[] memory entries = new bytes32[](voucherClaims.length);
        for (uint256 i = 0; i < voucherClaims.length; i++) {
            VoucherClaim calldata c = voucherClaims[i];
            entries[i] = keccak256(
                abi.encode(
                    CLAIM_ENTRY_TYPEHASH, getChannelId(c.voucher.channel), c.voucher.maxClaimableAmount, c.totalClaimed
                )
            );
        }
        return _hashTyped(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entries)))));
    }

    // ------------------------------------------------------------------ deposit

    /// @notice Add `amount` of `config.token` to the channel, pulled from the payer by `collector`
    ///         (which the payer authorized with a signature bound to the channel id). Anyone may submit it;
    ///         the channel is credited only with what this contract actually received.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        require(amount > 0, "TestChannels: zero deposit");
        require(
            config.payer != address(0) && config.receiver != address(0) && config.receiverAuthorizer != address(0)
                && config.token != address(0),
            "TestChannels: invalid channel config"
        );
        require(
            config.withdrawDelay >= MIN_WITHDRAW_DELAY && config.withdrawDelay <= MAX_WITHDRAW_DELAY,
            "TestChannels: withdraw delay out of range"
        );
        require(collector.code.length > 0, "TestChannels: collector has no code");
        bytes32 channelId = getChannelId(config);

        uint256 before = IERC20Balance(config.token).balanceOf(address(this));
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        uint256 received = IERC20Balance(config.token).balanceOf(address(this)) - before;
        require(received == amount, "TestChannels: collector did not deliver the deposit");

        Channel storage ch = channels[channelId];
        uint128 newBalance = ch.balance + amount;
        ch.balance = newBalance;
        if (!channelOpened[channelId]) _open(channelId, config);
        emit Deposited(channelId, config.payer, config.token, collector, amount, newBalance);
    }

    function _open(bytes32 channelId, ChannelConfig calldata config) private {
        channelOpened[channelId] = true;
        emit ChannelOpened(
            channelId,
            config.payer,
            config.receiver,
            config.payerAuthorizer,
            config.receiverAuthorizer,
            config.token,
            config.withdrawDelay,
            config.salt
        );
    }

    // ------------------------------------------------------------------ claims

    /// @notice Claim with vouchers, sent by each channel's receiverAuthorizer (or receiver) itself.
    function claim(VoucherClaim[] calldata voucherClaims) external {
        for (uint256 i = 0; i < voucherClaims.length; i++) {
            ChannelConfig calldata cfg = voucherClaims[i].voucher.channel;
            require(
                msg.sender == cfg.receiverAuthorizer || msg.sender == cfg.receiver,
                "TestChannels: caller is not the receiver authorizer"
            );
            _claim(voucherClaims[i]);
        }
    }

    /// @notice Claim with vouchers, authorized by the receiverAuthorizer's EIP-712 signature over
    ///         ClaimBatch(ClaimEntry[] claims); anyone (the facilitator) may submit it.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature) external {
        bytes32 digest = getClaimBatchDigest(voucherClaims);
        address verified;
        for (uint256 i = 0; i < voucherClaims.length; i++) {
            address authorizer = voucherClaims[i].voucher.channel.receiverAuthorizer;
            if (authorizer != verified) {
                require(
                    _validSignature(authorizer, digest, authorizerSignature),
                    "TestChannels: invalid receiver authorizer signature"
                );
                verified = authorizer;
            }
            _claim(voucherClaims[i]);
        }
    }

    /// @dev Cumulative and idempotent: a claim at or below the channel's totalClaimed changes nothing
    ///      (the SDK resends the last claim with a refund), but its voucher must still be valid.
    function _claim(VoucherClaim calldata c) private {
        bytes32 channelId = getChannelId(c.voucher.channel);
        Channel storage ch = channels[channelId];
        uint128 total = c.totalClaimed;
        require(total <= c.voucher.maxClaimableAmount, "TestChannels: claim exceeds voucher");
        require(total <= ch.balance, "TestChannels: claim exceeds channel balance");
        require(_validVoucher(c.voucher.channel, channelId, c.voucher.maxClaimableAmount, c.signature),
            "TestChannels: invalid voucher signature");
        uint128 claimed = ch.totalClaimed;
        if (total <= claimed) return;
        uint128 delta = total - claimed;
        ch.totalClaimed = total;
        receivers[c.voucher.channel.receiver][c.voucher.channel.token].totalClaimed += delta;
        emit Claimed(
            channelId, c.voucher.channel.receiver, c.voucher.channel.token, delta, total, c.voucher.maxClaimableAmount
        );
    }

    /// @dev A voucher is signed by the payerAuthorizer (ECDSA) when one is set, else by the payer
    ///      (EIP-1271 if the payer is a contract, ECDSA otherwise) — as the SDK's facilitator checks it.
    function _validVoucher(ChannelConfig calldata cfg, bytes32 channelId, uint128 maxClaimable, bytes calldata sig)
        private
        view
        returns (bool)
    {
        bytes32 digest = getVoucherDigest(channelId, maxClaimable);
        if (cfg.payerAuthorizer != address(0)) {
            address recovered = _recover(digest, sig);
            return recovered != address(0) && recovered == cfg.payerAuthorizer;
        }
        return _validSignature(cfg.payer, digest, sig);
    }

    // ------------------------------------------------------------------ settle

    /// @notice Pay out everything claimed for (`receiver`, `token`) and not yet settled. Anyone may call it.
    function settle(address receiver, address token) external {
        ReceiverAccount storage acc = receivers[receiver][token];
        uint128 amount = acc.totalClaimed - acc.totalSettled;
        require(amount > 0, "TestChannels: nothing to settle");
        acc.totalSettled = acc.totalClaimed;
        _transfer(token, receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ refunds

    /// @notice Cooperative refund sent by the receiverAuthorizer (or the receiver) itself.
    function refund(ChannelConfig calldata config, uint128 amount) external {
        require(
            msg.sender == config.receiverAuthorizer || msg.sender == config.receiver,
            "TestChannels: caller is not the receiver authorizer"
        );
        bytes32 channelId = getChannelId(config);
        _refund(config, channelId, amount, refundNonce[channelId]);
    }

    /// @notice Cooperative refund authorized by the receiverAuthorizer's EIP-712 signature over
    ///         Refund(channelId, nonce, amount); `nonce` must be the channel's current refundNonce.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external {
        bytes32 channelId = getChannelId(config);
        require(nonce == refundNonce[channelId], "TestChannels: invalid refund nonce");
        require(
            _validSignature(config.receiverAuthorizer, getRefundDigest(channelId, nonce, amount), receiverAuthorizerSignature),
            "TestChannels: invalid receiver authorizer signature"
        );
        _refund(config, channelId, amount, nonce);
    }

    /// @dev Pays min(amount, balance - totalClaimed) back to the payer, bumps the refund nonce and
    ///      cancels a pending withdrawal.
    function _refund(ChannelConfig calldata config, bytes32 channelId, uint128 amount, uint256 nonce) private {
        require(amount > 0, "TestChannels: zero refund");
        Channel storage ch = channels[channelId];
        uint128 available = ch.balance - ch.totalClaimed;
        uint128 actual = amount < available ? amount : available;
        require(actual > 0, "TestChannels: nothing to refund");
        ch.balance -= actual;
        refundNonce[channelId] = nonce + 1;
        if (pendingWithdrawals[channelId].initiatedAt != 0) {
            delete pendingWithdrawals[channelId];
            emit WithdrawCanceled(channelId);
        }
        _transfer(config.token, config.payer, actual);
        emit Refunded(channelId, config.payer, config.token, actual, nonce, ch.balance);
    }

    // ------------------------------------------------------------------ withdrawals

    /// @notice The payer (or its payerAuthorizer) asks for `amount` back; final after `withdrawDelay` seconds,
    ///         so the receiver has that long to claim its vouchers.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external {
        require(
            msg.sender == config.payer || (config.payerAuthorizer != address(0) && msg.sender == config.payerAuthorizer),
            "TestChannels: caller is not the payer"
        );
        bytes32 channelId = getChannelId(config);
        Channel storage ch = channels[channelId];
        require(amount > 0 && amount <= ch.balance - ch.totalClaimed, "TestChannels: invalid withdraw amount");
        uint40 nowTs = uint40(block.timestamp);
        pendingWithdrawals[channelId] = PendingWithdrawal(amount, nowTs);
        emit WithdrawInitiated(channelId, config.payer, amount, nowTs + config.withdrawDelay);
    }

    /// @notice Pay out a pending withdrawal (at most what is unclaimed) once its delay has passed. Anyone may call it.
    function finalizeWithdraw(ChannelConfig calldata config) external {
        bytes32 channelId = getChannelId(config);
        PendingWithdrawal memory pw = pendingWithdrawals[channelId];
        require(pw.initiatedAt != 0, "TestChannels: no pending withdrawal");
        require(block.timestamp >= uint256(pw.initiatedAt) + config.withdrawDelay, "TestChannels: withdraw delay not elapsed");
        delete pendingWithdrawals[channelId];
        Channel storage ch = channels[channelId];
        uint128 available = ch.balance - ch.totalClaimed;
        uint128 actual = pw.amount < available ? pw.amount : available;
        ch.balance -= actual;
        if (actual > 0) _transfer(config.token, config.payer, actual);
        emit WithdrawFinalized(channelId, config.payer, config.token, actual, ch.balance);
    }

    // ------------------------------------------------------------------ multicall

    /// @notice Run several calls of this contract in one transaction (delegatecall to itself); any failure reverts all.
    function multicall(bytes[] calldata data) external returns (bytes[] memory results) {
        results = new bytes[](data.length);
        for (uint256 i = 0; i < data.length; i++) {
            (bool ok, bytes memory ret) = address(this).delegatecall(data[i]);
            if (!ok) {
                assembly {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
            results[i] = ret;
        }
    }

    // ------------------------------------------------------------------ helpers

    function _transfer(address token, address to, uint256 amount) private {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount)); // transfer(address,uint256)
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "TestChannels: token transfer failed");
    }

    function _validSignature(address signer, bytes32 digest, bytes calldata signature) private view returns (bool) {
        if (signer == address(0)) return false;
        if (signer.code.length > 0) {
            (bool ok, bytes memory ret) = signer.staticcall(abi.encodeWithSelector(EIP1271_MAGIC, digest, signature));
            return ok && ret.length >= 32 && bytes4(abi.decode(ret, (bytes32))) == EIP1271_MAGIC;
        }
        address recovered = _recover(digest, signature);
        return recovered != address(0) && recovered == signer;
    }

    /// @dev 65-byte (r, s, v) ECDSA with low s; address(0) when malformed.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if (uint256(s) > HALF_ORDER || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}

interface IERC20Balance {
    function balanceOf(address account) external view returns (uint256);
}

/// @notice What TestChannels asks of a deposit collector: move `amount` of `token` from `payer` to
///         the caller, authorized by `collectorData` bound to `channelId`.
interface IDepositCollector {
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}

interface IERC3009Receive {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}

/// @title  ERC-3009 deposit collector
/// @notice collectorData = abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature):
///         the payer's ReceiveWithAuthorization(from: payer, to: this collector, value: amount, nonce:
///         keccak256(abi.encode(channelId, salt))) — the nonce binds the signature to one channel. The token
///         is received here, then passed on to the caller (TestChannels only).
contract TestERC3009DepositCollector is IDepositCollector {
    address public constant BATCH_SETTLEMENT = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        require(msg.sender == BATCH_SETTLEMENT, "ERC3009DepositCollector: caller is not the channel contract");
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IERC3009Receive(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, nonce, signature
        );
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, msg.sender, amount));
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "ERC3009DepositCollector: transfer failed");
    }
}

interface IPermit2WitnessTransfer {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

interface IERC2612Permit {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}

/// @title  Permit2 deposit collector
/// @notice collectorData = abi.encode(uint256 nonce, uint256 deadline, bytes permit2Signature, bytes eip2612Permit):
///         the payer's Permit2 PermitWitnessTransferFrom (spender: this collector) with the witness
///         DepositWitness(bytes32 channelId). A non-empty eip2612Permit
///         (abi.encode(uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)) is tried first as the
///         token's EIP-2612 permit to Permit2 (its failure is ignored: the transfer then decides).
contract TestPermit2DepositCollector is IDepositCollector {
    address public constant BATCH_SETTLEMENT = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;
    address public constant PERMIT2 = 0x000000000022D473030F116dDEE9F6B43aC78BA3;
    bytes32 public constant DEPOSIT_WITNESS_TYPEHASH = keccak256("DepositWitness(bytes32 channelId)");
    string public constant WITNESS_TYPE_STRING =
        "DepositWitness witness)DepositWitness(bytes32 channelId)TokenPermissions(address token,uint256 amount)";

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        require(msg.sender == BATCH_SETTLEMENT, "Permit2DepositCollector: caller is not the channel contract");
        (uint256 nonce, uint256 deadline, bytes memory signature, bytes memory eip2612) =
            abi.decode(collectorData, (uint256, uint256, bytes, bytes));
        if (eip2612.length > 0) _tryPermit(payer, token, eip2612);
        IPermit2WitnessTransfer(PERMIT2).permitWitnessTransferFrom(
            IPermit2WitnessTransfer.PermitTransferFrom(IPermit2WitnessTransfer.TokenPermissions(token, amount), nonce, deadline),
            IPermit2WitnessTransfer.SignatureTransferDetails(msg.sender, amount),
            payer,
            keccak256(abi.encode(DEPOSIT_WITNESS_TYPEHASH, channelId)),
            WITNESS_TYPE_STRING,
            signature
        );
    }

    function _tryPermit(address payer, address token, bytes memory eip2612) private {
        (uint256 value, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s) =
            abi.decode(eip2612, (uint256, uint256, uint8, bytes32, bytes32));
        try IERC2612Permit(token).permit(payer, PERMIT2, value, permitDeadline, v, r, s) {} catch {}
    }
}
