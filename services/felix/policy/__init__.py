"""Felix's policy engine: syncer -> calculation graph -> dataplane, plus status and health."""

from services.felix.policy.engine import EngineStatus, PolicyEngine

__all__ = ["EngineStatus", "PolicyEngine"]
