using System.Diagnostics;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Generation;

namespace GpuLlama.Model;

/// <summary>How to load a model: where each layer runs, context size, threads. Defaults follow llama.cpp.</summary>
public sealed record LoadOptions
{
    /// <summary>
    /// Repeating layers to run on GPUs, counted from the last (llama.cpp -ngl): 0 = CPU only; more than the layer
    /// count also offloads the output head; null = auto: as many as fit in free memory (0 without a GPU).
    /// </summary>
    public int? GpuLayers { get; init; }

    /// <summary>Accelerators to use ("cuda:0", "opencl:1", "emulated:0"); null = the first CUDA device, else the first OpenCL one.</summary>
    public IReadOnlyList<string>? Devices { get; init; }

    /// <summary>Proportions of the offloaded layers per device (llama.cpp --tensor-split); null = by free memory.</summary>
    public IReadOnlyList<float>? TensorSplit { get; init; }

    public SplitMode SplitMode { get; init; } = SplitMode.Layer;

    /// <summary>The device used with <see cref="SplitMode.None"/> (index into <see cref="Devices"/>).</summary>
    public int MainGpu { get; init; }

    /// <summary>A JSON placement file naming the device of every layer; overrides GpuLayers/TensorSplit.</summary>
    public string? PlacementFile { get; init; }

    /// <summary>Context size in tokens; 0 = the model's trained context, at most 4096.</summary>
    public int ContextLength { get; init; }

    /// <summary>Prompt tokens processed per forward pass (llama.cpp -b/-ub).</summary>
    public int BatchSize { get; init; } = 512;

    /// <summary>
    /// Prompt offload (llama.cpp's op offload, on by default there too): a prompt batch of at least
    /// <see cref="OpOffloadMinBatch"/> tokens runs the layers placed on the CPU on the placement's first GPU, their
    /// weights streamed to it for the batch (the GPU then holds one layer's worth of weight slots more). Only with a GPU
    /// in the placement; decoding is unaffected.
    /// </summary>
    public bool OpOffload { get; init; } = true;

    /// <summary>Smallest prompt batch that <see cref="OpOffload"/> streams (<see cref="PromptOffload.DefaultMinBatch"/> says why not llama.cpp's 32).</summary>
    public int OpOffloadMinBatch { get; init; } = PromptOffload.DefaultMinBatch;

    /// <summary>The minimum batch the transformer and the memory plan use: 0 when offload is off.</summary>
    public int EffectiveOffloadMinBatch => OpOffload ? OpOffloadMinBatch : 0;

    /// <summary>
    /// How the KV cache stores keys (llama.cpp --cache-type-k): F16 by default, as in llama.cpp — half the memory of F32
    /// and of what attention reads, the values rounded to F16 when stored. F32 keeps them as computed; Q8_0 and Q4_0
    /// store ggml's 32-value blocks (about a quarter and an eighth of F32), for models whose head size is a multiple of 32.
    /// </summary>
    public KvCacheType CacheTypeK { get; init; } = KvCacheType.F16;

    /// <summary>How the KV cache stores values (llama.cpp --cache-type-v); F16 by default.</summary>
    public KvCacheType CacheTypeV { get; init; } = KvCacheType.F16;

    /// <summary>
    /// Positions of one batch that get logits (llama.cpp's logits_all when it is the batch size): 1 for generation;
    /// perplexity wants every position of a batch. Each row is the vocabulary's floats on the output device.
    /// </summary>
    public int LogitRows { get; init; } = 1;

    /// <summary>The memory plan's options for these load options and a context of <paramref name="context"/> tokens.</summary>
    public MemoryPlanOptions MemoryPlan(int context) => new()
    {
        ContextLength = context,
        BatchSize = BatchSize,
        LogitRows = LogitRows,
        OpOffloadMinBatch = EffectiveOffloadMinBatch,
        CacheTypeK = CacheTypeK,
        CacheTypeV = CacheTypeV,
    };

    /// <summary>CPU threads; 0 = all cores.</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Quantized and F16 weights on the CPU meet float32 activations (exact float math on the stored weights, as on a
    /// GPU) instead of llama.cpp's rounded ones — 8 bits with integer dot products for quantized weights, F16 for F16
    /// weights (the default: faster, and llama.cpp's numerics).
    /// </summary>
    public bool ExactQuantDots { get; init; }

    /// <summary>Tokenizer file for formats that carry none (llama2.c tokenizer.bin), or to override the model's.</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Finds accelerators; null = <see cref="DeviceProviders.Default"/> (ILGPU when deployed).</summary>
    public IDeviceProvider? DeviceProvider { get; init; }

    /// <summary>Receives the load log: the chosen device and why, the placement summary.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// A loaded model: weights on their devices, tokenizer, KV cache. The entry point of the public API:
/// <code>using var model = LlamaModel.Load("model.gguf", new LoadOptions { GpuLayers = 99 });
/// await foreach (string piece in model.CreateGenerator().GenerateAsync("Hello")) Console.Write(piece);</code>
/// </summary>
public sealed class LlamaModel : IDisposable
{
    private readonly List<IDevice> _devices;
    private bool _ownsSource = true;

