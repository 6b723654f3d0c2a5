#!/usr/bin/env bash
# The sanitized build and what runs on it (README, Fuzzing and sanitizers): builds build-fuzz/ with
# clang (ASan, fatal UBSan and libFuzzer's instrumentation in every object; ccache when present),
# replays every input of fuzz/regressions/<target>/, runs each fuzzer from its seed corpus
# fuzz/corpus/<target>/ for MOA_FUZZ_SECONDS (default 15) and, beside them on the other core, the
# unit tests of data/, the safetensors parser and launch/ under the sanitizers. Prints each
# fuzzer's executions and how long each part took; exits non-zero when anything failed. A
# fuzzer's crash leaves its input in build-fuzz/fuzz-artifacts/<target>/: fix the parser, then add
# the input to fuzz/regressions/<target>/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
seconds="${MOA_FUZZ_SECONDS:-15}"
build=build-fuzz
targets=(idx safetensors image options collect sweep)
# The sanitized unit tests, by executable: the safetensors tests, data/'s tests and launch/'s
# parser tests (named, so that a new launch test does not join unseen). Left out: the tests that
# start the moa executable to train, launch or build models, or start mpirun or Slurm
# (image_cli_test.cc, commands_test.cc, sweep_launch_test.cc, and SweepTest's two that start moa
# itself): they train whole jobs or build every shipped ViT-B/16 model in a sanitized moa, minutes
# under ASan, and the ordinary build's ctest runs them. CollectTest.SweepDirectoryWithBadInput
# stays: its `moa collect` on a small folder takes a moment.
launch_parser_tests="OptionsTest.*:DatasetDefaultsTest.*:CommandLineTest.*:CollectTest.*:SweepTest.*"
declare -A test_filters=(
  [common_test]="SafetensorsTest.*"
  [data_test]="-DataCheckCommandTest.*:ImageTrainingTest.*:ImageModelCommandsTest.*"
  [launch_test]="$launch_parser_tests-SweepTest.LocalLauncher*:SweepTest.Mpirun*:SweepTest.LocalJobs*:SweepTest.SlurmScript*"
)
start=$(date +%s)

# Unity batches of 8 sources cut the cold build by about a third (LibTorch's templates are
# instantiated once per batch instead of once per file); a name defined in two sources' anonymous
# namespaces is then an error here, so such helpers need distinct names.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$here}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
configure_log=$(mktemp)
if ! CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DMOA_FUZZ=ON -DMOA_BUILD_BENCH=OFF \
  -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" >"$configure_log" 2>&1; then
  cat "$configure_log" >&2
  rm -f "$configure_log"
  exit 1
fi
rm -f "$configure_log"
ninja -C "$build" -j "${MOA_BUILD_JOBS:-2}" "${targets[@]/%/_fuzzer}" "${!test_filters[@]}"
built=$(date +%s)

symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
[ -x "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
# Images may take PIL's limit of 179M pixels (537 MB as RGB); every other parser allocates about
# as much as its input holds, so 256 MB catches one that trusts a length in a header.
malloc_limit_mb() { [ "$1" = image ] && echo 1024 || echo 256; }
fuzz_flags=(-rss_limit_mb=2048 -timeout=10)
failed=()

for target in "${targets[@]}"; do
  inputs=(fuzz/regressions/"$target"/*)
  [ -e "${inputs[0]}" ] || continue
  if ! "$build/fuzz/${target}_fuzzer" "${fuzz_flags[@]}" -malloc_limit_mb="$(malloc_limit_mb "$target")" \
    "${inputs[@]}" >"$build/regressions-$target.log" 2>&1; then
    tail -40 "$build/regressions-$target.log"
    failed+=("regressions of $target")
  fi
done
echo "fuzz: replayed $(find fuzz/regressions -type f | wc -l) regression inputs"
replayed=$(date +%s)

# The sanitized tests run one executable after another beside the fuzzers; each writes its log
# and, when it fails, a .failed mark.
run_sanitized_tests() {
  for test in "${!test_filters[@]}"; do
    rm -f "$build/$test.failed"
    MOA_SOURCE_DIR="$here" MOA_BINARY_DIR="$here/$build" "$build/tests/$test" \
      --gtest_filter="${test_filters[$test]}" --gtest_brief=1 >"$build/$test.log" 2>&1 ||
      touch "$build/$test.failed"
  done
  echo "fuzz: sanitized tests done in $(($(date +%s) - replayed)) s"
}
run_sanitized_tests &
tests_pid=$!

summary=""
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target" artifacts="$build/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  log="$build/fuzz-$target.log"
  if ! "$build/fuzz/${target}_fuzzer" "$corpus" "fuzz/corpus/$target" "${fuzz_flags[@]}" \
    -malloc_limit_mb="$(malloc_limit_mb "$target")" -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target found a failure; its input is in $artifacts/"
    failed+=("fuzzer $target")
  fi
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  summary+="$(printf '  %-12s %10s executions in %s s' "$target" "${executions:-?}" "$seconds")"$'\n'
done
echo "fuzz: fuzzers done in $(($(date +%s) - replayed)) s"
wait "$tests_pid"

for test in "${!test_filters[@]}"; do
  if [ -e "$build/$test.failed" ]; then
    tail -60 "$build/$test.log"
    failed+=("$test")
  fi
  echo "fuzz: $test: $(grep -E '^\[  (PASSED|FAILED)  \]' "$build/$test.log" | head -2 | tr '\n' ' ')"
done
finished=$(date +%s)

printf 'fuzz: executions per fuzzer\n%s' "$summary"
echo "fuzz: build $((built - start)) s; regressions $((replayed - built)) s;" \
  "fuzzers and sanitized tests side by side $((finished - replayed)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
