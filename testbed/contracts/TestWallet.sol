// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title TestWallet: the smallest smart-contract wallet that signs as Coinbase Smart Wallet and CDP do
/// @notice ERC-1271: a signature is `abi.encode(uint256 ownerIndex, bytes ecdsa)` (longer than 65 bytes),
/// valid when the 65-byte ECDSA signature over the digest recovers to the wallet's owner. Test bed only.
contract TestWallet {
    bytes4 private constant MAGIC = 0x1626ba7e;
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 digest, bytes calldata wrapped) external view returns (bytes4) {
        (, bytes memory sig) = abi.decode(wrapped, (uint256, bytes));
        if (sig.length != 65) return 0xffffffff;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        if (v < 27) v += 27;
        address signer = ecrecover(digest, v, r, s);
        return signer != address(0) && signer == owner ? MAGIC : bytes4(0xffffffff);
    }
}