    private LlamaModel(IWeightSource source, ModelTokenizer tokenizer, LayerPlan plan, IReadOnlyList<IDevice> devices,
        ModelWeights weights, Transformer transformer, int contextLength, TimeSpan loadTime)
    {
        Source = source;
        Tokenizer = tokenizer;
        Plan = plan;
        _devices = [.. devices];
        Weights = weights;
        Transformer = transformer;
        ContextLength = contextLength;
        LoadTime = loadTime;
    }

    public IWeightSource Source { get; }

    public ModelConfig Config => Source.Config;

    public ModelTokenizer Tokenizer { get; }

    /// <summary>Which device runs the input, each layer and the output.</summary>
    public LayerPlan Plan { get; }

    /// <summary>The devices in use, CPU first.</summary>
    public IReadOnlyList<IDevice> Devices => _devices;

    public ModelWeights Weights { get; }

    public Transformer Transformer { get; }

    public int ContextLength { get; }

    public TimeSpan LoadTime { get; }

    /// <summary>Loads a GGUF file, a Hugging Face directory, a llama2.c checkpoint, or "synthetic:PRESET[:dtype]".</summary>
    public static LlamaModel Load(string path, LoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        return Load(WeightSource.Open(path), ownsSource: true, options, cancellationToken, clock);
    }

    /// <summary>Loads from an open weight source (e.g. one synthetic model benchmarked under several placements).</summary>
    public static LlamaModel Load(IWeightSource source, bool ownsSource, LoadOptions? options = null, CancellationToken cancellationToken = default) =>
        Load(source, ownsSource, options, cancellationToken, Stopwatch.StartNew());

    private static LlamaModel Load(IWeightSource source, bool ownsSource, LoadOptions? options, CancellationToken cancellationToken, Stopwatch clock)
    {
        options ??= new LoadOptions();
        if (options.OpOffloadMinBatch < 1)
        {
            throw new GpuLlamaException($"--op-offload-min-batch {options.OpOffloadMinBatch}: must be positive");
        }

        var opened = new List<IDevice>();
        try
        {
            ModelConfig config = source.Config;
            List<string> problems = TensorNames.Verify(config, source.Tensors);
            if (problems.Count > 0)
            {
                GpuLlamaException.ThrowFile(source.Path, problems[0] + (problems.Count > 1 ? $" (and {problems.Count - 1} more problems; see `gpullama info`)" : ""));
            }

            ModelTokenizer tokenizer = ModelTokenizer.ForSource(source, options.TokenizerPath);
            int context = ResolveContext(config, options.ContextLength, source.Path);
            cancellationToken.ThrowIfCancellationRequested();

            LayerPlan plan = PlanPlacement(source, context, options, out _);
            options.Log?.Invoke(LayerPlacement.Summary(plan, config.Layers));

            var cpu = new CpuDevice(options.Threads, options.ExactQuantDots);
            opened.Add(cpu);
            var byName = new Dictionary<string, IDevice> { ["cpu"] = cpu };
            IDeviceProvider? provider = options.DeviceProvider ?? DeviceProviders.Default;
            foreach (string name in plan.DeviceNames().Where(n => n != "cpu"))
            {
                IDevice d = provider!.Create(name);
                opened.Add(d);
                byName[name] = d;
            }

            var placement = new DevicePlacement(byName[plan.Input], [.. plan.Layers.Select(n => byName[n])], byName[plan.Output]);
            cancellationToken.ThrowIfCancellationRequested();
            ModelWeights weights = ModelWeights.Upload(source, placement);
            var transformer = new Transformer(config, weights, placement, context, options.BatchSize, options.LogitRows, offloadMinBatch: options.EffectiveOffloadMinBatch,
                cacheTypeK: options.CacheTypeK, cacheTypeV: options.CacheTypeV);
            if (transformer.OffloadDevice is { } offload)
            {
                options.Log?.Invoke($"prompt offload: batches of {transformer.OffloadMinBatch}+ tokens run the {transformer.StreamedLayerCount} CPU layer(s) on {offload.Name}, their weights streamed (--no-op-offload to keep them on the CPU)");
            }

            return new LlamaModel(source, tokenizer, plan, opened, weights, transformer, context, clock.Elapsed) { _ownsSource = ownsSource };
        }
        catch
        {
            foreach (IDevice d in opened)
            {
                d.Dispose();
            }

            if (ownsSource)
            {
                source.Dispose();
            }

            throw;
        }
    }

    /// <summary>A generator over this model's KV cache (one conversation at a time).</summary>
    public Generator CreateGenerator() => new(this);

