#!/bin/sh
# Secrets arrive as files (Docker/Compose secrets, Kubernetes secret volumes), never as values
# in the image or the compose file: every CHATSDK_<NAME>_FILE=<path> becomes CHATSDK_<NAME> with
# the file's content, then the command runs as PID 1 (exec) so SIGTERM reaches the server.
set -eu
for assignment in $(env | grep -o '^CHATSDK_[A-Z0-9_]*_FILE=' || true); do
    file_var=${assignment%=}
    name=${file_var%_FILE}
    eval "path=\${$file_var}"
    if [ ! -r "$path" ]; then
        echo "chatsdk-entrypoint: $file_var names $path, which is not readable" >&2
        exit 64
    fi
    value=$(cat "$path")
    export "$name=$value"
    unset "$file_var"
done
# Each replica names itself in its logs and runtime report by its host name unless
# CHATSDK_WORKER_ID is set (Kubernetes sets the pod's name): compose gives every replica of a
# service the same environment, and the container's host name (its id, or the name the
# deployment gives it) tells them apart.
export CHATSDK_WORKER_ID="${CHATSDK_WORKER_ID:-${HOSTNAME:-0}}"
exec "$@"
