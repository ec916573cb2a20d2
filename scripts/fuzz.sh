#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 60), one after another, on the nightly
# toolchain, and print the executions libFuzzer reports for each. Crashes are written to
# fuzz/artifacts/<target>/ and stop the run with a non-zero exit. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# FUZZ_RUNS=N stops each target after N executions (libFuzzer's -runs) instead of at SECONDS
# alone, whichever comes first. FUZZ_DEBUG_ASSERTIONS=1 builds with debug assertions on (the
# gateway's own consistency checks, e.g. that a request touched only what its scope said). FUZZ_SANITIZER=none builds without AddressSanitizer: the code
# the targets reach is safe Rust (the project's unsafe blocks are socket system calls, which
# no target makes), so ASan finds nothing there that a panic would not, and without it the
# slow targets run faster; the long runs towards 10^7 use it.
#
# New corpus entries go to fuzz/corpus/<target>/; minimise before committing them:
#   cd fuzz && cargo +nightly fuzz cmin <target>
set -euo pipefail

seconds=${1:-60}
shift || true
cd "$(dirname "$0")/../fuzz"

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS a positive integer)" >&2
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing; install it with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
    exit 1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# The shared build lock of the project, when it exists (several people on one machine).
lock=()
if command -v flock >/dev/null 2>&1; then
    lock=(flock /tmp/natpmpd-cargo.lock)
fi
sanitizer=(-s "${FUZZ_SANITIZER:-address}")
if [ "${FUZZ_DEBUG_ASSERTIONS:-0}" = 1 ]; then
    sanitizer+=(--debug-assertions)
fi
runs=()
if [ -n "${FUZZ_RUNS:-}" ]; then
    runs=(-runs="$FUZZ_RUNS")
fi
"${lock[@]}" cargo +nightly fuzz build -O "${sanitizer[@]}"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
declare -A execs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${seconds}s"
    # -close_fd_mask=3: the targets log nothing worth keeping; the final stats go to stderr
    # anyway, which is where libFuzzer's summary line is read from.
    if ! nice -n 19 cargo +nightly fuzz run -O "${sanitizer[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" "${runs[@]}" -print_final_stats=1 -max_len=4096 \
        >"$logs/$t.log" 2>&1; then
        status=1
        echo "!! $t failed; the last lines of its log:"
        tail -n 30 "$logs/$t.log"
    fi
    execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    echo "   executions: ${execs[$t]:-unknown}"
done

echo
echo "executions per target (${seconds}s each):"
for t in "${targets[@]}"; do
    printf '  %-16s %s\n' "$t" "${execs[$t]:-unknown}"
done
exit "$status"
