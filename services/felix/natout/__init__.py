"""Outgoing NAT: masquerade traffic from pools with natOutgoing to anywhere outside all pools."""
