#!/usr/bin/env bash
# Run the test suite while busy processes keep every core loaded (make test-loaded).
#
#   scripts/test_loaded.sh [pytest arguments]      e.g. test/test_faults_learner.py -x
#
# TGRPO_LOAD_PROCS busy processes (default: 2, one per core of the 2-core reference
# machine) spin in pure Python at normal priority for the whole run, as a second
# job (bench/success.py, a compile) would; the suite must pass all the same, since
# its tests wait for events, never for a share of frames or a time budget
# (docs/testing.md). The loaders are stopped however the run ends; the exit status
# is pytest's.
set -u
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/env.sh

procs=${TGRPO_LOAD_PROCS:-2}
if ! [[ $procs =~ ^[0-9]+$ ]]; then
    echo "test_loaded.sh: TGRPO_LOAD_PROCS must be a whole number, got '$procs'" >&2
    exit 2
fi
loaders=()
stop_loaders() {
    for pid in "${loaders[@]}"; do
        kill "$pid" 2>/dev/null
    done
    wait "${loaders[@]}" 2>/dev/null
}
trap stop_loaders EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 "$procs"); do
    python3 -c 'while True: pass' &
    loaders+=($!)
done
echo "[test-loaded] $procs busy process(es) (${loaders[*]}) on $(nproc) core(s); load" \
     "average $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
python -m pytest "$@"
status=$?
echo "[test-loaded] pytest exit status $status after $(( $(date +%s) - start )) s with" \
     "$procs busy process(es); load average $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
