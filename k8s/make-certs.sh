#!/bin/sh
# Make what varies per install, as Kubernetes objects k8s/kustomization.yaml picks up from
# k8s/site/ (or --out DIR):
#   typha-certs.yaml   a CA (ConfigMap calico-typha-ca), Typha's server certificate (Secret
#                      calico-typha-tls, CN and DNS SAN typha-server, URI SAN
#                      spiffe://calico-py/calico-system/calico-typha) and calico-node's client
#                      certificate (Secret calico-node-typha-tls, CN typha-client and URI SAN
#                      spiffe://calico-py/calico-system/calico-node), for mutual TLS
#   kubernetes-services-endpoint.yaml   with --apiserver HOST:PORT: the API server's real
#                      address for in-cluster clients (there is no kube-proxy to make the
#                      `kubernetes` Service's cluster IP work)
#   kustomization.yaml lists them
#
#   k8s/make-certs.sh [--apiserver HOST:PORT] [--out DIR] [--days N]
#
# The CA's key stays in DIR/ca/ (mode 0600, never in a Kubernetes object); a second run reuses
# the CA and issues new leaf certificates (rotation: run again, apply, restart the pods).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/site"
apiserver=""
days=365
while [ $# -gt 0 ]; do
    case "$1" in
        --apiserver) apiserver="${2:?--apiserver needs HOST:PORT}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "make-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$days" in ''|*[!0-9]*) echo "make-certs.sh: --days: $days is not a number" >&2; exit 2 ;; esac
if [ -n "$apiserver" ]; then
    host=${apiserver%:*}
    port=${apiserver##*:}
    host=${host#\[}; host=${host%\]}  # [::1]:6443: the variable takes the bare address
    case "$port" in ''|*[!0-9]*)
        echo "make-certs.sh: --apiserver: $apiserver is not HOST:PORT" >&2; exit 2 ;;
    esac
    [ -n "$host" ] && [ "$host" != "$apiserver" ] || {
        echo "make-certs.sh: --apiserver: $apiserver is not HOST:PORT" >&2; exit 2; }
fi
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }

NAMESPACE=calico-system
TYPHA_CN=typha-server
CLIENT_CN=typha-client
CLIENT_URI=spiffe://calico-py/calico-system/calico-node
TYPHA_URI=spiffe://calico-py/calico-system/calico-typha

umask 077
mkdir -p "$out/ca"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ca_key="$out/ca/ca.key"
ca_crt="$out/ca/ca.crt"
if [ ! -s "$ca_key" ] || [ ! -s "$ca_crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$ca_key" -out "$ca_crt" -days 3650 -subj "/CN=calico-py-typha-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# issue NAME CN EXTENSIONS: a key and a certificate signed by the CA into $work/NAME.{key,crt}
issue() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "$3" >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
        -CAserial "$work/ca.srl" -days "$days" -extfile "$work/$1.ext" -out "$work/$1.crt" \
        2>/dev/null
}
issue typha "$TYPHA_CN" "extendedKeyUsage=serverAuth
subjectAltName=DNS:$TYPHA_CN,URI:$TYPHA_URI"
issue node "$CLIENT_CN" "extendedKeyUsage=clientAuth
subjectAltName=URI:$CLIENT_URI"

indent() { sed 's/^/    /' "$1"; }
# Secret data base64-encoded on one line (stringData would make every re-apply a change).
b64() { openssl base64 -A -in "$1"; }
{
    echo "# Made by k8s/make-certs.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Contains private keys."
    echo "apiVersion: v1"
    echo "kind: ConfigMap"
    echo "metadata: {name: calico-typha-ca, namespace: $NAMESPACE}"
    echo "data:"
    echo "  ca.crt: |"
    indent "$ca_crt"
    echo "---"
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: calico-typha-tls, namespace: $NAMESPACE}"
    echo "type: kubernetes.io/tls"
    echo "data:"
    echo "  tls.crt: $(b64 "$work/typha.crt")"
    echo "  tls.key: $(b64 "$work/typha.key")"
    echo "---"
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: calico-node-typha-tls, namespace: $NAMESPACE}"
    echo "type: kubernetes.io/tls"
    echo "data:"
    echo "  tls.crt: $(b64 "$work/node.crt")"
    echo "  tls.key: $(b64 "$work/node.key")"
} >"$out/typha-certs.yaml"

resources="  - typha-certs.yaml"
if [ -n "$apiserver" ]; then
    {
        echo "# Made by k8s/make-certs.sh: where in-cluster clients reach the API server."
        echo "apiVersion: v1"
        echo "kind: ConfigMap"
        echo "metadata: {name: kubernetes-services-endpoint, namespace: $NAMESPACE}"
        echo "data:"
        echo "  KUBERNETES_SERVICE_HOST: \"$host\""
        echo "  KUBERNETES_SERVICE_PORT: \"$port\""
    } >"$out/kubernetes-services-endpoint.yaml"
    resources="$resources
  - kubernetes-services-endpoint.yaml"
else
    rm -f "$out/kubernetes-services-endpoint.yaml"
fi
printf '%s\n' "# Made by k8s/make-certs.sh." \
    "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" "resources:" \
    "$resources" >"$out/kustomization.yaml"
echo "make-certs.sh: wrote $out (typha-certs.yaml${apiserver:+, kubernetes-services-endpoint.yaml})"
