#!/usr/bin/env bash
# idsync demo against a fake Google Workspace: the service account's JWT bearer
# grant, then the Directory API's users, groups and members (nested groups
# flattened), every directory request checked by Prism against Google's OpenAPI
# document (tests/peers/vendor-openapi/google/). The three acts of lib.sh: a first
# sync creates the people, a second writes nothing, a leaver is deactivated.
#
# usage: deploy/demo/run google  (needs cargo, python3 with venv, node 20, npm, curl;
#                                 the first use installs Prism into .peers/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
. deploy/demo/google-keycloak.bash
CONFIG=deploy/demo/google.toml
WORK=/tmp/idsync-demo-google          # [source.google] credentials_file and [cache] path

build_all
bold "Starting the fake Google Workspace, Prism in front of it, and the gateway stand-in"
PRISM=${IDSYNC_PEERS_DIR:-$(pwd)/.peers}/node/node_modules/.bin/prism
[ -x "$PRISM" ] || python3 tests/peers/peers.py install
rm -rf "$WORK" && mkdir -p "$WORK"
start "$WORK/google.log" "$TARGET_DIR/debug/examples/google_keycloak_standin" google \
    --listen 127.0.0.1:47020 --control "$CONTROL" --key-file "$WORK/google-sa.json"
"$PRISM" proxy --errors -h 127.0.0.1 -p 47023 \
    tests/peers/vendor-openapi/google/directory.json http://127.0.0.1:47020 >"$WORK/prism.log" 2>&1 &
pids+=("$!")
# Listening is enough: a request to a path outside the document would count as refused.
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/47023) 2>/dev/null && break; sleep 0.2; done
start_gateway "$WORK"

act_first_sync
refused=$(grep -c "Request terminated with error" "$WORK/prism.log" || true)
echo "Prism validating proxy: $refused of idsync's requests refused (422: breaks Google's document) or answered 500; log $WORK/prism.log"
[ "$refused" -eq 0 ] || status=1
show_gateway
act_second_sync_writes_nothing
act_leaver_leaves
exit "$status"
