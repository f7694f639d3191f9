#!/bin/sh
# The edge's certificate, obtained and renewed by certbot from the ACME CA at
# CHATSDK_ACME_DIRECTORY (http-01: the challenge files go to /var/www/acme, which the edge serves
# under /.well-known/acme-challenge/ on port 80), and put where NGINX reads it:
# $CHATSDK_EDGE_CERT_DIR/fullchain.pem and privkey.pem. The edge notices the new files and
# reloads (system/deploy/images/nginx/edge-entrypoint.sh).
#
#   edge-certificate schedule  a bootstrap certificate if there is none (so NGINX can start),
#                              then `once` every CHATSDK_RENEW_EVERY seconds (CHATSDK_RENEW_RETRY
#                              after a failure)
#   edge-certificate once      the first certificate, or `certbot renew` (renews within 30 days
#                              of expiry, else does nothing)
#   edge-certificate force     a renewal now, due or not (the renewal drill; the runbook)
#   edge-certificate deploy    certbot's deploy hook: copy the new certificate to the edge
#   edge-certificate check     the health check: the edge has a certificate to serve
set -eu

DOMAIN="${CHATSDK_EDGE_DOMAIN:?set CHATSDK_EDGE_DOMAIN to the edge public name}"
DIRECTORY="${CHATSDK_ACME_DIRECTORY:-https://acme-v02.api.letsencrypt.org/directory}"
EVERY="${CHATSDK_RENEW_EVERY:-43200}"
RETRY="${CHATSDK_RENEW_RETRY:-300}"
EDGE_DIR="${CHATSDK_EDGE_CERT_DIR:-/etc/letsencrypt/edge}"
WEBROOT=/var/www/acme
LINEAGE=edge

log() { echo "edge-certificate: $*"; }

bootstrap() {
    [ -s "$EDGE_DIR/fullchain.pem" ] && [ -s "$EDGE_DIR/privkey.pem" ] && return 0
    log "no certificate yet: a self-signed one for $DOMAIN (valid 1 day) until the CA issues one"
    mkdir -p "$EDGE_DIR"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
        -keyout "$EDGE_DIR/privkey.pem.new" -out "$EDGE_DIR/fullchain.pem.new" 2>/dev/null
    mv "$EDGE_DIR/privkey.pem.new" "$EDGE_DIR/privkey.pem"
    mv "$EDGE_DIR/fullchain.pem.new" "$EDGE_DIR/fullchain.pem"
}

certbot_run() {
    # --no-random-sleep-on-renew: certbot otherwise waits up to 8 minutes before a scheduled
    # renewal; this schedule is ours and already spread by the service's start time.
    certbot "$@" --non-interactive --no-random-sleep-on-renew \
        --deploy-hook "edge-certificate deploy"
}

obtain() {
    if [ -n "${CHATSDK_ACME_EMAIL:-}" ]; then
        account="--email $CHATSDK_ACME_EMAIL"
    else
        account="--register-unsafely-without-email"
    fi
    # shellcheck disable=SC2086 # $account is two words on purpose
    certbot_run certonly --agree-tos $account --server "$DIRECTORY" --cert-name "$LINEAGE" \
        --webroot -w "$WEBROOT" --preferred-challenges http -d "$DOMAIN" "$@"
}

has_lineage() { [ -f "/etc/letsencrypt/renewal/$LINEAGE.conf" ]; }

case "${1:-}" in
schedule)
    bootstrap
    while :; do
        if "$0" once; then wait_s="$EVERY"; else wait_s="$RETRY"; fi
        log "next run in $wait_s s"
        sleep "$wait_s"
    done
    ;;
once)
    if has_lineage; then
        certbot_run renew --cert-name "$LINEAGE"
    else
        obtain
    fi
    ;;
force)
    if has_lineage; then
        certbot_run renew --cert-name "$LINEAGE" --force-renewal
    else
        obtain
    fi
    ;;
deploy)
    lineage="${RENEWED_LINEAGE:?certbot sets RENEWED_LINEAGE for its deploy hook}"
    mkdir -p "$EDGE_DIR"
    umask 077
    cp "$lineage/privkey.pem" "$EDGE_DIR/privkey.pem.new"
    cp "$lineage/fullchain.pem" "$EDGE_DIR/fullchain.pem.new"
    # The key first: the edge reloads when fullchain.pem changes, and then both must match.
    mv "$EDGE_DIR/privkey.pem.new" "$EDGE_DIR/privkey.pem"
    mv "$EDGE_DIR/fullchain.pem.new" "$EDGE_DIR/fullchain.pem"
    log "deployed the certificate for $DOMAIN to $EDGE_DIR"
    ;;
check)
    [ -s "$EDGE_DIR/fullchain.pem" ] && [ -s "$EDGE_DIR/privkey.pem" ]
    ;;
*)
    echo "usage: edge-certificate schedule|once|force|deploy|check" >&2
    exit 2
    ;;
esac
