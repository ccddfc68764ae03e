// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title TestOPG
/// @notice An OPG-like ERC-20 for local tests: name "OpenGradient", symbol "OPG", 18 decimals,
///         EIP-712 domain {name: "OpenGradient", version: "1", chainId, verifyingContract}
///         and EIP-2612 `permit`. Anyone may mint: this token has no value and must never be
///         deployed on a real chain.
/// @dev    Written for the receipts test bed. It is placed at the real OPG address on a local
///         "Base" anvil with `anvil_setCode`, so no constructor ever runs: there is no constructor,
///         no immutable, and every storage slot starts at zero (an empty token). Name, symbol,
///         decimals and version are constants in the code.
contract TestOPG {
    string public constant name = "OpenGradient";
    string public constant symbol = "OPG";
    string public constant version = "1";
    uint8 public constant decimals = 18;

    bytes32 private constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    /// @dev Upper bound of a canonical (low-s) secp256k1 signature's s.
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    /// @notice EIP-2612 nonce of each owner (one per accepted permit).
    mapping(address => uint256) public nonces;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(EIP712_DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version)), block.chainid, address(this))
        );
    }

    /// @notice Create `amount` new tokens for `to`. Open to everyone (test token).
    function mint(address to, uint256 amount) external returns (bool) {
        require(to != address(0), "TestOPG: mint to the zero address");
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        _approve(msg.sender, spender, value);
        return true;
    }

    /// @notice Spends the caller's allowance from `from` (an allowance of 2**256-1 is never reduced).
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "TestOPG: insufficient allowance");
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _move(from, to, value);
        return true;
    }

    /// @notice EIP-2612: `owner` approves `spender` by signature (65-byte ECDSA as v, r, s).
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
    {
        require(block.timestamp <= deadline, "TestOPG: permit expired");
        require(uint256(s) <= HALF_ORDER && (v == 27 || v == 28), "TestOPG: invalid signature");
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, value, nonces[owner], deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        address signer = ecrecover(digest, v, r, s);
        require(signer != address(0) && signer == owner, "TestOPG: invalid signature");
        nonces[owner] += 1;
        _approve(owner, spender, value);
    }

    function _approve(address owner, address spender, uint256 value) private {
        require(spender != address(0), "TestOPG: approve to the zero address");
        allowance[owner][spender] = value;
        emit Approval(owner, spender, value);
    }

    function _move(address from, address to, uint256 value) private {
        require(to != address(0), "TestOPG: transfer to the zero address");
        uint256 held = balanceOf[from];
        require(held >= value, "TestOPG: transfer amount exceeds balance");
        unchecked {
            balanceOf[from] = held - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
