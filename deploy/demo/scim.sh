#!/usr/bin/env bash
# idsync demo: sync a small company's directory into a hoop gateway stand-in.
#
# Builds idsync and the gateway stand-in, starts real peers on fixed loopback ports
# (see config/demo.toml): oidc-provider, scim2-server seeded with
# deploy/demo/directory.json, the stand-in and, in front of it, Prism validating every
# request against hoop's published OpenAPI spec. Then, in three acts, it
#   1. runs one sync and shows what the gateway now holds,
#   2. runs the sync again: the gateway is in step, nothing is written,
#   3. removes one person from the SCIM directory (a leaver) and syncs once more:
#      config/demo.toml has deprovision = "deactivate", so they become inactive,
# and stops the peers.
#
# usage: deploy/demo/run [scim]  (from anywhere; needs cargo, python3 with venv, node 20,
#                                npm, curl; the first use installs the peers into .peers/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
CONFIG=config/demo.toml
DIRECTORY=deploy/demo/directory.json
STATE=.peers/demo-state.json
CACHE=/tmp/idsync-demo/cache          # [cache] path in config/demo.toml
CLIENT_SECRET=demo-client-secret      # [source.oidc] client_secret
API_KEY=hpk_idsync_demo_admin_key     # [target] api_key
STANDIN_URL=http://127.0.0.1:47012/api
SCIM_URL=http://127.0.0.1:47011/v2
LEAVER_ID=u034                        # Hugo Martin (sre, dba) in deploy/demo/directory.json
LEAVER_EMAIL=hugo.martin@brightloop.example
TARGET_DIR=${CARGO_TARGET_DIR:-target}
IDSYNC=$TARGET_DIR/debug/idsync
STANDIN=$TARGET_DIR/debug/examples/hoop_standin

stop_peers() { python3 tests/peers/peers.py down "$STATE" || true; }
trap stop_peers EXIT
trap 'exit 130' INT TERM

bold "Building idsync and the gateway stand-in"
cargo build --bin idsync --example hoop_standin

bold "Starting the peers (a leftover demo is stopped first)"
python3 tests/peers/peers.py down "$STATE" 2>/dev/null || true
rm -rf "$CACHE"
python3 tests/peers/peers.py up --out "$STATE" --fixed-ports --no-prism-mock \
    --directory "$DIRECTORY" --client-secret "$CLIENT_SECRET" \
    --api-key "$API_KEY" --standin "$STANDIN"

act_first_sync

prism_log=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["logs"]["prism_proxy"])' "$STATE")
refused=$(grep -c "Request terminated with error" "$prism_log" || true)
echo "Prism validating proxy: $refused of idsync's requests refused (422: breaks hoop's spec) or answered 500 (the answer breaks it); log $prism_log"

show_gateway
act_second_sync_writes_nothing

bold "Act 3, a leaver: $LEAVER_EMAIL ($LEAVER_ID) leaves the SCIM directory"
# scim2-server deletes the user but keeps it in its groups' members: drop it there too
# (PUT of each group), as an IdP would, then DELETE the user.
python3 - "$STATE" "$SCIM_URL" "$LEAVER_ID" <<'PY'
import json, sys, urllib.request
state, scim, file_id = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
uid = state["scim_ids"][file_id]
def call(method, path, body=None):
    req = urllib.request.Request(scim + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/scim+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")
for g in call("GET", "/Groups?count=1000")[1]["Resources"]:
    members = g.get("members") or []
    if any(m.get("value") == uid for m in members):
        g["members"] = [m for m in members if m.get("value") != uid]
        g.pop("meta", None)
        status, _ = call("PUT", f"/Groups/{g['id']}", g)
        print(f"PUT    /v2/Groups/{g['id']} ({g['displayName']}) without it: {status}")
status, _ = call("DELETE", f"/Users/{uid}")
print(f"DELETE /v2/Users/{uid}: {status}")
PY

act_leaver_is_deactivated "$LEAVER_EMAIL"

bold "Stopping the peers"
exit "$status"
