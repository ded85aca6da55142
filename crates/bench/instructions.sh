#!/bin/sh
# Instructions the dispatcher executes per delivery, counted by callgrind.
#
# Wall-clock figures on a shared 2-core VM move by 10 % from run to run, which hides any change
# smaller than that; an instruction count does not move (same binary, same input, whatever
# else the machine does). The dispatcher runs under valgrind (about 600 deliveries/s) for
# 3,000 and then 30,000 deliveries to 10 endpoints; the difference divided by 27,000 is the
# cost of one delivery, start-up and shutdown cancelled out.
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

# Instructions of one dispatcher run that delivers `$1` events to 10 endpoints.
count() {
    rm -f "$work"/dispatcher.*.cg
    if ! "$bench" run --endpoints 10 --events "$1" --bin-dir "$work" >"$work/run.log" 2>&1; then
        cat "$work/run.log" >&2
        echo "instructions: the run of $1 events failed" >&2
        exit 1
    fi
    total=$(sed -n 's/^summary: //p' "$work"/dispatcher.*.cg 2>/dev/null | head -n 1)
    [ -n "$total" ] || { echo "instructions: callgrind wrote no profile" >&2; exit 1; }
    echo "$total"
}
small=$(count 300)
large=$(count 3000)
echo "dispatcher instructions per delivery: $(((large - small) / 27000))" \
    "(callgrind: $small for 3,000 deliveries, $large for 30,000; binaries in $bin)"
