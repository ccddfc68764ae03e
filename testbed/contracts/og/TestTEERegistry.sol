// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title TestTEERegistry
/// @notice A TEE registry for the receipts test bed, shaped like OpenGradient's TEERegistry as the
///         `opengradient` SDK 1.1.4 reads it: `getTEE(bytes32)` and `getActiveTEEs(uint8)` return the
///         same TEEInfo tuple (owner, paymentAddress, endpoint, publicKey, tlsCertificate, pcrHash,
///         teeType, enabled, registeredAt, lastHeartbeatAt, ohttpConfig), and `getEnabledTEEs`,
///         `getTEEsByType`, `isTEEEnabled`, `isTEEActive` have the SDK ABI's signatures.
///         teeId = keccak256(publicKey), computed here at registration.
/// @dev    Deviations from the real registry, on purpose (a local test bed has no Nitro enclave):
///         - `registerTEE` is open to anyone and takes the PCR hash as given: there is no attestation
///           document, no 0x900 verifier precompile, no operator role and no PCR approval list.
///         - `heartbeat` and `setOHTTPConfig` keep the real signatures but do not verify the RSA-PSS
///           signature; `setEnabled`/`enableTEE`/`disableTEE`/`setOHTTPConfig` need the TEE's owner.
///         - `heartbeatMaxAge` (default 1800 s) may be changed by anyone.
///         No constructor: the contract also works when placed with `anvil_setCode`.
contract TestTEERegistry {
    struct OHTTPConfig {
        uint8 keyId;
        uint16 kemId;
        uint16 kdfId;
        uint16 aeadId;
        bytes publicKey;
        bytes keyConfig;
        uint256 registeredAt;
    }

    struct TEEInfo {
        address owner;
        address paymentAddress;
        string endpoint;
        bytes publicKey; // DER SubjectPublicKeyInfo of the TEE's RSA signing key
        bytes tlsCertificate; // DER X.509 certificate clients pin
        bytes32 pcrHash;
        uint8 teeType; // 0 = LLM proxy, 1 = validator
        bool enabled;
        uint256 registeredAt;
        uint256 lastHeartbeatAt;
        OHTTPConfig ohttpConfig;
    }

    uint256 public constant DEFAULT_HEARTBEAT_MAX_AGE = 1800;

    mapping(bytes32 => TEEInfo) private _tees;
    mapping(uint8 => bytes32[]) private _enabledByType;
    /// @dev teeType => teeId => position in _enabledByType[teeType] plus one (0: not listed).
    mapping(uint8 => mapping(bytes32 => uint256)) private _enabledSlot;
    mapping(uint8 => bytes32[]) private _byType;
    mapping(address => bytes32[]) private _byOwner;
    uint256 private _heartbeatMaxAge; // 0 means DEFAULT_HEARTBEAT_MAX_AGE

    event TEERegistered(bytes32 indexed teeId, address indexed owner, uint8 teeType);
    event TEEEnabled(bytes32 indexed teeId);
    event TEEDisabled(bytes32 indexed teeId);
    event HeartbeatReceived(bytes32 indexed teeId, uint256 timestamp);
    event OHTTPConfigUpdated(
        bytes32 indexed teeId,
        uint8 keyId,
        uint16 kemId,
        uint16 kdfId,
        uint16 aeadId,
        bytes32 publicKeyHash,
        bytes32 keyConfigHash
    );

    error TEEAlreadyExists();
    error TEENotFound();
    error NotTEEOwner();
    error EmptyPublicKey();
    error HeartbeatTimestampTooOld();
    error HeartbeatTimestampInFuture();
    error OHTTPConfigInvalid();

    modifier onlyTEEOwner(bytes32 teeId) {
        if (_tees[teeId].registeredAt == 0) revert TEENotFound();
        if (_tees[teeId].owner != msg.sender) revert NotTEEOwner();
        _;
    }

    // ------------------------------------------------------------------ registration

    /// @notice Register a TEE (enabled, heartbeat now); the caller becomes its owner.
    /// @return teeId keccak256(publicKey)
    function registerTEE(
        bytes calldata publicKey,
        bytes calldata tlsCertificate,
        address paymentAddress,
        string calldata endpoint,
        uint8 teeType,
        bytes32 pcrHash
    ) external returns (bytes32 teeId) {
        if (publicKey.length == 0) revert EmptyPublicKey();
        teeId = keccak256(publicKey);
        TEEInfo storage tee = _tees[teeId];
        if (tee.registeredAt != 0) revert TEEAlreadyExists();
        tee.owner = msg.sender;
        tee.paymentAddress = paymentAddress;
        tee.endpoint = endpoint;
        tee.publicKey = publicKey;
        tee.tlsCertificate = tlsCertificate;
        tee.pcrHash = pcrHash;
        tee.teeType = teeType;
        tee.enabled = true;
        tee.registeredAt = block.timestamp;
        tee.lastHeartbeatAt = block.timestamp;
        _byType[teeType].push(teeId);
        _byOwner[msg.sender].push(teeId);
        _list(teeId, teeType);
        emit TEERegistered(teeId, msg.sender, teeType);
    }

    /// @notice Enable or disable a TEE (its owner only). Emits TEEEnabled/TEEDisabled on a change.
    function setEnabled(bytes32 teeId, bool enabled) public onlyTEEOwner(teeId) {
        TEEInfo storage tee = _tees[teeId];
        if (tee.enabled == enabled) return;
        tee.enabled = enabled;
        if (enabled) {
            _list(teeId, tee.teeType);
            emit TEEEnabled(teeId);
        } else {
            _unlist(teeId, tee.teeType);
            emit TEEDisabled(teeId);
        }
    }

    function enableTEE(bytes32 teeId) external {
        setEnabled(teeId, true);
    }

    function disableTEE(bytes32 teeId) external {
        setEnabled(teeId, false);
    }

    /// @notice Liveness: `timestamp` must be within heartbeatMaxAge of the block time and not in the
    ///         future. The signature is NOT verified here (test bed; the real registry checks RSA-PSS).
    function heartbeat(bytes32 teeId, uint256 timestamp, bytes calldata signature) external {
        signature; // accepted, not verified
        TEEInfo storage tee = _tees[teeId];
        if (tee.registeredAt == 0) revert TEENotFound();
        if (timestamp > block.timestamp) revert HeartbeatTimestampInFuture();
        if (block.timestamp - timestamp > heartbeatMaxAge()) revert HeartbeatTimestampTooOld();
        tee.lastHeartbeatAt = block.timestamp;
        emit HeartbeatReceived(teeId, timestamp);
    }

    function heartbeatMaxAge() public view returns (uint256) {
        return _heartbeatMaxAge == 0 ? DEFAULT_HEARTBEAT_MAX_AGE : _heartbeatMaxAge;
    }

    /// @notice Open to anyone in this test registry.
    function setHeartbeatMaxAge(uint256 maxAge) external {
        _heartbeatMaxAge = maxAge;
    }

    /// @notice Attach the TEE's OHTTP/HPKE key configuration (owner only; signature not verified).
    function setOHTTPConfig(
        bytes32 teeId,
        uint8 keyId,
        uint16 kemId,
        uint16 kdfId,
        uint16 aeadId,
        bytes calldata ohttpPublicKey,
        bytes calldata ohttpKeyConfig,
        bytes calldata ohttpConfigSignature
    ) external onlyTEEOwner(teeId) {
        ohttpConfigSignature; // accepted, not verified
        if (ohttpPublicKey.length == 0 || ohttpKeyConfig.length == 0) revert OHTTPConfigInvalid();
        OHTTPConfig storage cfg = _tees[teeId].ohttpConfig;
        cfg.keyId = keyId;
        cfg.kemId = kemId;
        cfg.kdfId = kdfId;
        cfg.aeadId = aeadId;
        cfg.publicKey = ohttpPublicKey;
        cfg.keyConfig = ohttpKeyConfig;
        if (cfg.registeredAt == 0) cfg.registeredAt = block.timestamp;
        emit OHTTPConfigUpdated(teeId, keyId, kemId, kdfId, aeadId, keccak256(ohttpPublicKey), keccak256(ohttpKeyConfig));
    }

    // ------------------------------------------------------------------ queries

    /// @notice The full record; reverts TEENotFound for an unknown id.
    function getTEE(bytes32 teeId) external view returns (TEEInfo memory) {
        if (_tees[teeId].registeredAt == 0) revert TEENotFound();
        return _tees[teeId];
    }

    /// @notice Enabled TEEs of a type whose last heartbeat is at most heartbeatMaxAge old.
    function getActiveTEEs(uint8 teeType) external view returns (TEEInfo[] memory result) {
        bytes32[] storage ids = _enabledByType[teeType];
        uint256 n;
        for (uint256 i = 0; i < ids.length; i++) {
            if (_active(_tees[ids[i]])) n++;
        }
        result = new TEEInfo[](n);
        uint256 j;
        for (uint256 i = 0; i < ids.length; i++) {
            if (_active(_tees[ids[i]])) result[j++] = _tees[ids[i]];
        }
    }

    function getEnabledTEEs(uint8 teeType) external view returns (bytes32[] memory) {
        return _enabledByType[teeType];
    }

    function getTEEsByType(uint8 teeType) external view returns (bytes32[] memory) {
        return _byType[teeType];
    }

    function getTEEsByOwner(address owner) external view returns (bytes32[] memory) {
        return _byOwner[owner];
    }

    function isTEEEnabled(bytes32 teeId) external view returns (bool) {
        return _tees[teeId].enabled;
    }

    function isTEEActive(bytes32 teeId) external view returns (bool) {
        return _active(_tees[teeId]);
    }

    function getTEEPublicKey(bytes32 teeId) external view returns (bytes memory) {
        return _tees[teeId].publicKey;
    }

    function computeTEEId(bytes calldata publicKey) external pure returns (bytes32) {
        return keccak256(publicKey);
    }

    // ------------------------------------------------------------------ internals

    function _active(TEEInfo storage tee) private view returns (bool) {
        return tee.enabled && block.timestamp >= tee.lastHeartbeatAt
            && block.timestamp - tee.lastHeartbeatAt <= heartbeatMaxAge();
    }

    function _list(bytes32 teeId, uint8 teeType) private {
        _enabledByType[teeType].push(teeId);
        _enabledSlot[teeType][teeId] = _enabledByType[teeType].length;
    }

    function _unlist(bytes32 teeId, uint8 teeType) private {
        bytes32[] storage ids = _enabledByType[teeType];
        uint256 slot = _enabledSlot[teeType][teeId];
        if (slot == 0) return;
        bytes32 last = ids[ids.length - 1];
        ids[slot - 1] = last;
        _enabledSlot[teeType][last] = slot;
        ids.pop();
        delete _enabledSlot[teeType][teeId];
    }
}
