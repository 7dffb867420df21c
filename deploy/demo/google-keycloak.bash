# What the Google and Keycloak demos share (deploy/demo/google.sh, keycloak.sh):
# building the binaries and starting the stand-ins as background processes.

TARGET_DIR=${CARGO_TARGET_DIR:-target}
IDSYNC=$TARGET_DIR/debug/idsync
API_KEY=hpk_idsync_demo_admin_key     # [target] api_key
STANDIN_URL=http://127.0.0.1:47012/api
CONTROL=127.0.0.1:47022
LEAVER_EMAIL=amara.tanaka33@example.com   # the 34th person of the generated organisation
pids=()

stop_all() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_all EXIT
trap 'exit 130' INT TERM

build_all() {
    bold "Building idsync, the gateway stand-in and the vendor stand-in"
    cargo build --bin idsync --example hoop_standin --example google_keycloak_standin
}

# start LOG COMMAND...: runs COMMAND in the background, waits for its "listening" line.
start() {
    local log=$1; shift
    "$@" >"$log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 100); do
        if grep -q "listening on" "$log"; then grep -m1 "listening on" "$log"; return 0; fi
        sleep 0.1
    done
    echo "$* did not start; its log:"; cat "$log"; exit 1
}

start_gateway() {
    start "$1/hoop_standin.log" "$TARGET_DIR/debug/examples/hoop_standin" \
        --listen 127.0.0.1:47012 --api-key "$API_KEY" --quiet
}

act_leaver_leaves() {
    bold "Act 3, a leaver: $LEAVER_EMAIL leaves the directory"
    curl -sS --fail-with-body -X POST "http://$CONTROL/leave?email=$LEAVER_EMAIL"
    act_leaver_is_deactivated "$LEAVER_EMAIL"
}
