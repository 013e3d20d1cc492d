using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using GpuLlama.Model;
using GpuLlama.Tests.Formats;
using GpuLlama.Tests.Golden;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>Quantized weights through IlgpuDevice (upload repacking, MatMul, Embed, memory accounting) on the emulator.</summary>
public sealed unsafe class QuantDeviceTests
{
    public static TheoryData<DType> DeviceTypes() => [DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.IQ4_NL, DType.IQ4_XS];

    /// <summary>Every device format with 2 activation rows (the warp-per-row kernels) and 17 (the shared-memory GEMM's 16-row tiles here).</summary>
    public static TheoryData<DType, int> DeviceTypesAndBatches()
    {
        var data = new TheoryData<DType, int>();
        foreach (DType t in DeviceTypes())
        {
            data.Add(t, 2);
            data.Add(t, 17);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(DeviceTypesAndBatches))]
    public void Upload_matmul_and_embed_match_the_cpu(DType type, int xRows)
    {
        var rng = new Random(71 + (int)type);
        const int rows = 6;
        int cols = type.BlockSize() == 256 ? 512 : 96;
        int rowBytes = (int)type.RowBytes(cols);
        byte[] w = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            BlockSpec.RandomRow(type, cols, rng).CopyTo(w.AsSpan(r * rowBytes));
        }

        float[] x = Enumerable.Range(0, xRows * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var info = new TensorInfo("blk.0.ffn_up.weight", type, [rows, cols], 0, 0, w.Length);
        using IDevice device = new IlgpuDeviceProvider().Create("emulated:0");
        var ilgpu = (IlgpuDevice)device;
        fixed (byte* pw = w)
        {
            long before = ilgpu.AllocatedBytes;
            using DeviceWeight weight = device.Upload(new WeightView(info, pw));
            Assert.Equal(QuantRepack.DeviceBytes(info), ilgpu.AllocatedBytes - before);

            Assert.Equal(16, ilgpu.SharedTile);
            using DeviceBuffer xs = device.Allocate(xRows * cols);
            using DeviceBuffer dst = device.Allocate(xRows * rows);
            device.Write(xs, x);
            device.MatMul(dst, weight, xs, xRows);
            float[] got = new float[xRows * rows];
            device.Read(dst, got);
            fixed (float* px = x)
            {
                for (int r = 0; r < xRows; r++)
                {
                    for (int o = 0; o < rows; o++)
                    {
                        float want = CpuQuantDot.DotRow(type, pw + o * rowBytes, px + r * cols, cols);
                        Assert.True(Math.Abs(got[r * rows + o] - want) <= 1e-4 * (1 + Math.Abs(want)), $"{type} row {r} out {o}: {got[r * rows + o]} vs CPU {want}");
                    }
                }
            }

            using DeviceBuffer embedded = device.Allocate(2 * cols);
            device.Embed(embedded, weight, [5, 1]);
            float[] e = new float[2 * cols];
            device.Read(embedded, e);
            float[] reference = new float[cols];
            QuantBlocks.DequantizeRow(type, w.AsSpan(5 * rowBytes, rowBytes), reference);
            Assert.Equal(reference, e.AsSpan(0, cols).ToArray());
            QuantBlocks.DequantizeRow(type, w.AsSpan(1 * rowBytes, rowBytes), reference);
            Assert.Equal(reference, e.AsSpan(cols, cols).ToArray());
        }
    }

