# Shared by the benchmarks: wrk, a release build, one atrest server on a throw-away data
# directory with vault "bench", a data-plane token, and a wrk runner. Source it from a
# benchmark after `set -euo pipefail`.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
grep -Eq '^127\.0\.0\.1[[:space:]]+bench\.vault\.localhost' /etc/hosts || echo "127.0.0.1 bench.vault.localhost" >> /etc/hosts

cargo build --release --locked -q -p atrest
bin=target/release/atrest

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Azure's per-vault limits (4,000 secret reads per 10 s) would cap the figures; lift them.
unlimited=secrets=4000000000,keys=4000000000,key-create=4000000000,hsm-keys=4000000000
RUST_LOG=warn "$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 --purge-interval 1h \
    --throttle-limits "$unlimited" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 300); do [ -f "$work/data/env" ] && break; sleep 0.1; done
# shellcheck disable=SC1091
source "$work/data/env"
port=${ATREST_ENDPOINT##*:}
vault="https://bench.vault.localhost:$port"
"$bin" keyvault create --name bench --location westeurope >/dev/null
# `data_token` prints a data-plane token from the server whose env is loaded.
data_token() {
    curl -s --cacert "$ATREST_CA" "$ATREST_ENDPOINT/adfs/oauth2/v2.0/token" \
        --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$AZURE_CLIENT_ID" \
        --data-urlencode "client_secret=$AZURE_CLIENT_SECRET" \
        --data-urlencode "scope=https://vault.localhost:${ATREST_ENDPOINT##*:}/.default" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
auth="Authorization: Bearer $(data_token)"

# `measure CONNECTIONS DURATION WRK-ARGS…` prints "requests/s p99_ms" for one wrk run and
# fails if any response was not 2xx.
measure() {
    local conns=$1 duration=$2
    shift 2
    wrk -t2 -c"$conns" -d"$duration" --latency "$@" | awk '
        /Requests\/sec/ { rps = $2 }
        $1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; p99 = v }
        /Non-2xx/ { bad = $NF }
        END { if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 }; printf "%.0f %.2f\n", rps, p99 }'
}

# `post_script FILE JSON` writes a wrk script that POSTs JSON.
post_script() {
    cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
LUA
}

# `ratio A B` prints A / B to two places.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# `median N…` prints the median of its arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
