// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title TestPermit2
/// @notice The part of Uniswap's Permit2 (SignatureTransfer) that x402 uses, written for the
///         receipts test bed: `permitWitnessTransferFrom`, `nonceBitmap` with unordered nonces,
///         `invalidateUnorderedNonces` and `DOMAIN_SEPARATOR`. Function signatures, selectors,
///         EIP-712 hashing, custom error names and check order follow the public Permit2 interface,
///         so a signature made for the canonical Permit2 verifies here.
/// @dev    Placed at the canonical Permit2 address on a local anvil with `anvil_setCode`: there is
///         no constructor and no immutable; the domain separator is computed on every call from
///         block.chainid and address(this). The AllowanceTransfer half of Permit2 is not implemented.
contract TestPermit2 {
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

    bytes32 private constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Permit2");
    bytes32 public constant TOKEN_PERMISSIONS_TYPEHASH = keccak256("TokenPermissions(address token,uint256 amount)");
    /// @dev The witness type string given by the caller completes this stub (EIP-712 encodeType).
    string public constant PERMIT_WITNESS_TRANSFER_FROM_TYPEHASH_STUB =
        "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,";
    bytes4 private constant EIP1271_MAGIC = 0x1626ba7e;

    /// @notice owner => word position => bitmap of used (or invalidated) nonces.
    mapping(address => mapping(uint256 => uint256)) public nonceBitmap;

    event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask);

    error SignatureExpired(uint256 signatureDeadline);
    error InvalidAmount(uint256 maxAmount);
    error InvalidNonce();
    error InvalidSignatureLength();
    error InvalidSignature();
    error InvalidSigner();
    error InvalidContractSignature();

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, block.chainid, address(this)));
    }

    /// @notice Transfer `transferDetails.requestedAmount` (at most the permitted amount) of the
    ///         permitted token from `owner` to `transferDetails.to`, authorized by `owner`'s EIP-712
    ///         signature over the permit, the spender (msg.sender) and the caller's witness.
    /// @param witness           the EIP-712 hash of the witness struct
    /// @param witnessTypeString the end of the type string, e.g.
    ///        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,...)"
    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (transferDetails.requestedAmount > permit.permitted.amount) revert InvalidAmount(permit.permitted.amount);

        _useUnorderedNonce(owner, permit.nonce);

        bytes32 typeHash = keccak256(abi.encodePacked(PERMIT_WITNESS_TRANSFER_FROM_TYPEHASH_STUB, witnessTypeString));
        bytes32 permittedHash =
            keccak256(abi.encode(TOKEN_PERMISSIONS_TYPEHASH, permit.permitted.token, permit.permitted.amount));
        bytes32 structHash =
            keccak256(abi.encode(typeHash, permittedHash, msg.sender, permit.nonce, permit.deadline, witness));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        _verify(signature, digest, owner);

        _transferFrom(permit.permitted.token, owner, transferDetails.to, transferDetails.requestedAmount);
    }

    /// @notice Mark the nonces in `mask` of word `wordPos` as used, for the caller.
    function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external {
        nonceBitmap[msg.sender][wordPos] |= mask;
        emit UnorderedNonceInvalidation(msg.sender, wordPos, mask);
    }

    /// @dev Nonce n lives in word n >> 8, bit n & 0xff; using it twice reverts.
    function _useUnorderedNonce(address owner, uint256 nonce) private {
        uint256 wordPos = nonce >> 8;
        uint256 bit = uint256(1) << (nonce & 0xff);
        uint256 flipped = nonceBitmap[owner][wordPos] ^ bit;
        if (flipped & bit == 0) revert InvalidNonce();
        nonceBitmap[owner][wordPos] = flipped;
    }

    /// @dev 65-byte (r, s, v) or 64-byte EIP-2098 (r, vs) ECDSA for accounts without code,
    ///      EIP-1271 for contracts.
    function _verify(bytes calldata signature, bytes32 digest, address claimedSigner) private view {
        if (claimedSigner.code.length == 0) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            if (signature.length == 65) {
                r = bytes32(signature[0:32]);
                s = bytes32(signature[32:64]);
                v = uint8(signature[64]);
            } else if (signature.length == 64) {
                r = bytes32(signature[0:32]);
                bytes32 vs = bytes32(signature[32:64]);
                s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
                v = uint8(uint256(vs >> 255)) + 27;
            } else {
                revert InvalidSignatureLength();
            }
            address signer = ecrecover(digest, v, r, s);
            if (signer == address(0)) revert InvalidSignature();
            if (signer != claimedSigner) revert InvalidSigner();
        } else {
            (bool ok, bytes memory ret) =
                claimedSigner.staticcall(abi.encodeWithSelector(EIP1271_MAGIC, digest, signature));
            if (!ok || ret.length < 32 || bytes4(abi.decode(ret, (bytes32))) != EIP1271_MAGIC) {
                revert InvalidContractSignature();
            }
        }
    }

    /// @dev ERC-20 transferFrom that accepts tokens returning nothing; any failure reverts with
    ///      "TRANSFER_FROM_FAILED" (as Permit2's safe transfer does).
    function _transferFrom(address token, address from, address to, uint256 amount) private {
        (bool ok, bytes memory ret) =
            token.call(abi.encodeWithSelector(0x23b872dd, from, to, amount)); // transferFrom(address,address,uint256)
        require(
            ok && token.code.length > 0 && (ret.length == 0 || (ret.length >= 32 && abi.decode(ret, (bool)))),
            "TRANSFER_FROM_FAILED"
        );
    }
}
