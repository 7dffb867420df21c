#!/usr/bin/env bash
# idsync demo against OpenLDAP: the same 34 people and 8 teams as the SCIM demo
# (deploy/demo/directory.json), loaded into a throwaway slapd with the syncprov
# overlay, read over StartTLS with incremental reads (config/demo-ldap.toml):
#   1. the first sync reads everything and creates the users,
#   2. the second asks slapd only for what changed (nothing) and writes nothing,
#   3. a leaver is deleted with ldapdelete and the third sync deactivates them.
#
# usage: deploy/demo/run ldap     (needs cargo, python3, openssl, curl and Debian's
#                                  slapd and ldap-utils: apt-get install slapd ldap-utils)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/demo/lib.sh
CONFIG=config/demo-ldap.toml
DIRECTORY=deploy/demo/directory.json
WORK=/tmp/idsync-demo-ldap            # the paths in config/demo-ldap.toml
API_KEY=hpk_idsync_demo_admin_key     # [target] api_key
STANDIN_URL=http://127.0.0.1:47022/api
LDAP_URL=ldap://127.0.0.1:47021
SUFFIX=dc=brightloop,dc=example
ADMIN_DN=cn=admin,$SUFFIX ADMIN_PW=demo-admin-secret
BIND_PW=demo-bind-secret              # of cn=idsync, config/demo-ldap.toml's bind_dn
LEAVER_EMAIL=hugo.martin@brightloop.example
TARGET_DIR=${CARGO_TARGET_DIR:-target}
IDSYNC=$TARGET_DIR/debug/idsync
STANDIN=$TARGET_DIR/debug/examples/hoop_standin

for tool in /usr/sbin/slapd ldapadd ldapdelete openssl; do
    command -v "$tool" >/dev/null || { echo "deploy/demo/run ldap: $tool is missing (apt-get install slapd ldap-utils openssl)" >&2; exit 2; }
done

pids=()
stop_peers() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_peers EXIT
trap 'exit 130' INT TERM

bold "Building idsync and the gateway stand-in"
cargo build --bin idsync --example hoop_standin

bold "Starting slapd on $LDAP_URL with the 34 people of $DIRECTORY"
[ ! -f "$WORK/slapd.pid" ] || kill "$(cat "$WORK/slapd.pid")" 2>/dev/null || true
rm -rf "$WORK" && mkdir -p "$WORK/db"
printf '%s' "$BIND_PW" > "$WORK/bind_password" && chmod 600 "$WORK/bind_password"
(cd "$WORK" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=idsync demo CA" 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null &&
    printf 'subjectAltName=IP:127.0.0.1\n' > san.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null)
cat > "$WORK/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
moduleload refint
pidfile $WORK/slapd.pid
TLSCACertificateFile $WORK/ca.pem
TLSCertificateFile $WORK/server.pem
TLSCertificateKeyFile $WORK/server.key
database mdb
suffix "$SUFFIX"
rootdn "$ADMIN_DN"
rootpw $ADMIN_PW
directory $WORK/db
index entryCSN,entryUUID eq
limits dn.exact="cn=idsync,$SUFFIX" size=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
overlay refint
refint_attributes member
overlay syncprov
syncprov-sessionlog 1000
CONF
/usr/sbin/slapd -d 0 -h "$LDAP_URL/" -f "$WORK/slapd.conf" 2> "$WORK/slapd.log" &
pids+=($!)
"$STANDIN" --listen 127.0.0.1:47022 --api-key "$API_KEY" --quiet &
pids+=($!)
for _ in $(seq 100); do ldapwhoami -x -H "$LDAP_URL" -D "$ADMIN_DN" -w "$ADMIN_PW" >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$DIRECTORY" "$SUFFIX" "$BIND_PW" > "$WORK/directory.ldif" <<'PY'
import json, sys
directory, suffix, bind_pw = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
print(f"dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\no: Brightloop\ndc: brightloop\n")
for ou in ("people", "groups"):
    print(f"dn: ou={ou},{suffix}\nobjectClass: organizationalUnit\nou: {ou}\n")
print(f"dn: cn=idsync,{suffix}\nobjectClass: person\ncn: idsync\nsn: idsync\nuserPassword: {bind_pw}\n")
dns = {}
for u in directory["users"]:
    dn = dns[u["id"]] = f"uid={u['userName']},ou=people,{suffix}"
    name = u.get("name", {})
    mail = next((e["value"] for e in u.get("emails", []) if e.get("primary")), "")
    state = "staff" if u.get("active", True) else "inactive"
    print(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {u['userName']}\ncn: {u['displayName']}\n"
          f"sn: {name.get('familyName') or u['userName']}\ngivenName: {name.get('givenName', '')}\n"
          f"displayName: {u['displayName']}\nmail: {mail}\nemployeeType: {state}\n")
for g in directory["groups"]:
    members = [dns[m["value"]] for m in g.get("members", []) if m["value"] in dns]
    if members:
        print(f"dn: cn={g['displayName']},ou=groups,{suffix}\nobjectClass: groupOfNames\ncn: {g['displayName']}")
        print("".join(f"member: {m}\n" for m in members))
PY
ldapadd -x -H "$LDAP_URL" -D "$ADMIN_DN" -w "$ADMIN_PW" -f "$WORK/directory.ldif" >/dev/null
echo "loaded $(grep -c '^dn: uid=' "$WORK/directory.ldif") people and $(grep -c '^dn: cn=.*ou=groups' "$WORK/directory.ldif") groups"

act_first_sync
show_gateway
act_second_sync_writes_nothing

leaver_dn=$(ldapsearch -x -LLL -H "$LDAP_URL" -D "$ADMIN_DN" -w "$ADMIN_PW" -b "ou=people,$SUFFIX" "(mail=$LEAVER_EMAIL)" 1.1 | sed -n 's/^dn: //p')
bold "Act 3, a leaver: ldapdelete \"$leaver_dn\" (refint drops it from its groups too)"
ldapdelete -x -H "$LDAP_URL" -D "$ADMIN_DN" -w "$ADMIN_PW" "$leaver_dn"

act_leaver_is_deactivated "$LEAVER_EMAIL"

bold "Stopping slapd and the stand-in"
exit "$status"
