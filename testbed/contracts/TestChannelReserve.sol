// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The test bed's stand-in for Tempo's TIP-20 channel reserve precompile (TIP-1034), the escrow behind the
/// MPP `tempo` method's `session` intent. anvil 1.7.1's Tempo mode (hardforks up to T4) has no such
/// precompile, so testbed.mpp_session puts this contract's runtime code at the precompile's address
/// (0x4d50500000000000000000000000000000000000) with anvil_setCode. It implements the ABI the mppx SDK
/// (0.11.0, `tempo/session/precompile/escrow.abi.js`) calls, with the same events, errors, channel ids and
/// EIP-712 voucher digests, and it checks every voucher signature itself (secp256k1, low-s).
///
/// Two things the real precompile gets from the protocol are emulated:
/// - the transaction context hash: the node seeds keccak256(encodeForSigning(tx) || sender) for the
///   transaction being executed, and `open` binds the channel id to it (`expiringNonceHash`). A contract
///   cannot compute that, so the test bed's JSON-RPC front seeds `openContextHash[sender]` (storage slot
///   keccak256(abi.encode(sender, 1))) with anvil_setStorageAt just before it forwards a signed transaction
///   that calls `open`; `open` consumes it and reverts ExpiringNonceHashNotSet without one.
/// - moving TIP-20 without an allowance: the precompile debits the payer directly; this contract uses
///   `transferFrom`, so the payer grants it an allowance once (a real `approve` transaction the bed sends).
contract TestChannelReserve {
    struct ChannelDescriptor {
        address payer;
        address payee;
        address operator;
        address token;
        bytes32 salt;
        address authorizedSigner;
        bytes32 expiringNonceHash;
    }

    struct ChannelState {
        uint96 settled;
        uint96 deposit;
        uint32 closeRequestedAt;
    }

    struct Channel {
        ChannelDescriptor descriptor;
        ChannelState state;
    }

    uint64 public constant CLOSE_GRACE_PERIOD = 900;
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)");
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant NAME_HASH = keccak256("TIP20 Channel Reserve");
    bytes32 internal constant VERSION_HASH = keccak256("1");
    uint256 internal constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// One storage word per channel (new slots are dear on Tempo): the public state plus `used`, set on open
    /// and kept after close, so a closed channel's id cannot be opened again.
    struct PackedState {
        uint96 settled;
        uint96 deposit;
        uint32 closeRequestedAt;
        bool used;
    }

    /// slot 0: channel id -> state (deposit 0 = no live channel)
    mapping(bytes32 => PackedState) internal _states;
    /// slot 1: sender -> the context hash of the transaction being executed (seeded by the test bed's node)
    mapping(address => bytes32) public openContextHash;

    event ChannelOpened(bytes32 indexed channelId, address indexed payer, address indexed payee, address operator,
                        address token, address authorizedSigner, bytes32 salt, bytes32 expiringNonceHash, uint96 deposit);
    event Settled(bytes32 indexed channelId, address indexed payer, address indexed payee, uint96 cumulativeAmount,
                  uint96 deltaPaid, uint96 newSettled);
    event TopUp(bytes32 indexed channelId, address indexed payer, address indexed payee, uint96 additionalDeposit,
                uint96 newDeposit);
    event CloseRequested(bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 closeGraceEnd);
    event ChannelClosed(bytes32 indexed channelId, address indexed payer, address indexed payee, uint96 settledToPayee,
                        uint96 refundedToPayer);
    event CloseRequestCancelled(bytes32 indexed channelId, address indexed payer, address indexed payee);

    error ChannelAlreadyExists();
    error ChannelNotFound();
    error NotPayer();
    error NotPayeeOrOperator();
    error InvalidPayee();
    error ZeroDeposit();
    error ExpiringNonceHashNotSet();
    error InvalidSignature();
    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error CaptureAmountInvalid();
    error CloseNotReady();
    error DepositOverflow();
    error TransferFailed();

    // ------------------------------------------------------------------ lifecycle

    function open(address payee, address operator, address token, uint96 deposit, bytes32 salt,
                  address authorizedSigner) external returns (bytes32 channelId) {
        bytes32 context = openContextHash[msg.sender];
        if (context == bytes32(0)) revert ExpiringNonceHashNotSet();
        delete openContextHash[msg.sender];
        if (payee == address(0)) revert InvalidPayee();
        if (deposit == 0) revert ZeroDeposit();
        channelId = computeChannelId(msg.sender, payee, operator, token, salt, authorizedSigner, context);
        if (_states[channelId].used) revert ChannelAlreadyExists();
        _states[channelId] = PackedState({settled: 0, deposit: deposit, closeRequestedAt: 0, used: true});
        _pull(token, msg.sender, deposit);
        emit ChannelOpened(channelId, msg.sender, payee, operator, token, authorizedSigner, salt, context, deposit);
    }

    function settle(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, bytes calldata signature) external {
        (bytes32 id, PackedState storage state) = _live(descriptor);
        _onlyPayeeOrOperator(descriptor);
        if (cumulativeAmount <= state.settled) revert AmountNotIncreasing();
        if (cumulativeAmount > state.deposit) revert AmountExceedsDeposit();
        _checkVoucher(descriptor, id, cumulativeAmount, signature);
        uint96 delta = cumulativeAmount - state.settled;
        state.settled = cumulativeAmount;
        _push(descriptor.token, descriptor.payee, delta);
        emit Settled(id, descriptor.payer, descriptor.payee, cumulativeAmount, delta, cumulativeAmount);
    }

    function topUp(ChannelDescriptor calldata descriptor, uint96 additionalDeposit) external {
        (bytes32 id, PackedState storage state) = _live(descriptor);
        if (msg.sender != descriptor.payer) revert NotPayer();
        if (additionalDeposit == 0) revert ZeroDeposit();
        if (uint256(state.deposit) + additionalDeposit > type(uint96).max) revert DepositOverflow();
        state.deposit += additionalDeposit;
        _pull(descriptor.token, msg.sender, additionalDeposit);
        if (state.closeRequestedAt != 0) {
            state.closeRequestedAt = 0;
            emit CloseRequestCancelled(id, descriptor.payer, descriptor.payee);
        }
        emit TopUp(id, descriptor.payer, descriptor.payee, additionalDeposit, state.deposit);
    }

    function close(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, uint96 captureAmount,
                   bytes calldata signature) external {
        (bytes32 id, PackedState storage state) = _live(descriptor);
        _onlyPayeeOrOperator(descriptor);
        uint96 settled = state.settled;
        uint96 deposit = state.deposit;
        if (captureAmount < settled || captureAmount > cumulativeAmount) revert CaptureAmountInvalid();
        if (captureAmount > deposit) revert AmountExceedsDeposit();
        if (captureAmount > settled) _checkVoucher(descriptor, id, cumulativeAmount, signature);
        uint96 delta = captureAmount - settled;
        uint96 refund = deposit - captureAmount;
        _states[id] = PackedState({settled: 0, deposit: 0, closeRequestedAt: 0, used: true});
        if (delta > 0) _push(descriptor.token, descriptor.payee, delta);
        if (refund > 0) _push(descriptor.token, descriptor.payer, refund);
        emit ChannelClosed(id, descriptor.payer, descriptor.payee, captureAmount, refund);
    }

    function requestClose(ChannelDescriptor calldata descriptor) external {
        (bytes32 id, PackedState storage state) = _live(descriptor);
        if (msg.sender != descriptor.payer) revert NotPayer();
        if (state.closeRequestedAt == 0) {
            state.closeRequestedAt = uint32(block.timestamp);
            emit CloseRequested(id, descriptor.payer, descriptor.payee, block.timestamp + CLOSE_GRACE_PERIOD);
        }
    }

    function withdraw(ChannelDescriptor calldata descriptor) external {
        (bytes32 id, PackedState storage state) = _live(descriptor);
        if (msg.sender != descriptor.payer) revert NotPayer();
        uint256 requested = state.closeRequestedAt;
        if (requested == 0 || block.timestamp < requested + CLOSE_GRACE_PERIOD) revert CloseNotReady();
        uint96 settled = state.settled;
        uint96 refund = state.deposit - settled;
        _states[id] = PackedState({settled: 0, deposit: 0, closeRequestedAt: 0, used: true});
        if (refund > 0) _push(descriptor.token, descriptor.payer, refund);
        emit ChannelClosed(id, descriptor.payer, descriptor.payee, settled, refund);
    }

    // ------------------------------------------------------------------ views

    function getChannel(ChannelDescriptor calldata descriptor) external view returns (Channel memory) {
        return Channel({descriptor: descriptor, state: _public(_states[_channelId(descriptor)])});
    }

    function getChannelState(bytes32 channelId) external view returns (ChannelState memory) {
        return _public(_states[channelId]);
    }

    function getChannelStatesBatch(bytes32[] calldata channelIds) external view returns (ChannelState[] memory out) {
        out = new ChannelState[](channelIds.length);
        for (uint256 i = 0; i < channelIds.length; ++i) out[i] = _public(_states[channelIds[i]]);
    }

    function computeChannelId(address payer, address payee, address operator, address token, bytes32 salt,
                              address authorizedSigner, bytes32 expiringNonceHash) public view returns (bytes32) {
        return keccak256(abi.encode(payer, payee, operator, token, salt, authorizedSigner, expiringNonceHash,
                                    address(this), block.chainid));
    }

    function getVoucherDigest(bytes32 channelId, uint96 cumulativeAmount) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    // ------------------------------------------------------------------ internals

    function _channelId(ChannelDescriptor calldata d) internal view returns (bytes32) {
        return computeChannelId(d.payer, d.payee, d.operator, d.token, d.salt, d.authorizedSigner, d.expiringNonceHash);
    }

    function _public(PackedState storage p) internal view returns (ChannelState memory) {
        return ChannelState({settled: p.settled, deposit: p.deposit, closeRequestedAt: p.closeRequestedAt});
    }

    function _live(ChannelDescriptor calldata d) internal view returns (bytes32 id, PackedState storage state) {
        id = _channelId(d);
        state = _states[id];
        if (state.deposit == 0) revert ChannelNotFound();
    }

    function _onlyPayeeOrOperator(ChannelDescriptor calldata d) internal view {
        if (msg.sender != d.payee && (d.operator == address(0) || msg.sender != d.operator)) revert NotPayeeOrOperator();
    }

    /// A voucher is the EIP-712 digest of (channelId, cumulativeAmount) signed by the authorized signer (the
    /// payer when zero): a 65-byte secp256k1 r || s || v, low s, v 27/28 (or 0/1).
    function _checkVoucher(ChannelDescriptor calldata d, bytes32 id, uint96 amount, bytes calldata sig) internal view {
        if (sig.length != 65) revert InvalidSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > HALF_ORDER) revert InvalidSignature();
        address signer = ecrecover(getVoucherDigest(id, amount), v, r, s);
        address expected = d.authorizedSigner == address(0) ? d.payer : d.authorizedSigner;
        if (signer == address(0) || signer != expected) revert InvalidSignature();
    }

    function _pull(address token, address from, uint96 amount) internal {
        (bool ok, bytes memory ret) = token.call(
            abi.encodeWithSignature("transferFrom(address,address,uint256)", from, address(this), uint256(amount)));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }

    function _push(address token, address to, uint96 amount) internal {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSignature("transfer(address,uint256)", to, uint256(amount)));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }
}
