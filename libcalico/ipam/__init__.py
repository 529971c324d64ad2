"""Calico's block IPAM data on the datastore, shared by calico-ipamd and calico-kube-controllers.

keys     where blocks, affinities and handles live
model    Block / BlockAffinity / Handle / IpamConfig and their stored JSON
store    typed reads and compare-and-swap commits (with an optional revision cache)
staging  a batch of changes in memory, committed as one compare-and-swap transaction
release  releasing allocations, handles and a node's affinities inside a staging
transact one staged operation committed with retries (callers without a group committer)

Allocation (block claims, borrowing, pools) stays in services/ipam: only the daemon allocates.
"""
