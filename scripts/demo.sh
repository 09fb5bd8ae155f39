#!/usr/bin/env bash
# The main job on the embedded defaults: index SciFact (encoded by splade-tiny, from ../shared),
# describe the index, search it with the 1,109 SciFact queries and show the top hits of one.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${LSR_SHARED:-../shared}"
vectors="$shared/data/vectors/scifact-splade-tiny"
lsr=.venv/bin/lsr
$lsr index build "$vectors/docs.jsonl.gz" --vocab "$shared/models/splade-tiny" -o indexes/scifact --overwrite --no-progress
$lsr index info indexes/scifact
mkdir -p runs
$lsr search indexes/scifact --queries "$vectors/queries-siamese.jsonl.gz" -k 100 -o runs/scifact-siamese.trec
$lsr search indexes/scifact --queries "$vectors/queries-idf.jsonl.gz" -k 100 -o runs/scifact-idf.trec
echo "top hits for {\"protein\": 1.2, \"cancer\": 2.0, \"mutation\": 0.7}:"
$lsr search indexes/scifact --vector '{"protein": 1.2, "cancer": 2.0, "mutation": 0.7}' -k 5
