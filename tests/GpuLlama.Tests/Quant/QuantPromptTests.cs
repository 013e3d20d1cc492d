using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>
/// Prompt products of block-quantized weights (many activation rows at once: Q8_0, Q4_0, Q5_0 and the K-quants on the
/// integer kernels — 32-token tiles on AVX-512, 16-token tiles on AVX2 and for 16-31 rows, one zero-padded 16-token
/// tile for 6-15 rows (Q8_0, Q4_0: 8-15) —, the decode kernels below that, the dot tiles for the 12-row groups' leftover weight
/// rows) against llama.cpp's integer dot products row by row, with the same
/// 8-bit activations: Σ_b (d_w·d_x)·Σ q_w·q_x differs from it only in the order of the float additions over blocks.
/// </summary>
public sealed unsafe class QuantPromptTests
{
    public static TheoryData<DType, int, int, int, bool> Cases()
    {
        var data = new TheoryData<DType, int, int, int, bool>();
        foreach (DType t in new[] { DType.Q8_0, DType.Q4_0, DType.Q5_0 })
        {
            data.Add(t, 30, 768, 45, false);  // two 12-row groups, then a full and a partial panel; the second token tile overlapping
            data.Add(t, 24, 800, 64, true);   // rows of 25 blocks (Q4_0 in the file's layout, not grouped), two token tiles, accumulate
            data.Add(t, 26, 3328, 33, false); // K in two blocks (1792 + 1536), two row groups and a partial panel
            data.Add(t, 13, 256, 20, false);  // AVX-512: fewer rows than a token tile (the dot tiles); AVX2: two overlapping tiles
            data.Add(t, 30, 768, 11, true);   // one 16-row tile padded with zero rows, accumulate
            data.Add(t, 26, 512, CpuGemm.MinIntegerRows(t), false);     // the fewest rows a padded tile takes (8, Q5_0 6)
            data.Add(t, 26, 512, CpuGemm.MinIntegerRows(t) - 1, false); // fewer: the decode kernels, several rows at once
        }

        // K-quants (256-blocks): the same sizes, K a multiple of 256
        foreach (DType t in new[] { DType.Q4_K, DType.Q5_K, DType.Q6_K })
        {
            data.Add(t, 30, 768, 45, false);
            data.Add(t, 24, 1024, 64, true);
            data.Add(t, 26, 3328, 33, false);
            data.Add(t, 13, 256, 20, false);
            data.Add(t, 30, 768, 11, true);
            data.Add(t, 26, 512, CpuGemm.MinIntegerRows(t), false);     // 6
            data.Add(t, 26, 512, CpuGemm.MinIntegerRows(t) - 1, false);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Prompt_products_match_llama_cpps_integer_dots(DType type, int rows, int cols, int tokens, bool accumulate)
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return; // no AVX2: the CPU computes quantized weights exactly (CpuQuantDot), tested elsewhere
        }

        var rng = new Random(rows * 7 + cols);
        int rowBytes = (int)type.RowBytes(cols);
        byte[] w = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            BlockSpec.RandomRow(type, cols, rng).CopyTo(w.AsSpan(r * rowBytes));
        }

