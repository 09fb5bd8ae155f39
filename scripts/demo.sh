#!/usr/bin/env bash
# The main job on the embedded defaults: encode SciFact (5,183 abstracts, ../shared) with
# splade-tiny into a sparse index, describe it, search it with text, and write TREC runs for the
# SciFact queries -- once with siamese queries (the model encodes them) and once with
# inference-free queries (tokenizer x IDF, no model at query time), which reuses the encoded shards
# -- and ends with what the two systems are worth: nDCG@10 on the SciFact test queries.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${LSR_SHARED:-../shared}"
export HF_HUB_OFFLINE=1  # everything is local: never wait on the hub
data="$shared/data/beir/scifact"
model="$shared/models/splade-tiny"
lsr=.venv/bin/lsr
$lsr index build --corpus "$data" --model "$model" -o indexes/scifact --overwrite \
    --work-dir indexes/.scifact-shards --keep-shards
$lsr index build --corpus "$data" --model "$model" -o indexes/scifact-if --overwrite \
    --query-mode inference-free --work-dir indexes/.scifact-shards
$lsr index info indexes/scifact
mkdir -p runs
$lsr search indexes/scifact --queries "$data/queries.jsonl.gz" -k 100 -o runs/scifact-siamese.trec
$lsr search indexes/scifact-if --queries "$data/queries.jsonl.gz" -k 100 -o runs/scifact-if.trec
echo "top hits for 'Does vitamin D lower the risk of cancer?':"
$lsr search indexes/scifact "Does vitamin D lower the risk of cancer?" -k 5
$lsr search indexes/scifact-if "Does vitamin D lower the risk of cancer?" -k 5
echo "quality on the SciFact test split (pytrec_eval):"
$lsr eval runs runs/scifact-siamese.trec runs/scifact-if.trec --qrels "$data" --split test
echo "the service: a live collection over HTTP (lsr serve; scripts/demo_service.py sends what curl would)"
port="${LSR_DEMO_PORT:-8765}"
rm -rf data/demo
LSR_DATA_DIR=data/demo $lsr serve --port "$port" > runs/serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
.venv/bin/python scripts/demo_service.py "http://127.0.0.1:$port" "$model" "$data" 500
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT
