using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Placement;

/// <summary>Auto-fit as a pure function of the model's headers, the devices' memory and the options.</summary>
public sealed class MemoryPlanTests
{
    // tinyllama-1.1b shape in F16: 22 layers of ~88 MiB, a 125 MiB head, a 125 MiB embedding (headers only: no weights)
    private static readonly (ModelConfig Config, IReadOnlyDictionary<string, TensorInfo> Tensors) s_model = Model();

    private static (ModelConfig, IReadOnlyDictionary<string, TensorInfo>) Model()
    {
        SyntheticPreset p = SyntheticPreset.All.First(x => x.Name == "tinyllama-1.1b");
        ModelConfig c = p.ToConfig();
        var tensors = new Dictionary<string, TensorInfo>();
        foreach ((string name, long[] shape) in TensorNames.Required(c))
        {
            DType t = shape.Length == 1 ? DType.F32 : DType.F16;
            long bytes = t.RowBytes(shape[^1]) * (shape.Length == 1 ? 1 : shape[0]);
            tensors[name] = new TensorInfo(name, t, shape, 0, 0, bytes);
        }

        return (c, tensors);
    }

    private static DeviceInfo Gpu(string name, long mib, bool known = true) => new(name, DeviceKind.Cuda, mib << 20, mib << 20, known);

    private static readonly MemoryPlanOptions s_options = new() { ContextLength = 2048, BatchSize = 512, SafetyMargin = 0 };

    private static long LayerBytes(int l) => s_model.Tensors.Values.Where(t => t.Name.StartsWith($"blk.{l}.", StringComparison.Ordinal)).Sum(t => MemoryPlan.DeviceBytes(t.ByteLength));

