using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>
/// The integer kernels (<see cref="CpuQ8Dot"/>) and the activation rounding (<see cref="Q8Activations"/>) against a
/// scalar float64 reference written here from ggml's reference code: quantize_row_q8_0 / quantize_row_q8_K_ref for x,
/// QuantBlocks' scalar dequantization for the weights. Random blocks, several rows, a few super-blocks.
/// </summary>
public sealed unsafe class CpuQ8DotTests
{
    public static TheoryData<DType> Types => [DType.Q8_0, DType.Q4_0, DType.Q5_0, DType.Q4_1, DType.Q5_1, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.IQ4_NL, DType.IQ4_XS];

    [Theory]
    [MemberData(nameof(Types))]
    public void Integer_dot_equals_the_float64_dot_of_the_dequantized_operands(DType type)
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return; // no AVX2 here: the CPU backend uses the float kernels, tested elsewhere
        }

        const int cols = 768, rows = 3;
        var rng = new Random((int)type);
        float[] w = new float[cols];
        float[] x = new float[rows * cols];
        for (int i = 0; i < cols; i++)
        {
            w[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 64 < 8 ? 4 : 1);
        }

        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 100 == 0 ? 9 : 1);
        }

        x[5] = 0.5f; // an exact tie at a rounding boundary somewhere is likely; zero blocks too:
        for (int i = 256; i < 288; i++)
        {
            x[i] = 0;
        }

        byte[] row = new byte[type.RowBytes(cols)];
        BlockQuantizer.QuantizeRow(type, w, row);
        float[] wd = new float[cols];
        QuantBlocks.DequantizeRow(type, row, wd);
        bool k256 = CpuQ8Dot.UsesBlocks256(type);

        using var q8 = new Q8Activations();
        fixed (float* px = x)
        fixed (byte* pw = row)
        {
            q8.Quantize(px, rows, cols, !k256, k256, quads: true, kOrder: true);
            for (int r = 0; r < rows; r++)
            {
                double[] xd = k256 ? ReferenceQ8K(x.AsSpan(r * cols, cols)) : ReferenceQ8_0(x.AsSpan(r * cols, cols));
                double want = 0, mag = 0;
                for (int i = 0; i < cols; i++)
                {
                    want += wd[i] * xd[i];
                    mag += Math.Abs(wd[i] * xd[i]);
                }

                if (type is DType.Q4_1 or DType.Q5_1)
                {
                    // ggml_vec_dot_q4_1_q8_1 multiplies each block's m by Q8_1's s = F16(d·Σq), d before its F16 rounding
                    int blockBytes = type == DType.Q4_1 ? 20 : 24;
                    for (int b = 0; b < cols / 32; b++)
                    {
                        double m = (double)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(row, b * blockBytes + 2));
                        ReadOnlySpan<float> xb = x.AsSpan(r * cols + 32 * b, 32);
                        float amax = 0;
                        foreach (float v in xb)
                        {
                            amax = Math.Max(amax, Math.Abs(v));
                        }

                        double sumq = 0;
                        for (int i = 0; i < 32; i++)
                        {
                            sumq += xd[32 * b + i];
                        }

                        int qsum = 0;
                        float id = amax != 0 ? 127f / amax : 0;
                        foreach (float v in xb)
                        {
                            qsum += (int)MathF.Round(v * id, MidpointRounding.ToEven);
                        }

                        want += m * ((double)(float)(Half)(amax / 127f * qsum) - sumq);
                    }
                }

                // the AVX2 kernels always; the 512-bit ones (Q4_K, Q5_K) too where the CPU runs them
                foreach (bool use512 in CpuQ8Dot.Has512 ? new[] { false, true } : new[] { false })
                {
                    float got = CpuQ8Dot.Dot(type, pw, q8, r, use512);
                    Assert.True(Math.Abs(got - want) <= 2e-6 * mag, $"{type} row {r} (512-bit: {use512}): got {got:R}, want {want:R} (Σ|p| {mag:G4})");
                }

                if (CpuQ8Dot.GroupsQ4_0(type, cols))
                {
                    byte[] grouped = new byte[row.Length];
                    fixed (byte* pg = grouped)
                    {
                        CpuQ8Dot.GroupQ4_0(pw, pg, 1, cols);
                        float got = CpuQ8Dot.DotQ4_0Grouped(pg, q8, r);
                        Assert.True(Math.Abs(got - want) <= 2e-6 * mag, $"grouped Q4_0 row {r}: got {got:R}, want {want:R} (Σ|p| {mag:G4})");
                    }
                }
            }
        }
    }

    [Fact]
    public void Activation_quants_are_llama_cpps_bit_for_bit()
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return;
        }

        var rng = new Random(7);
        float[] x = new float[512];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 37 == 0 ? 5 : 1);
        }

        x[300] = -9; // the largest magnitude negative: q8_K maps it to +127
        using var q8 = new Q8Activations();
        fixed (float* px = x)
        {
            q8.Quantize(px, 1, 512, blocks32: true, blocks256: true);
            for (int b = 0; b < 16; b++)
            {
                float amax = 0;
                for (int i = 0; i < 32; i++)
                {
                    amax = Math.Max(amax, Math.Abs(x[32 * b + i]));
                }

                float d = amax / 127f;
                float id = amax != 0 ? 127f / amax : 0;
                Assert.Equal((float)(Half)d, q8.D32[b]);
                int sum = 0;
                for (int i = 0; i < 32; i++)
                {
                    int q = (int)MathF.Round(x[32 * b + i] * id, MidpointRounding.ToEven);
                    Assert.Equal(q, q8.Qs32[32 * b + i]);
                    sum += q;
                }

                Assert.Equal(sum, q8.Sum32[b]);
            }

            for (int b = 0; b < 2; b++)
            {
                float amax = 0, max = 0;
                for (int i = 0; i < 256; i++)
                {
                    float ax = Math.Abs(x[256 * b + i]);
                    if (ax > amax)
                    {
                        amax = ax;
                        max = x[256 * b + i];
                    }
                }

                float iscale = -127f / max;
                Assert.Equal(1 / iscale, q8.D256[b]);
                for (int g = 0; g < 16; g++)
                {
                    int sum = 0;
                    for (int i = 0; i < 16; i++)
                    {
                        int j = 256 * b + 16 * g + i;
                        int q = Math.Min(127, (int)MathF.Round(iscale * x[j], MidpointRounding.ToEven));
                        Assert.Equal(q, q8.Qs[j]);
                        sum += q;
                    }

                    Assert.Equal(sum, q8.BSums[16 * b + g]);
                }
            }
        }
    }

    /// <summary>
    /// The short-prompt kernels (<see cref="CpuQ8Dot.DotRows"/>) must give every row exactly what the one-row kernels
    /// give it — a prompt's logits equal its tokens decoded one by one because of this. Rows 0..10 in slices of every
    /// length 1..8 from every start; 352 columns (eleven 32-blocks: a tail after the groups of eight) and 768.
    /// </summary>
    [Theory]
    [InlineData(DType.Q8_0, 352)]
    [InlineData(DType.Q8_0, 768)]
    [InlineData(DType.Q4_0, 352)]
    [InlineData(DType.Q4_0, 768)]
    [InlineData(DType.Q5_0, 352)]
    [InlineData(DType.Q4_K, 768)]
    [InlineData(DType.Q6_K, 768)]
    public void Several_rows_at_once_equal_one_row_at_a_time_bit_for_bit(DType type, int cols)
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return; // no AVX2 here: the CPU backend uses the float kernels, tested elsewhere
        }

        const int rows = 11;
        var rng = new Random(cols + (int)type);
        float[] w = new float[cols];
        float[] x = new float[rows * cols];
        for (int i = 0; i < cols; i++)
        {
            w[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 50 == 0 ? 7 : 1);
        }

        byte[] row = new byte[type.RowBytes(cols)];
        BlockQuantizer.QuantizeRow(type, w, row);
        bool grouped = CpuQ8Dot.GroupsQ4_0(type, cols);
        byte[] groupedRow = new byte[row.Length];
        bool k256 = CpuQ8Dot.UsesBlocks256(type);
        using var q8 = new Q8Activations();
        float* got = stackalloc float[CpuQ8Dot.MaxRows];
        fixed (float* px = x)
        fixed (byte* pw = row)
        fixed (byte* pg = groupedRow)
        {
            q8.Quantize(px, rows, cols, !k256, k256, quads: grouped, kOrder: type == DType.Q4_K);
            if (grouped)
            {
                CpuQ8Dot.GroupQ4_0(pw, pg, 1, cols);
            }

            foreach (bool useGrouped in grouped ? new[] { false, true } : new[] { false })
            {
                byte* wr = useGrouped ? pg : pw;
                for (int r0 = 0; r0 < rows; r0++)
                {
                    for (int n = 1; n <= CpuQ8Dot.MaxRows && r0 + n <= rows; n++)
                    {
                        CpuQ8Dot.DotRows(type, useGrouped, wr, q8, r0, n, got);
                        for (int j = 0; j < n; j++)
                        {
                            float want = useGrouped ? CpuQ8Dot.DotQ4_0Grouped(wr, q8, r0 + j) : CpuQ8Dot.Dot(type, wr, q8, r0 + j);
                            Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[j]),
                                $"{type} cols {cols} grouped {useGrouped}: rows {r0}..{r0 + n - 1}, row {r0 + j}: got {got[j]:R}, one row at a time {want:R}");
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// Attention's scores over a quantized key cache (<see cref="CpuQ8Dot.KeyScores"/>: keys a cache row apart, a KV
    /// head's query heads at once) equal <see cref="CpuQ8Dot.Dot(DType, byte*, Q8Activations, int)"/> key by key, bit
    /// for bit: heads of 1, 2 and 4 blocks (its inlined loop) and of 8 and 9 (Dot itself).
    /// </summary>
    [Theory]
    [InlineData(DType.Q8_0, 32)]
    [InlineData(DType.Q8_0, 64)]
    [InlineData(DType.Q8_0, 128)]
    [InlineData(DType.Q8_0, 288)]
    [InlineData(DType.Q4_0, 64)]
    [InlineData(DType.Q4_0, 128)]
    [InlineData(DType.Q4_0, 256)]
    public void Key_scores_equal_the_dot_of_each_key_bit_for_bit(DType type, int headDim)
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return; // no AVX2 here: quantized keys are widened to float (CpuDevice), tested elsewhere
        }

        const int keys = 13, heads = 3, kvHeads = 2;
        var rng = new Random(headDim + (int)type);
        int rowBytes = (int)type.RowBytes(headDim * kvHeads); // a cache row: every KV head of a position
        byte[] cache = new byte[keys * rowBytes];
        for (int t = 0; t < keys; t++)
        {
            float[] k = [.. Enumerable.Range(0, headDim * kvHeads).Select(_ => (float)(rng.NextDouble() * 2 - 1) * (rng.Next(9) == 0 ? 5 : 1))];
            BlockQuantizer.QuantizeRow(type, k, cache.AsSpan(t * rowBytes, rowBytes));
        }

        float[] q = [.. Enumerable.Range(0, (heads + 1) * headDim).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        using var q8 = new Q8Activations();
        float[] got = new float[heads * 16];
        fixed (float* pq = q)
        fixed (byte* pc = cache)
        fixed (float* pg = got)
        {
            q8.Quantize(pq, heads + 1, headDim, blocks32: true, blocks256: false);
            byte* second = pc + type.RowBytes(headDim); // the second KV head's keys
            CpuQ8Dot.KeyScores(type, second, rowBytes, keys, q8, 1, heads, pg, 16);
            for (int i = 0; i < heads; i++)
            {
                for (int t = 0; t < keys; t++)
                {
                    float want = CpuQ8Dot.Dot(type, second + t * rowBytes, q8, 1 + i);
                    Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[i * 16 + t]),
                        $"{type} head {headDim}: row {1 + i} key {t}: got {got[i * 16 + t]:R}, Dot {want:R}");
                }
            }
        }
    }

    /// <summary>x after quantize_row_q8_0 and dequantization, in float64.</summary>
    private static double[] ReferenceQ8_0(ReadOnlySpan<float> x)
    {
        var y = new double[x.Length];
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0;
            for (int i = 0; i < 32; i++)
            {
                amax = Math.Max(amax, Math.Abs(x[32 * b + i]));
            }

            float d = (float)(Half)(amax / 127f);
            float id = amax != 0 ? 127f / amax : 0;
            for (int i = 0; i < 32; i++)
            {
                y[32 * b + i] = (double)d * MathF.Round(x[32 * b + i] * id, MidpointRounding.ToEven);
            }
        }

        return y;
    }

    /// <summary>x after quantize_row_q8_K_ref and dequantization, in float64.</summary>
    private static double[] ReferenceQ8K(ReadOnlySpan<float> x)
    {
        var y = new double[x.Length];
        for (int b = 0; b < x.Length / 256; b++)
        {
            float amax = 0, max = 0;
            for (int i = 0; i < 256; i++)
            {
                float ax = Math.Abs(x[256 * b + i]);
                if (ax > amax)
                {
                    amax = ax;
                    max = x[256 * b + i];
                }
            }

            if (amax == 0)
            {
                continue;
            }

            float iscale = -127f / max;
            float d = 1 / iscale;
            for (int i = 0; i < 256; i++)
            {
                y[256 * b + i] = (double)d * Math.Min(127, (int)MathF.Round(iscale * x[256 * b + i], MidpointRounding.ToEven));
            }
        }

        return y;
    }
}
