using System.Runtime.Intrinsics.X86;
using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

public unsafe class CpuQuantDotTests
{
    public static TheoryData<DType> AllTypes()
    {
        TheoryData<DType> data = [DType.F32, DType.F16, DType.BF16];
        foreach (DType t in BlockSpec.QuantTypes)
        {
            data.Add(t);
        }

        return data;
    }

    /// <summary>Column counts: an odd number of legacy blocks (a kernel tail), and several chunks of 1024.</summary>
    private static int[] ColumnCounts(DType type) => type.BlockSize() == 256 ? [256, 256 * 5, 256 * 9] : [32, 32 * 37, 32 * 96];

    private static byte[] RandomRow(DType type, int cols, Random rng)
    {
        if (type.IsQuantized())
        {
            return BlockSpec.RandomRow(type, cols, rng);
        }

        float[] values = RandomX(cols, rng);
        byte[] row = new byte[type.RowBytes(cols)];
        for (int i = 0; i < cols; i++)
        {
            switch (type)
            {
                case DType.F32: BitConverter.TryWriteBytes(row.AsSpan(4 * i), values[i]); break;
                case DType.F16: BitConverter.TryWriteBytes(row.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i])); break;
                default: BitConverter.TryWriteBytes(row.AsSpan(2 * i), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16)); break;
            }
        }

        return row;
    }

    private static float[] RandomX(int n, Random rng)
    {
        float[] x = new float[n];
        for (int i = 0; i < n; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        return x;
    }

    /// <summary>
    /// The float64 dot of the reference dequantization with x, and Σ|w·x| — float32 summation of n products errs by at
    /// most about n·2^-24·Σ|w·x| in the worst case and far less in practice; 1e-5 relative to Σ|w·x| is ggml's
    /// MAX_DOT_PRODUCT_ERROR idea made strict, since no activation rounding is involved.
    /// </summary>
    private static (double Dot, double Abs) Reference(DType type, byte[] row, float[] x)
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

        return (dot, abs);
    }

    private static void AssertClose(double want, double abs, float got, string what)
    {
        Assert.True(abs > 0, $"{what}: degenerate test data");
        Assert.True(Math.Abs(got - want) <= 1e-5 * abs, $"{what}: got {got:R}, want {want:R} (Σ|wx| {abs})");
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void DotRow_matches_the_dequantized_reference(DType type)
    {
        var rng = new Random(99 + (int)type);
        foreach (int cols in ColumnCounts(type))
        {
            byte[] row = RandomRow(type, cols, rng);
            float[] x = RandomX(cols, rng);
            (double want, double abs) = Reference(type, row, x);
            fixed (byte* r = row)
            fixed (float* px = x)
            {
                AssertClose(want, abs, CpuQuantDot.DotRow(type, r, px, cols), $"{type} DotRow cols {cols}");
                AssertClose(want, abs, CpuQuantDot.DotChunked(type, r, px, cols), $"{type} generic path cols {cols}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void Vectorized_dequantize_is_bit_identical_to_the_reference(DType type)
    {
        var rng = new Random(5 + (int)type);
        int cols = ColumnCounts(type)[1];
        byte[] row = RandomRow(type, cols, rng);
        float[] want = new float[cols];
        float[] got = new float[cols];
        QuantBlocks.DequantizeRow(type, row, want);
        fixed (byte* r = row)
        fixed (float* g = got)
        {
            CpuQuantDot.Dequantize(type, r, g, cols);
        }

        for (int i = 0; i < cols; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]), $"{type} element {i}: {got[i]:R} vs reference {want[i]:R}");
        }
    }

    [Fact]
    public void Avx2_kernels_match_the_reference()
    {
        if (!Avx2.IsSupported || !Fma.IsSupported)
        {
            return;
        }

        var rng = new Random(3);
        foreach (DType type in new[] { DType.Q8_0, DType.Q4_0 })
        {
            int cols = 32 * 37;
            byte[] row = BlockSpec.RandomRow(type, cols, rng);
            float[] x = RandomX(cols, rng);
            (double want, double abs) = Reference(type, row, x);
            fixed (byte* r = row)
            fixed (float* px = x)
            {
                float got = type == DType.Q8_0 ? CpuQuantDot.DotQ8_0Avx2(r, px, cols / 32) : CpuQuantDot.DotQ4_0Avx2(r, px, cols / 32);
                AssertClose(want, abs, got, $"{type} AVX2");
            }
        }
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q5_0)]
    [InlineData(DType.Q5_1)]
    [InlineData(DType.Q4_K)]
    [InlineData(DType.Q5_K)]
    [InlineData(DType.Q6_K)]
    public void Avx2_dequantization_is_bit_identical_to_the_reference(DType type)
    {
        if (!Avx2.IsSupported || !Fma.IsSupported)
        {
            return;
        }

        var rng = new Random(23 + (int)type);
        int cols = type.BlockSize() == 256 ? 256 * 3 : 32 * 37;
        byte[] row = BlockSpec.RandomRow(type, cols, rng);
        float[] want = new float[cols];
        float[] got = new float[cols];
        QuantBlocks.DequantizeRow(type, row, want);
        fixed (byte* r = row)
        fixed (float* g = got)
        {
            Assert.True(CpuQuantDot.DequantizeAvx2(type, r, g, cols));
        }

        for (int i = 0; i < cols; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]), $"{type} element {i}: {got[i]:R} vs reference {want[i]:R}");
        }
    }

    [Fact]
    public void DotRow_rejects_partial_blocks()
    {
        byte[] row = new byte[34];
        float[] x = new float[48];
        Assert.Throws<ArgumentException>(() =>
        {
            fixed (byte* r = row)
            fixed (float* px = x)
            {
                CpuQuantDot.DotRow(DType.Q8_0, r, px, 48);
            }
        });
    }
}
