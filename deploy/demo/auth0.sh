#!/usr/bin/env bash
# idsync demo with a Auth0 directory, played by the Auth0 test fake on loopback
# (deploy/demo/vendor-fake.bash; config/demo-auth0.toml): a first sync creates the users,
# a second writes nothing, and a leaver is deactivated by the third.
#
# usage: deploy/demo/run auth0   (needs cargo, python3, curl)
set -euo pipefail
KIND=auth0
TITLE=Auth0
. "$(dirname "${BASH_SOURCE[0]}")/vendor-fake.bash"
