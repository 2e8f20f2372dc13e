// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/**
 * server402's own implementation of the two x402 Permit2 proxies, written to
 * the x402 v2 specification (schemes `exact` with assetTransferMethod
 * `permit2`, and `upto` on EVM) and to the interface the official x402 EVM
 * client and facilitator package (2.x) use:
 *
 *   exact: settle(permit, owner, Witness{to, validAfter}, signature)
 *          transfers exactly permit.permitted.amount to witness.to
 *   upto:  settle(permit, amount, owner, Witness{to, facilitator, validAfter}, signature)
 *          transfers `amount` (<= permit.permitted.amount) to witness.to;
 *          only witness.facilitator may call it
 *
 * The proxy is the Permit2 `spender` the payer signs for; the witness binds
 * the destination (and, for upto, the settling facilitator), so whoever
 * submits the transaction cannot redirect the funds. The dev chain plants the
 * runtime code at the addresses the official client signs for
 * (0x402085c2…0001 and 0x4020A4f3…0002); Permit2 is at its canonical address,
 * a constant here (no constructor needs to run). The EIP-2612 variant
 * (`settleWithPermit`, a gas-sponsoring extension) is not implemented.
 */

interface ISignatureTransferMinimal {
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

    function permitWitnessTransferFrom(
        PermitTransferFrom memory permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

abstract contract X402Permit2ProxyBase {
    /// @notice The canonical Permit2 deployment (same address on every EVM chain).
    ISignatureTransferMinimal public constant PERMIT2 = ISignatureTransferMinimal(0x000000000022D473030F116dDEE9F6B43aC78BA3);

    error InvalidOwner();
    error InvalidDestination();
    error PaymentTooEarly();

    event Settled();

    function _checkCommon(address owner, address to, uint256 validAfter) internal view {
        if (owner == address(0)) revert InvalidOwner();
        if (to == address(0)) revert InvalidDestination();
        if (block.timestamp < validAfter) revert PaymentTooEarly();
    }
}

contract X402ExactPermit2Proxy is X402Permit2ProxyBase {
    struct Witness {
        address to;
        uint256 validAfter;
    }

    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    /// @notice Move exactly the permitted amount from `owner` to `witness.to`.
    function settle(
        ISignatureTransferMinimal.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        _checkCommon(owner, witness.to, witness.validAfter);
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter));
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransferMinimal.SignatureTransferDetails({to: witness.to, requestedAmount: permit.permitted.amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled();
    }
}

contract X402UptoPermit2Proxy is X402Permit2ProxyBase {
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    error AmountExceedsPermitted();
    error UnauthorizedFacilitator();

    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    /// @notice Move `amount` (at most the permitted amount) from `owner` to `witness.to`; only the witnessed facilitator may.
    function settle(
        ISignatureTransferMinimal.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        _checkCommon(owner, witness.to, witness.validAfter);
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransferMinimal.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled();
    }
}
