#!/bin/sh
# Scripted polecat whose first attempt crashes without gt done (saving its run identity so the test can
# replay a late gt done from it); later attempts succeed.
set -eu
case "$GT_RUN_ID" in
  */a1)
    printf 'GT_RUN_ID=%s\nGT_RUN_TOKEN=%s\nGT_GATEWAY_URL=%s\n' "$GT_RUN_ID" "$(cat "$GT_RUN_TOKEN_FILE")" "$GT_GATEWAY_URL" > "$TEST_DIR/first-run.env"
    echo "crashing" >&2
    exit 3
    ;;
esac
exec "$(dirname "$0")/good.sh"
