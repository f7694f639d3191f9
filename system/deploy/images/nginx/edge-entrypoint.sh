#!/bin/sh
# The edge container's entrypoint. With CHATSDK_EDGE_CERT_WATCH set to the certificate file
# NGINX serves (written by the certbot service into a shared volume), a background loop looks at
# it every CHATSDK_EDGE_CERT_POLL seconds (default 10) and, when it changed, sends NGINX (PID 1)
# SIGHUP: a graceful reload that loads the new certificate while the old workers finish their
# connections. Then the command runs as PID 1 (NGINX), so the container's stop signal reaches it.
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
exec "$@"
