// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title  Escrow for the x402 "auth-capture" EVM scheme (test bed)
/// @notice Written for the receipts test bed from what the npm client `@x402/evm` 2.27.0
///         (`./auth-capture/client`) signs, and from the x402 scheme text (specs/schemes/auth-capture):
///         the ABI the scheme's facilitator calls (authorize, charge, capture, void, refund; getHash,
///         paymentState, getTokenStore), its custom errors and its events. Not the upstream
///         (base/commerce-payments) contracts: the behaviour is re-stated here, the code is ours.
///
///         A payment is identified by
///             paymentInfoHash = keccak256(abi.encode(block.chainid, address(this),
///                                   keccak256(abi.encode(PAYMENT_INFO_TYPEHASH, paymentInfo))))
///         and the payer's ERC-3009 nonce is the same hash with `payer` set to address(0) ("payer-agnostic").
///
///         Money: `authorize` pulls up to `maxAmount` from the payer through a token collector into the
///         operator's token store (one per operator, CREATE2 from this contract) and holds it as
///         `capturableAmount`; `capture` pays `amount - feeAmount` to the receiver and `feeAmount` to the
///         fee receiver and moves `amount` to `refundableAmount`; `void` (operator) or `reclaim` (payer,
///         after `authorizationExpiry`) returns what is still capturable to the payer; `refund` (operator,
///         before `refundExpiry`) returns captured money, which a refund collector brings in. `charge` is
///         authorize + capture in one call.
///
/// @dev    Put at the client's constant address with anvil_setCode: no constructor, no immutables; the only
///         storage is `_payments` and the reentrancy flag, both zero by default.
contract TestAuthCaptureEscrow {
    // ------------------------------------------------------------------ types

    struct PaymentInfo {
        address operator;
        address payer;
        address receiver;
        address token;
        uint120 maxAmount;
        uint48 preApprovalExpiry;
        uint48 authorizationExpiry;
        uint48 refundExpiry;
        uint16 minFeeBps;
        uint16 maxFeeBps;
        address feeReceiver;
        uint256 salt;
    }

    struct PaymentState {
        bool hasCollectedPayment;
        uint120 capturableAmount;
        uint120 refundableAmount;
    }

    bytes32 public constant PAYMENT_INFO_TYPEHASH = keccak256(
        "PaymentInfo(address operator,address payer,address receiver,address token,uint120 maxAmount,uint48 preApprovalExpiry,uint48 authorizationExpiry,uint48 refundExpiry,uint16 minFeeBps,uint16 maxFeeBps,address feeReceiver,uint256 salt)"
    );
    uint16 internal constant MAX_FEE_BPS = 10_000;

    mapping(bytes32 => PaymentState) private _payments;
    uint256 private _locked;

    // ------------------------------------------------------------------ events

    event PaymentAuthorized(
        bytes32 indexed paymentInfoHash, PaymentInfo paymentInfo, uint256 amount, address tokenCollector
    );
    event PaymentCharged(
        bytes32 indexed paymentInfoHash,
        PaymentInfo paymentInfo,
        uint256 amount,
        address tokenCollector,
        uint256 feeAmount,
        address feeReceiver
    );
    event PaymentCaptured(bytes32 indexed paymentInfoHash, uint256 amount, uint256 feeAmount, address feeReceiver);
    event PaymentVoided(bytes32 indexed paymentInfoHash, uint256 amount);
    event PaymentReclaimed(bytes32 indexed paymentInfoHash, uint256 amount);
    event PaymentRefunded(bytes32 indexed paymentInfoHash, uint256 amount, address tokenCollector);
    event TokenStoreCreated(address indexed operator, address tokenStore);

    // ------------------------------------------------------------------ errors (the scheme maps these to reasons)

    error InvalidSender(address sender, address expected);
    error ZeroAmount();
    error AmountOverflow(uint256 amount, uint256 limit);
    error ExceedsMaxAmount(uint256 amount, uint256 maxAmount);
    error AfterPreApprovalExpiry(uint48 timestamp, uint48 expiry);
    error InvalidExpiries(uint48 preApproval, uint48 authorization, uint48 refund);
    error FeeBpsOverflow(uint16 feeBps);
    error InvalidFeeBpsRange(uint16 minFeeBps, uint16 maxFeeBps);
    error FeeAmountOutOfRange(uint256 feeAmount, uint256 minFeeAmount, uint256 maxFeeAmount);
    error ZeroFeeReceiver();
    error InvalidFeeReceiver(address attempted, address expected);
    error InvalidCollectorForOperation();
    error TokenCollectionFailed();
    error PaymentAlreadyCollected(bytes32 paymentInfoHash);
    error AfterAuthorizationExpiry(uint48 timestamp, uint48 expiry);
    error BeforeAuthorizationExpiry(uint48 timestamp, uint48 expiry);
    error InsufficientAuthorization(bytes32 paymentInfoHash, uint256 authorizedAmount, uint256 requestedAmount);
    error ZeroAuthorization(bytes32 paymentInfoHash);
    error AfterRefundExpiry(uint48 timestamp, uint48 expiry);
    error RefundExceedsCapture(uint256 refund, uint256 captured);
    error Reentrancy();

    modifier nonReentrant() {
        if (_locked != 0) revert Reentrancy();
        _locked = 1;
        _;
        _locked = 0;
    }

    modifier onlySender(address expected) {
        if (msg.sender != expected) revert InvalidSender(msg.sender, expected);
        _;
    }

    modifier nonZero(uint256 amount) {
        if (amount == 0) revert ZeroAmount();
        _;
    }

    // ------------------------------------------------------------------ views

    function getHash(PaymentInfo memory paymentInfo) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(PAYMENT_INFO_TYPEHASH, paymentInfo));
        return keccak256(abi.encode(block.chainid, address(this), structHash));
    }

    function paymentState(bytes32 paymentInfoHash) external view returns (PaymentState memory) {
        return _payments[paymentInfoHash];
    }

    /// @notice The operator's token store: where its payments' money is held (it may not exist yet).
    function getTokenStore(address operator) public view returns (address) {
        bytes32 codeHash = keccak256(type(TestAuthCaptureTokenStore).creationCode);
        return address(
            uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), _storeSalt(operator), codeHash))))
        );
    }

    // ------------------------------------------------------------------ collect: authorize, charge

    /// @notice Hold `amount` (at most `maxAmount`) of the payer's tokens for later capture.
    function authorize(
        PaymentInfo calldata paymentInfo,
        uint256 amount,
        address tokenCollector,
        bytes calldata collectorData
    ) external nonReentrant onlySender(paymentInfo.operator) nonZero(amount) {
        _validatePayment(paymentInfo, amount);
        bytes32 hash = getHash(paymentInfo);
        if (_payments[hash].hasCollectedPayment) revert PaymentAlreadyCollected(hash);
        _payments[hash] =
            PaymentState({hasCollectedPayment: true, capturableAmount: uint120(amount), refundableAmount: 0});
        emit PaymentAuthorized(hash, paymentInfo, amount, tokenCollector);
        _collect(paymentInfo, amount, tokenCollector, collectorData, ITokenCollector.CollectorType.Payment);
    }

    /// @notice Collect and capture at once: the receiver is paid `amount - feeAmount` now.
    function charge(
        PaymentInfo calldata paymentInfo,
        uint256 amount,
        address tokenCollector,
        bytes calldata collectorData,
        uint256 feeAmount,
        address feeReceiver
    ) external nonReentrant onlySender(paymentInfo.operator) nonZero(amount) {
        _validatePayment(paymentInfo, amount);
        _validateFee(paymentInfo, amount, feeAmount, feeReceiver);
        bytes32 hash = getHash(paymentInfo);
        if (_payments[hash].hasCollectedPayment) revert PaymentAlreadyCollected(hash);
        _payments[hash] =
            PaymentState({hasCollectedPayment: true, capturableAmount: 0, refundableAmount: uint120(amount)});
        emit PaymentCharged(hash, paymentInfo, amount, tokenCollector, feeAmount, feeReceiver);
        _collect(paymentInfo, amount, tokenCollector, collectorData, ITokenCollector.CollectorType.Payment);
        _distribute(paymentInfo, amount, feeAmount, feeReceiver);
    }

    // ------------------------------------------------------------------ lifecycle: capture, void, reclaim, refund

    /// @notice Pay `amount` of the held money out: `amount - feeAmount` to the receiver, `feeAmount` to `feeReceiver`.
    function capture(PaymentInfo calldata paymentInfo, uint256 amount, uint256 feeAmount, address feeReceiver)
        external
        nonReentrant
        onlySender(paymentInfo.operator)
        nonZero(amount)
    {
        if (block.timestamp >= paymentInfo.authorizationExpiry) {
            revert AfterAuthorizationExpiry(uint48(block.timestamp), paymentInfo.authorizationExpiry);
        }
        _validateFee(paymentInfo, amount, feeAmount, feeReceiver);
        bytes32 hash = getHash(paymentInfo);
        PaymentState storage state = _payments[hash];
        if (state.capturableAmount < amount) revert InsufficientAuthorization(hash, state.capturableAmount, amount);
        state.capturableAmount -= uint120(amount);
        state.refundableAmount += uint120(amount);
        emit PaymentCaptured(hash, amount, feeAmount, feeReceiver);
        _distribute(paymentInfo, amount, feeAmount, feeReceiver);
    }

    /// @notice The operator gives everything still held back to the payer.
    function void(PaymentInfo calldata paymentInfo) external nonReentrant onlySender(paymentInfo.operator) {
        bytes32 hash = getHash(paymentInfo);
        uint256 amount = _payments[hash].capturableAmount;
        if (amount == 0) revert ZeroAuthorization(hash);
        _payments[hash].capturableAmount = 0;
        emit PaymentVoided(hash, amount);
        _send(paymentInfo, paymentInfo.payer, amount);
    }

    /// @notice The payer takes back what is still held once the authorization has expired.
    function reclaim(PaymentInfo calldata paymentInfo) external nonReentrant onlySender(paymentInfo.payer) {
        if (block.timestamp < paymentInfo.authorizationExpiry) {
            revert BeforeAuthorizationExpiry(uint48(block.timestamp), paymentInfo.authorizationExpiry);
        }
        bytes32 hash = getHash(paymentInfo);
        uint256 amount = _payments[hash].capturableAmount;
        if (amount == 0) revert ZeroAuthorization(hash);
        _payments[hash].capturableAmount = 0;
        emit PaymentReclaimed(hash, amount);
        _send(paymentInfo, paymentInfo.payer, amount);
    }

    /// @notice Give up to the captured amount back to the payer; a refund collector brings the money in.
    function refund(
        PaymentInfo calldata paymentInfo,
        uint256 amount,
        address tokenCollector,
        bytes calldata collectorData
    ) external nonReentrant onlySender(paymentInfo.operator) nonZero(amount) {
        if (block.timestamp >= paymentInfo.refundExpiry) {
            revert AfterRefundExpiry(uint48(block.timestamp), paymentInfo.refundExpiry);
        }
        bytes32 hash = getHash(paymentInfo);
        PaymentState storage state = _payments[hash];
        if (state.refundableAmount < amount) revert RefundExceedsCapture(amount, state.refundableAmount);
        state.refundableAmount -= uint120(amount);
        emit PaymentRefunded(hash, amount, tokenCollector);
        _collect(paymentInfo, amount, tokenCollector, collectorData, ITokenCollector.CollectorType.Refund);
        _send(paymentInfo, paymentInfo.payer, amount);
    }

    // ------------------------------------------------------------------ internals

    function _validatePayment(PaymentInfo calldata p, uint256 amount) private view {
        if (amount > type(uint120).max) revert AmountOverflow(amount, type(uint120).max);
        if (amount > p.maxAmount) revert ExceedsMaxAmount(amount, p.maxAmount);
        if (block.timestamp >= p.preApprovalExpiry) {
            revert AfterPreApprovalExpiry(uint48(block.timestamp), p.preApprovalExpiry);
        }
        if (p.preApprovalExpiry > p.authorizationExpiry || p.authorizationExpiry > p.refundExpiry) {
            revert InvalidExpiries(p.preApprovalExpiry, p.authorizationExpiry, p.refundExpiry);
        }
        if (p.maxFeeBps > MAX_FEE_BPS) revert FeeBpsOverflow(p.maxFeeBps);
        if (p.minFeeBps > p.maxFeeBps) revert InvalidFeeBpsRange(p.minFeeBps, p.maxFeeBps);
    }

    /// @dev v1.1 fees: an absolute amount within [amount * minFeeBps / 10000, amount * maxFeeBps / 10000].
    function _validateFee(PaymentInfo calldata p, uint256 amount, uint256 feeAmount, address feeReceiver) private pure {
        uint256 minFee = amount * p.minFeeBps / MAX_FEE_BPS;
        uint256 maxFee = amount * p.maxFeeBps / MAX_FEE_BPS;
        if (feeAmount < minFee || feeAmount > maxFee) revert FeeAmountOutOfRange(feeAmount, minFee, maxFee);
        if (feeAmount > 0 && feeReceiver == address(0)) revert ZeroFeeReceiver();
        if (p.feeReceiver != address(0) && feeReceiver != p.feeReceiver) {
            revert InvalidFeeReceiver(feeReceiver, p.feeReceiver);
        }
    }

    function _collect(
        PaymentInfo calldata p,
        uint256 amount,
        address tokenCollector,
        bytes calldata collectorData,
        ITokenCollector.CollectorType kind
    ) private {
        if (tokenCollector.code.length == 0 || ITokenCollector(tokenCollector).collectorType() != kind) {
            revert InvalidCollectorForOperation();
        }
        address store = _ensureTokenStore(p.operator);
        uint256 before = IERC20Min(p.token).balanceOf(store);
        ITokenCollector(tokenCollector).collectTokens(p, store, amount, collectorData);
        if (IERC20Min(p.token).balanceOf(store) != before + amount) revert TokenCollectionFailed();
    }

    function _distribute(PaymentInfo calldata p, uint256 amount, uint256 feeAmount, address feeReceiver) private {
        if (feeAmount > 0) _send(p, feeReceiver, feeAmount);
        if (amount > feeAmount) _send(p, p.receiver, amount - feeAmount);
    }

    function _send(PaymentInfo calldata p, address to, uint256 amount) private {
        TestAuthCaptureTokenStore(_ensureTokenStore(p.operator)).sendTokens(p.token, to, amount);
    }

    function _ensureTokenStore(address operator) private returns (address store) {
        store = getTokenStore(operator);
        if (store.code.length == 0) {
            new TestAuthCaptureTokenStore{salt: _storeSalt(operator)}();
            emit TokenStoreCreated(operator, store);
        }
    }

    function _storeSalt(address operator) private pure returns (bytes32) {
        return bytes32(uint256(uint160(operator)));
    }
}

