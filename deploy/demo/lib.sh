# Shared acts of the demos (deploy/demo/run KIND): sourced by each deploy/demo/KIND.sh,
# which sets IDSYNC, CONFIG, STANDIN_URL and API_KEY, starts its directory and the
# gateway stand-in, and calls these in order. `status` collects the first failure.

status=0

bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Act 1: one sync, then what the gateway holds.
act_first_sync() {
    bold "Act 1, first sync: idsync --config $CONFIG --sync-now (creates the directory's users)"
    local first=0
    "$IDSYNC" --config "$CONFIG" --sync-now || first=$?
    [ "$first" -eq 0 ] || { echo "idsync exited with status $first"; status=$first; }
}

show_gateway() {
    bold "What the gateway holds now (GET $STANDIN_URL/users)"
    curl -sS --fail-with-body -H "Authorization: Bearer $API_KEY" "$STANDIN_URL/users" | python3 -c '
import json, sys
users = sorted(json.load(sys.stdin) or [], key=lambda u: u.get("email", ""))
rows = [("EMAIL", "NAME", "GROUPS", "STATUS")]
rows += [(u.get("email", ""), u.get("name") or "", ",".join(sorted(u.get("groups") or [])), u.get("status", ""))
         for u in users]
widths = [max(len(r[i]) for r in rows) for i in range(4)]
for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
print(f"\n{len(users)} users")
'
}

# Act 2: the same directory again; the gateway is in step, so nothing is created.
act_second_sync_writes_nothing() {
    bold "Act 2, second sync: the gateway is already in step, nothing is written"
    local second=0 out created
    out=$("$IDSYNC" --config "$CONFIG" --sync-now --output json) || second=$?
    echo "$out"
    created=$(printf '%s' "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("created"))' 2>/dev/null || echo "?")
    echo "second run: $created created"
    [ "$second" -eq 0 ] || { echo "idsync exited with status $second"; [ "$status" -ne 0 ] || status=$second; }
    if [ "$created" != "0" ]; then echo "expected 0 created on the second run"; [ "$status" -ne 0 ] || status=1; fi
}

# Act 3 (after the KIND script removed the leaver from its directory): one more
# sync deactivates them, as the demo configs set deprovision = "deactivate".
act_leaver_is_deactivated() {
    local email=$1 third=0 leaver
    bold "Act 3, third sync: the leaver is deactivated (deprovision = \"deactivate\" in $CONFIG)"
    "$IDSYNC" --config "$CONFIG" --sync-now || third=$?
    [ "$third" -eq 0 ] || { echo "idsync exited with status $third"; [ "$status" -ne 0 ] || status=$third; }
    echo
    echo "The leaver in the gateway (GET $STANDIN_URL/users):"
    leaver=$(curl -sS --fail-with-body -H "Authorization: Bearer $API_KEY" "$STANDIN_URL/users" | python3 -c '
import json, sys
found = [u for u in json.load(sys.stdin) or [] if u.get("email") == sys.argv[1]]
for u in found:
    print(u["email"], u.get("name") or "", "groups=" + ",".join(sorted(u.get("groups") or [])),
          "status=" + str(u.get("status")), sep="  ")
if not found:
    print(sys.argv[1], "not found")
' "$email")
    echo "  $leaver"
    case "$leaver" in *status=inactive) ;; *) echo "expected $email to be inactive"; [ "$status" -ne 0 ] || status=1 ;; esac
}
