#!/usr/bin/env bash
# Runs cargo fuzz targets one after another for SECONDS each (default 60) on the installed
# nightly toolchain, then prints each target's executions and corpus size.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (no TARGET: every target `cargo fuzz list` names)
#
# The working corpus of each target is fuzz/corpus/TARGET (not committed); the committed
# seeds in fuzz/seeds/TARGET and the dictionary fuzz/dict/TARGET.dict are used when present.
# A crash stops that target, leaves its input in fuzz/artifacts/TARGET/ and makes the script
# exit 1 after the other targets have run. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
# No sanitizer: the code under test is safe Rust, where AddressSanitizer finds little and
# doubles the build and the run; debug assertions stay on so overflows are crashes.
flags=(-s none --debug-assertions)
if [ -n "${STEPGATE_FUZZ_FLAGS:-}" ]; then
  read -r -a flags <<<"$STEPGATE_FUZZ_FLAGS"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "fuzz: building every target (${flags[*]})"
cargo +nightly fuzz build "${flags[@]}"

mkdir -p logs
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dirs=("corpus/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  extra=()
  [ -f "dict/$t.dict" ] && extra+=("-dict=dict/$t.dict")
  echo "fuzz: $t for ${secs}s"
  if cargo +nightly fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${extra[@]}" >"logs/$t.log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t")
    tail -n 40 "logs/$t.log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -n 1)
  # libFuzzer's last status line: coverage, features and the corpus it kept (entries/size).
  last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' <<<"$last" || true)
  corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' <<<"$last" || true)
  summary+=("$(printf '%-16s %-5s %5ss %12s execs %8s/s  %-18s %s' "$t" "$status" "$secs" "${execs:-?}" "${rate:-?}" "${corpus:-corp: ?}" "$cov")")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}: inputs in fuzz/artifacts/, logs in fuzz/logs/" >&2
  exit 1
fi
