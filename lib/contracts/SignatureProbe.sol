// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4);
}

/**
 * @title SignatureProbe
 * @notice Never deployed: server402 runs its creation code in an `eth_call`
 *         ("deployless") to check a smart-wallet signature without sending a
 *         transaction. The constructor returns one status word instead of code.
 *
 * For an ERC-6492 signature of a wallet that has no code yet, the factory
 * call runs first (inside the eth_call only), and the wallet must then have
 * code at `signer` itself: a factory that deploys something elsewhere cannot
 * vouch for `signer`. The signature is always checked by `signer`'s own
 * ERC-1271 `isValidSignature`, never by any other address.
 *
 * Status: 0 valid; 1 the wallet refused the signature (or reverted);
 * 2 the factory call reverted; 3 the factory call left no code at `signer`;
 * 4 `signer` has no code and no factory was given.
 */
contract SignatureProbe {
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;

    constructor(address signer, bytes32 hash, address factory, bytes memory factoryData, bytes memory signature) {
        uint256 status = _probe(signer, hash, factory, factoryData, signature);
        assembly {
            mstore(0, status)
            return(0, 32)
        }
    }

    function _probe(address signer, bytes32 hash, address factory, bytes memory factoryData, bytes memory signature)
        private
        returns (uint256)
    {
        if (signer.code.length == 0) {
            if (factory == address(0)) return 4;
            (bool ok,) = factory.call(factoryData);
            if (!ok) return 2;
            if (signer.code.length == 0) return 3;
        }
        try IERC1271(signer).isValidSignature(hash, signature) returns (bytes4 magic) {
            return magic == ERC1271_MAGIC ? 0 : 1;
        } catch {
            return 1;
        }
    }
}
