"""calicoctl's resource commands: apply, create, replace, delete, get, validate.

Every command that writes is all-or-nothing: each document is validated (and cross-checked,
e.g. pool overlaps) before one datastore transaction writes them all.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from calicoctl.documents import parse_documents, read_source
from calicoctl.output import as_list, render, table
from libcalico.resources import KindInfo, kind_of, lookup_kind, validate
from libcalico.selector import parse as parse_selector

from .context import connected_client, fail

WriteMode = Literal["apply", "create", "replace"]
WRITE_MODES: dict[str, WriteMode] = {"apply": "apply", "create": "create", "replace": "replace"}


def _load(path: str, default_namespace: str | None) -> list[dict[str, Any]]:
    text, source = read_source(path)
    objects = parse_documents(text, source)
    for obj in objects:
        info = kind_of(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ValueError(f"{source}: metadata must be an object")
        if info.namespaced and not meta.get("namespace"):
            meta["namespace"] = default_namespace or "default"
    return objects


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    ns = meta.get("namespace")
    return f"{obj.get('kind')}({ns + '/' if ns else ''}{name})"


async def cmd_write(args: argparse.Namespace) -> int:
    objects = _load(args.filename, args.namespace)
    async with connected_client(args) as client:
        written = await client.apply_all(objects, mode=WRITE_MODES[args.command])
    verb = {"apply": "applied", "create": "created", "replace": "replaced"}[args.command]
    print(f"Successfully {verb} {len(written)} resource(s)")
    return 0


async def cmd_validate(args: argparse.Namespace) -> int:
    objects = _load(args.filename, args.namespace)
    for index, obj in enumerate(objects):
        try:
            validate(obj)
        except ValueError as e:
            return fail(f"document {index + 1} {_describe(obj)}: {e}")
    print(f"Successfully validated {len(objects)} resource(s)")
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind or args.names:
            return fail("delete: give either -f FILE or KIND NAME..., not both")
        refs = _load(args.filename, args.namespace)
    else:
        if not args.kind or not args.names:
            return fail("delete: give -f FILE, or KIND and at least one NAME")
        info = lookup_kind(args.kind)
        refs = [_ref(info, name, args.namespace) for name in args.names]
    async with connected_client(args) as client:
        deleted = await client.delete_all(refs)
    print(f"Successfully deleted {len(deleted)} resource(s)")
    return 0


def _ref(info: KindInfo, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if info.namespaced:
        meta["namespace"] = namespace or "default"
    return {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta}


async def cmd_get(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind:
            return fail("get: give either -f FILE or KIND [NAME], not both")
        return await _get_from_file(args)
    if not args.kind:
        return fail("get: give the resource type, e.g. `calicoctl get ippools`")
    info = lookup_kind(args.kind)
    if args.all_namespaces and args.namespace:
        return fail("get: -n/--namespace and -A/--all-namespaces are exclusive")
    namespace: str | None = None
    if info.namespaced and not args.all_namespaces:
        namespace = args.namespace or "default"
    selector = parse_selector(args.selector) if args.selector else None
    async with connected_client(args) as client:
        if args.names:
            objects = [await client.get(info, name, namespace) for name in args.names]
        else:
            objects = await client.list(info, namespace)
    if selector is not None:
        objects = [o for o in objects if selector.matches(o["metadata"].get("labels") or {})]
    single = bool(args.names) and len(args.names) == 1
    _print(objects, args.output, info, single, show_namespace=info.namespaced)
    return 0


async def _get_from_file(args: argparse.Namespace) -> int:
    refs = _load(args.filename, args.namespace)
    async with connected_client(args) as client:
        objects = []
        for ref in refs:
            info = kind_of(ref)
            meta = ref["metadata"]
            objects.append(await client.get(info, meta.get("name", ""), meta.get("namespace")))
    kinds = {kind_of(o) for o in objects}
    only_kind = next(iter(kinds)) if len(kinds) == 1 else None
    single = len(objects) == 1
    _print(objects, args.output, only_kind, single, any(k.namespaced for k in kinds))
    return 0


def _print(
    objects: list[dict[str, Any]],
    fmt: str,
    info: KindInfo | None,
    single: bool,
    show_namespace: bool,
) -> None:
    if fmt in ("ps", "wide"):
        kind = info.kind if info else ""
        namespaced = info.namespaced if info else show_namespace
        print(table(objects, kind, namespaced, wide=fmt == "wide"))
        return
    document: object = objects[0] if single else as_list(objects, info.kind if info else None)
    print(render(document, fmt))


def register(subparsers: Any) -> None:
    for name, help_text in (
        ("apply", "create or replace the resources in a file"),
        ("create", "create the resources in a file (fails if any exists)"),
        ("replace", "replace the resources in a file (fails if any is missing)"),
    ):
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("-f", "--filename", required=True, help="file of resources, - for stdin")
        p.add_argument("-n", "--namespace", help="namespace for namespaced resources without one")
        p.set_defaults(func=cmd_write)

    p = subparsers.add_parser("delete", help="delete resources by file or by type and name")
    p.add_argument("kind", nargs="?", help="resource type")
    p.add_argument("names", nargs="*", help="resource names")
    p.add_argument("-f", "--filename", help="file naming the resources, - for stdin")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.set_defaults(func=cmd_delete)

    p = subparsers.add_parser("get", help="show resources")
    p.add_argument("kind", nargs="?", help="resource type, e.g. ippools, networkpolicy")
    p.add_argument("names", nargs="*", help="resource names")
    p.add_argument("-f", "--filename", help="show the resources this file names")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-l", "--selector", help="label selector, e.g. \"app == 'web'\"")
    p.add_argument("-o", "--output", choices=["ps", "wide", "yaml", "json"], default="ps")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser("validate", help="validate the resources in a file, write nothing")
    p.add_argument("-f", "--filename", required=True, help="file of resources, - for stdin")
    p.add_argument("-n", "--namespace", help="namespace for namespaced resources without one")
    p.set_defaults(func=cmd_validate)
