#!/bin/sh
# Container entrypoint (docker-compose.yml): Alertmanager reads no environment variables
# in its configuration, so write a copy of alertmanager.yml with the webhook URL from
# $PACEKEEPER_ALERTMANAGER_WEBHOOK_URL, then run Alertmanager on that copy.
set -eu
template=/etc/alertmanager/alertmanager.yml
rendered=/alertmanager/alertmanager.rendered.yml
placeholder=http://host.docker.internal:9999/hook
url=${PACEKEEPER_ALERTMANAGER_WEBHOOK_URL:-$placeholder}
# The URL lands in a single-quoted YAML string, where ' is written ''. Then escape what
# sed would read as special in a replacement: \ & and the | delimiter.
escaped=$(printf '%s' "$url" | sed -e "s/'/''/g" -e 's/[\\&|]/\\&/g')
sed "s|$placeholder|$escaped|" "$template" >"$rendered"
exec /bin/alertmanager --config.file="$rendered" "$@"
