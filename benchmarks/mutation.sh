#!/usr/bin/env bash
# Mutation testing (mutmut 3) of a restricted set of modules against their fast unit tests.
# A benchmark, not part of CI: it needs `pip install mutmut` (the `mutation` extra) and minutes of CPU.
#
#   benchmarks/mutation.sh [REV] [MODULES] [TESTS]
#
# REV      git revision whose sources and tests are mutated and run (default: HEAD)
# MODULES  space-separated source files to mutate (default: bootstrap.py and adapter.py)
# TESTS    space-separated pytest selection (default: their unit tests)
#
# The run happens in a scratch copy (git archive of REV), so the working tree is never touched,
# and prints mutmut's per-mutant results, the diff of every survivor and the killed / survived counts.
#
# mutmut forks a child per mutant from a parent that has imported torch. With more than one
# OpenMP/MKL thread, the forked children can hang in the thread pool they inherited, and mutmut
# then counts them as timeouts (detected), which hides survivors: one thread each, by default.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
REV=${1:-HEAD}
MODULES=${2:-"src/s2d_align/evaluation/bootstrap.py src/s2d_align/models/adapter.py"}
TESTS=${3:-"tests/evaluation/test_bootstrap.py tests/models/test_adapter.py"}
PYTHON=${PYTHON:-python}
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac  # a relative path must survive the cd below
CHILDREN=${CHILDREN:-2}
ROOT=$(git rev-parse --show-toplevel)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/s2d-mutation.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
git -C "$ROOT" archive "$REV" | tar -x -C "$SCRATCH"
cd "$SCRATCH"
toml_list() { printf '"%s", ' $1 | sed 's/, $//'; }
cat >> pyproject.toml <<TOML

[tool.mutmut]
source_paths = ["src"]
only_mutate = [$(toml_list "$MODULES")]
pytest_add_cli_args_test_selection = [$(toml_list "$TESTS")]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
also_copy = ["tests", "configs"]
TOML
echo "mutating $MODULES at $(git -C "$ROOT" rev-parse --short "$REV") against $TESTS"
PYTHONPATH="$SCRATCH/src" "$PYTHON" -m mutmut run --max-children "$CHILDREN" > run.log 2>&1 || { tail -30 run.log; exit 1; }
PYTHONPATH="$SCRATCH/src" "$PYTHON" -m mutmut results --all true > results.txt 2>&1 || true
grep -v ": killed$" results.txt || true
for mutant in $(grep ": survived$" results.txt | sed 's/: survived$//'); do
    echo "--- $mutant"
    PYTHONPATH="$SCRATCH/src" "$PYTHON" -m mutmut show "$mutant" 2>/dev/null | grep '^[-+][^-+]' || true
done
total=$(grep -c ": " results.txt || true)
killed=$(grep -c ": killed$" results.txt || true)
survived=$(grep -c ": survived$" results.txt || true)
echo "mutants: $total  killed: $killed  survived: $survived  other: $((total - killed - survived))"
