"""Validation of label keys against the Kubernetes label-key syntax.

A key is an optional DNS-1123 subdomain prefix (at most 253 characters, lower case) and a
``/``, then a name of at most 63 characters: alphanumerics, ``-``, ``_`` and ``.``, beginning
and ending with an alphanumeric.
"""

import re

_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)

MAX_NAME_LENGTH = 63
MAX_PREFIX_LENGTH = 253


def label_key_problem(key: str) -> str | None:
    """Say why ``key`` is not a valid label key, or return None when it is valid."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if "/" in prefix:
            return "a label key has at most one '/'"
        if not prefix:
            return "the prefix before '/' is empty"
        if len(prefix) > MAX_PREFIX_LENGTH:
            return f"the prefix is longer than {MAX_PREFIX_LENGTH} characters"
        if not _DNS_SUBDOMAIN.fullmatch(prefix):
            return "the prefix must be a lower-case DNS subdomain"
    if not name:
        return "the name part is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name part is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return (
            "the name part must be alphanumerics, '-', '_' or '.', "
            "beginning and ending with an alphanumeric"
        )
    return None
