#!/usr/bin/env bash
# SD-GT over NATS with hand-started clients that misbehave (crates/fed/NATS.md, "Heartbeats"
# and "Gone clients in exchanges"). Two runs against the same nats-server:
#
#   never   Fashion-MNIST (2000 images), 40 devices in 5 subnets (two clients per subnet),
#           fed.deadline_seconds = 30, 3 rounds; clients 1-9 started, client 0 never.
#           Prints the server process's seconds, its round_seconds, the lost replies, the
#           test accuracy and the rounds client 1 (client 0's subnet peer) failed.
#   rejoin  synthetic data, 12 devices in 3 subnets, fed.devices_per_client = 2, 60 rounds,
#           `--silence 3`; client 1 killed (SIGKILL) 2 s after it connected and started again
#           5 s later. Prints when, the rounds client 1 failed, the tasks the restarted client
#           answered, round_seconds and the lost replies.
#
#   FERROLAB_NATS_URL=nats://127.0.0.1:4222 FERROLAB_DATA=../shared/data \
#     bench/sdgt_client_faults.sh [FERROLAB_BIN] [OUT_DIR]
set -euo pipefail
BIN=${1:-target/release/ferrolab}
OUT=${2:-$(mktemp -d)}
: "${FERROLAB_NATS_URL:?set FERROLAB_NATS_URL to a nats-server -js}"
mkdir -p "$OUT"
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
summary() {
    python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
s = json.loads(text[text.index("{"):])
print(f"rounds {s['rounds']}, round_seconds {s['round_seconds']:.1f}, lost_devices {s['lost_devices']}, "
      f"gone_contributions {s.get('gone_contributions')}, test_accuracy {s['test_accuracy']:.3f}")
PY
}

cat > "$OUT/never.toml" <<'TOML'
[fed]
rounds = 3
eval_every = 3
checkpoint_every = 0
coopt_every = 0
lr_grid = [0.03]
seeds = 1
deadline_seconds = 30.0
algorithms = ["sdgt"]

[topology]
subnets = 5

[data]
splits = ["sorted"]
val_size = 500
train_limit = 2000
test_limit = 500
TOML
prefix="never$$"
t0=$(now)
"$BIN" fed server --system sdgt --external-clients --config "$OUT/never.toml" --prefix "$prefix" \
    > "$OUT/never.server.json" 2> "$OUT/never.server.log" &
server=$!
pids=()
for k in 1 2 3 4 5 6 7 8 9; do
    "$BIN" fed client --system sdgt --id "$k" --config "$OUT/never.toml" --prefix "$prefix" \
        > /dev/null 2> "$OUT/never.client$k.log" &
    pids+=($!)
done
wait "$server"
echo "never: server process $(since "$t0") s; client 1 failed $(grep -c 'client 1 failed' "$OUT/never.server.log" || true) rounds; $(summary "$OUT/never.server.json")"
wait "${pids[@]}"

cat > "$OUT/rejoin.toml" <<'TOML'
[fed]
rounds = 60
lr_grid = [0.03]
seeds = 1
eval_every = 60
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
prefix="rejoin$$"
t0=$(now)
"$BIN" fed server --system sdgt --external-clients --silence 3 --config "$OUT/rejoin.toml" \
    --prefix "$prefix" > "$OUT/rejoin.server.json" 2> "$OUT/rejoin.server.log" &
server=$!
pids=()
for k in 0 1 2 3 4 5; do
    "$BIN" fed client --system sdgt --id "$k" --config "$OUT/rejoin.toml" --prefix "$prefix" \
        > /dev/null 2> "$OUT/rejoin.client$k.log" &
    pids+=($!)
done
for _ in $(seq 600); do
    grep -q "connected to NATS" "$OUT/rejoin.client1.log" && break
    sleep 0.1
done
sleep 2
kill -9 "${pids[1]}"
killed=$(since "$t0")
sleep 5
"$BIN" fed client --system sdgt --id 1 --config "$OUT/rejoin.toml" --prefix "$prefix" \
    > /dev/null 2> "$OUT/rejoin.client1b.log" &
back=$!
restarted=$(since "$t0")
wait "$server"
done_at=$(since "$t0")
wait "$back"
echo "rejoin: killed at ${killed} s, restarted at ${restarted} s, server done at ${done_at} s;" \
    "client 1 failed $(grep -c 'client 1 failed' "$OUT/rejoin.server.log" || true) rounds; restarted client:" \
    "$(grep -o '[0-9]* tasks answered' "$OUT/rejoin.client1b.log" || echo 'no summary')"; \
    echo "        $(summary "$OUT/rejoin.server.json")"
for i in 0 2 3 4 5; do wait "${pids[$i]}"; done
