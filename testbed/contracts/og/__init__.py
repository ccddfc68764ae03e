"""Solidity of the OpenGradient test bed (Base: OPG, Permit2, the x402 upto proxy; OpenGradient chain:
the TEE registry and the settlement relay), their committed solc-js artifacts, and the build script."""
