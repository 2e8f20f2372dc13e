// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * A plain ERC-20 for the dev chain: no EIP-3009, no EIP-2612, 6 decimals.
 * It is paid through Permit2 (x402 `exact` with assetTransferMethod
 * `permit2`, and `upto`). Name, symbol and minter are constants so the
 * runtime code can be planted with anvil_setCode (no constructor runs).
 */
contract PlainPermit2Token is ERC20 {
    /// @notice The dev chain's minter (no known key; the dev chain impersonates it).
    address public constant minter = 0x0000000000000000000000000000000000004020;

    constructor() ERC20("", "") {}

    function name() public pure override returns (string memory) {
        return "Plain Test Dollar";
    }

    function symbol() public pure override returns (string memory) {
        return "PTD";
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Create `value` tokens for `to`. Only `minter` may call this.
    function mint(address to, uint256 value) external {
        require(msg.sender == minter, "caller is not the minter");
        _mint(to, value);
    }
}
