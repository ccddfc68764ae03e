// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

interface ITEERegistryStatus {
    function isTEEEnabled(bytes32 teeId) external view returns (bool);
}

/// @title TestSettlementRelay
/// @notice OpenGradient's facilitator settlement relay as the receipts test bed needs it: the proof
///         records of TEE inference go on chain as events.
///         - settleIndividual(bytes32,bytes32,bytes32,uint256,address,bytes,bytes), selector 0x90480ad1,
///           emits IndividualSettlement (topic0 0x74e71a19…b782);
///         - batchSettle(bytes32,uint256,bytes), emits BatchSettlement (topic0 0xc2aff8d8…1127) for an
///           OpenZeppelin StandardMerkleTree root whose dump is a Walrus blob;
///         - verifyProof checks a sorted-pair keccak256 Merkle proof (OpenZeppelin MerkleProof rules).
///         Only relayers may settle: the deployer, and whoever the admin adds.
/// @dev    DEVIATION from the real relay: the real settleIndividual verifies the TEE's RSA-PSS
///         signature over keccak256(inputHash ‖ outputHash ‖ timestamp) on chain (through a settlement
///         contract and the registry's stored key). That is impractical here, so this relay only
///         requires the TEE to be registered and enabled in the registry, and reverts
///         TEENotEnabled(teeId) otherwise; the signature bytes are recorded, not checked. A reverting
///         individual settlement is produced with an unknown or disabled teeId.
contract TestSettlementRelay {
    ITEERegistryStatus public immutable REGISTRY;
    address public admin;
    mapping(address => bool) public isRelayer;

    event BatchSettlement(bytes32 indexed merkleRoot, uint256 batchSize, bytes walrusBlobId);
    event IndividualSettlement(
        bytes32 indexed teeId,
        address indexed ethAddress,
        bytes32 inputHash,
        bytes32 outputHash,
        uint256 timestamp,
        bytes walrusBlobId,
        bytes signature
    );
    event RelayerSet(address indexed relayer, bool allowed);

    error NotRelayer();
    error NotAdmin();
    error TEENotEnabled(bytes32 teeId);

    constructor(address registry) {
        require(registry != address(0), "TestSettlementRelay: registry is the zero address");
        REGISTRY = ITEERegistryStatus(registry);
        admin = msg.sender;
        isRelayer[msg.sender] = true;
        emit RelayerSet(msg.sender, true);
    }

    modifier onlyRelayer() {
        if (!isRelayer[msg.sender]) revert NotRelayer();
        _;
    }

    function setRelayer(address relayer, bool allowed) external {
        if (msg.sender != admin) revert NotAdmin();
        isRelayer[relayer] = allowed;
        emit RelayerSet(relayer, allowed);
    }

    function batchSettle(bytes32 merkleRoot, uint256 batchSize, bytes calldata walrusBlobId) external onlyRelayer {
        emit BatchSettlement(merkleRoot, batchSize, walrusBlobId);
    }

    function settleIndividual(
        bytes32 teeId,
        bytes32 inputHash,
        bytes32 outputHash,
        uint256 timestamp,
        address ethAddress,
        bytes calldata walrusBlobId,
        bytes calldata signature
    ) external onlyRelayer {
        // See the contract's @dev: registry status stands in for the RSA-PSS check.
        if (!REGISTRY.isTEEEnabled(teeId)) revert TEENotEnabled(teeId);
        emit IndividualSettlement(teeId, ethAddress, inputHash, outputHash, timestamp, walrusBlobId, signature);
    }

    /// @notice Whether `leaf` is in the tree of `root`: hash pairs in sorted order up the proof.
    function verifyProof(bytes32[] calldata proof, bytes32 root, bytes32 leaf) external pure returns (bool) {
        bytes32 node = leaf;
        for (uint256 i = 0; i < proof.length; i++) {
            bytes32 sibling = proof[i];
            node = node < sibling
                ? keccak256(abi.encodePacked(node, sibling))
                : keccak256(abi.encodePacked(sibling, node));
        }
        return node == root;
    }
}
