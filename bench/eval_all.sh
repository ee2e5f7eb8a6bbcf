#!/usr/bin/env bash
# The evaluation behind the README's results section. Every stage resumes where it stopped
# (extraction keeps <vector>.work/, bench appends to results.jsonl), so rerunning is cheap.
#   bench/eval_all.sh [stage ...]     stages: qwen-seal qwen smol-seal smol-sweep smol qwen-sr
#                                     smol-gsm smol-gsm-st gemma qwen-gsm gemma-gsm qwen-sweep
#                                     gemma-seal smol-seal-svamp smol-sr smol-sr-gsm qwen-swir
#                                     qwen300 smol-seal2 qwen300-seal qwen300-gsm qwen300-noise
#                                     qwen300-swir qwen100-sc qwen100-sr qwen300-gsm-noise
#                                     qwen300-gsm-swir qwen100-gsm-sr qwen300-sc qwen300-gsm-sc
#                                     (default: all but these last thirteen, hours on 2 cores
#                                     each, listed in the order they are worth the CPU: sc over
#                                     all 300 of a slice is the dearest, ~7 h for SVAMP, ~10 h
#                                     for GSM8K)
# The evaluation model (Qwen2.5-Coder-0.5B-Instruct) comes from ../shared/tools/eval-models; it is
# not a product dependency. Slices: SVAMP dev.jsonl first 100 for reports, GSM8K train first 40/60
# for SEAL extraction only, SVAMP dev [400:430) for the always-on scale sweep only; for reports
# GSM8K train [0:100) where no SEAL vector is involved and [7000:7100) (far from the extraction
# slice) where one is. The Gemma 3 270M GGUF is the base
# model (no chat template), so it sees the plain-text prompt layout.
set -euo pipefail
cd "$(dirname "$0")/.."
LL=.venv/bin/latentlocal
# LATENTLOCAL_THREADS=1 lets two stages run side by side on two cores without the thread pools
# spinning against each other; on this 2-core CPU two 1-thread runs decode ~1.2-1.3x the tokens
# of one 2-thread run (issue 18). The rows from qwen100-sc, qwen100-sr, qwen300-sc and every GSM8K
# stage after qwen300-seal were made so: LATENTLOCAL_THREADS=1 with the SVAMP stages in one run
# and the GSM8K ones in another (never two runs on one results folder: both would append to and
# resume from one results.jsonl)
T=(${LATENTLOCAL_THREADS:+--threads $LATENTLOCAL_THREADS})
DATA=${LATENTLOCAL_DATA:-../shared/data}
QWEN=${QWEN:-$HOME/.cache/latentlocal-eval-models/qwen2.5-coder-0.5b-instruct.gguf}
GEMMA=${GEMMA:-$HOME/.cache/latentlocal-eval-models/gemma-3-270m-q4_k_m.gguf}
SVAMP=$DATA/svamp/dev.jsonl
RESULTS=${LATENTLOCAL_RESULTS:-bench/results}
GSM=$DATA/gsm8k/train.jsonl
QVEC=vectors/qwen2.5-coder-0.5b-instruct.seal.gguf
SVEC=vectors/smollm2-135m-instruct.seal.gguf
GSLICE=(--data "$GSM" --offset 7000)
# Soft Reasoning against self-consistency with the same number of generations
SRM="cot,sc:temperature=0.4;samples=8,sc:temperature=0.8;samples=8,soft-reasoning:candidates=4;rounds=2"
stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(qwen-seal qwen smol-seal smol-sweep smol qwen-sr smol-gsm smol-gsm-st gemma qwen-gsm gemma-gsm qwen-sweep gemma-seal smol-seal-svamp smol-sr smol-sr-gsm qwen-swir)
for s in "${stages[@]}"; do
  echo "== $s $(date +%T)"
  case $s in
    qwen-seal) $LL seal extract "${T[@]}" --model "$QWEN" --data "$GSM" --limit 40 --max-tokens 320 \
                 --elicit cue --out $QVEC --quiet ;;
    qwen) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 100 --max-tokens 320 \
            --methods "cot,soft-thinking,seal:vector=$QVEC" --out bench/results/svamp100-qwen0.5b \
            --title "SVAMP dev [0:100), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    smol-seal) $LL seal extract "${T[@]}" --data "$GSM" --limit 60 --max-tokens 320 --elicit cue \
                 --out $SVEC --quiet ;;
    smol-sweep) $LL seal sweep "${T[@]}" $SVEC --data "$SVAMP" --offset 400 --limit 30 --scales 0.05,0.1,0.25,0.5,1 \
                  --max-tokens 256 ;;
    # the soft-thinking:mix=moi rows below were made with the earlier MoI form, now
    # soft-thinking:mix=moi;moi_prior=filtered; rerunning a stage resumes their stored rows
    smol) $LL bench "${T[@]}" --data "$SVAMP" --limit 100 --max-tokens 256 \
            --methods "cot,soft-thinking,soft-thinking:noise=gumbel,soft-thinking:mix=moi,seal:vector=$SVEC" \
            --out bench/results/svamp100-smollm2 \
            --title "SVAMP dev [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens" ;;
    # run when the default sigma was 0.5; its rows are labelled with it
    qwen-sr) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 10 --max-tokens 320 \
               --methods "$SRM;sigma=0.5" \
               --out bench/results/svamp10-qwen0.5b-sr \
               --title "SVAMP dev [0:10), Qwen2.5-Coder-0.5B-Instruct, 8 generations per question" ;;
    smol-gsm) $LL bench "${T[@]}" "${GSLICE[@]}" --limit 100 --max-tokens 256 \
                --methods "cot,seal:vector=$SVEC,soft-thinking" --out bench/results/gsm100-seal-smollm2 \
                --title "GSM8K train [7000:7100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens" ;;
    smol-gsm-st) $LL bench "${T[@]}" --data "$GSM" --limit 100 --max-tokens 256 \
                   --methods "cot,soft-thinking,soft-thinking:noise=gumbel,soft-thinking:mix=moi" \
                   --out bench/results/gsm100-smollm2 \
                   --title "GSM8K train [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens" ;;
    gemma) $LL bench "${T[@]}" --model "$GEMMA" --data "$SVAMP" --limit 100 --max-tokens 256 \
             --methods "cot,soft-thinking,soft-thinking:noise=gumbel,soft-thinking:mix=moi" \
             --out bench/results/svamp100-gemma270m \
             --title "SVAMP dev [0:100), Gemma 3 270M (base) Q4_K_M, max 256 tokens" ;;
    qwen-gsm) $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 50 --max-tokens 320 \
                --methods "cot,soft-thinking,seal:vector=$QVEC" --out bench/results/gsm50-seal-qwen0.5b \
                --title "GSM8K train [7000:7050), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    gemma-gsm) $LL bench "${T[@]}" --model "$GEMMA" --data "$GSM" --limit 100 --max-tokens 256 \
                 --methods "cot,soft-thinking,soft-thinking:noise=gumbel,soft-thinking:mix=moi" \
                 --out bench/results/gsm100-gemma270m \
                 --title "GSM8K train [0:100), Gemma 3 270M (base) Q4_K_M, max 256 tokens" ;;
    qwen-sweep) $LL seal sweep "${T[@]}" --model "$QWEN" $QVEC --data "$SVAMP" --offset 400 --limit 30 \
                  --scales 0.02,0.05,0.1,0.25 --max-tokens 320 ;;
    # The Gemma GGUF is the base model: it answers in one paragraph, so its traces have no
    # delimiters to label and extraction is expected to stop with its "too few thoughts" message.
    gemma-seal) $LL seal extract "${T[@]}" --model "$GEMMA" --data "$GSM" --limit 30 --max-tokens 256 \
                  --elicit cue --out vectors/gemma-3-270m.seal.gguf --quiet \
                  || echo "gemma-seal: no vector (see the message above)" ;;
    smol-seal-svamp) $LL bench "${T[@]}" --data "$SVAMP" --limit 100 --max-tokens 256 \
                       --methods "cot,seal:vector=$SVEC" --out bench/results/svamp100-seal-smollm2 \
                       --title "SVAMP dev [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens, with thought counts" ;;
    smol-sr) $LL bench "${T[@]}" --data "$SVAMP" --limit 100 --max-tokens 256 \
               --methods "$SRM" --out bench/results/svamp100-smollm2-sr \
               --title "SVAMP dev [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), 8 generations per question" ;;
    smol-sr-gsm) $LL bench "${T[@]}" --data "$GSM" --limit 100 --max-tokens 256 \
                   --methods "$SRM" --out bench/results/gsm100-smollm2-sr \
                   --title "GSM8K train [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), 8 generations per question" ;;
    # SwiReasoning at the code's defaults (sdc17/SwiReasoning run.py), beside cot and soft-thinking
    # rerun in the same folder so the table is one machine and build; explicit_only is the paper's
    # sampled CoT baseline (T 0.6, top-k 20, top-p 0.95) decoded by the same loop, same seed
    qwen-swir) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 100 --max-tokens 320 \
                 --methods "cot,soft-thinking,swi-reasoning,swi-reasoning:explicit_only=true" \
                 --out bench/results/svamp100-qwen0.5b-swir \
                 --title "SVAMP dev [0:100), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens, with SwiReasoning" ;;
    # 300 problems per slice (issue 18), four problems decoded at once (bench --batch 4): cot over
    # the whole slice first, then the same folder again with soft-thinking added (the cot rows are
    # kept, so soft-thinking pairs with them). Its own folder, written under $RESULTS (default
    # bench/results; a long background run can write outside the tree and be copied in when done).
    qwen300) for m in cot cot,soft-thinking; do
               $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 300 --max-tokens 320 --batch 4 \
                 --methods "$m" --out "$RESULTS/svamp300-qwen0.5b" \
                 --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens, batch 4"
             done ;;
    # issue 18's other 300-problem tables, in the order they are worth the CPU (the report pairs
    # every method with the cot rows already in its folder); the methods that refuse --batch run
    # unbatched into the same folder. SEAL batches since 8350a40 (steered feeds decoded apart),
    # SwiReasoning since its chain form.
    # GSM8K train [7000:7300): far from the SEAL extraction slice (the first 40)
    # cot over the whole slice first, so the rows every other method pairs with come first
    qwen300-gsm) for m in cot cot,soft-thinking; do
                   $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 300 --max-tokens 320 --batch 4 \
                     --methods "$m" --out "$RESULTS/gsm300-qwen0.5b" \
                     --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens"
                 done ;;
    qwen300-seal) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 300 --max-tokens 320 --batch 4 \
                    --methods "seal:vector=$QVEC" --out "$RESULTS/svamp300-qwen0.5b" \
                    --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens"
                  $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 300 --max-tokens 320 --batch 4 \
                    --methods "seal:vector=$QVEC" --out "$RESULTS/gsm300-qwen0.5b" \
                    --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    qwen300-noise) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 300 --max-tokens 320 --batch 4 \
                     --methods "soft-thinking:noise=gumbel,soft-thinking:noise=dirichlet" \
                     --out "$RESULTS/svamp300-qwen0.5b" \
                     --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    # self-consistency costs ~8 generations a problem (about a minute each here): the first 100
    # (beside Soft Reasoning's) before the whole slice
    qwen100-sc|qwen300-sc) n=100; [ "$s" = qwen300-sc ] && n=300
                $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit "$n" --max-tokens 320 \
                  --methods "sc:temperature=0.4;samples=8,sc:temperature=0.8;samples=8" \
                  --out "$RESULTS/svamp300-qwen0.5b" \
                  --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    qwen300-swir) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 300 --max-tokens 320 --batch 4 \
                    --methods "swi-reasoning" --out "$RESULTS/svamp300-qwen0.5b" \
                    --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    # SmolLM2's SEAL rows again, cot beside them, with the vector re-extracted under the paper's
    # transition phrases (issue 14): the older folders keep the rows of the first vector
    smol-seal2) $LL bench "${T[@]}" --data "$SVAMP" --limit 100 --max-tokens 256 --batch 4 \
                  --methods "cot,seal:vector=$SVEC" --out "$RESULTS/svamp100-seal2-smollm2" \
                  --title "SVAMP dev [0:100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens, SEAL vector re-extracted with the paper's labels"
                $LL bench "${T[@]}" "${GSLICE[@]}" --limit 100 --max-tokens 256 --batch 4 \
                  --methods "cot,seal:vector=$SVEC" --out "$RESULTS/gsm100-seal2-smollm2" \
                  --title "GSM8K train [7000:7100), SmolLM2-135M-Instruct Q4_1 (bundled), max 256 tokens, SEAL vector re-extracted with the paper's labels" ;;
    # Soft Reasoning with 8 generations per question (4 candidates x 2 rounds) on the first 100 of
    # the same slice: the report pairs it with cot and sc over those 100
    qwen100-sr) $LL bench "${T[@]}" --model "$QWEN" --data "$SVAMP" --limit 100 --max-tokens 320 \
                  --methods "soft-reasoning:candidates=4;rounds=2" --out "$RESULTS/svamp300-qwen0.5b" \
                  --title "SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    # the GSM8K slice's other methods, after the SVAMP table is whole: the noise variants and
    # SwiReasoning on all 300, self-consistency and Soft Reasoning on the first 100
    qwen300-gsm-noise) $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 300 --max-tokens 320 --batch 4 \
                         --methods "soft-thinking:noise=gumbel,soft-thinking:noise=dirichlet" \
                         --out "$RESULTS/gsm300-qwen0.5b" \
                         --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    qwen300-gsm-swir) $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 300 --max-tokens 320 --batch 4 \
                        --methods "swi-reasoning" --out "$RESULTS/gsm300-qwen0.5b" \
                        --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    qwen100-gsm-sr) $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 100 --max-tokens 320 \
                      --methods "sc:temperature=0.4;samples=8,sc:temperature=0.8;samples=8,soft-reasoning:candidates=4;rounds=2" \
                      --out "$RESULTS/gsm300-qwen0.5b" \
                      --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    # self-consistency over the whole GSM8K slice (resumes the first 100's rows of qwen100-gsm-sr)
    qwen300-gsm-sc) $LL bench "${T[@]}" --model "$QWEN" "${GSLICE[@]}" --limit 300 --max-tokens 320 \
                      --methods "sc:temperature=0.4;samples=8,sc:temperature=0.8;samples=8" \
                      --out "$RESULTS/gsm300-qwen0.5b" \
                      --title "GSM8K train [7000:7300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens" ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
