"""The resource model: kinds, validation with Calico's defaults, storage format, and CRUD.

lookup_kind / kind_of        kinds.py
validate, ValidationError    validation/
to_json_bytes / from_json    serialization.py
ResourceClient               client.py
"""

from libcalico.resources.client import (
    ResourceClient,
    ResourceConflictError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from libcalico.resources.kinds import KindInfo, UnknownKindError, kind_of, lookup_kind
from libcalico.resources.serialization import from_json_bytes, to_json_bytes
from libcalico.resources.validation import ValidationError, validate

__all__ = [
    "KindInfo",
    "ResourceClient",
    "ResourceConflictError",
    "ResourceExistsError",
    "ResourceNotFoundError",
    "UnknownKindError",
    "ValidationError",
    "from_json_bytes",
    "kind_of",
    "lookup_kind",
    "to_json_bytes",
    "validate",
]
