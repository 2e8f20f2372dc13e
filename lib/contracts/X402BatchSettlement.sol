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
 * only call `transferWithAuthorization(from, to, value, validAfter,
 * validBefore, nonce, v, r, s)` with what each payer signed (the token checks
 * every signature and nonce), exactly like anyone submitting the signed
 * authorizations directly. A settled payment is proven by the token's own
 * `AuthorizationUsed` and `Transfer` logs, never by this contract's events.
 *
 * Calldata is packed (no ABI padding) because calldata is most of what a batch
 * adds per payment: `payments` is a run of records, each
 *   flag (1) | from (20) | [to (20) | value (32)] | validAfter (32) | validBefore (32) | nonce (32) | v (1) | r (32) | s (32)
 * where to and value are present when flag is not 0 and otherwise repeat the
 * previous record's (one payee and price for many payers is common); the token
 * still gets, and checks the signature over, every field of each
 * authorization. Numbers keep their full EIP-3009 width, so any authorization fits.
 */
contract X402BatchSettlement {
    /// @notice The transfer at `index` reverted with `reason` (the token's revert data); nothing moved for it.
    event TransferFailed(uint256 indexed index, bytes reason);

    /// @notice Run every packed authorization in `payments` against `token`; a failing one does not revert the others.
    function settle(address token, bytes calldata payments) external {
        require(token.code.length > 0, "token: no code"); // a call to an address without code would "succeed"
        bytes4 selector = IEIP3009.transferWithAuthorization.selector;
        bytes32 failedTopic = TransferFailed.selector;
        assembly ("memory-safe") {
            // The token call's 292 bytes are built at the free memory pointer
            // and reused for every payment: selector, then 9 ABI words.
            let call_ := mload(0x40)
            mstore(call_, selector)
            let end := add(payments.offset, payments.length)
            let i := 0
            for { let p := payments.offset } lt(p, end) { i := add(i, 1) } {
                let full := byte(0, calldataload(p))
                // the first record must carry to and value
                if iszero(or(full, i)) { revert(0, 0) }
                mstore(add(call_, 4), shr(96, calldataload(add(p, 1)))) // from
                p := add(p, 21)
                if full {
                    mstore(add(call_, 36), shr(96, calldataload(p))) // to
                    calldatacopy(add(call_, 68), add(p, 20), 32) //     value
                    p := add(p, 52)
                }
                calldatacopy(add(call_, 100), p, 96) //                    validAfter, validBefore, nonce
                mstore(add(call_, 196), byte(0, calldataload(add(p, 96)))) // v
                calldatacopy(add(call_, 228), add(p, 97), 64) //           r, s
                p := add(p, 161)
                // a truncated last record: nothing runs (the whole call reverts)
                if gt(p, end) { revert(0, 0) }
                if iszero(call(gas(), token, 0, call_, 292, 0, 0)) {
                    // TransferFailed(i, reason): the revert data, ABI-encoded as `bytes`, after the call's buffer
                    let ev := add(call_, 320)
                    mstore(ev, 0x20)
                    mstore(add(ev, 0x20), returndatasize())
                    returndatacopy(add(ev, 0x40), 0, returndatasize())
                    mstore(add(add(ev, 0x40), returndatasize()), 0) // zero padding after the data
                    log2(ev, add(0x40, and(add(returndatasize(), 31), not(31))), failedTopic, i)
                }
            }
        }
    }
}
