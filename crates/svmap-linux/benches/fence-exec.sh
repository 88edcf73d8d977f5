#!/usr/bin/env bash
# The cost of the fence per exec and per process, for svmap run's two
# methods against no fence. Usage (from the repository root):
#
#   cargo build --release && crates/svmap-linux/benches/fence-exec.sh [N] [BITS]
#
# Per exec: one shell runs /bin/true N times (default 200), unfenced, under
# svmap run (traced: every exec stops, is fenced and resumed) and under
# svmap run --preload (the library's constructor fences every image); the
# difference of the times, divided by N, is the cost of one fenced exec:
# CPU time (user + system of every process, the tracer's included) and wall
# time. Best of 5 runs each, to damp a loaded machine.
#
# Per process: the resident memory (VmRSS) of `sleep` unfenced and fenced
# by each method, and that of the svmap run process itself (the tracer,
# one per run, not per process).
set -euo pipefail
n=${1:-200}
bits=${2:-40}
svmap=${SVMAP:-target/release/svmap}
export SVMAP_FENCE_LIB=${SVMAP_FENCE_LIB:-$(dirname "$svmap")/libsvmap_fence.so}
loop="i=0; while [ \$i -lt $n ]; do /bin/true; i=\$((i+1)); done"

best() { # best of 5 runs of "$@": "CPU WALL" in microseconds (CPU: user +
          # system time of every process, the tracer's included; on a loaded
          # machine the wall time also measures the scheduler)
    local bc= bw=
    for _ in 1 2 3 4 5; do
        local t
        t=$( { TIMEFORMAT='%3U %3S %3R'; time "$@" >/dev/null 2>&1; } 2>&1 )
        read -r u s r <<<"$t"
        local c w
        c=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%d", (u + s) * 1e6 }')
        w=$(awk -v r="$r" 'BEGIN { printf "%d", r * 1e6 }')
        if [ -z "$bc" ] || [ "$c" -lt "$bc" ]; then bc=$c; fi
        if [ -z "$bw" ] || [ "$w" -lt "$bw" ]; then bw=$w; fi
    done
    echo "$bc $bw"
}

read -r plain_c plain_w < <(best sh -c "$loop")
read -r traced_c traced_w < <(best "$svmap" run --va-bits "$bits" -- sh -c "$loop")
read -r preload_c preload_w < <(best "$svmap" run --va-bits "$bits" --preload -- sh -c "$loop")
echo "exec cost, $n x /bin/true from one shell, best of 5, microseconds per exec:"
printf '  %-8s CPU %6d (+%5d)   wall %6d (+%5d)\n' \
    none $((plain_c / n)) 0 $((plain_w / n)) 0 \
    traced $((traced_c / n)) $(((traced_c - plain_c) / n)) $((traced_w / n)) $(((traced_w - plain_w) / n)) \
    preload $((preload_c / n)) $(((preload_c - plain_c) / n)) $((preload_w / n)) $(((preload_w - plain_w) / n))

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sample() { # VmRSS (KiB) of the sleep started by "$@", and of "$@"'s own process
    "$@" sleep 3 &
    local top=$!
    sleep 1
    local s
    s=$(pgrep -n -x sleep -P "$top" || echo "$top")
    echo "$(rss "$s") $(rss "$top")"
    wait "$top"
}
read -r none_rss _ < <(sample env)
read -r traced_rss tracer_rss < <(sample "$svmap" run --va-bits "$bits" --)
read -r preload_rss _ < <(sample "$svmap" run --va-bits "$bits" --preload --)
echo "resident memory of 'sleep' (KiB): none $none_rss, traced $traced_rss," \
    "preload $preload_rss; the tracer (svmap run, one per run): $tracer_rss"
