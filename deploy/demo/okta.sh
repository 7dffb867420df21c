#!/usr/bin/env bash
# idsync demo against the fake Okta org (an API token; incremental reads between
# full ones): see deploy/demo/okta-entra-fake.bash.
set -euo pipefail
KIND=okta
SOURCE_TABLE='[source.okta]
api_token = "00okta-test-api-token"'
LEAVER_ID=00u0000003
LEAVER_EMAIL=u0003@example.com
. "$(dirname "${BASH_SOURCE[0]}")/okta-entra-fake.bash"
