#!/bin/sh
# The edge container's entrypoint. NGINX resolves the host names of its upstream servers
# (`server api-1:8080`) once, when it loads its configuration; a container replaced behind such a
# name (a rollout, `docker-compose up` recreating a service) may come back on another address,
# and the edge would keep sending to the old one. So a background loop looks the names up every
# CHATSDK_EDGE_RESOLVE_POLL seconds (default 1) and, when one resolves to other addresses, sends
# NGINX (PID 1) SIGHUP: a graceful reload that resolves them anew while the old workers finish
# their connections. A name that does not resolve (its container is being replaced) waits for
# the next look; NGINX keeps the addresses it has meanwhile. The configuration read is the file
# after `-c` in the command, else /etc/nginx/nginx.conf. Then the command runs as PID 1 (NGINX),
# so the container's stop signal reaches it.
set -eu
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
