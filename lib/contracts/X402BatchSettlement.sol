// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IEIP3009 {
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}

/**
 * @title X402BatchSettlement
 * @notice Settles many EIP-3009 `transferWithAuthorization` payments of one
 *         token in one transaction (server402's batched settlement). Each
 *         transfer runs in its own call: one that reverts (used nonce, drained
 *         balance, bad signature) is reported with `TransferFailed` and the
 *         others go on.
 *
 * No owner, no storage, no funds, no approvals: anyone may call it, and it can
 * only do what each payer signed (the token checks every signature and nonce),
 * exactly like anyone submitting the signed authorizations directly. A
 * settled payment is proven by the token's own `AuthorizationUsed` and
 * `Transfer` logs, never by this contract's events.
 */
contract X402BatchSettlement {
    struct Authorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice The transfer at `index` reverted with `reason` (the token's revert data); nothing moved for it.
    event TransferFailed(uint256 indexed index, bytes reason);

    /// @notice Run every authorization against `token`; a failing one does not revert the others.
    function settle(address token, Authorization[] calldata authorizations) external {
        for (uint256 i = 0; i < authorizations.length; ++i) {
            Authorization calldata a = authorizations[i];
            try IEIP3009(token).transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, a.v, a.r, a.s) {} catch (bytes memory reason) {
                emit TransferFailed(i, reason);
            }
        }
    }
}
