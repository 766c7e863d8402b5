# Shared by scripts/demo, scripts/test, scripts/bench and .ci/run (sourced, not run).

# One build folder for the demo, the tests, the benchmark and CI unless CARGO_TARGET_DIR
# says otherwise: whichever runs first warms the others.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/feedback-webhooks/target}
mkdir -p "$CARGO_TARGET_DIR"

# Says so in one line before a cold build: RocksDB and librdkafka are compiled from source.
announce_build() {
  if [ ! -e "$CARGO_TARGET_DIR/debug/feedback-webhooks" ]; then
    echo "first build in $CARGO_TARGET_DIR: compiles RocksDB and librdkafka from source, about 35-45 minutes on 2 cores (later builds take seconds)"
  fi
}

# wait_http URL WHAT LOG SECONDS [curl options...]: waits until URL answers 2xx (by its
# HTTP code), or stops the script with WHAT, the last answer and the tail of LOG.
wait_http() {
  local url=$1 what=$2 log=$3 seconds=$4
  shift 4
  local started=$SECONDS said=0 answer code body
  body=$(mktemp)
  while true; do
    code=$(curl -sS --max-time 5 -o "$body" -w '%{http_code}' "$@" "$url" 2>/dev/null) || code=000
    case $code in
      2??) rm -f "$body"; return 0 ;;
      000) answer="no answer" ;;
      *) answer="HTTP $code: $(head -c 200 "$body" | tr -d '\n')" ;;
    esac
    if [ $((SECONDS - started)) -ge "$seconds" ]; then
      echo "error: $what was not ready within ${seconds} s ($url: $answer)" >&2
      echo "--- last lines of $log ---" >&2
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    # Catching up with a large config topic takes a while: say so now and then.
    if [ $((SECONDS - started)) -ge $((said + 10)) ]; then
      said=$((SECONDS - started))
      echo "waiting for $what to catch up and get ready (${said} s; $answer)"
    fi
    sleep 0.2
  done
}

# ports_free PORT...: stops the script when one is in use (another demo still running).
ports_free() {
  local port
  for port in "$@"; do
    if python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$port"; then
      continue
    fi
    echo "error: port $port on 127.0.0.1 is in use: another scripts/demo is still running (scripts/demo --keep ends with Ctrl-C in its terminal), or another program holds it" >&2
    exit 1
  done
}