    /// <summary>
    /// A one-layer model (4 heads / 2 KV heads, FFN = dim, vocab 260: the synthetic vocabulary's minimum; dim 256 where
    /// K-quant rows need it, else 64 to keep the emulator fast) with every matrix — token embedding and output head
    /// included — in <paramref name="type"/>, written by our own GGUF writer (synthetic weights quantized by
    /// BlockQuantizer, then <c>gpullama export</c>'s GgufExport) and read back: all layers, the embedding and the head on
    /// the emulated accelerator reproduce the CPU path (repacking, Embed and MatMul kernels, prefill and decode).
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_1, 64)]
    [InlineData(DType.Q5_1, 64)]
    [InlineData(DType.Q5_K, 256)]
    [InlineData(DType.IQ4_NL, 64)]
    [InlineData(DType.IQ4_XS, 256)]
    public void Written_models_run_the_same_on_the_device_and_the_cpu(DType type, int dim)
    {
        var preset = new SyntheticPreset("quant-test", "a one-layer test model", dim, 1, 4, 2, dim, 260, 64);
        using var file = new TempFile();
        using (SyntheticSource synthetic = SyntheticSource.Create(preset, type))
        {
            GgufExport.ExportGguf(synthetic, file.Path);
        }

        using IWeightSource source = WeightSource.Open(file.Path);
        Assert.IsType<GgufSource>(source);
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wq(0), TensorNames.Wk(0), TensorNames.FfnDown(0), TensorNames.Output })
        {
            Assert.Equal(type, source.Tensors[name].Type);
        }

        int[] prompt = [1, 142, 259];
        using var cpu = new CpuDevice(2, exactQuantDots: true);
        (float[] want, int[] wantGreedy) = GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), prompt, 2);
        using IDevice device = new IlgpuDeviceProvider().Create("emulated:0");
        (float[] logits, int[] greedy) = GoldenRun.Run(source, DevicePlacement.All(device, source.Config.Layers), prompt, 2);
        double error = GpuLlama.Tests.Golden.Golden.RelativeError(logits, want);
        Assert.True(error <= 1e-4, $"{type} model on the emulator vs the CPU: max|Δ|/max|ref| = {error:E2} > 1e-4");
        Assert.Equal(wantGreedy, greedy);
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "tiny-llama-a", "tiny-llama-a-q8_0.gguf" },
        { "tiny-llama-a", "tiny-llama-a-Q4_0.gguf" },
        { "tiny-llama-a", "tiny-llama-a-Q4_K_M.gguf" },   // Q5_0 + Q8_0
        { "tiny-llama-a", "tiny-llama-a-Q6_K.gguf" },     // Q8_0
        { "tiny-llama-kq", "tiny-llama-kq-Q4_K_M.gguf" }, // Q4_K + Q6_K
        { "tiny-llama-kq", "tiny-llama-kq-Q6_K.gguf" },
    };

    /// <summary>
    /// Whole quantized models with every layer and the output on the emulated accelerator reproduce the CPU path with
    /// exact quantized dots (float32 activations; the default CPU path rounds them to 8 bits as llama.cpp does). That
    /// path itself matches golden.json's dequantized-F32 reference on the full prompt (QuantGoldenTests);
    /// here a short prompt keeps ILGPU's CPU accelerator (one OS thread per GPU thread) within the CI budget, and
    /// both sides do exact float math on the same blocks, so they agree far inside the 2e-3 acceptance bound.
    /// </summary>
    [FixtureTheory("tiny-llama-kq/golden.json")]
    [MemberData(nameof(Cases))]
    public void Quantized_models_on_the_device_match_the_cpu_path(string fixture, string file)
    {
        int[] prompt = GpuLlama.Tests.Golden.Golden.Load("tiny-llama-a", "f32").PromptIds[..8];
        using IWeightSource source = WeightSource.Open(Fixtures.Get(fixture, file));
        using var cpu = new CpuDevice(2, exactQuantDots: true);
        (float[] want, int[] wantGreedy) = GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), prompt, 2);
        using IDevice device = new IlgpuDeviceProvider().Create("emulated:0");
        (float[] logits, int[] greedy) = GoldenRun.Run(source, DevicePlacement.All(device, source.Config.Layers), prompt, 2);
        double error = GpuLlama.Tests.Golden.Golden.RelativeError(logits, want);
        Assert.True(error <= 1e-4, $"{file} on the emulator vs the CPU: max|Δ|/max|ref| = {error:E2} > 1e-4");
        Assert.Equal(wantGreedy, greedy);
    }
}
