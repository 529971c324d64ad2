"""Resource update streams for Felix (and later Typha).

A syncer delivers batches of updates: first a snapshot (Update for every existing key), then
an ``InSync`` marker, then deltas. ``DatastoreSyncer`` builds that from a datastore's list +
watch; Typha's client will implement the same ``Syncer`` protocol over its own stream.
"""

from libcalico.syncer.api import Delete, InSync, Syncer, SyncerUpdate, Update
from libcalico.syncer.datastore import FELIX_PREFIXES, DatastoreSyncer

__all__ = [
    "FELIX_PREFIXES",
    "DatastoreSyncer",
    "Delete",
    "InSync",
    "Syncer",
    "SyncerUpdate",
    "Update",
]
