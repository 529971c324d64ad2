"""The one error every validator raises."""

from __future__ import annotations


class ValidationError(ValueError):
    """An object failed validation.

    `path` locates the offending field (`spec.ingress[0].destination.ports[1]`; empty for the
    object as a whole), `message` says what is wrong. `index` is the position of the document
    in a batch (ResourceClient.apply_all), None for a single object.
    """

    def __init__(self, path: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
        self.index = index

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def with_index(self, index: int) -> ValidationError:
        """The same error, placed at document `index` of a batch."""
        return ValidationError(self.path, self.message, index)
