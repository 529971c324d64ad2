"""The error raised for selector text that does not parse."""


class SelectorError(ValueError):
    """Malformed selector text.

    ``position`` is the 0-based offset into the text where parsing failed; the message names
    what was found there and what the grammar expected instead.
    """

    def __init__(self, message: str, position: int, text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text