/// @notice One operator's money, held for TestAuthCaptureEscrow (its creator), which alone may send it.
contract TestAuthCaptureTokenStore {
    address public immutable escrow;

    constructor() {
        escrow = msg.sender;
    }

    function sendTokens(address token, address to, uint256 amount) external returns (bool) {
        require(msg.sender == escrow, "TokenStore: caller is not the escrow");
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount));
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "TokenStore: transfer failed");
        return true;
    }
}

interface IERC20Min {
    function balanceOf(address account) external view returns (uint256);
}

/// @notice What the escrow asks of a token collector: bring `amount` of `paymentInfo.token` into `tokenStore`.
interface ITokenCollector {
    enum CollectorType {
        Payment,
        Refund
    }

    function collectorType() external view returns (CollectorType);

    function collectTokens(
        TestAuthCaptureEscrow.PaymentInfo calldata paymentInfo,
        address tokenStore,
        uint256 amount,
        bytes calldata collectorData
    ) external;
}

interface IERC3009ReceiveBytes {
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

/// @title  ERC-3009 token collector (payments)
/// @notice collectorData = the payer's signature of ReceiveWithAuthorization(from: payer, to: this collector,
///         value: maxAmount, validAfter: 0, validBefore: preApprovalExpiry, nonce: the payer-agnostic
///         payment hash) — exactly what the npm client signs. The whole `maxAmount` is received here;
///         `amount` goes on to the operator's token store and the rest straight back to the payer.
contract TestERC3009TokenCollector is ITokenCollector {
    address public constant AUTH_CAPTURE_ESCROW = 0xf96815976523E00e65Be8f34cA5e64b4f41EB19c;

    function collectorType() external pure returns (CollectorType) {
        return CollectorType.Payment;
    }

    function collectTokens(
        TestAuthCaptureEscrow.PaymentInfo calldata paymentInfo,
        address tokenStore,
        uint256 amount,
        bytes calldata collectorData
    ) external {
        require(msg.sender == AUTH_CAPTURE_ESCROW, "ERC3009TokenCollector: caller is not the escrow");
        TestAuthCaptureEscrow.PaymentInfo memory agnostic = paymentInfo;
        agnostic.payer = address(0);
        bytes32 nonce = TestAuthCaptureEscrow(AUTH_CAPTURE_ESCROW).getHash(agnostic);
        IERC3009ReceiveBytes(paymentInfo.token).receiveWithAuthorization(
            paymentInfo.payer, address(this), paymentInfo.maxAmount, 0, paymentInfo.preApprovalExpiry, nonce,
            collectorData
        );
        _transfer(paymentInfo.token, tokenStore, amount);
        if (paymentInfo.maxAmount > amount) {
            _transfer(paymentInfo.token, paymentInfo.payer, paymentInfo.maxAmount - amount);
        }
    }

    function _transfer(address token, address to, uint256 amount) private {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount));
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "ERC3009TokenCollector: transfer failed");
    }
}

/// @title  Operator refund collector
/// @notice Refund money comes from the payment's operator, which must have approved this collector.
contract TestOperatorRefundCollector is ITokenCollector {
    address public constant AUTH_CAPTURE_ESCROW = 0xf96815976523E00e65Be8f34cA5e64b4f41EB19c;

    function collectorType() external pure returns (CollectorType) {
        return CollectorType.Refund;
    }

    function collectTokens(
        TestAuthCaptureEscrow.PaymentInfo calldata paymentInfo,
        address tokenStore,
        uint256 amount,
        bytes calldata
    ) external {
        require(msg.sender == AUTH_CAPTURE_ESCROW, "OperatorRefundCollector: caller is not the escrow");
        (bool ok, bytes memory ret) = paymentInfo.token.call(
            abi.encodeWithSelector(0x23b872dd, paymentInfo.operator, tokenStore, amount)
        );
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "OperatorRefundCollector: transferFrom failed");
    }
}
