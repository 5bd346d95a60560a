#!/usr/bin/env bash
# CPU per request, taken apart: one wrk run against a server that is already running,
# and where the machine's CPU time went per request. The rate alone does not say
# whether a change removed work from the server itself or the scripts just ran faster
# that minute; this does, within the noise of one run.
#
#   benches/cpu.sh PID URL [SECONDS]     # PID: the server process (for nginx or lighttpd,
#                                        # any process whose children are the scripts)
#
# Prints requests/s and, in µs per request:
#   busy   the machine's busy CPU time (/proc/stat: user, nice, system, irq, softirq)
#   self   PID's own CPU, all its threads (/proc/PID/stat utime + stime)
#   kids   its children that it reaped during the run (cutime + cstime: CGI scripts)
#   wrk    the load generator's
#   other  the rest (nginx workers in front, the kernel's work for nobody in particular)
# and the idle and steal shares of the run. Counts are in clock ticks (10 ms), so runs
# shorter than a few seconds are coarse.
set -euo pipefail

if (($# < 2)); then
    sed -n '2,18p' "$0" >&2
    exit 2
fi
PID=$1
URL=$2
SECONDS_RUN=${3:-5}
source "$(dirname "$0")/lib.sh"
need wrk
[ -r "/proc/$PID/stat" ] || { echo "no process $PID" >&2; exit 2; }

# Fields after the command name (which may hold spaces): utime is the 12th, then stime,
# cutime, cstime.
process() { sed 's/.*) //' "/proc/$PID/stat" | awk '{print $12+$13, $14+$15}'; }
ticks_of() { # "0m1.230s" -> ticks (1/100 s)
    awk -v t="$1" 'BEGIN { split(t, a, "m"); sub("s", "", a[2]); printf "%d", (a[1] * 60 + a[2]) * 100 }'
}

read -r busy0 idle0 steal0 < <(cpu_ticks)
read -r self0 kids0 < <(process)
out=$(
    wrk -t2 -c16 -d"${SECONDS_RUN}s" "$URL"
    times
)
read -r busy1 idle1 steal1 < <(cpu_ticks)
read -r self1 kids1 < <(process)

requests=$(awk '/requests in/ {print $1}' <<<"$out")
rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
# The second line of `times`: user and system time of the shell's children (wrk).
read -r wrk_user wrk_sys < <(tail -1 <<<"$out")
wrk=$(($(ticks_of "$wrk_user") + $(ticks_of "$wrk_sys")))
if [ -z "$requests" ] || [ "$requests" = 0 ]; then
    echo "wrk served no requests:" >&2
    echo "$out" >&2
    exit 1
fi
awk -v n="$requests" -v rate="$rate" -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) \
    -v st=$((steal1 - steal0)) -v s=$((self1 - self0)) -v k=$((kids1 - kids0)) -v w="$wrk" 'BEGIN {
    us = 10000 / n   # one tick is 10 ms = 10000 µs
    printf "req/s %8.0f  busy %6.1f  self %6.1f  kids %6.1f  wrk %5.1f  other %5.1f  (µs/request)  idle %4.1f%%  steal %4.1f%%\n",
        rate, b * us, s * us, k * us, w * us, (b - s - k - w) * us, 100 * i / (b + i + st), 100 * st / (b + i + st)
}'
