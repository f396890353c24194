#!/usr/bin/env bash
# SD-GT over NATS with a client that dies mid-run (crates/fed/NATS.md, "Gone clients in
# exchanges"): 12 devices in 3 subnets, two clients per subnet (fed.devices_per_client = 2),
# synthetic data, 200 rounds. Runs the job twice against the same nats-server: every client
# alive, then client 1 killed (SIGKILL) KILL_AFTER seconds in. Prints, per run, the server's
# round_seconds and seconds per round, the rounds client 1 failed and the rounds its subnet
# peer (client 0) failed.
#
#   FERROLAB_NATS_URL=nats://127.0.0.1:4222 bench/sdgt_gone_client.sh [FERROLAB_BIN] [OUT_DIR]
set -euo pipefail
BIN=${1:-target/release/ferrolab}
OUT=${2:-$(mktemp -d)}
KILL_AFTER=${KILL_AFTER:-8}
: "${FERROLAB_NATS_URL:?set FERROLAB_NATS_URL to a nats-server -js}"
mkdir -p "$OUT"
cat > "$OUT/job.toml" <<'TOML'
[fed]
rounds = 200
lr_grid = [0.03]
seeds = 1
eval_every = 5
checkpoint_every = 0
coopt_every = 0
devices_per_client = 2
deadline_seconds = 60
algorithms = ["sdgt"]

[topology]
devices = 12
subnets = 3

[data]
dataset = "synthetic"
splits = ["sorted"]
val_size = 500
TOML
run() {
    local tag=$1 kill=$2
    local prefix="gone${tag}$$"
    "$BIN" fed server --system sdgt --config "$OUT/job.toml" --external-clients \
        --prefix "$prefix" > "$OUT/$tag.server.log" 2>&1 &
    local server=$!
    sleep 2
    local pids=()
    for k in 0 1 2 3 4 5; do
        "$BIN" fed client --system sdgt --id "$k" --config "$OUT/job.toml" --prefix "$prefix" \
            > "$OUT/$tag.client$k.log" 2>&1 &
        pids+=($!)
    done
    if [ "$kill" = yes ]; then
        sleep "$KILL_AFTER"
        kill -9 "${pids[1]}" 2> /dev/null || true
    fi
    wait "$server"
    wait "${pids[@]}" 2> /dev/null || true
    python3 - "$OUT/$tag.server.log" "$tag" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
summary = json.loads(text[text.index("\n{") + 1:])
secs, rounds = summary["round_seconds"], summary["rounds"]
failed = lambda c: len(re.findall(rf"client {c} failed", text))
print(f"{sys.argv[2]}: {rounds} rounds in {secs:.1f} s ({secs / rounds:.2f} s per round); "
      f"client 1 failed {failed(1)} rounds, client 0 (its subnet peer) {failed(0)}; "
      f"{len(re.findall('mixed its devices around', text))} replies mixed around gone devices")
PY
}
run alive no
run killed yes