    /// <summary>
    /// The embedding of <paramref name="text"/> as llama-embedding computes it (BOS, every layer, the final norm's
    /// states pooled, then normalized: <see cref="Embeddings"/>). Uses the KV cache, so a generator's conversation on
    /// this model starts over afterwards. <see cref="Embeddings.Compute"/> gives one vector per token too.
    /// </summary>
    public float[] Embed(string text, Pooling pooling = Pooling.Mean, int normalize = 2, CancellationToken cancellationToken = default) =>
        pooling == Pooling.None
            ? throw new ArgumentException("Pooling.None gives one vector per token: use Embeddings.Compute", nameof(pooling))
            : Embeddings.Compute(this, Tokenizer.Encode(text, addBos: true), pooling, normalize, cancellationToken)[0];

    private static int ResolveContext(ModelConfig config, int requested, string path)
    {
        if (requested < 0)
        {
            throw new GpuLlamaException($"--ctx {requested}: the context size must be positive");
        }

        return requested == 0 ? Math.Min(config.ContextLength, 4096) : requested;
    }

    /// <summary>The placement Load would use (shared with `gpullama plan`); <paramref name="gpus"/> are the accelerators chosen.</summary>
    public static LayerPlan PlanPlacement(IWeightSource source, int context, LoadOptions options, out IReadOnlyList<DeviceInfo> gpus)
    {
        IDeviceProvider? provider = options.DeviceProvider ?? DeviceProviders.Default;
        int layers = source.Config.Layers;
        bool wantsGpu = options.PlacementFile is not null || options.GpuLayers is null or > 0 || options.Devices is { Count: > 0 };
        IReadOnlyList<DeviceInfo> all = wantsGpu && provider is not null ? provider.Discover() : [];
        if (options.PlacementFile is not null)
        {
            // the file names its devices; any discovered accelerator may appear in it
            LayerPlan fromFile = PlacementFile.Load(options.PlacementFile, layers, [.. all.Select(g => g.Name)]);
            gpus = [.. all.Where(d => fromFile.DeviceNames().Contains(d.Name))];
            options.Log?.Invoke($"placement from {options.PlacementFile}");
            return fromFile;
        }

        gpus = SelectDevices(all, options, out string why);
        if (gpus.Count > 0)
        {
            options.Log?.Invoke(why);
        }
        else if (options.GpuLayers is > 0 and < int.MaxValue || options.Devices is { Count: > 0 })
        {
            throw new GpuLlamaException($"--gpu-layers {options.GpuLayers}: no GPU was found{(provider is null ? " (the ILGPU backend GpuLlama.Kernels is not deployed)" : "")}; see `gpullama devices`, or use --devices emulated:0 to run the GPU kernels on the CPU");
        }
        else
        {
            options.Log?.Invoke(why);
        }

        if (gpus.Count == 0)
        {
            return LayerPlacement.FromGpuLayers(layers, 0, gpus, null, options.SplitMode, options.MainGpu);
        }

        if (options.GpuLayers is { } n)
        {
            if (n < 0)
            {
                throw new GpuLlamaException($"--gpu-layers {n}: must be 0 or more, or 'auto'");
            }

            return LayerPlacement.FromGpuLayers(layers, n, gpus, options.TensorSplit, options.SplitMode, options.MainGpu);
        }

        MemoryPlanOptions memory = options.MemoryPlan(context);
        return MemoryPlan.AutoFit(source.Config, source.Tensors, gpus, options.TensorSplit, options.SplitMode, options.MainGpu, memory);
    }

    /// <summary>--devices, else the first CUDA device, else the first OpenCL one; the emulated device only when named.</summary>
    private static IReadOnlyList<DeviceInfo> SelectDevices(IReadOnlyList<DeviceInfo> all, LoadOptions options, out string why)
    {
        if (options.Devices is { Count: > 0 } names)
        {
            var chosen = new List<DeviceInfo>();
            foreach (string name in names)
            {
                DeviceInfo? d = all.FirstOrDefault(x => string.Equals(x.Name, name, StringComparison.OrdinalIgnoreCase));
                if (d is null)
                {
                    throw new GpuLlamaException($"--devices: no device named '{name}' (found: {(all.Count == 0 ? "none" : string.Join(", ", all.Select(x => x.Name)))})");
                }

                chosen.Add(d);
            }

            why = $"using {string.Join(", ", chosen.Select(Describe))} (chosen with --devices)";
            return chosen;
        }

        DeviceInfo? cuda = all.FirstOrDefault(d => d.Kind == DeviceKind.Cuda);
        if (cuda is not null)
        {
            why = $"using {Describe(cuda)}: the first CUDA device";
            return [cuda];
        }

        DeviceInfo? opencl = all.FirstOrDefault(d => d.Kind == DeviceKind.OpenCL);
        if (opencl is not null)
        {
            why = $"using {Describe(opencl)}: no CUDA device, first OpenCL device";
            return [opencl];
        }

        why = "no GPU found: running on the CPU";
        return [];
    }

    private static string Describe(DeviceInfo d) => string.IsNullOrEmpty(d.Description) ? d.Name : $"{d.Name} ({d.Description})";

    public void Dispose()
    {
        Transformer.Dispose();
        Weights.Dispose();
        foreach (IDevice d in _devices)
        {
            d.Dispose();
        }

        if (_ownsSource)
        {
            Source.Dispose();
        }
    }
}
