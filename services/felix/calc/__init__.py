"""Felix's calculation graph: datastore resources in, the intended dataplane state out.

Pure Python, no kernel. ``CalcGraph`` consumes syncer batches and keeps only what the
endpoints on this node need: their active policies (compiled to ``model.Rule``), the IP sets
those rules' selectors and named ports become, and the profiles. ``CalcGraph.flush()``
returns the keys that changed since the last flush, so dataplanes apply deltas.
"""

from services.felix.calc.graph import CalcGraph
from services.felix.calc.model import (
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    IPSetSpec,
    Match,
    PolicyProgram,
    Rule,
    StateDelta,
)

__all__ = [
    "CalcGraph",
    "DataplaneState",
    "EndpointPolicy",
    "IPSetKind",
    "IPSetSpec",
    "Match",
    "PolicyProgram",
    "Rule",
    "StateDelta",
]
