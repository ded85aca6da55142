#!/bin/sh
# Instructions the dispatcher executes per delivery, counted by callgrind.
#
# Wall-clock figures on a shared 2-core VM move by 10 % from run to run, which hides any change
# smaller than that; an instruction count does not move (same binary, same input, whatever
# else the machine does). The dispatcher runs under valgrind (about 600 deliveries/s) for
# 3,000 and then 30,000 deliveries to 10 endpoints; the difference divided by the 27,000
# deliveries between them is the cost of one, start-up and shutdown cancelled out.
#
# valgrind hides the CPU's SHA extensions, so HMAC-SHA256 is counted on the portable path
# (about 69,000 of the instructions for a 1 KiB payload); natively it is a few hundred
# nanoseconds. Compare two builds with the same payload and this is the same on both sides.
#
# Usage: crates/bench/instructions.sh [BIN_DIR]   (default target/release; `make bench-instructions`)
set -eu
bin=$(cd "${1:-target/release}" && pwd)
bench="$bin/bench"
[ -x "$bench" ] || bench=target/release/bench
command -v valgrind >/dev/null || {
    echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}
for b in herald-ingest herald-ledger herald-dispatcher; do
    [ -x "$bin/$b" ] || { echo "instructions: $bin/$b is missing (cargo build --release --bins)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$bin/herald-ingest" "$work/herald-ingest"
ln -s "$bin/herald-ledger" "$work/herald-ledger"
cat >"$work/herald-dispatcher" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/dispatcher.%p.cg "$bin/herald-dispatcher" "\$@"
WRAP
chmod +x "$work/herald-dispatcher"

endpoints=10
small_events=300
large_events=3000

# Instructions of one dispatcher run that delivers `$1` events to every endpoint; refuses a run
# that timed out or missed a delivery (bench exits 0 then, and the count would be short).
count() {
    rm -f "$work"/dispatcher.*.cg
    if ! "$bench" run --endpoints "$endpoints" --events "$1" --bin-dir "$work" \
        --json-out "$work/run.json" >"$work/run.log" 2>&1; then
        cat "$work/run.log" >&2
        echo "instructions: the run of $1 events failed" >&2
        exit 1
    fi
    python3 - "$work/run.json" "$(($1 * endpoints))" <<'CHECK' || exit 1
import json, sys
report = json.load(open(sys.argv[1]))["runs"][0]["report"]
want, got = int(sys.argv[2]), report["receiver"]["delivered"]
if report["timed_out"] or got != want:
    sys.exit(f"instructions: {got} of {want} deliveries arrived; the count would be wrong")
CHECK
    total=$(sed -n 's/^summary: //p' "$work"/dispatcher.*.cg 2>/dev/null | head -n 1)
    [ -n "$total" ] || { echo "instructions: callgrind wrote no profile" >&2; exit 1; }
    echo "$total"
}
small=$(count "$small_events")
large=$(count "$large_events")
extra=$(((large_events - small_events) * endpoints))
echo "dispatcher instructions per delivery: $(((large - small) / extra))" \
    "(callgrind: $small for $((small_events * endpoints)) deliveries," \
    "$large for $((large_events * endpoints)); binaries in $bin)"
