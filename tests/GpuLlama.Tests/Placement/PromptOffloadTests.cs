using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Placement;

/// <summary>
/// Prompt offload on ILGPU's CPU accelerator: CPU-resident layers streamed to the "GPU" for large batches must give
/// the CPU path's logits and tokens, stream only for batches of the minimum size or more, keep attention over the
/// CPU's KV cache (a second batch attends to the first), and allocate exactly the slots the memory plan counts.
/// </summary>
[Collection("emulated")]
public sealed unsafe class PromptOffloadTests
{
    private const int Layers = 3;
    private const int Context = 64;

    // 3 layers with GQA (4 heads, 2 KV heads); K-quants need rows of 256
    private static SyntheticPreset Shape(int dim) => new("offload-test", "a small GQA model", dim, Layers, 4, 2, 2 * dim, 300, Context);

    private static readonly int[] s_first = [.. Enumerable.Range(0, 12).Select(i => (i * 37 + 5) % 300)];
    private static readonly int[] s_second = [.. Enumerable.Range(0, 9).Select(i => (i * 53 + 11) % 300)];

    /// <summary>Two prompt batches (the second attends to the first), then greedy decoding; the logits after each batch.</summary>
    private static (float[] First, float[] Second, int[] Greedy) Run(Transformer t)
    {
        t.Forward(s_first, 0);
        float[] first = t.LogitsLast().ToArray();
        t.Forward(s_second, s_first.Length);
        float[] second = t.LogitsLast().ToArray();
        var greedy = new int[3];
        int position = s_first.Length + s_second.Length;
        for (int i = 0; i < greedy.Length; i++)
        {
            greedy[i] = t.ArgmaxLast();
            t.Forward([greedy[i]], position++);
        }

        return (first, second, greedy);
    }

    // placements: the layers' devices, then the output's. "cpu,cpu,gpu|gpu" is --gpu-layers 2 (layers 0 and 1 stream);
    // "gpu,cpu,cpu|cpu" and "gpu,cpu,gpu2|gpu2" are placement files' orders (back to the CPU, on to a second device)
    [Theory]
    [InlineData(DType.F32, 64, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.F16, 64, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.BF16, 64, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.Q8_0, 64, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.Q4_0, 64, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.Q4_K, 256, "cpu,cpu,gpu|gpu")]
    [InlineData(DType.F32, 64, "gpu,cpu,cpu|cpu")]
    [InlineData(DType.Q8_0, 64, "gpu,cpu,gpu2|gpu2")]     // two devices: the streamed layer runs on the first
    public void Streamed_prompt_batches_match_the_cpu_path(DType type, int dim, string layout)
    {
        using SyntheticSource source = SyntheticSource.Create(Shape(dim), type);

        // reference: everything on the CPU with exact float math on the stored weights, as the device does
        using var cpuOnly = new CpuDevice(2, exactQuantDots: true);
        DevicePlacement all = DevicePlacement.All(cpuOnly, Layers);
        using ModelWeights refWeights = ModelWeights.Upload(source, all);
        using var reference = new Transformer(source.Config, refWeights, all, Context);
        Assert.Null(reference.OffloadDevice);
        (float[] want1, float[] want2, int[] wantGreedy) = Run(reference);

        // the CPU's layers streamed to the device for batches of 8+
        using var cpu = new CpuDevice(2, exactQuantDots: true);
        using IDevice gpu = new IlgpuDeviceProvider().Create("emulated:0");
        using IDevice gpu2 = new IlgpuDeviceProvider().Create("emulated:1");
        IDevice Of(string name) => name switch { "cpu" => cpu, "gpu" => gpu, _ => gpu2 };
        string[] parts = layout.Split('|');
        var placement = new DevicePlacement(cpu, [.. parts[0].Split(',').Select(Of)], Of(parts[1]));
        int cpuLayers = parts[0].Split(',').Count(d => d == "cpu");
        using ModelWeights weights = ModelWeights.Upload(source, placement);
        using var t = new Transformer(source.Config, weights, placement, Context, offloadMinBatch: 8);
        Assert.Same(gpu, t.OffloadDevice);
        Assert.Equal(cpuLayers, t.StreamedLayerCount);
        (float[] got1, float[] got2, int[] greedy) = Run(t);

        Assert.Equal(2 * cpuLayers, t.StreamedLayerRuns); // two batches; decoding (one token) streams nothing
        foreach ((float[] got, float[] want, string what) in new[] { (got1, want1, "first batch"), (got2, want2, "second batch") })
        {
            double error = Golden.Golden.RelativeError(got, want);
            Assert.True(error <= 1e-4, $"{type} {layout} {what}: max|Δ|/max|ref| = {error:E2} > 1e-4");
        }

        Assert.Equal(wantGreedy, greedy);
    }

