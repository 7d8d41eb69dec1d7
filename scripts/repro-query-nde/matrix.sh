#!/bin/bash
# usage: ./matrix.sh <tag> [n]   (env passed through: QUERY SIG MAX_CACHED STICKY_S2S PRE_GAP_MS)
cd "$(dirname "$0")"; tag=$1; n=${2:-1}
mkdir -p runs
for i in $(seq 1 $n); do
  t="$tag-$i"
  ADDR=${ADDR:-127.0.0.1:7299} node --import tsx driver.ts "$t" > "runs/$t.log" 2>&1
  r=$(node --import tsx replay.ts "runs/$t.json" 2>&1 | grep -E 'REPLAY' | cut -c1-400)
  res=$(grep 'result:' "runs/$t.log" | sed 's/.*result: //')
  q=$(grep -E 'query\(' "runs/$t.log" | sed 's/.*query/query/' | cut -c1-140)
  echo "$t | live=$res | $q | $r" | tee -a runs/SUMMARY.txt
done
