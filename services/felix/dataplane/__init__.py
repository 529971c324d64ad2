"""Felix's dataplane drivers: the intended state (``calc.model``) rendered into the kernel.

``nftables`` (default): one table, changed only by atomic nft transactions.
``iptables``: ``cali-*`` chains and ipsets applied with ``iptables-restore --noflush`` and
``ipset restore`` batches. Both share the layout described in ``services/felix/POLICY.md``.
"""

from services.felix.dataplane.base import PolicyDataplane, make_dataplane

__all__ = ["PolicyDataplane", "make_dataplane"]
