using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Devices;

/// <summary>What the memory plan needs to know besides the model and the devices.</summary>
public sealed record MemoryPlanOptions
{
    public int ContextLength { get; init; } = 4096;

    public int BatchSize { get; init; } = 512;

    /// <summary>Head-room kept free on every GPU (driver, fragmentation): this or 2% of the device, whichever is larger.</summary>
    public long SafetyMargin { get; init; } = 256L << 20;

    /// <summary>How the KV caches store keys and values (llama.cpp's default, F16, as <see cref="Model.LoadOptions"/>).</summary>
    public KvCacheType CacheTypeK { get; init; } = KvCacheType.F16;

    public KvCacheType CacheTypeV { get; init; } = KvCacheType.F16;

    /// <summary>Smallest prompt batch that streams the CPU's layers to a GPU (<see cref="PromptOffload"/>); 0 = never.</summary>
    public int OpOffloadMinBatch { get; init; } = PromptOffload.DefaultMinBatch;

    /// <summary>Positions of a batch that get logits on the output device (<see cref="Model.LoadOptions.LogitRows"/>).</summary>
    public int LogitRows { get; init; } = 1;
}

/// <summary>Bytes one device needs for a placement (Scratch includes prompt offload's weight slots on its target).</summary>
public sealed record DeviceMemory(string Device, long Weights, long KvCache, long Scratch)
{
    public long Total => Weights + KvCache + Scratch;
}

/// <summary>
/// The one memory accounting of the engine, shared by `gpullama plan`, auto-fit and the check after loading, so
/// the estimate cannot drift from what is allocated: weights at their stored size rounded up to the device's
/// allocation granularity (<see cref="DeviceBytes"/>), a KV cache per layer on the layer's device (of the options' cache types), and the
/// activation buffers the transformer allocates per device for one batch (see Transformer.RunState), and on the GPU
/// that runs the CPU's layers for large prompt batches, the weight slots they stream through (<see cref="PromptOffload"/>).
/// A pure function of the model's tensor headers, the devices and the options: no weight is read.
/// </summary>
public static class MemoryPlan
{
    /// <summary>Bytes a GPU allocation of <paramref name="bytes"/> takes (rounded up to 256 B; IlgpuDevice allocates exactly this).</summary>
    public static long DeviceBytes(long bytes) => (bytes + 255) / 256 * 256;

    /// <summary>Per device: weights, KV cache and scratch for <paramref name="plan"/>. The CPU's weights are in the memory map (or a same-size grouped Q4_0 copy) and count zero.</summary>
    public static IReadOnlyList<DeviceMemory> Estimate(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors, LayerPlan plan, MemoryPlanOptions options)
    {
        KvCacheTypes.CheckHeadDim(options.CacheTypeK, options.CacheTypeV, c.HeadDim);
        var weights = new Dictionary<string, long>();
        var kv = new Dictionary<string, long>();
        void AddWeight(string device, string tensor)
        {
            if (device != LayerPlacement.Cpu && tensors.TryGetValue(tensor, out TensorInfo? t))
            {
                weights[device] = weights.GetValueOrDefault(device) + WeightBytes(t);
            }
        }

        AddWeight(plan.Input, TensorNames.TokenEmbedding);
        for (int l = 0; l < c.Layers; l++)
        {
            foreach (string name in TensorNames.LayerTensors(l))
            {
                AddWeight(plan.Layers[l], name);
            }

            kv[plan.Layers[l]] = kv.GetValueOrDefault(plan.Layers[l]) + DeviceBytes(options.ContextLength * options.CacheTypeK.RowBytes(c.KvDim))
                + DeviceBytes(options.ContextLength * options.CacheTypeV.RowBytes(c.KvDim));
        }

        AddWeight(plan.Output, TensorNames.OutputNorm);
        if (c.TiedEmbeddings)
        {
            if (plan.Output != plan.Input)
            {
                AddWeight(plan.Output, TensorNames.TokenEmbedding);
            }
        }
        else
        {
            AddWeight(plan.Output, TensorNames.Output);
        }

        int batch = Math.Max(1, Math.Min(options.BatchSize, options.ContextLength));
        string? target = PromptOffload.Target(plan.Layers, plan.Output, d => d == LayerPlacement.Cpu);
        long slots = PromptOffload.SlotBytes(c, tensors, plan, options.OpOffloadMinBatch, batch);
        var result = new List<DeviceMemory>();
        foreach (string d in plan.DeviceNames())
        {
            long scratch = Scratch(c, options, d == plan.Output) + (d == target ? slots : 0);
            result.Add(new DeviceMemory(d, weights.GetValueOrDefault(d), kv.GetValueOrDefault(d), scratch));
        }

        return result;
    }

