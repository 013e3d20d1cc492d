using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>The device kernels on ILGPU's CPU accelerator (small warps) against CpuQuantDot (their PTX gate is in PtxGateTests).</summary>
public sealed unsafe class QuantMatMulKernelTests : IDisposable
{
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly QuantMatMulKernels _kernels;

    public QuantMatMulKernelTests()
    {
        _context = Context.Create(b => b.CPU(new CPUDevice(4, 4, 1)));
        _accelerator = _context.CreateCPUAccelerator(0);
        _kernels = new QuantMatMulKernels(_accelerator);
    }

    public void Dispose()
    {
        _accelerator.Dispose();
        _context.Dispose();
    }

    public static TheoryData<DType> DeviceTypes() => [DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    [Theory]
    [MemberData(nameof(DeviceTypes))]
    public void MatMul_matches_the_cpu_dot(DType type)
    {
        // 6 rows (not a multiple of the 4 warps per group) of 3 legacy blocks or 2 super-blocks; 2 x rows.
        var rng = new Random(17 + (int)type);
        int rows = 6;
        int cols = type.BlockSize() == 256 ? 512 : 96;
        int xRows = 2;
        byte[] w = new byte[rows * type.RowBytes(cols)];
        for (int r = 0; r < rows; r++)
        {
            BlockSpec.RandomRow(type, cols, rng).CopyTo(w.AsSpan(r * (int)type.RowBytes(cols)));
        }

        float[] x = new float[xRows * cols];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        float[] start = Enumerable.Range(0, xRows * rows).Select(i => 0.25f * i).ToArray();
        using QuantWeight weight = UploadWeight(type, w, rows, cols);
        using MemoryBuffer1D<float, Stride1D.Dense> xs = _accelerator.Allocate1D(x);
        using MemoryBuffer1D<float, Stride1D.Dense> dst = _accelerator.Allocate1D(start);
        foreach (bool accumulate in new[] { false, true })
        {
            dst.CopyFromCPU(start);
            _kernels.MatMul(_accelerator.DefaultStream, dst.View, weight, xs.View, xRows, accumulate);
            _accelerator.Synchronize();
            float[] got = dst.GetAsArray1D();
            for (int r = 0; r < xRows; r++)
            {
                for (int o = 0; o < rows; o++)
                {
                    (double want, double abs) = Reference(type, w.AsSpan(o * (int)type.RowBytes(cols), (int)type.RowBytes(cols)), x.AsSpan(r * cols, cols));
                    if (accumulate)
                    {
                        want += start[r * rows + o];
                    }

                    float g = got[r * rows + o];
                    Assert.True(Math.Abs(g - want) <= 1e-5 * abs + 1e-6, $"{type} x row {r}, out {o} (accumulate {accumulate}): {g} vs {want}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(DeviceTypes))]
    public void Embed_dequantizes_the_token_rows(DType type)
    {
        var rng = new Random(31 + (int)type);
        int rows = 5;
        int cols = type.BlockSize() == 256 ? 512 : 96;
        int rowBytes = (int)type.RowBytes(cols);
        byte[] w = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            BlockSpec.RandomRow(type, cols, rng).CopyTo(w.AsSpan(r * rowBytes));
        }

        int[] tokens = [3, 0, 4, 3];
        using QuantWeight weight = UploadWeight(type, w, rows, cols);
        using MemoryBuffer1D<int, Stride1D.Dense> ids = _accelerator.Allocate1D(tokens);
        using MemoryBuffer1D<float, Stride1D.Dense> dst = _accelerator.Allocate1D<float>(tokens.Length * cols);
        _kernels.Embed(_accelerator.DefaultStream, dst.View, weight, ids.View, tokens.Length);
        _accelerator.Synchronize();
        float[] got = dst.GetAsArray1D();
        float[] want = new float[cols];
        for (int i = 0; i < tokens.Length; i++)
        {
            QuantBlocks.DequantizeRow(type, w.AsSpan(tokens[i] * rowBytes, rowBytes), want);
            for (int c = 0; c < cols; c++)
            {
                Assert.True(want[c] == got[i * cols + c], $"{type} token {tokens[i]} col {c}: {got[i * cols + c]} vs {want[c]}");
            }
        }
    }

    [Fact]
    public void Repack_keeps_every_block_value()
    {
        // The repacked streams, read back by hand, give the reference dequantization.
        var rng = new Random(5);
        const int cols = 256;
        foreach (DType type in new[] { DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.Q5_0, DType.Q4_1, DType.Q5_1 })
        {
            byte[] row = BlockSpec.RandomRow(type, cols, rng);
            float[] want = new float[cols];
            QuantBlocks.DequantizeRow(type, row, want);
            QuantRepack p;
            fixed (byte* r = row)
            {
                p = QuantRepack.Create(type, r, 1, cols);
            }

            for (int e = 0; e < cols; e++)
            {
                float v = type switch
                {
                    DType.Q4_K => p.Scales[0] * AuxByte(p, e / 32) * KNibble(p, e) - p.Scales[1] * AuxByte(p, 8 + e / 32),
                    DType.Q5_K => p.Scales[0] * AuxByte(p, e / 32) * (KNibble(p, e) | (((p.High[(e % 32) / 4] >> (8 * (e % 4) + e / 32)) & 1) << 4)) - p.Scales[1] * AuxByte(p, 8 + e / 32),
                    DType.Q6_K => p.Scales[0] * (sbyte)AuxByte(p, e / 16) * Q6(p, e),
                    DType.Q5_0 => ((int)(LegacyNibble(p, e) | (((p.High[e / 32] >> (e % 32)) & 1) << 4)) - 16) * p.Scales[e / 32],
                    DType.Q4_1 => LegacyNibble(p, e) * p.Scales[2 * (e / 32)] + p.Scales[2 * (e / 32) + 1],
                    _ => (LegacyNibble(p, e) | (((p.High[e / 32] >> (e % 32)) & 1) << 4)) * p.Scales[2 * (e / 32)] + p.Scales[2 * (e / 32) + 1],
                };
                Assert.Equal(want[e], v);
            }
        }
    }

    private static byte AuxByte(QuantRepack p, int i) => (byte)(p.Aux[i / 4] >> (8 * (i % 4)));

    /// <summary>The 4-bit part of value e of a legacy block row: byte e%16 of its block, high nibble for e%32 ≥ 16.</summary>
    private static uint LegacyNibble(QuantRepack p, int e) => (p.Quants[(e / 32) * 4 + (e % 16) / 4] >> (8 * (e % 4) + ((e % 32) >= 16 ? 4 : 0))) & 0xF;

    /// <summary>The 4-bit part of value e of a Q4_K/Q5_K super-block: byte 32·(e/64) + e%32, high nibble for odd sub-blocks.</summary>
    private static uint KNibble(QuantRepack p, int e) => (p.Quants[(e / 64) * 8 + (e % 32) / 4] >> (8 * (e % 4) + 4 * ((e / 32) % 2))) & 0xF;

    private static int Q6(QuantRepack p, int e)
    {
        int c = e / 128;
        int k = (e % 128) / 32;
        int l = e % 32;
        int qlByte = 64 * c + 32 * (k % 2) + l;
        int low = (int)((p.Quants[qlByte / 4] >> (8 * (qlByte % 4) + (k >= 2 ? 4 : 0))) & 0xF);
        int qhByte = 32 * c + l;
        int highBits = (int)((p.High[qhByte / 4] >> (8 * (qhByte % 4) + 2 * k)) & 3);
        return (low | (highBits << 4)) - 32;
    }

    private QuantWeight UploadWeight(DType type, byte[] w, int rows, int cols)
    {
        fixed (byte* p = w)
        {
            return QuantWeight.Upload(_accelerator, type, p, rows, cols);
        }
    }

    private static (double Dot, double Abs) Reference(DType type, ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        float[] w = new float[x.Length];
        QuantBlocks.DequantizeRow(type, row, w);
        double dot = 0;
        double abs = 0;
        for (int i = 0; i < x.Length; i++)
        {
            dot += (double)w[i] * x[i];
            abs += Math.Abs((double)w[i] * x[i]);
        }

        // The CPU kernel must agree too: both devices compute the same thing.
        fixed (byte* r = row)
        fixed (float* px = x)
        {
            float cpu = CpuQuantDot.DotRow(type, r, px, x.Length);
            Assert.True(Math.Abs(cpu - dot) <= 1e-5 * abs);
        }

        return (dot, abs);
    }
}
