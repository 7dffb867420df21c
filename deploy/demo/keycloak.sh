#!/usr/bin/env bash
# idsync demo against a fake Keycloak realm: OIDC discovery and client credentials,
# then the admin REST API's users (first/max), group tree (subgroups paged as in
# Keycloak 23+) and members, groups named by path with inherit_parent_groups. The
# three acts of lib.sh: a first sync creates the people, a second writes nothing,
# a leaver is deactivated.
#
# usage: deploy/demo/run keycloak  (needs cargo and curl)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
. deploy/demo/google-keycloak.bash
CONFIG=deploy/demo/keycloak.toml
WORK=/tmp/idsync-demo-keycloak        # [cache] path

build_all
bold "Starting the fake Keycloak and the gateway stand-in"
rm -rf "$WORK" && mkdir -p "$WORK"
start "$WORK/keycloak.log" "$TARGET_DIR/debug/examples/google_keycloak_standin" keycloak \
    --listen 127.0.0.1:47021 --control "$CONTROL"
start_gateway "$WORK"

act_first_sync
show_gateway
act_second_sync_writes_nothing
act_leaver_leaves
exit "$status"
