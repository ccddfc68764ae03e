"""Solidity sources of the test bed, their committed solc-js artifacts, and the build script."""
