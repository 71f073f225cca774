#!/usr/bin/env bash
# Verify an evidence bundle with standard tools only (docs/evidence.md):
#   verify-recipe.sh BUNDLE.tar LEAD-PUBLIC-KEY.pem OUTDIR
# Checks the DSSE signature with openssl and every file's SHA-256 against
# the signed in-toto statement with sha256sum, and that no file is extra.
set -euo pipefail
bundle=$(realpath "$1"); lead=$(realpath "$2"); dir=$3
mkdir -p "$dir"
tar -xf "$bundle" -C "$dir"
cd "$dir"
# 1. The DSSE envelope: payload, and the pre-authentication encoding it signs.
jq -r .payload statement.dsse.json | base64 -d > ../statement.json
type=$(jq -r .payloadType statement.dsse.json)
{ printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(stat -c %s ../statement.json)"; cat ../statement.json; } > ../statement.pae
jq -r '.signatures[0].sig' statement.dsse.json | base64 -d > ../statement.sig
openssl dgst -sha256 -verify "$lead" -signature ../statement.sig ../statement.pae
# 2. Every subject's SHA-256.
jq -r '.subject[] | "\(.digest.sha256)  \(.name)"' ../statement.json | sha256sum --strict -c --quiet -
# 3. No file that the statement does not list.
diff <(jq -r '.subject[].name' ../statement.json | sort) \
     <(find . -type f ! -name statement.dsse.json | sed 's#^\./##' | sort)
echo "bundle verified: $(jq '.subject | length' ../statement.json) files"
