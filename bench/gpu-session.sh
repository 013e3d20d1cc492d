#!/usr/bin/env bash
# One GPU-machine session, run through the device tool from the repository root after
#   ../shared/tools/gpu-pack src/Host/GpuLlama.Host.csproj   and the fixtures copied to .gpu/fix/ :
# 1. correctness: every fixture at --gpu-layers 0, 1, n/2, n, n+1 on cuda:0 vs llama.cpp's golden logits/tokens;
# 2. speed: gpullama bench on a synthetic Llama-3-8B-shape model (BF16 by default), all layers on the GPU;
# 3. (mode offload) prompt offload: half the layers on the GPU, prompts of 32-512 tokens with the CPU's layers
#    streamed to the GPU (--no-op-offload 0, from 32 tokens) and kept on the CPU (1), to see from which batch size
#    streaming pays (the default, 256, is a guess until then);
# 4. (mode depth) tg at context depth 0 and 4096 with f16, f32, q8_0 and q4_0 key caches and f16 or q8_0 value
#    caches (CTK, CTV: comma lists; every pair is run), all layers on the GPU.
# 5. (mode ab) the decode fusions (RMSNorm in the projections, RoPE in the KV store), the one-row attention kernel
#    and the shared-memory prompt GEMM against the kernels before them (GPULLAMA_UNFUSED=1 GPULLAMA_NO_SHARED_GEMM=1
#    GPULLAMA_NO_DECODE_ATTENTION=1), alternated ROUNDS times, pp512 and tg128 all on the GPU: new/old per pair.
# Writes logs and JSON under $OUT.
set -uo pipefail
G="bash .gpu/run gpullama"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
$G devices | tee -a "$OUT/gpu.txt"
MODE=${1:-all}
if [ "$MODE" = all ] || [ "$MODE" = check ]; then
  ids=1,403,461,407,346,403,417,418,262,264,260,332,404,315,261,404,288,314,264,284,420,281,412,403,290,423,406,405
  # FILE:GOLDEN, both relative to .gpu/fix (GOLDEN is the prefix of the golden .bin files)
  for m in ${MODELS:-tiny-llama-a-f32.gguf:golden/f32 tiny-llama-a-f16.gguf:golden/f16 tiny-llama-a-bf16.gguf:golden/bf16.dequant_f32 tiny-llama-a:golden/bf16.dequant_f32}; do
    file=${m%%:*}; golden=${m##*:}
    for ngl in ${NGL:-0 1 2 4 5}; do
      # f32 caches: the goldens were made with them (the default f16 cache moves the logits by ~5e-4)
      $G run .gpu/fix/$file --prompt-tokens $ids -n 32 --temp 0 --json --gpu-layers $ngl --devices cuda:0 -ctk f32 -ctv f32 \
        --logits-out "$OUT/logits.bin" > "$OUT/run.json" 2> "$OUT/run.err" || { echo "FAIL $file ngl=$ngl: $(tail -1 "$OUT/run.err")"; continue; }
      python3 - "$OUT/run.json" "$OUT/logits.bin" ".gpu/fix/$golden" "$file ngl=$ngl" <<'PY'
import json, sys, numpy as np
run = json.load(open(sys.argv[1])); got = np.fromfile(sys.argv[2], dtype=np.float32)
g = sys.argv[3]; ref = np.fromfile(g + ".last_logits.f32.bin", dtype=np.float32)
steps = np.fromfile(g + ".step_logits.32x512.f32.bin", dtype=np.float32).reshape(32, 512)
greedy = [int(np.argmax(r)) for r in steps]
err = np.abs(got - ref).max() / np.abs(ref).max()
print(f"{sys.argv[4]:38s} rel.err {err:.2e}  greedy {'OK' if run['tokens'] == greedy else 'DIFF ' + str(run['tokens'][:8])}  tg {run['timings']['generation_tokens_per_s']:.0f} tok/s")
PY
    done
  done
fi
if [ "$MODE" = probe ]; then
  bash .gpu/run GpuLlama.GpuProbe cuda:0 2>&1 | tee "$OUT/probe.txt"
fi
if [ "$MODE" = all ] || [ "$MODE" = bench ]; then
  $G bench --memory --devices cuda:0 | tee "$OUT/memory.txt"
  $G bench --synthetic ${PRESET:-llama3-8b} --dtype ${DTYPE:-bf16} -ngl 99 --devices cuda:0 -p ${PP:-512} -n 128 -r 3 -o json > "$OUT/bench.json" 2> "$OUT/bench.err"
  python3 -c "
import json; rows=json.load(open('$OUT/bench.json'))
for r in rows: print(r['model_type'], 'pp%d'%r['n_prompt'] if r['n_prompt'] else 'tg%d'%r['n_gen'], '%.2f +- %.2f tok/s'%(r['avg_ts'], r['stddev_ts']), 'GB/s', r.get('gb_per_s'), 'roofline %', r.get('roofline_pct'))
" || tail -5 "$OUT/bench.err"
fi
if [ "$MODE" = offload ]; then
  $G bench --synthetic ${PRESET:-llama3-8b} --dtype ${DTYPE:-bf16} -ngl ${OFFLOAD_NGL:-16} --devices cuda:0 -p ${OFFLOAD_PP:-32,64,128,512} -n 0 -r 2 \
    --op-offload-min-batch 32 --no-op-offload 0,1 -o json > "$OUT/offload.json" 2> "$OUT/offload.err"
  python3 -c "
import json; rows=json.load(open('$OUT/offload.json'))
for r in rows: print(r['model_type'], 'ngl', r['n_gpu_layers'], 'nopo', r['no_op_offload'], 'pp%d'%r['n_prompt'], '%.2f +- %.2f tok/s'%(r['avg_ts'], r['stddev_ts']))
" || tail -5 "$OUT/offload.err"
fi
if [ "$MODE" = depth ]; then
  $G bench --synthetic ${PRESET:-llama3-8b} --dtype ${DTYPE:-bf16} -ngl 99 --devices cuda:0 -p 0 -n 128 -d ${DEPTHS:-0,4096} -ctk ${CTK:-f16,f32,q8_0,q4_0} -ctv ${CTV:-f16,q8_0} -r 2 \
    -o json > "$OUT/depth.json" 2> "$OUT/depth.err"
  python3 -c "
import json; rows=json.load(open('$OUT/depth.json'))
for r in rows: print(r['model_type'], 'kv', r['type_k'], r['type_v'], 'tg%d @ d%d'%(r['n_gen'], r['n_depth']), '%.2f +- %.2f tok/s'%(r['avg_ts'], r['stddev_ts']), 'roofline %', r.get('roofline_pct'))
" || tail -5 "$OUT/depth.err"
fi
if [ "$MODE" = ab ]; then
  # one file for every run: the synthetic weights are generated once, then mapped from the page cache
  AB_MODEL=${AB_MODEL:-/tmp/ab-${PRESET:-llama3-8b}-${DTYPE:-bf16}.gguf}
  [ -f "$AB_MODEL" ] || $G export synthetic:${PRESET:-llama3-8b}:${DTYPE:-bf16} "$AB_MODEL" > /dev/null
  for round in $(seq 1 ${ROUNDS:-2}); do
    for variant in new old; do
      if [ $variant = old ]; then export GPULLAMA_UNFUSED=1 GPULLAMA_NO_SHARED_GEMM=1 GPULLAMA_NO_DECODE_ATTENTION=1; else unset GPULLAMA_UNFUSED GPULLAMA_NO_SHARED_GEMM GPULLAMA_NO_DECODE_ATTENTION; fi
      $G bench "$AB_MODEL" -ngl 99 --devices cuda:0 -p ${PP:-512} -n 128 -r 3 -o json \
        > "$OUT/ab-$round-$variant.json" 2> "$OUT/ab-$round-$variant.err" || tail -3 "$OUT/ab-$round-$variant.err"
    done
  done
  unset GPULLAMA_UNFUSED GPULLAMA_NO_SHARED_GEMM GPULLAMA_NO_DECODE_ATTENTION
  python3 - "$OUT" ${ROUNDS:-2} <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for r in range(1, rounds + 1):
    new = json.load(open(f"{out}/ab-{r}-new.json")); old = json.load(open(f"{out}/ab-{r}-old.json"))
    for a, b in zip(new, old):
        test = 'pp%d' % a['n_prompt'] if a['n_prompt'] else 'tg%d' % a['n_gen']
        print(f"round {r} {test}: new {a['avg_ts']:.2f} old {b['avg_ts']:.2f} t/s  new/old {a['avg_ts'] / b['avg_ts']:.3f}  roofline % new {a.get('roofline_pct')} old {b.get('roofline_pct')}")
PY
fi
