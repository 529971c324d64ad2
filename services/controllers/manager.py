"""What the leader runs: the configuration, the informers and the enabled controllers.

`lead()` runs while this replica holds the lease and is cancelled when it loses it. It reads
(or creates) KubeControllersConfiguration `default`, starts one informer per Kubernetes kind
the enabled controllers need (shared between them) and the controllers, and watches the
configuration: a change that alters what runs restarts them all with the new settings.
Everything in-memory (caches, leak sightings) starts afresh on every acquisition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from libcalico.datastore import DatastoreError, ResyncRequiredError
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.datastore.kube_client import KubeClient
from libcalico.resources.client import ResourceClient
from services.controllers import run_config
from services.controllers.copier import CopyController
from services.controllers.copies import COPIED_KINDS
from services.controllers.guarded import GuardedDatastore
from services.controllers.informer import Informer
from services.controllers.kube_view import KubeView
from services.controllers.node_controller import NodeController
from services.controllers.run_config import RunConfig

log = logging.getLogger(__name__)

NODES_PATH = "/api/v1/nodes"
PODS_PATH = "/api/v1/pods"
RETRY_SECONDS = 1.0


class ControllerManager:
    def __init__(
        self,
        kube: KubeClient,
        datastore: GuardedDatastore,
        datastore_type: str,
        enabled: tuple[str, ...] | None = None,
    ) -> None:
        self.kube = kube
        self.datastore = datastore
        self.datastore_type = datastore_type
        self.enabled = enabled
        self.config: RunConfig | None = None
        self.node_controller: NodeController | None = None
        self.copiers: dict[str, CopyController] = {}  # by kind
        self.last_error = ""

    @property
    def running(self) -> list[str]:
        return self.config.running if self.config is not None else []

    async def lead(self) -> None:
        """Run the controllers the configuration enables, until cancelled; restarts them
        when the configuration changes what runs."""
        resources = ResourceClient(self.datastore)
        try:
            while True:
                spec, revision = await run_config.load_or_create(resources, self.datastore_type)
                config = run_config.run_config(spec, self.datastore_type, self.enabled)
                try:
                    await run_config.write_status(resources, config)
                except DatastoreError as exc:
                    log.warning("could not record status.runningConfig: %s", exc)
                log.info("controllers starting", extra={"running": config.running})
                self.config = config
                await self._run(config, revision)
                log.info("configuration changed: restarting the controllers")
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.config = None
            self.node_controller = None
            self.copiers = {}

    async def _run(self, config: RunConfig, revision: int) -> None:
        """Until the configuration changes (returns) or a controller fails (raises)."""
        informers: dict[str, Informer] = {}

        def informer(path: str, name: str) -> Informer:
            if path not in informers:
                informers[path] = Informer(self.kube, path, name)
            return informers[path]

        work: list[Coroutine[Any, Any, None]] = []
        if config.node is not None:
            view = KubeView(self.kube, informer(NODES_PATH, "nodes"), informer(PODS_PATH, "pods"))
            self.node_controller = NodeController(config.node, view, self.datastore)
            work.append(self.node_controller.run())
        self.copiers = {}
        for kind in COPIED_KINDS:
            if kind.controller not in config.copies:
                continue
            period = config.copies[kind.controller]
            copier = CopyController(
                kind, informer(kind.api_path, kind.plural), self.datastore, period
            )
            self.copiers[kind.kind] = copier
            work.append(copier.run())
        work.extend(i.run() for i in informers.values())
        tasks = [asyncio.create_task(c) for c in work]
        watcher = asyncio.create_task(self._config_changed(config, revision))
        try:
            done, _ = await asyncio.wait([*tasks, watcher], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not watcher:
                    task.result()  # a controller ended: re-raise why
                    raise RuntimeError(f"controller task {task.get_name()} ended")
        finally:
            for task in [*tasks, watcher]:
                task.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)

    async def _config_changed(self, current: RunConfig, revision: int) -> None:
        """Return once KubeControllersConfiguration `default` says something else should run."""
        resources = ResourceClient(self.datastore)
        prefix = resource_prefix(GROUP_CALICO, "kubecontrollersconfigurations")
        while True:
            try:
                async for event in self.datastore.watch(prefix, revision + 1):
                    revision = max(revision, event.revision)
                    spec, _ = await run_config.load_or_create(resources, self.datastore_type)
                    if run_config.run_config(spec, self.datastore_type, self.enabled) != current:
                        return
            except ResyncRequiredError:
                spec, revision = await run_config.load_or_create(resources, self.datastore_type)
                if run_config.run_config(spec, self.datastore_type, self.enabled) != current:
                    return
            except DatastoreError as exc:
                log.warning("configuration watch failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
