# Shared by benches/load/run and benches/load/profile (sourced, not run): start and stop a
# release keyplane on loopback with the embedded defaults, call its API, drive it with wrk.
# Expects BIN, WORK, OUT, THREADS, CONNECTIONS, DURATION to be set by the caller.

# Start the server on a free port; sets PID, URL and TOKEN.
start() {
  KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS=0 RUST_LOG=${RUST_LOG:-warn} \
    "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --policies-dir policies >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    URL=$(sed -n 's/^keyplane: listening on //p' "$WORK/server.log" | head -1)
    [ -n "$URL" ] && break
    sleep 0.1
  done
  [ -n "$URL" ] || { cat "$WORK/server.log"; exit 1; }
  TOKEN=$(tr -d '\n' < "$WORK/data/admin.token")
}

stop() { kill -TERM "$PID"; wait "$PID" || true; }

# api <operation> <json body>: one call with the admin token; prints the answer.
api() { curl -sf --cacert "$WORK/data/tls/cert.pem" -H "Authorization: Bearer $TOKEN" \
          -H 'Content-Type: application/json' -d "$2" "${URL/127.0.0.1/localhost}/v1/$1"; }

# json_field <name>: one field of the JSON answer on stdin.
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# One wrk run; appends "<name> <req/s> <p50 ms> <p99 ms> <non-2xx>" to $OUT.
load() {
  local name=$1 path=$2 body=${3:-}
  local script=()
  [ -n "$body" ] && script=(-s benches/load/post.lua)
  wrk_row "$name" "$URL$path" "$body" "${script[@]}"
}

# load_batch <name> <path> <body>: one wrk run of a batch (benches/load/batch.lua: an answer
# holding an item's error counts as non-2xx). The row's name ends in its item count
# (batch-encrypt-100), which report.py multiplies requests/s by.
load_batch() {
  wrk_row "$1" "$URL$2" "$3" -s benches/load/batch.lua
}

# batch_items <count> <json item>: a JSON array of <count> copies of the item.
batch_items() { python3 -c 'import sys; print("[" + ",".join([sys.argv[2]] * int(sys.argv[1])) + "]")' "$1" "$2"; }

# load_aws <name> <body> <target>: one wrk run of an AWS KMS request, signed once with the
# access key AWS_KEY_ID/AWS_SECRET (benches/load/sign-aws.py).
load_aws() {
  local name=$1 body=$2 target=$3
  local headers
  headers=$(.venv/bin/python benches/load/sign-aws.py "$URL/" "$target" "$body" "$AWS_KEY_ID" "$AWS_SECRET")
  KP_HEADERS=$headers wrk_row "$name" "$URL/" "$body" -s benches/load/aws.lua
}

# wrk_row <name> <url> <body> [wrk script args]: run wrk, append its row to $OUT.
wrk_row() {
  local name=$1 url=$2 body=$3
  shift 3
  local r
  r=$(KP_BODY=$body KP_TOKEN=$TOKEN wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$r")
  p50=$(awk '$1=="50%" {print $2}' <<<"$r")
  p99=$(awk '$1=="99%" {print $2}' <<<"$r")
  errs=$(awk '/non_2xx/ {print $2}' <<<"$r"); errs=${errs:-0}
  echo "$name $rps $(ms "$p50") $(ms "$p99") $errs" | tee -a "$OUT"
}

# ms <wrk duration>: the duration in milliseconds.
ms() { python3 -c "import re,sys; v=sys.argv[1]; n=float(re.match(r'[0-9.]+',v).group()); u=v[len(re.match(r'[0-9.]+',v).group()):]; print(round(n*{'us':0.001,'ms':1,'s':1000}[u],3))" "$1"; }
