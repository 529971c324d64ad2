"""The CNI_* environment variables of one invocation, validated per command."""

from __future__ import annotations

from cni_client.cni.errors import INVALID_ENVIRONMENT, CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
_ATTACHMENT_COMMANDS = ("ADD", "DEL", "CHECK")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_CHARS = _ALNUM | frozenset("_.-")
_IFNAME_FORBIDDEN = frozenset("/:")
IFNAMSIZ = 16


class Invocation:
    """What the runtime passed in the environment."""

    __slots__ = ("args", "command", "container_id", "ifname", "netns", "path")

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: dict[str, str] | None = None,
        path: str = "",
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args if args is not None else {}
        self.path = path

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")


def read_command(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "CNI_COMMAND is not set")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_COMMAND={command!r} is not a CNI command (one of {', '.join(COMMANDS)})",
        )
    return command


def read_invocation(environ: Mapping[str, str]) -> Invocation:
    """The invocation for the command in CNI_COMMAND; CniError(4) naming every missing or
    invalid variable."""
    command = read_command(environ)
    if command == "VERSION":
        return Invocation(command)
    required = ["CNI_PATH"]
    if command in _ATTACHMENT_COMMANDS:
        required += ["CNI_CONTAINERID", "CNI_IFNAME"]
        if command != "DEL":  # DEL must succeed without a netns (it may be gone already)
            required.append("CNI_NETNS")
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CniError(
            INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)}: not set or empty"
        )
    inv = Invocation(
        command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=environ.get("CNI_PATH", ""),
    )
    if command in _ATTACHMENT_COMMANDS:
        check_container_id(inv.container_id)
        check_ifname(inv.ifname)
    return inv


def parse_cni_args(value: str) -> dict[str, str]:
    """`K1=V1;K2=V2` (spec: alphanumeric key-value pairs separated by semicolons)."""
    args: dict[str, str] = {}
    for pair in value.split(";"):
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        args[key] = val
    return args


def check_container_id(container_id: str) -> None:
    # Spec: starts with an alphanumeric character, then alphanumerics, '_', '.' or '-'.
    if container_id[0] not in _ALNUM or not set(container_id) <= _ID_CHARS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_CONTAINERID={container_id!r} is invalid: it must start with a letter or digit"
            " followed by letters, digits, '_', '.' or '-'",
        )


def check_ifname(ifname: str) -> None:
    # Linux interface name rules: < 16 bytes, not "." or "..", no '/', ':' or whitespace.
    if (
        len(ifname.encode()) >= IFNAMSIZ
        or ifname in (".", "..")
        or any(c in _IFNAME_FORBIDDEN or c.isspace() for c in ifname)
    ):
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_IFNAME={ifname!r} is not a valid interface name (at most 15 bytes,"
            " not '.' or '..', no '/', ':' or whitespace)",
        )
