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
#   etcd-certs.yaml    with --etcd-ca/--etcd-cert/--etcd-key FILE (the etcd datastore,
#                      k8s-etcd/): Secret calico-etcd-secrets holding etcd's CA and the client
#                      certificate and key etcd's CA issued for Calico (keys etcd-ca, etcd-cert,
#                      etcd-key); kept from an earlier run when these are not given
#   kustomization.yaml lists them
#
#   k8s/make-certs.sh [--apiserver HOST:PORT] [--out DIR] [--days N]
#                     [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE]
#
# The CA's key stays in DIR/ca/ (mode 0600, never in a Kubernetes object); a second run reuses
# the CA and issues new leaf certificates (rotation: run again, apply, restart the pods).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/site"
apiserver=""
days=365
etcd_ca=""
etcd_cert=""
etcd_key=""
while [ $# -gt 0 ]; do
    case "$1" in
        --apiserver) apiserver="${2:?--apiserver needs HOST:PORT}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --etcd-ca) etcd_ca="${2:?--etcd-ca needs a file}"; shift 2 ;;
        --etcd-cert) etcd_cert="${2:?--etcd-cert needs a file}"; shift 2 ;;
        --etcd-key) etcd_key="${2:?--etcd-key needs a file}"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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
# etcd: mutual TLS, so all three or none; each must be what its flag says, before anything
# is written.
if [ -n "$etcd_ca$etcd_cert$etcd_key" ]; then
    readable() {
        [ -n "$2" ] || {
            echo "make-certs.sh: --$1 is missing (etcd needs --etcd-ca, --etcd-cert, --etcd-key)" >&2
            exit 2
        }
        [ -r "$2" ] && [ -f "$2" ] || { echo "make-certs.sh: --$1: cannot read $2" >&2; exit 2; }
    }
    readable etcd-ca "$etcd_ca"
    readable etcd-cert "$etcd_cert"
    readable etcd-key "$etcd_key"
    openssl x509 -noout -in "$etcd_ca" 2>/dev/null \
        || { echo "make-certs.sh: --etcd-ca: $etcd_ca is not a PEM certificate" >&2; exit 2; }
    openssl x509 -noout -in "$etcd_cert" 2>/dev/null \
        || { echo "make-certs.sh: --etcd-cert: $etcd_cert is not a PEM certificate" >&2; exit 2; }
    openssl pkey -noout -in "$etcd_key" 2>/dev/null \
        || { echo "make-certs.sh: --etcd-key: $etcd_key is not a PEM private key" >&2; exit 2; }
    cert_pub=$(openssl x509 -noout -pubkey -in "$etcd_cert" | openssl pkey -pubin -outform DER \
        | openssl base64 -A)
    key_pub=$(openssl pkey -pubout -outform DER -in "$etcd_key" | openssl base64 -A)
    [ "$cert_pub" = "$key_pub" ] || {
        echo "make-certs.sh: --etcd-key: $etcd_key is not the key of --etcd-cert $etcd_cert" >&2
        exit 2
    }
fi

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
if [ -n "$etcd_ca" ]; then
    {
        echo "# Made by k8s/make-certs.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Contains a private key."
        echo "# etcd's CA and Calico's client certificate for it (k8s-etcd/ mounts it read-only)."
        echo "apiVersion: v1"
        echo "kind: Secret"
        echo "metadata: {name: calico-etcd-secrets, namespace: $NAMESPACE}"
        echo "type: Opaque"
        echo "data:"
        echo "  etcd-ca: $(b64 "$etcd_ca")"
        echo "  etcd-cert: $(b64 "$etcd_cert")"
        echo "  etcd-key: $(b64 "$etcd_key")"
    } >"$out/etcd-certs.yaml"
fi
if [ -s "$out/etcd-certs.yaml" ]; then
    resources="$resources
  - etcd-certs.yaml"
fi
printf '%s\n' "# Made by k8s/make-certs.sh." \
    "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" "resources:" \
    "$resources" >"$out/kustomization.yaml"
etcd_note=""
[ -s "$out/etcd-certs.yaml" ] && etcd_note=", etcd-certs.yaml"
echo "make-certs.sh: wrote $out (typha-certs.yaml${apiserver:+, kubernetes-services-endpoint.yaml}$etcd_note)"
