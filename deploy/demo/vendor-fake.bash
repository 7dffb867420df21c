# The demo of a vendor directory played by its test fake (deploy/demo/jumpcloud.sh,
# deploy/demo/auth0.sh source this with KIND and TITLE set): the fake as a process
# (tests/standin/vendor_standin.rs), seeded with deploy/demo/directory.json, and the hoop
# gateway stand-in, on fixed loopback ports (config/demo-$KIND.toml). Three acts: a first
# sync creates the users, a second writes nothing, and a leaver removed from the
# directory is deactivated by the third. Not a kind itself (it does not end in .sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
CONFIG=config/demo-$KIND.toml
CACHE=/tmp/idsync-demo-$KIND/cache     # [cache] path in $CONFIG
SECRET=$(sed -n 's/^\(api_key\|client_secret\) = "\(demo-[^"]*\)"/\2/p' "$CONFIG")
API_KEY=hpk_idsync_demo_admin_key      # [target] api_key
STANDIN_URL=http://127.0.0.1:47012/api
CONTROL_URL=http://127.0.0.1:47021
LEAVER_ID=u034                         # Hugo Martin (sre, dba) in deploy/demo/directory.json
LEAVER_EMAIL=hugo.martin@brightloop.example
TARGET_DIR=${CARGO_TARGET_DIR:-target}
IDSYNC=$TARGET_DIR/debug/idsync
pids=()

stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop EXIT
trap 'exit 130' INT TERM

bold "Building idsync and the two stand-ins"
cargo build --bin idsync --example hoop_standin --example vendor_standin

bold "Starting the $TITLE fake and the gateway stand-in"
rm -rf "$CACHE"
"$TARGET_DIR/debug/examples/vendor_standin" --kind "$KIND" --listen 127.0.0.1:47020 \
    --control 127.0.0.1:47021 --directory deploy/demo/directory.json --secret "$SECRET" &
pids+=($!)
"$TARGET_DIR/debug/examples/hoop_standin" --listen 127.0.0.1:47012 --api-key "$API_KEY" --quiet &
pids+=($!)
for port in 47020 47021 47012; do
    for _ in $(seq 50); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

act_first_sync
show_gateway
act_second_sync_writes_nothing

bold "Act 3, a leaver: $LEAVER_EMAIL ($LEAVER_ID) leaves the $TITLE directory"
curl -sS --fail-with-body -X POST "$CONTROL_URL/leave/$LEAVER_ID"
act_leaver_is_deactivated "$LEAVER_EMAIL"

bold "Stopping the stand-ins"
exit "$status"