        float[] x = Enumerable.Range(0, tokens * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] y0 = Enumerable.Range(0, tokens * rows).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        AssertMatchesIntegerDots(type, rows, cols, tokens, accumulate, w, x, y0);
    }

    /// <summary>
    /// The integer kernels' 16-bit sums at their limits: every quant at 0 or at its maximum (Q4_0/Q4_K 15, Q5_0/Q5_K
    /// 31, Q6_K 63) against activations whose 8-bit quants are all ±127, blocks of one sign and of mixed signs —
    /// |Σ (q − offset)·x| reaches 32512 per 16-bit lane for Q5_0, Q5_K and Q6_K; K-quant scales (and mins) at their
    /// extremes.
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q5_0)]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_K)]
    [InlineData(DType.Q5_K)]
    [InlineData(DType.Q6_K)]
    public void Prompt_products_hold_extreme_quants(DType type)
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return;
        }

        const int rows = 24, cols = 512, tokens = 40;
        int block = CpuQ8Dot.UsesBlocks256(type) ? 256 : 32;
        int rowBytes = (int)type.RowBytes(cols), blockBytes = rowBytes / (cols / block);
        byte[] w = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < cols / block; b++)
            {
                Span<byte> blk = w.AsSpan(r * rowBytes + b * blockBytes, blockBytes);
                bool high = (r + b) % 2 == 1; // quants all at the maximum, else all 0 (Q8_0: 127 / -127)
                if (type == DType.Q6_K)
                {
                    // quants all 63 or all 0 (q − 32 = 31 or −32), scales ±127 by sub-block, d last
                    blk[..192].Fill(high ? (byte)0xFF : (byte)0);
                    for (int i = 0; i < 16; i++)
                    {
                        blk[192 + i] = i % 3 == 0 ? (byte)0x81 : (byte)127;
                    }

                    BitConverter.TryWriteBytes(blk[208..], BitConverter.HalfToUInt16Bits((Half)0.5f));
                    continue;
                }

                BitConverter.TryWriteBytes(blk, BitConverter.HalfToUInt16Bits((Half)0.5f));
                int quants = 2;
                if (type is DType.Q4_K or DType.Q5_K)
                {
                    // dmin, then scales and mins all 63 (every 6-bit field set)
                    BitConverter.TryWriteBytes(blk[2..], BitConverter.HalfToUInt16Bits((Half)0.25f));
                    blk[4..16].Fill(0xFF);
                    quants = 16;
                }

                blk[quants..].Fill(type == DType.Q8_0 ? (byte)(high ? 127 : 0x81) : high ? (byte)0xFF : (byte)0);
            }
        }

        // token t, block b: all +1, all -1, or alternating (the quants ±127 in every case)
        float[] x = new float[tokens * cols];
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < cols; i++)
            {
                int pattern = (t + i / 32) % 3;
                x[t * cols + i] = pattern == 0 ? 1f : pattern == 1 ? -1f : i % 2 == 0 ? 1f : -1f;
            }
        }

        AssertMatchesIntegerDots(type, rows, cols, tokens, false, w, x, new float[tokens * rows]);
    }

    private static void AssertMatchesIntegerDots(DType type, int rows, int cols, int tokens, bool accumulate, byte[] w, float[] x, float[] y0)
    {
        int rowBytes = (int)type.RowBytes(cols);
        var info = new TensorInfo("blk.0.ffn_up.weight", type, [rows, cols], 0, 0, w.Length);
        using var cpu = new CpuDevice(2);
        fixed (byte* pw = w)
        fixed (float* px = x)
        {
            using var q8 = new Q8Activations();
            bool k256 = CpuQ8Dot.UsesBlocks256(type);
            q8.Quantize(px, tokens, cols, !k256, k256);
            float[] wd = new float[cols];
            double[] want = new double[tokens * rows], mag = new double[tokens * rows];
            for (int o = 0; o < rows; o++)
            {
                QuantBlocks.DequantizeRow(type, w.AsSpan(o * rowBytes, rowBytes), wd);
                for (int t = 0; t < tokens; t++)
                {
                    double y = accumulate ? y0[t * rows + o] : 0;
                    want[t * rows + o] = y + CpuQ8Dot.Dot(type, pw + (long)o * rowBytes, q8, t, use512: false);
                    mag[t * rows + o] = Math.Abs(y);
                    for (int i = 0; i < cols; i++)
                    {
                        mag[t * rows + o] += Math.Abs(wd[i] * x[t * cols + i]);
                    }
                }
            }

            float[] got = Multiply(cpu, new WeightView(info, pw), x, y0, tokens, accumulate);
            for (int i = 0; i < got.Length; i++)
            {
                Assert.True(Math.Abs(got[i] - want[i]) <= 2e-6 * mag[i],
                            $"{type} token {i / rows} output {i % rows}: got {got[i]:R}, want {want[i]:R} ({Math.Abs(got[i] - want[i]) / mag[i]:E2} of Σ|products|)");
            }

            // exact mode: float32 activations times the exactly dequantized weights, whatever the prompt's length
            using var exact = new CpuDevice(2, exactQuantDots: true);
            got = Multiply(exact, new WeightView(info, pw), x, y0, tokens, accumulate);
            for (int o = 0; o < rows; o++)
            {
                QuantBlocks.DequantizeRow(type, w.AsSpan(o * rowBytes, rowBytes), wd);
                for (int t = 0; t < tokens; t++)
                {
                    double sum = accumulate ? y0[t * rows + o] : 0;
                    for (int i = 0; i < cols; i++)
                    {
                        sum += (double)wd[i] * x[t * cols + i];
                    }

                    int at = t * rows + o;
                    Assert.True(Math.Abs(got[at] - sum) <= 1e-5 * mag[at], $"{type} exact, token {t} output {o}: got {got[at]:R}, want {sum:R}");
                }
            }
        }
    }

    /// <summary>Y (+)= X·Wᵀ on <paramref name="cpu"/>, Y starting as <paramref name="y0"/>.</summary>
    private static float[] Multiply(CpuDevice cpu, WeightView view, float[] x, float[] y0, int tokens, bool accumulate)
    {
        using DeviceWeight weight = cpu.Upload(view);
        using DeviceBuffer xs = cpu.Allocate(x.Length);
        using DeviceBuffer dst = cpu.Allocate(y0.Length);
        cpu.Write(xs, x);
        cpu.Write(dst, y0);
        cpu.MatMul(dst, weight, xs, tokens, accumulate);
        float[] got = new float[y0.Length];
        cpu.Read(dst, got);
        return got;
    }
}
