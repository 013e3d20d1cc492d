#!/usr/bin/env bash
# Side-by-side speed of llama.cpp and gpullama on one GGUF file.
#
#   LLAMA_BENCH=/path/to/llama-bench bench/compare-llama-bench.sh MODEL.gguf [-p 512] [-n 128] [-r 5] [-t N] [-ngl 0] [--rounds 2]
#
# Runs llama.cpp's llama-bench and `gpullama bench` on the same file with the same -p/-n/-r/-t/-ngl, interleaved
# (llama-bench, gpullama, llama-bench, gpullama, … for --rounds rounds) so that drift of the machine (other load,
# clocks, page cache) falls on both alike, then prints one row per test (ppN, tgN): each tool's tokens/s as mean ± sd
# over all rounds' repetitions, the ratio gpullama / llama.cpp, and the range of the per-round ratios.
#
# Environment:
#   LLAMA_BENCH      the llama-bench binary (required; build llama.cpp yourself — nothing here builds it)
#   GPULLAMA         the command that runs gpullama (default: builds src/Host in Release once, runs it with dotnet)
#   LLAMA_BENCH_ARGS extra arguments for llama-bench only (e.g. "-fa off" or "--poll 0")
#   GPULLAMA_ARGS    extra arguments for gpullama only (e.g. "--devices cuda:0" with -ngl)
# Options: -p/-n take comma lists as both tools do; -t defaults to the number of online CPUs and -ngl to 0, passed to
# both explicitly (the tools' own defaults differ); --keep DIR keeps every run's JSON and stderr.
set -euo pipefail

me=$(basename "$0")
die() { echo "$me: error: $*" >&2; exit 2; }

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

