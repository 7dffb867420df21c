#!/usr/bin/env bash
# idsync demo with a JumpCloud directory, played by the JumpCloud test fake on loopback
# (deploy/demo/vendor-fake.bash; config/demo-jumpcloud.toml): a first sync creates the users,
# a second writes nothing, and a leaver is deactivated by the third.
#
# usage: deploy/demo/run jumpcloud   (needs cargo, python3, curl)
set -euo pipefail
KIND=jumpcloud
TITLE=JumpCloud
. "$(dirname "${BASH_SOURCE[0]}")/vendor-fake.bash"
