using System.CommandLine;
using System.Globalization;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama bench: llama-bench's measurements (one warm-up, -r repetitions, pp and tg tok/s as mean ± sd) over
/// the cartesian product of every comma list given, with bytes/token, GB/s and % of the bandwidth roofline for tg.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = new Argument<string?>("MODEL") { Description = "A model file or directory (or give --synthetic).", Arity = ArgumentArity.ZeroOrOne };
        var synthetic = new Option<string?>("--synthetic") { Description = "Comma list of synthetic presets to benchmark without a file: " + string.Join(", ", SyntheticPreset.All.Select(p => p.Name)) + "." };
        var dtype = new Option<string>("--dtype") { Description = "Comma list of dtypes for synthetic models: " + string.Join(", ", SyntheticSource.SupportedTypes.Select(t => DTypeInfo.DisplayName(t).ToLowerInvariant())) + ".", DefaultValueFactory = _ => "f16" };
        var prompt = new Option<string>("--n-prompt", "-p") { Description = "Comma list of prompt lengths (0 = skip pp).", DefaultValueFactory = _ => "512" };
        var gen = new Option<string>("--n-gen", "-n") { Description = "Comma list of generation lengths (0 = skip tg).", DefaultValueFactory = _ => "128" };
        var pg = new Option<string[]>("--prompt-gen", "-pg")
        {
            Description = "A test of PP prompt tokens then TG generated ones, timed together (llama-bench -pg PP,TG; repeat for several).",
            Arity = ArgumentArity.OneOrMore,
            AllowMultipleArgumentsPerToken = false,
        };
        var depth = new Option<string>("--n-depth", "-d") { Description = "Comma list of context depths: tokens already in the KV cache when each test starts (llama-bench -d; 0 = empty).", DefaultValueFactory = _ => "0" };
        var reps = new Option<int>("--repetitions", "-r") { Description = "Repetitions of each test (after one warm-up).", DefaultValueFactory = _ => 5 };
        var ngl = new Option<string>("--gpu-layers", "-ngl", "--n-gpu-layers") { Description = "Comma list of GPU layer counts (99 = all).", DefaultValueFactory = _ => "0" };
        var threads = new Option<string?>("--threads", "-t") { Description = "Comma list of CPU thread counts (default: all cores)." };
        var devices = new Option<string?>("--devices", "-dev") { Description = "Accelerators to use, comma list (see `gpullama devices`)." };
        var batch = new Option<string>("--batch", "-b", "--batch-size") { Description = "Comma list of prompt batch sizes (tokens per forward pass).", DefaultValueFactory = _ => "512" };
        var output = new Option<string>("--output", "-o") { Description = "md, json or csv.", DefaultValueFactory = _ => "md" };
        var sweep = new Option<bool>("--sweep-gpu-layers") { Description = "Measure every GPU layer count from 0 to n+1 and write a chart (see --chart)." };
        var chart = new Option<string>("--chart") { Description = "SVG file for the --sweep-gpu-layers chart.", DefaultValueFactory = _ => "bench-gpu-layers.svg" };
        var nopo = new Option<string>("--no-op-offload", "-nopo") { Description = "Comma list of 0/1: 1 keeps the CPU's layers on the CPU for prompt batches, 0 streams them to the GPU for batches of --op-offload-min-batch+ tokens (llama.cpp's op offload); 0,1 measures both.", DefaultValueFactory = _ => "0" };
        var minBatch = new Option<int>("--op-offload-min-batch") { Description = "Smallest prompt batch that streams the CPU's layers to the GPU (llama.cpp streams from 32; see docs/performance.md).", DefaultValueFactory = _ => PromptOffload.DefaultMinBatch };
        var typeK = new Option<string>("--cache-type-k", "-ctk") { Description = "Comma list of KV cache key types: f16 (default, as llama.cpp), bf16, f32, q8_0, q4_0.", DefaultValueFactory = _ => "f16" };
        var typeV = new Option<string>("--cache-type-v", "-ctv") { Description = "Comma list of KV cache value types: f16 (default), bf16, f32, q8_0, q4_0.", DefaultValueFactory = _ => "f16" };
        var exact = new Option<bool>("--exact-quant") { Description = "CPU: quantized and F16 weights with float32 activations (exact) instead of llama.cpp's rounded ones (8-bit, F16)." };
        var memory = new Option<bool>("--memory") { Description = "Only measure and print the memory bandwidth of each device (the roofline)." };
        var command = new Command("bench", "Benchmark prompt processing (pp) and generation (tg) like llama-bench, with bytes/token, GB/s and % of the bandwidth roofline.")
        {
            model, synthetic, dtype, prompt, gen, pg, depth, reps, ngl, threads, devices, batch, typeK, typeV, output, sweep, chart, nopo, minBatch, exact, memory,
        };
        command.SetAction(r =>
        {
            if (r.GetValue(memory))
            {
                return Memory(r.GetValue(devices));
            }

            var sources = new List<string>();
            if (r.GetValue(model) is { } m)
            {
                sources.Add(m);
            }

            foreach (string preset in ModelOptions.ParseList(r.GetValue(synthetic)) ?? [])
            {
                foreach (string t in ModelOptions.ParseList(r.GetValue(dtype)) ?? ["f16"])
                {
                    sources.Add($"synthetic:{preset}:{t}");
                }
            }

            if (sources.Count == 0)
            {
                throw new GpuLlamaException("bench: give a MODEL or --synthetic PRESET");
            }

            int[] prompts = Ints(r.GetValue(prompt)!, "--n-prompt");
            int[] gens = Ints(r.GetValue(gen)!, "--n-gen");
            (int Prompt, int Gen)[] pgs = [.. (r.GetValue(pg) ?? []).Select(PromptGen)];
            int[] depths = Ints(r.GetValue(depth)!, "--n-depth");
            int[] threadCounts = r.GetValue(threads) is { } t0 ? Ints(t0, "--threads") : [0];
            int[] noOpOffload = Ints(r.GetValue(nopo)!, "--no-op-offload");
            int[] batches = Ints(r.GetValue(batch)!, "--batch");
            KvCacheType[] typesK = CacheTypes(r.GetValue(typeK)!, "--cache-type-k");
            KvCacheType[] typesV = CacheTypes(r.GetValue(typeV)!, "--cache-type-v");
            if (batches.Any(b => b == 0))
            {
                throw new GpuLlamaException($"--batch '{r.GetValue(batch)}': batch sizes must be positive");
            }

            if (noOpOffload.Any(v => v > 1))
            {
                throw new GpuLlamaException($"--no-op-offload '{r.GetValue(nopo)}': expected 0 or 1 (a comma list)");
            }

            int repetitions = ModelOptions.Positive(r.GetValue(reps), "--repetitions");
            string format = r.GetValue(output)!;
            if (format is not ("md" or "json" or "csv"))
            {
                throw new GpuLlamaException($"--output {format}: expected md, json or csv");
            }

            var results = new List<BenchResult>();
            foreach (string path in sources)
            {
                using IWeightSource source = WeightSource.Open(path);
                int[] layerCounts = r.GetValue(sweep) ? [.. Enumerable.Range(0, source.Config.Layers + 2)] : Ints(r.GetValue(ngl)!, "--gpu-layers");
                // the cartesian product of the lists, in llama-bench's order
                var configs = from layers in layerCounts from th in threadCounts from b in batches from k in typesK from v in typesV from keep in noOpOffload
                              select (layers, th, b, k, v, keep);
                foreach ((int layers, int th, int b, KvCacheType k, KvCacheType v, int keep) in configs)
                {
                    var load = new LoadOptions
                    {
                        GpuLayers = layers,
                        Devices = ModelOptions.ParseList(r.GetValue(devices)),
                        Threads = th,
                        ExactQuantDots = r.GetValue(exact),
                        BatchSize = b,
                        OpOffload = keep == 0,
                        OpOffloadMinBatch = ModelOptions.Positive(r.GetValue(minBatch), "--op-offload-min-batch"),
                        CacheTypeK = k,
                        CacheTypeV = v,
                        ContextLength = Math.Min(source.Config.ContextLength, depths.Max() + pgs.Select(x => x.Prompt + x.Gen).Append(prompts.Max()).Append(gens.Max()).Max() + 1),
                    };
                    using LlamaModel llama = LlamaModel.Load(source, ownsSource: false, load, Program.Cancellation);
                    results.AddRange(Measure(llama, path, prompts, gens, pgs, depths, repetitions, th, b, keep == 1));
                    if (format == "md")
                    {
                        Console.Error.WriteLine($"measured {path} ngl {layers} threads {(th == 0 ? Environment.ProcessorCount : th)}{(batches.Length > 1 ? $" batch {b}" : "")}" +
                                                $"{(typesK.Length > 1 || typesV.Length > 1 ? $" cache {k.Name()}/{v.Name()}" : "")}{(keep == 1 ? " nopo" : "")}");
                    }
                }
            }

            Console.Out.Write(format switch
            {
                "json" => BenchReport.Json(results).ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n",
                "csv" => BenchReport.Csv(results),
                _ => BenchReport.Markdown(results),
            });
            if (r.GetValue(sweep))
            {
                BenchReport.WriteSweepChart(results, r.GetValue(chart)!);
                Console.Error.WriteLine($"chart: {r.GetValue(chart)}");
            }

            return 0;
        });
        return command;
    }

    private static IEnumerable<BenchResult> Measure(LlamaModel llama, string path, int[] prompts, int[] gens, (int Prompt, int Gen)[] pgs, int[] depths, int reps,
        int threads, int batch, bool noOpOffload)
    {
        IWeightSource s = llama.Source;
        string dtype = string.Join("+", s.Tensors.Values.Where(t => t.Name.StartsWith("blk.", StringComparison.Ordinal) && t.Rows > 1)
            .Select(t => DTypeInfo.DisplayName(t.Type)).Distinct());
        string backend = llama.Plan.OffloadedCount == 0 ? "CPU" : string.Join(",", llama.Devices.Where(d => d.Kind != DeviceKind.Cpu).Select(d => d.Kind == DeviceKind.Cuda ? "CUDA" : d.Kind == DeviceKind.OpenCL ? "OpenCL" : "ILGPU-CPU").Distinct());
        int cpuThreads = llama.Devices.OfType<CpuDevice>().FirstOrDefault()?.Threads ?? threads;
        var common = new
        {
            File = Path.GetFileName(path.TrimEnd('/')),
            Type = $"{(string.IsNullOrEmpty(s.Config.Name) ? s.Config.Architecture : s.Config.Name)} {dtype}",
            Size = s.Tensors.Values.Sum(t => t.ByteLength),
            Params = s.Tensors.Values.Sum(t => t.Elements),
            Devices = string.Join(",", llama.Devices.Select(d => d.Name)),
        };
        foreach (int d in depths)
        {
            foreach (int p in prompts.Where(p => p > 0))
            {
                BenchMeasurement m = BenchRunner.Prompt(llama, p, reps, Program.Cancellation, d);
                yield return Row(m, 0, 0, 0);
            }

            foreach (int n in gens.Where(n => n > 0))
            {
                BenchMeasurement m = BenchRunner.Generate(llama, n, reps, Program.Cancellation, d);
                // token i of the test attends to d + i + 1 positions
                Dictionary<string, long> bytes = BenchRunner.BytesPerToken(llama, d + (n + 1) / 2.0);
                (double rooflineTps, double rooflineBps) = BenchRunner.Roofline(llama, bytes, cpuThreads);
                yield return Row(m, bytes.Values.Sum(), rooflineTps, rooflineBps / 1e9);
            }

            foreach ((int pp, int tg) in pgs)
            {
                yield return Row(BenchRunner.PromptThenGenerate(llama, pp, tg, reps, Program.Cancellation, d), 0, 0, 0);
            }
        }

        BenchResult Row(BenchMeasurement m, long bpt, double roofTps, double roofGBps) => new()
        {
            ModelFilename = common.File,
            ModelType = common.Type,
            ModelSize = common.Size,
            ModelNParams = common.Params,
            Backend = backend,
            Devices = common.Devices,
            Dtype = dtype,
            NGpuLayers = llama.Plan.OffloadedCount,
            NThreads = cpuThreads,
            NBatch = batch, // as requested, like llama-bench's n_batch (the transformer takes at most the context)
            NoOpOffload = noOpOffload,
            TypeK = llama.Transformer.CacheTypeK.Name(),
            TypeV = llama.Transformer.CacheTypeV.Name(),
            NPrompt = m.Prompt,
            NGen = m.Generate,
            NDepth = m.Depth,
            TestTime = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            SamplesNs = m.SamplesNs,
            BytesPerToken = bpt,
            RooflineTokensPerSecond = roofTps,
            RooflineGBps = roofGBps,
        };
    }

    private static int Memory(string? devices)
    {
        using var cpu = new CpuDevice();
        Console.Out.WriteLine($"{cpu.Name}: {MemoryProbe.Measure(cpu, cpu.Threads) / 1e9:F1} GB/s (streaming read, {cpu.Threads} threads)");
        IDeviceProvider? provider = DeviceProviders.Default;
        foreach (string name in ModelOptions.ParseList(devices) ?? [])
        {
            using IDevice d = provider?.Create(name) ?? throw new GpuLlamaException($"--devices {name}: the ILGPU backend is not deployed");
            Console.Out.WriteLine($"{d.Name}: {MemoryProbe.Measure(d) / 1e9:F1} GB/s (device-to-device copy, read + write)");
        }

        return 0;
    }

    /// <summary>"PP,TG" of -pg: two positive token counts.</summary>
    private static (int, int) PromptGen(string text)
    {
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int pp) && pp > 0
            && int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int tg) && tg > 0)
        {
            return (pp, tg);
        }

        throw new GpuLlamaException($"-pg '{text}': expected PP,TG (two positive token counts, e.g. 512,128)");
    }

    private static KvCacheType[] CacheTypes(string text, string flag)
    {
        KvCacheType[] types = [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t => KvCacheTypes.Parse(t, flag))];
        return types.Length > 0 ? types : throw new GpuLlamaException($"{flag}: give at least one type");
    }

    private static int[] Ints(string text, string flag)
    {
        var values = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < 0)
            {
                throw new GpuLlamaException($"{flag} '{text}': '{part}' is not a non-negative integer");
            }

            values.Add(v);
        }

        return values.Count > 0 ? [.. values] : throw new GpuLlamaException($"{flag}: give at least one value");
    }
}
