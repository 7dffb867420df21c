# The Okta and Entra ID demos (deploy/demo/run okta|entra): the fake vendor directory
# as a process (okta_entra_standin, the in-process test fake: 40 people in 4 teams; Entra
# nests two teams in "engineering" and that in "company"), the gateway stand-in, and
# the three acts of lib.sh. Sourced by okta.sh and entra.sh with KIND set; needs cargo,
# python3 and curl.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
DEMO=/tmp/idsync-demo-$KIND
CONFIG=$DEMO/idsync.toml
API_KEY=hpk_idsync_demo_admin_key
TARGET_DIR=${CARGO_TARGET_DIR:-target}
IDSYNC=$TARGET_DIR/debug/idsync

stop_all() {
    exec 3>&- 2>/dev/null || true
    for pid in ${STANDIN_PID:-} ${VENDOR_PID:-}; do kill "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# The URL a stand-in prints on its first line (`listening on URL`).
listening_url() {
    local log=$1
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$log" 2>/dev/null; then
            sed -n 's/^listening on \([^ ]*\).*/\1/p' "$log" | head -1
            return
        fi
        sleep 0.1
    done
    echo "no stand-in came up; see $log" >&2
    exit 1
}

bold "Building idsync and the stand-ins"
cargo build --bin idsync --example hoop_standin --example okta_entra_standin

bold "Starting the fake $KIND directory and the gateway stand-in"
rm -rf "$DEMO" && mkdir -p "$DEMO"
"$TARGET_DIR/debug/examples/hoop_standin" --listen 127.0.0.1:0 --api-key "$API_KEY" --quiet \
    >"$DEMO/standin.log" 2>&1 &
STANDIN_PID=$!
mkfifo "$DEMO/commands"
"$TARGET_DIR/debug/examples/okta_entra_standin" "$KIND" --users 40 --groups 4 \
    <"$DEMO/commands" >"$DEMO/vendor.log" 2>&1 &
VENDOR_PID=$!
exec 3>"$DEMO/commands"
STANDIN_URL=$(listening_url "$DEMO/standin.log")
VENDOR_URL=$(listening_url "$DEMO/vendor.log")
echo "gateway stand-in: $STANDIN_URL; fake $KIND: $VENDOR_URL"
SOURCE_TABLE=${SOURCE_TABLE//\$VENDOR_URL/$VENDOR_URL}

cat >"$CONFIG" <<TOML
[source]
kind = "$KIND"
url = "$VENDOR_URL"
incremental = true
$SOURCE_TABLE
[target]
url = "$STANDIN_URL"
api_key = "$API_KEY"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 5
[cache]
path = "$DEMO/cache"
TOML
echo "config: $CONFIG"

bold "check-config --connect: a token from the fake, one user read"
"$IDSYNC" --config "$CONFIG" check-config --connect || status=$?

act_first_sync
show_gateway
act_second_sync_writes_nothing

bold "Act 3, a leaver: $LEAVER_EMAIL ($LEAVER_ID) is deleted from the $KIND directory"
echo "delete $LEAVER_ID" >&3
act_leaver_is_deactivated "$LEAVER_EMAIL"
exit "$status"
