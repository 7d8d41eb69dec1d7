#!/bin/sh
# Scripted polecat like `done-elsewhere`, but its gt done is hand-made and claims `exitGraceOnHost` (a field only the
# gateway may set): sent to the gateway at $OTHER_GATEWAY_URL, which does not supervise the run.
set -eu
mkdir -p work
echo "done by $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
node -e '
const token = require("node:fs").readFileSync(process.env.GT_RUN_TOKEN_FILE, "utf8");
fetch(process.env.OTHER_GATEWAY_URL + "/v1/done", {
  method: "POST",
  headers: { authorization: "Bearer " + token, "content-type": "application/json" },
  body: JSON.stringify({ summary: "forged", exitGraceOnHost: true }),
}).then((r) => process.exit(r.ok ? 0 : 1));
'