    [Fact]
    public void Batches_below_the_minimum_and_offload_off_stream_nothing()
    {
        using SyntheticSource source = SyntheticSource.Create(Shape(64), DType.F16);
        using var cpu = new CpuDevice(2);
        using IDevice gpu = new IlgpuDeviceProvider().Create("emulated:0");
        var placement = new DevicePlacement(cpu, [cpu, cpu, gpu], gpu);
        using ModelWeights weights = ModelWeights.Upload(source, placement);
        using (var t = new Transformer(source.Config, weights, placement, Context, offloadMinBatch: 16))
        {
            t.Forward(s_first, 0); // 12 tokens < 16
            Assert.Equal(0, t.StreamedLayerRuns);
        }

        using (var off = new Transformer(source.Config, weights, placement, Context, offloadMinBatch: 0))
        {
            Assert.Null(off.OffloadDevice);
            off.Forward(s_first, 0);
            Assert.Equal(0, off.StreamedLayerRuns);
        }

        // batches can never reach the minimum: no device, no slots
        using var small = new Transformer(source.Config, weights, placement, Context, batchSize: 16, offloadMinBatch: 32);
        Assert.Null(small.OffloadDevice);
    }

    [Fact]
    public void The_slots_allocated_are_what_the_memory_plan_counts()
    {
        using SyntheticSource source = SyntheticSource.Create(Shape(64), DType.Q8_0);
        using var cpu = new CpuDevice(2);
        using IDevice gpu = new IlgpuDeviceProvider().Create("emulated:0");
        var placement = new DevicePlacement(cpu, [cpu, cpu, gpu], gpu);
        var plan = new LayerPlan("cpu", ["cpu", "cpu", "emulated:0"], "emulated:0");
        using ModelWeights weights = ModelWeights.Upload(source, placement);

        long before = gpu.AllocatedBytes;
        using (new Transformer(source.Config, weights, placement, Context, offloadMinBatch: 0))
        {
            long without = gpu.AllocatedBytes - before;
            using var t = new Transformer(source.Config, weights, placement, Context, offloadMinBatch: 8);
            long with = gpu.AllocatedBytes - before - without;
            long slots = PromptOffload.SlotBytes(source.Config, source.Tensors, plan, 8, t.BatchSize);
            Assert.True(slots > 0);
            Assert.Equal(without + slots, with);

            // the plan adds them to the offload device's scratch only, and only while offload can happen
            var options = new MemoryPlanOptions { ContextLength = Context, BatchSize = t.BatchSize, OpOffloadMinBatch = 8 };
            DeviceMemory on = MemoryPlan.Estimate(source.Config, source.Tensors, plan, options).Single(m => m.Device == "emulated:0");
            DeviceMemory off = MemoryPlan.Estimate(source.Config, source.Tensors, plan, options with { OpOffloadMinBatch = 0 }).Single(m => m.Device == "emulated:0");
            Assert.Equal(slots, on.Scratch - off.Scratch);
            Assert.Equal(0, MemoryPlan.Estimate(source.Config, source.Tensors, plan, options).Single(m => m.Device == "cpu").Scratch - MemoryPlan.Scratch(source.Config, options, false));
            var allOnGpu = new LayerPlan("cpu", ["emulated:0", "emulated:0", "emulated:0"], "emulated:0");
            Assert.Equal(0, PromptOffload.SlotBytes(source.Config, source.Tensors, allOnGpu, 8, t.BatchSize));
        }
    }

