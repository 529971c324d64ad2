#!/bin/sh
# Throw-away certificates for docker-compose.yml's etcd (mutual TLS), into DIR:
#   DIR/etcd/     ca.crt, server.crt, server.key   etcd's (IP 172.30.77.2, its compose address,
#                                                  and 127.0.0.1)
#   DIR/client/   ca.crt, client.crt, client.key   the calico-py services'
# Each side mounts only its own directory. The CA's key is not kept: nothing else is signed.
#
#   compose/make-etcd-certs.sh DIR
#
# For a development cluster only: the keys are mode 0644 because the containers reading them
# run as other users (Debian's etcd user; 999); keep DIR inside a directory only you can enter
# (the compose test's run directory is mode 0700).
set -eu
dir="${1:?usage: compose/make-etcd-certs.sh DIR}"
command -v openssl >/dev/null || {
    echo "make-etcd-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir/etcd" "$dir/client"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
EC="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086  # $EC is several arguments
openssl req -x509 $EC -keyout "$work/ca.key" -out "$work/ca.crt" -days 30 \
    -subj "/CN=calico-py-compose-etcd-ca" 2>/dev/null
# leaf NAME SIDE EXTENSIONS: NAME.crt and NAME.key, signed by the CA, into DIR/SIDE
leaf() {
    # shellcheck disable=SC2086
    openssl req -new $EC -keyout "$dir/$2/$1.key" -out "$work/$1.csr" \
        -subj "/CN=calico-py-etcd-$1" 2>/dev/null
    printf '%s\n' "$3" >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -days 30 -extfile "$work/$1.ext" \
        -out "$dir/$2/$1.crt" 2>/dev/null
    cp "$work/ca.crt" "$dir/$2/ca.crt"
    chmod 0644 "$dir/$2"/*
    chmod 0755 "$dir/$2"
}
leaf server etcd "subjectAltName=IP:172.30.77.2,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client client "extendedKeyUsage=clientAuth"
