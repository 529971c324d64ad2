"""The network-policy conformance runner (case format: shared/conformance/netpol/FORMAT.md)."""