    [Fact]
    public void Layers_of_different_formats_get_a_slot_per_format()
    {
        // as in a Q4_K_M file, where ffn_down is Q6_K in some layers and Q4_K in others
        using SyntheticSource source = SyntheticSource.Create(Shape(64), DType.Q8_0);
        var tensors = new Dictionary<string, TensorInfo>(source.Tensors);
        TensorInfo down = tensors[TensorNames.FfnDown(1)];
        tensors[down.Name] = down with { Type = DType.Q4_0, ByteLength = DType.Q4_0.RowBytes(down.Cols) * down.Rows };
        IReadOnlyList<(PromptOffload.SlotKey Key, TensorInfo First)> slots = PromptOffload.Slots(source.Config, tensors, [true, true, false]);
        Assert.Equal(10, slots.Count);
        Assert.Equal([DType.Q8_0, DType.Q4_0], slots.Where(s => s.Key.Role == 8).Select(s => s.Key.Type));
        Assert.Equal(TensorNames.FfnDown(1), slots.Single(s => s.Key.Type == DType.Q4_0).First.Name);

        // a format the device lacks keeps its layer on the CPU
        tensors[down.Name] = down with { Type = DType.Q3_K };
        Assert.Equal([true, false, false], PromptOffload.StreamedLayers(source.Config, tensors, l => l < 2));
    }

    [Theory]
    [InlineData(DType.F16)]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q6_K)]
    public void Reload_replaces_a_weight_in_place(DType type)
    {
        const int rows = 4;
        int cols = type.BlockSize() == 256 ? 256 : 64;
        var rng = new Random(5);
        int rowBytes = (int)type.RowBytes(cols);
        byte[] RandomRows() => [.. Enumerable.Range(0, rows).SelectMany(_ => type == DType.F16
            ? Enumerable.Range(0, cols).SelectMany(_ => BitConverter.GetBytes(BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() * 2 - 1))))
            : Quant.BlockSpec.RandomRow(type, cols, rng).ToArray())];
        byte[] a = RandomRows(), b = RandomRows();
        var info = new TensorInfo("blk.0.ffn_up.weight", type, [rows, cols], 0, 0, a.Length);
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        using IDevice device = new IlgpuDeviceProvider().Create("emulated:0");
        Assert.True(device.StreamsWeights);
        fixed (byte* pa = a, pb = b)
        {
            using DeviceWeight slot = device.Upload(new WeightView(info, pa));
            long allocated = device.AllocatedBytes;
            device.Reload(slot, new WeightView(info with { Name = "blk.1.ffn_up.weight" }, pb));
            Assert.Equal(allocated, device.AllocatedBytes);

            using DeviceBuffer xs = device.Allocate(cols);
            using DeviceBuffer dst = device.Allocate(rows);
            device.Write(xs, x);
            device.MatMul(dst, slot, xs, 1);
            float[] got = new float[rows];
            device.Read(dst, got);
            var expected = new float[cols];
            for (int r = 0; r < rows; r++)
            {
                QuantBlocks.DequantizeRow(type, b.AsSpan(r * rowBytes, rowBytes), expected);
                double want = 0;
                for (int j = 0; j < cols; j++)
                {
                    want += (double)expected[j] * x[j];
                }

                Assert.True(Math.Abs(got[r] - want) <= 1e-4 * (1 + Math.Abs(want)), $"{type} row {r}: {got[r]} vs {want} (the reloaded weights)");
            }

            var wrong = new TensorInfo("blk.1.ffn_down.weight", type, [rows / 2, cols], 0, 0, a.Length / 2);
            var wrongView = new WeightView(wrong, pb);
            ArgumentException e = Assert.Throws<ArgumentException>(() => device.Reload(slot, wrongView));
            Assert.Contains("blk.1.ffn_down.weight", e.Message);
        }

        using var cpu = new CpuDevice(1);
        Assert.False(((IDevice)cpu).StreamsWeights);
    }
}