    [Fact]
    public void EverythingFitsOnABigDevice()
    {
        LayerPlan p = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [Gpu("cuda:0", 80_000)], null, SplitMode.Layer, 0, s_options);
        Assert.Equal(23, p.OffloadedCount);
        Assert.Equal("cuda:0", p.Output);
    }

    [Fact]
    public void NothingFitsOnATinyDevice()
    {
        LayerPlan p = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [Gpu("cuda:0", 64)], null, SplitMode.Layer, 0, s_options);
        Assert.Equal(0, p.OffloadedCount);
        Assert.All(p.Layers, d => Assert.Equal("cpu", d));
    }

    [Fact]
    public void TheOutputAloneDoesNotFit()
    {
        // room for all 22 layers, their KV cache and scratch, but not also the 125 MiB head
        LayerPlan all = LayerPlacement.FromGpuLayers(22, 22, [Gpu("cuda:0", 1)], null, SplitMode.Layer, 0);
        long need = MemoryPlan.Estimate(s_model.Config, s_model.Tensors, all, s_options).Single(m => m.Device == "cuda:0").Total;
        long total = (need + (10L << 20)) * 50 / 49; // the budget keeps 2% of the device free
        var device = new DeviceInfo("cuda:0", DeviceKind.Cuda, total, total, true);
        LayerPlan p = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [device], null, SplitMode.Layer, 0, s_options with { SafetyMargin = 0 });
        Assert.Equal(22, p.OffloadedCount);
        Assert.Equal("cpu", p.Output);
        Assert.All(p.Layers, d => Assert.Equal("cuda:0", d));
    }

    [Fact]
    public void ALongContextLetsTheKvCacheDecide()
    {
        var device = Gpu("cuda:0", 3_000);
        LayerPlan shortContext = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [device], null, SplitMode.Layer, 0, s_options with { ContextLength = 2048 });
        LayerPlan longContext = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [device], null, SplitMode.Layer, 0, s_options with { ContextLength = 65536 });
        Assert.Equal(23, shortContext.OffloadedCount);
        // 22 layers x 2 x 65536 x 256 F16 values = 1.4 GiB of KV alone: fewer layers fit
        Assert.True(longContext.OffloadedCount < 23, $"long context offloaded {longContext.OffloadedCount}");
        long kvPerLayer = 2L * 65536 * s_model.Config.KvDim * 2;
        DeviceMemory m = MemoryPlan.Estimate(s_model.Config, s_model.Tensors, longContext, s_options with { ContextLength = 65536 }).Single(x => x.Device == "cuda:0");
        Assert.Equal(longContext.Layers.Count(l => l == "cuda:0") * kvPerLayer, m.KvCache);
    }

    [Fact]
    public void TwoDevicesEachStayWithinTheirBudget()
    {
        DeviceInfo[] gpus = [Gpu("cuda:0", 1_200), Gpu("cuda:1", 600)];
        LayerPlan p = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, gpus, null, SplitMode.Layer, 0, s_options);
        Assert.True(p.OffloadedCount > 0);
        Assert.True(MemoryPlan.Fits(MemoryPlan.Estimate(s_model.Config, s_model.Tensors, p, s_options), gpus, s_options));
        LayerPlan oneMore = LayerPlacement.FromGpuLayers(22, p.OffloadedCount + 1, gpus, null, SplitMode.Layer, 0);
        Assert.False(p.OffloadedCount < 23 && MemoryPlan.Fits(MemoryPlan.Estimate(s_model.Config, s_model.Tensors, oneMore, s_options), gpus, s_options));
    }

    [Fact]
    public void EstimateCountsEachLayersWeightsWhereTheyRun()
    {
        LayerPlan p = LayerPlacement.FromGpuLayers(22, 5, [Gpu("cuda:0", 1)], null, SplitMode.Layer, 0);
        DeviceMemory gpu = MemoryPlan.Estimate(s_model.Config, s_model.Tensors, p, s_options).Single(m => m.Device == "cuda:0");
        Assert.Equal(Enumerable.Range(17, 5).Sum(LayerBytes), gpu.Weights);

        // the scratch holds the activations and, for prompt offload, one layer's weights: the slots the 17 CPU layers
        // stream through (all of one shape and format here); without offload, the activations only
        Assert.Equal(MemoryPlan.Scratch(s_model.Config, s_options, output: false) + LayerBytes(0), gpu.Scratch);
        DeviceMemory noOffload = MemoryPlan.Estimate(s_model.Config, s_model.Tensors, p, s_options with { OpOffloadMinBatch = 0 }).Single(m => m.Device == "cuda:0");
        Assert.Equal(MemoryPlan.Scratch(s_model.Config, s_options, output: false), noOffload.Scratch);
        DeviceMemory cpu = MemoryPlan.Estimate(s_model.Config, s_model.Tensors, p, s_options).Single(m => m.Device == "cpu");
        Assert.Equal(MemoryPlan.Scratch(s_model.Config, s_options, output: true), cpu.Scratch);
    }

    [Fact]
    public void UnknownFreeMemoryUsesTheTotal()
    {
        var opencl = new DeviceInfo("opencl:0", DeviceKind.OpenCL, 80_000L << 20, 0, false);
        LayerPlan p = MemoryPlan.AutoFit(s_model.Config, s_model.Tensors, [opencl], null, SplitMode.Layer, 0, s_options);
        Assert.Equal(23, p.OffloadedCount);
    }

    /// <summary>
    /// Device bytes per block of each repacked format (quants, 5th bits, float scales, K-quant scale bytes) against the
    /// file's: a tensor of 256 × 256 blocks has every stream a multiple of 256 B, and an unused stream is one padded
    /// 256 B allocation. The planner counts exactly this for a quantized model's layers.
    /// </summary>
    [Theory]
    [InlineData(DType.Q8_0, 36, 2)]
    [InlineData(DType.Q4_0, 20, 2)]
    [InlineData(DType.Q4_1, 24, 2)]
    [InlineData(DType.Q5_0, 24, 1)]
    [InlineData(DType.Q5_1, 28, 1)]
    [InlineData(DType.Q4_K, 152, 1)]
    [InlineData(DType.Q5_K, 184, 0)]
    [InlineData(DType.Q6_K, 212, 0)]
    public void Quantized_weights_are_counted_at_their_repacked_size(DType type, int bytesPerBlock, int unusedStreams)
    {
        int cols = 256 * type.BlockSize();
        var info = new TensorInfo("blk.0.ffn_up.weight", type, [256, cols], 0, 0, 256 * type.RowBytes(cols));
        Assert.Equal(256L * 256 * bytesPerBlock + 256L * unusedStreams, QuantRepack.DeviceBytes(info));

        // A one-layer model in this type, everything (token embedding too) on the device: weights = repacked matrices + padded F32 norms.
        ModelConfig c = new SyntheticPreset("plan-test", "a one-layer test model", 256, 1, 4, 2, 512, 512, 64).ToConfig();
        var tensors = new Dictionary<string, TensorInfo>();
        long want = 0;
        foreach ((string name, long[] shape) in TensorNames.Required(c))
        {
            DType t = shape.Length == 1 ? DType.F32 : type;
            var ti = new TensorInfo(name, t, shape, 0, 0, t.RowBytes(shape[^1]) * (shape.Length == 1 ? 1 : shape[0]));
            tensors[name] = ti;
            want += shape.Length == 1 ? MemoryPlan.DeviceBytes(ti.ByteLength) : QuantRepack.DeviceBytes(ti);
        }

        var all = new LayerPlan("cuda:0", ["cuda:0"], "cuda:0");
        DeviceMemory gpu = MemoryPlan.Estimate(c, tensors, all, s_options).Single(m => m.Device == "cuda:0");
        Assert.Equal(want, gpu.Weights);
    }
}
