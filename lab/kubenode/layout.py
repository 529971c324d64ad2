"""The node's fixed names, addresses and paths, which other tools (tests, manifests) rely on.

The node runs in the host's own network namespace. Its address is not the uplink's: a link
`kubelab0` (a bridge without ports) holds NODE_ADDRESS/32, where the API server, the
kubelet's server and the node's InternalIP live, so nothing of the node listens on an
address the outside can reach, while pods (routed to the host) reach the API server there.
Every range the node's traffic may go to without anything serving it here gets an
`unreachable` route on the host while the node runs
(KUBELET.md, "Keep the node's traffic on the machine").
"""

from __future__ import annotations

from pathlib import Path

from lab import apiserver

NODE_NAME = "kube-node"
NODE_LINK = "kubelab0"
NODE_ADDRESS = "10.77.0.1"
APISERVER_PORT = 6443
SERVICE_RANGE = apiserver.SERVICE_CLUSTER_IP_RANGE
# Calico's default pool, the pool tests use, the node's own /24 (all but its address), the
# documentation ranges tests send to.
UNREACHABLE_RANGES = (
    "192.168.0.0/16",
    "10.244.0.0/16",
    SERVICE_RANGE,
    "10.77.0.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
)
DEFAULT_STATE_DIR = Path("/run/calico-lab-kube")
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_STATE = "/run/containerd"
KUBELET_ROOT = "/var/lib/kubelet"
CNI_CONF_DIR = "/etc/cni/net.d"
# Where Calico's install puts its plugins (the DaemonSet's init container); Debian's reference
# plugins (portmap, bandwidth, loopback) after it.
CNI_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
IMAGE_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
PAUSE_IMAGE = "localhost/calico-lab/pause:3.10"
BUSYBOX_IMAGE = "localhost/calico-lab/busybox:latest"