    /// <summary>Device bytes of one GPU weight: quantized weights are repacked into aligned streams at upload (QuantRepack), a little larger than the file.</summary>
    public static long WeightBytes(TensorInfo t) => QuantRepack.Supports(t.Type) ? QuantRepack.DeviceBytes(t) : DeviceBytes(t.ByteLength);

    /// <summary>The transformer's activation buffers on one device for a batch (RunState), plus logits on the output device.</summary>
    public static long Scratch(ModelConfig c, MemoryPlanOptions options, bool output)
    {
        int batch = Math.Max(1, Math.Min(options.BatchSize, options.ContextLength));
        long bytes = 0;
        foreach (long f in new[] { (long)batch * c.Dim, (long)batch * Math.Max(c.Dim, c.QDim), (long)batch * c.Dim, (long)batch * c.QDim, (long)batch * c.KvDim, (long)batch * c.KvDim, (long)batch * c.HiddenDim, (long)batch * c.HiddenDim })
        {
            bytes += DeviceBytes(f * sizeof(float));
        }

        bytes += DeviceBytes((long)options.ContextLength * (c.HeadDim / 2) * 2 * sizeof(float)); // RoPE table
        if (output)
        {
            bytes += DeviceBytes((long)Math.Max(1, Math.Min(options.LogitRows, batch)) * c.VocabSize * sizeof(float));
        }

        return bytes;
    }

    /// <summary>Memory a device can give: free memory less the margin (total less the margin when free is unknown, as on OpenCL).</summary>
    public static long Budget(DeviceInfo device, MemoryPlanOptions options)
    {
        long available = device.FreeMemoryKnown ? device.FreeMemory : device.TotalMemory;
        long margin = Math.Max(options.SafetyMargin, device.TotalMemory / 50);
        return Math.Max(0, available - margin);
    }

    /// <summary>
    /// --gpu-layers auto: the largest number of trailing layers (then the output) whose weights, KV cache and scratch
    /// fit every device's budget, split as <see cref="LayerPlacement.FromGpuLayers"/> splits them.
    /// </summary>
    public static LayerPlan AutoFit(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors, IReadOnlyList<DeviceInfo> gpus,
        IReadOnlyList<float>? split, SplitMode mode, int mainGpu, MemoryPlanOptions options)
    {
        for (int n = c.Layers + 1; n > 0; n--)
        {
            LayerPlan plan = LayerPlacement.FromGpuLayers(c.Layers, n, gpus, split, mode, mainGpu);
            if (Fits(Estimate(c, tensors, plan, options), gpus, options))
            {
                return plan;
            }
        }

        return LayerPlacement.FromGpuLayers(c.Layers, 0, gpus, split, mode, mainGpu);
    }

    public static bool Fits(IReadOnlyList<DeviceMemory> need, IReadOnlyList<DeviceInfo> gpus, MemoryPlanOptions options)
    {
        foreach (DeviceMemory m in need)
        {
            DeviceInfo? d = gpus.FirstOrDefault(g => g.Name == m.Device);
            if (d is not null && m.Total > Budget(d, options))
            {
                return false;
            }
        }

        return true;
    }
}
