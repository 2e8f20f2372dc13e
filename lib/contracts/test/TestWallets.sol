// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Create2} from "@openzeppelin/contracts/utils/Create2.sol";

/**
 * Test-only smart wallets for server402's smart-wallet payment tests. Never
 * hold value with them.
 */

/// @notice An ERC-1271 wallet: a signature is valid when every owner signed
///         the hash, as 65-byte ECDSA signatures concatenated in owner order.
contract TestSmartWallet {
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;
    address[] private _owners;

    constructor(address[] memory owners_) {
        require(owners_.length > 0, "no owners");
        _owners = owners_;
    }

    function owners() external view returns (address[] memory) {
        return _owners;
    }

    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4) {
        uint256 n = _owners.length;
        if (signature.length != 65 * n) return 0xffffffff;
        for (uint256 i = 0; i < n; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly {
                let p := add(add(signature, 32), mul(i, 65))
                r := mload(p)
                s := mload(add(p, 32))
                v := byte(0, mload(add(p, 64)))
            }
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, v, r, s);
            if (err != ECDSA.RecoverError.NoError || signer != _owners[i]) return 0xffffffff;
        }
        return ERC1271_MAGIC;
    }
}

/// @notice A hostile wallet: it accepts any signature for anything.
contract PermissiveWallet {
    function isValidSignature(bytes32, bytes memory) external pure returns (bytes4) {
        return 0x1626ba7e;
    }
}

/// @notice CREATE2 factory of TestSmartWallets (and, for hostile tests, PermissiveWallets).
contract TestWalletFactory {
    event WalletDeployed(address indexed wallet);

    /// @notice Deploy the wallet of `owners` and `salt`, or return it when it exists. Reverts without owners.
    function deploy(address[] calldata owners, bytes32 salt) external returns (address wallet) {
        wallet = walletAddress(owners, salt);
        if (wallet.code.length > 0) return wallet;
        wallet = address(new TestSmartWallet{salt: salt}(owners));
        emit WalletDeployed(wallet);
    }

    /// @notice The address `deploy(owners, salt)` deploys to.
    function walletAddress(address[] calldata owners, bytes32 salt) public view returns (address) {
        return Create2.computeAddress(salt, keccak256(abi.encodePacked(type(TestSmartWallet).creationCode, abi.encode(owners))));
    }

    /// @notice Like `deploy`, but reverts when the wallet exists (as a bare CREATE2 factory does).
    function deployStrict(address[] calldata owners, bytes32 salt) external returns (address wallet) {
        wallet = address(new TestSmartWallet{salt: salt}(owners));
        emit WalletDeployed(wallet);
    }

    /// @notice Deploy a PermissiveWallet (hostile tests).
    function deployPermissive(bytes32 salt) external returns (address wallet) {
        wallet = address(new PermissiveWallet{salt: salt}());
        emit WalletDeployed(wallet);
    }
}
