#!/bin/sh
# The edge container's entrypoint: NGINX as PID 1 (so the container's stop signal reaches it),
# with two background loops that reload it gracefully (SIGHUP: the new configuration is loaded
# while the old workers finish their connections).
#
# Upstream names. NGINX resolves the host names of its upstream servers (`server api-1:8080`)
# once, when it loads its configuration; a container replaced behind such a name (a rollout,
# `docker-compose up` recreating a service) may come back on another address, and the edge would
# keep sending to the old one. So a loop looks the names up every CHATSDK_EDGE_RESOLVE_POLL
# seconds (default 1) and reloads when one resolves to other addresses. A name that does not
# resolve (its container is being replaced) waits for the next look; NGINX keeps the addresses it
# has meanwhile. The configuration read is the file after `-c` in the command, else
# /etc/nginx/nginx.conf.
#
# The certificate. With CHATSDK_EDGE_CERT_WATCH set to the certificate file NGINX serves (written
# by the certbot service into a shared volume), a loop looks at it every CHATSDK_EDGE_CERT_POLL
# seconds (default 10) and reloads when it changed.
set -eu
if [ -n "${CHATSDK_EDGE_CERT_WATCH:-}" ]; then
    (
        seen="$(cksum "$CHATSDK_EDGE_CERT_WATCH" 2>/dev/null || true)"
        while sleep "${CHATSDK_EDGE_CERT_POLL:-10}"; do
            now="$(cksum "$CHATSDK_EDGE_CERT_WATCH" 2>/dev/null || true)"
            if [ -n "$now" ] && [ "$now" != "$seen" ]; then
                echo "edge-entrypoint: $CHATSDK_EDGE_CERT_WATCH changed; reloading nginx" >&2
                kill -HUP 1 || true
            fi
            seen="$now"
        done
    ) &
fi
conf=/etc/nginx/nginx.conf
previous=""
for arg in "$@"; do
    if [ "$previous" = "-c" ]; then
        conf=$arg
    fi
    previous=$arg
done
(
    # "<name> <address>" for every address of every upstream host name (`server <name>:<port>`
    # lines; servers given by address are left out); fails when a name does not resolve.
    addresses() {
        names=$(sed -n 's/^[[:space:]]*server[[:space:]]\{1,\}\([A-Za-z][A-Za-z0-9.-]*\):[0-9]\{1,5\}[[:space:];].*/\1/p' "$conf" | sort -u)
        for name in $names; do
            found=$(getent ahostsv4 "$name" | awk '{print $1}' | sort -u) || return 1
            [ -n "$found" ] || return 1
            for address in $found; do
                echo "$name $address"
            done
        done
    }
    loaded="$(addresses || true)"
    while sleep "${CHATSDK_EDGE_RESOLVE_POLL:-1}"; do
        now="$(addresses)" || continue
        if [ "$now" != "$loaded" ]; then
            echo "edge-entrypoint: upstream addresses changed ($(echo "$now" | tr '\n' ' ')); reloading nginx" >&2
            kill -HUP 1 || true
            loaded="$now"
        fi
    done
) &
exec "$@"