model="" prompt=512 gen=128 reps=5 threads="" ngl=0 rounds=2 keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -p|--n-prompt) [ $# -ge 2 ] || die "$1 needs a value"; prompt=$2; shift 2 ;;
    -n|--n-gen) [ $# -ge 2 ] || die "$1 needs a value"; gen=$2; shift 2 ;;
    -r|--repetitions) [ $# -ge 2 ] || die "$1 needs a value"; reps=$2; shift 2 ;;
    -t|--threads) [ $# -ge 2 ] || die "$1 needs a value"; threads=$2; shift 2 ;;
    -ngl|--n-gpu-layers|--gpu-layers) [ $# -ge 2 ] || die "$1 needs a value"; ngl=$2; shift 2 ;;
    --rounds) [ $# -ge 2 ] || die "$1 needs a value"; rounds=$2; shift 2 ;;
    --keep) [ $# -ge 2 ] || die "$1 needs a value"; keep=$2; shift 2 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$model" ] || die "one MODEL only (got '$model' and '$1')"; model=$1; shift ;;
  esac
done

[ -n "${LLAMA_BENCH:-}" ] || die "LLAMA_BENCH is not set: point it at llama.cpp's llama-bench binary (e.g. LLAMA_BENCH=~/llama.cpp/build/bin/llama-bench)"
[ -f "$LLAMA_BENCH" ] || die "LLAMA_BENCH=$LLAMA_BENCH: no such file"
[ -x "$LLAMA_BENCH" ] || die "LLAMA_BENCH=$LLAMA_BENCH: not executable"
[ -n "$model" ] || die "no MODEL given (usage: $me MODEL.gguf [-p 512] [-n 128] [-r 5] [-t N] [-ngl 0] [--rounds 2])"
[ -f "$model" ] || die "MODEL $model: no such file"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the JSON outputs"
for v in "reps:$reps" "ngl:$ngl" "rounds:$rounds"; do
  [[ ${v#*:} =~ ^[0-9]+$ ]] || die "${v%%:*} '${v#*:}' is not a non-negative integer"
done
[[ $prompt =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-p '$prompt' is not a comma list of non-negative integers"
[[ $gen =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-n '$gen' is not a comma list of non-negative integers"
[ "$reps" -ge 1 ] || die "-r must be at least 1"
[ "$rounds" -ge 1 ] || die "--rounds must be at least 1"
if [ -z "$threads" ]; then
  threads=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
fi
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "-t '$threads' is not a positive integer"

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${GPULLAMA:-}" ]; then
  read -r -a gpullama <<< "$GPULLAMA"
else
  command -v dotnet >/dev/null 2>&1 || die "dotnet is not on PATH (or set GPULLAMA to a gpullama command)"
  echo "$me: building gpullama (Release)…" >&2
  build_log=$(mktemp)
  if ! dotnet build "$root/src/Host/GpuLlama.Host.csproj" -c Release -nologo -v q > "$build_log" 2>&1; then
    tail -20 "$build_log" >&2
    rm -f "$build_log"
    die "building src/Host failed"
  fi
  rm -f "$build_log"
  dll=$(dotnet msbuild "$root/src/Host/GpuLlama.Host.csproj" -nologo -getProperty:TargetPath -p:Configuration=Release)
  [ -f "$dll" ] || die "built gpullama not found at '$dll'"
  gpullama=(dotnet "$dll")
fi
read -r -a llama_extra <<< "${LLAMA_BENCH_ARGS:-}"
read -r -a gpullama_extra <<< "${GPULLAMA_ARGS:-}"

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

common=(-p "$prompt" -n "$gen" -r "$reps" -t "$threads" -ngl "$ngl" -o json)
run() { # NAME ROUND COMMAND…: stdout → NAME.ROUND.json, stderr → NAME.ROUND.err; one line on failure
  local name=$1 round=$2; shift 2
  if ! "$@" > "$work/$name.$round.json" 2> "$work/$name.$round.err"; then
    echo "$me: $name failed (round $round): $*" >&2
    tail -5 "$work/$name.$round.err" >&2
    die "$name failed; see the lines above"
  fi
}

echo "$me: $model, -p $prompt -n $gen -r $reps -t $threads -ngl $ngl, $rounds rounds (llama.cpp, gpullama, …)" >&2
for ((i = 1; i <= rounds; i++)); do
  echo "$me: round $i/$rounds: llama-bench" >&2
  run llama.cpp "$i" "$LLAMA_BENCH" -m "$model" "${common[@]}" "${llama_extra[@]}"
  echo "$me: round $i/$rounds: gpullama bench" >&2
  run gpullama "$i" "${gpullama[@]}" bench "$model" "${common[@]}" "${gpullama_extra[@]}"
done

python3 - "$work" "$rounds" "$model" "$threads" "$ngl" "$reps" <<'PY'
import json, math, os, sys

work, rounds, model, threads, ngl, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
tools = ["llama.cpp", "gpullama"]

def tests(tool, r):
    path = os.path.join(work, f"{tool}.{r}.json")
    try:
        rows = json.load(open(path))
    except (OSError, ValueError) as e:
        sys.exit(f"compare-llama-bench.sh: error: {tool} round {r}: cannot read its JSON output ({e}); see {path}")
    out = {}
    for row in rows:
        p, g = int(row.get("n_prompt", 0)), int(row.get("n_gen", 0))
        if p > 0 and g > 0:
            continue  # a combined pp+tg test; gpullama has none
        name = f"pp{p}" if p > 0 else f"tg{g}"
        n = len(row.get("samples_ts") or []) or reps
        out[name] = (n, float(row["avg_ts"]), float(row["stddev_ts"]))
    return out

def pool(groups):
    """Mean and sample standard deviation of all repetitions, from each group's count, mean and sample sd."""
    total = sum(n for n, _, _ in groups)
    mean = sum(n * m for n, m, _ in groups) / total
    ss = sum((n - 1) * s * s + n * (m - mean) ** 2 for n, m, s in groups)
    return mean, math.sqrt(ss / (total - 1)) if total > 1 else 0.0

runs = {t: [tests(t, r) for r in range(1, rounds + 1)] for t in tools}
names = [n for n in runs["llama.cpp"][0] if all(n in x for t in tools for x in runs[t])]
missing = sorted({n for t in tools for x in runs[t] for n in x} - set(names))
if not names:
    sys.exit("compare-llama-bench.sh: error: the two tools reported no test in common")

def build(tool):
    try:
        return json.load(open(os.path.join(work, f"{tool}.1.json")))[0].get("build_commit", "?")
    except (OSError, ValueError, IndexError):
        return "?"

print(f"model: {model}  threads: {threads}  ngl: {ngl}  {rounds} rounds x {reps} repetitions, interleaved")
print(f"llama.cpp build {build('llama.cpp')}, gpullama build {build('gpullama')}")
print()
rows = []
for name in names:
    a = pool([x[name] for x in runs["llama.cpp"]])
    b = pool([x[name] for x in runs["gpullama"]])
    per_round = [runs["gpullama"][r][name][1] / runs["llama.cpp"][r][name][1] for r in range(rounds)]
    rows.append([name, f"{a[0]:.2f} ± {a[1]:.2f}", f"{b[0]:.2f} ± {b[1]:.2f}", f"{b[0] / a[0]:.3f}",
                 f"{min(per_round):.3f}–{max(per_round):.3f}"])
head = ["test", "llama.cpp t/s", "gpullama t/s", "gpullama / llama.cpp", "per-round ratio"]
w = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
print("| " + " | ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)) + " |")
print("| " + " | ".join("-" * w[i] if i == 0 else "-" * (w[i] - 1) + ":" for i in range(len(head))) + " |")
for r in rows:
    print("| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) + " |")
if missing:
    print(f"\n(not in both outputs: {', '.join(missing)})")
PY
