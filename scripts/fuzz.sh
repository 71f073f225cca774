#!/usr/bin/env bash
# Runs every Fuzz target in the module for a bounded time each.
set -euo pipefail
fuzztime="${1:-10s}"
found=0
while IFS= read -r file; do
  pkg="./$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    found=$((found+1))
    echo "fuzz: $pkg $target ($fuzztime)"
    # -fuzzminimizetime bounds the minimisation of each new interesting
    # input (default 60s): a short run that ends while minimising fails with
    # "context deadline exceeded" without having found anything.
    go test -count=1 -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s "$pkg"
  done
done < <(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go' | sed 's|^\./||')
echo "fuzz: ran $found targets"
