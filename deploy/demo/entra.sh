#!/usr/bin/env bash
# idsync demo against the fake Microsoft Graph (a client secret; delta reads between
# full ones): see deploy/demo/okta-entra-fake.bash.
set -euo pipefail
KIND=entra
# authority: the fake serves the token endpoint too; set after it starts.
SOURCE_TABLE='[source.entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "66666666-7777-8888-9999-000000000000"
client_secret = "entra-test-secret"
authority = "$VENDOR_URL"'
LEAVER_ID=00000000-0000-4000-8000-000000000003
LEAVER_EMAIL=u0003@contoso.com
. "$(dirname "${BASH_SOURCE[0]}")/okta-entra-fake.bash"
