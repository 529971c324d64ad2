"""Felix's VXLAN overlay: the vxlan.calico device and the routes, neighbours and FDB entries
that carry pod traffic to other nodes' blocks (Calico's VXLAN manager and route table)."""
