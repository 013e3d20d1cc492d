using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>
/// The CPU backend's matrix products against a float64 reference: the decode kernels (one row or four rows at a time,
/// 16-bit weights through the lane-order activations) and the blocked prompt product (panels, 12×32 outer-product
/// tiles, 4×6 dot tiles, K blocks),
/// at sizes that leave every tail non-empty.
/// </summary>
public sealed class CpuMatMulTests : IDisposable
{
    private readonly CpuDevice _cpu = new(2);
    private readonly CpuDevice _exact = new(2, exactQuantDots: true);

    public void Dispose()
    {
        _cpu.Dispose();
        _exact.Dispose();
    }

    /// <summary>
    /// What the default CPU device multiplies F16 weights with: each activation row rounded to F16 precision (11
    /// significant bits, round to nearest even, as llama.cpp's F16 conversion) relative to the row's largest
    /// magnitude m — values below 2^-29·m, zeros included, read as ±2^-29·m (rounded with .NET's Half here).
    /// </summary>
    internal static double[] RoundLikeF16Activations(ReadOnlySpan<float> x)
    {
        float max = 0;
        foreach (float v in x)
        {
            max = Math.Max(max, Math.Abs(v));
        }

        int emax = (int)((BitConverter.SingleToUInt32Bits(max) >> 23) & 0xFF) - 127;
        int s = 14 - emax;
        var r = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double y = (double)(float)(Half)(x[i] * Math.Pow(2, s));
            if (Math.Abs(y) < Math.Pow(2, -14))
            {
                y = (BitConverter.SingleToUInt32Bits(x[i]) >> 31) == 1 ? -Math.Pow(2, -15) : Math.Pow(2, -15);
            }

            r[i] = y * Math.Pow(2, -s);
        }

        return r;
    }

    public static TheoryData<DType, int, int, int, bool> Cases()
    {
        var data = new TheoryData<DType, int, int, int, bool>();
        foreach (DType t in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            data.Add(t, 7, 200, 1, false);    // decode: a group of four and three single rows, vector body and tail
            data.Add(t, 9, 4100, 1, true);    // decode: more than 4096 columns, four rows per pass, fused residual
            data.Add(t, 5, 37, 1, false);     // decode: shorter than one vector
            data.Add(t, 10, 256, 1, true);    // decode: row panels (rows of a multiple of 64 bytes) and two row-major rows
            data.Add(t, 5, 4608, 1, false);   // decode: a row panel of more than 4096 columns
            data.Add(t, 6, 96, 13, false);    // prompt: 6-row (AVX2: 3-row) tiles, the last overlapping, a partial panel
            data.Add(t, 5, 64, 2, true);      // prompt: fewer rows than a tile, accumulate
            data.Add(t, 11, 4100, 8, true);   // prompt: K in two blocks (2304 + 1796, a tail of 4 inside the tile), accumulate
            data.Add(t, 4, 3000, 6, false);   // prompt: one K block with a tail of 8 columns inside the tile
            data.Add(t, 30, 96, 45, true);    // prompt, AVX-512: 12×32 outer tiles (two groups, the second token tile
                                              // overlapping the first), then a full and a partial panel on the dot tiles
            data.Add(t, 26, 4100, 32, false); // prompt, AVX-512: one token tile, K in two blocks, two row groups and a partial panel
            data.Add(t, 24, 3000, 64, true);  // prompt, AVX-512: two token tiles, two row groups, nothing left over
            data.Add(t, 26, 160, 20, true);   // prompt: 16-31 rows, two overlapping 16-row tiles (AVX-512: 12×16, AVX2: 6×16)
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatMul_matches_the_float64_reference(DType type, int outRows, int cols, int rows, bool accumulate)
    {
        // weights include small values whose halves are denormal, and both signs
        var rng = new Random(outRows * 31 + cols);
        float[] wv = new float[outRows * cols];
        for (int i = 0; i < wv.Length; i++)
        {
            double u = rng.NextDouble() * 2 - 1;
            wv[i] = (float)(i % 17 == 0 ? u * 1e-6 : u);
        }

        float[] x = Random(rows * cols, 5, 3);
        float[] y0 = Random(rows * outRows, 6);
        using var host = new HostWeight("w", type, outRows, cols, i => wv[i]);
        // F16 weights: by default against F16-rounded activations (llama.cpp's numerics), and exactly on request
        foreach (bool exact in type == DType.F16 ? new[] { false, true } : new[] { false })
        {
            CpuDevice cpu = exact ? _exact : _cpu;
            using DeviceWeight w = cpu.Upload(host.View);
            using DeviceBuffer xb = cpu.Allocate(x.Length);
            using DeviceBuffer y = cpu.Allocate(y0.Length);
            cpu.Write(xb, x);
            cpu.Write(y, y0);
            cpu.MatMul(y, w, xb, rows, accumulate);
            var got = new float[y0.Length];
            cpu.Read(y, got);
            for (int r = 0; r < rows; r++)
            {
                // (without AVX2 the device computes exactly throughout: ExactQuantDots is then always on)
                double[] xr = type == DType.F16 && !cpu.ExactQuantDots
                    ? RoundLikeF16Activations(x.AsSpan(r * cols, cols))
                    : x.AsSpan(r * cols, cols).ToArray().Select(v => (double)v).ToArray();
                for (int o = 0; o < outRows; o++)
                {
                    double sum = accumulate ? y0[r * outRows + o] : 0;
                    double mag = Math.Abs(sum);
                    for (int c = 0; c < cols; c++)
                    {
                        double p = host.Values[o * cols + c] * xr[c];
                        sum += p;
                        mag += Math.Abs(p);
                    }

                    double err = Math.Abs(got[r * outRows + o] - sum);
                    Assert.True(err <= 1e-5 * mag, $"{type} (exact: {exact}) row {r} output {o}: got {got[r * outRows + o]:R}, want {sum:R} (error {err / mag:E2} of the sum of |products|)");
                }
            }
        }
    }

    [Theory]
    [InlineData(1)] // decode: the lane kernels
    [InlineData(2)] // prompt: the GEMM's panel conversion
    public void Every_finite_F16_bit_pattern_multiplies_exactly(int batch)
    {
        // 63488 finite halves (both signs, denormals, zeros) times 1: the lane trick must give each value exactly.
        var bits = new List<ushort>();
        for (int b = 0; b < 65536; b++)
        {
            if ((b & 0x7c00) != 0x7c00)
            {
                bits.Add((ushort)b);
            }
        }

        int cols = 64;
        int outRows = bits.Count / cols;
        byte[] raw = new byte[outRows * cols * 2];
        Buffer.BlockCopy(bits.ToArray(), 0, raw, 0, raw.Length);
        using var host = new HostWeight("w", DType.F16, outRows, cols, raw);
        // exact activations: x one-hot, column by column
        using (DeviceWeight w = _exact.Upload(host.View))
        {
            for (int c = 0; c < cols; c++)
            {
                float[] x = new float[cols * batch];
                for (int b = 0; b < batch; b++)
                {
                    x[b * cols + c] = 1;
                }

                float[] got = MultiplyLast(_exact, w, x, cols, outRows, batch);
                for (int o = 0; o < outRows; o++)
                {
                    AssertSameValue(bits[o * cols + c], got[o]);
                }
            }
        }

        // F16-rounded activations (no exact zeros there): x all ones against rows that hold one pattern each, at
        // column o % 64, and +0 elsewhere
        ushort[] sparse = new ushort[bits.Count * cols];
        for (int o = 0; o < bits.Count; o++)
        {
            sparse[o * cols + o % cols] = bits[o];
        }

        byte[] rawSparse = new byte[sparse.Length * 2];
        Buffer.BlockCopy(sparse, 0, rawSparse, 0, rawSparse.Length);
        using var sparseHost = new HostWeight("w", DType.F16, bits.Count, cols, rawSparse);
        using (DeviceWeight w = _cpu.Upload(sparseHost.View))
        {
            float[] got = MultiplyLast(_cpu, w, Enumerable.Repeat(1f, cols * batch).ToArray(), cols, bits.Count, batch);
            for (int o = 0; o < bits.Count; o++)
            {
                AssertSameValue(bits[o], got[o]);
            }
        }
    }

    private static float[] MultiplyLast(CpuDevice cpu, DeviceWeight w, float[] x, int cols, int outRows, int batch)
    {
        using DeviceBuffer xb = cpu.Allocate(cols * batch);
        using DeviceBuffer y = cpu.Allocate(outRows * batch);
        cpu.Write(xb, x);
        cpu.MatMul(y, w, xb, batch);
        var got = new float[outRows];
        cpu.Read(y, got, (batch - 1) * outRows);
        return got;
    }

    private static void AssertSameValue(ushort half, float got)
    {
        float want = (float)BitConverter.UInt16BitsToHalf(half);
        Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got) || (want == 0 && got == 0),
                    $"half 0x{half:x4}: got {got:R}, want {want:R}");
    }

    [Fact]
    public void MatMul3_and_MatMulSwiGlu_in_one_dispatch_equal_separate_products()
    {
        const int cols = 96;
        float[] x = Random(cols, 1);
        using var wq = new HostWeight("q", DType.F16, 10, cols, i => MathF.Sin(i));
        using var wk = new HostWeight("k", DType.BF16, 6, cols, i => MathF.Cos(i));
        using var wv = new HostWeight("v", DType.F32, 5, cols, i => MathF.Sin(0.3f * i));
        using DeviceWeight q = _cpu.Upload(wq.View), k = _cpu.Upload(wk.View), v = _cpu.Upload(wv.View);
        using DeviceBuffer xb = _cpu.Allocate(cols);
        _cpu.Write(xb, x);
        using DeviceBuffer dq = _cpu.Allocate(10), dk = _cpu.Allocate(6), dv = _cpu.Allocate(5), sq = _cpu.Allocate(10), sk = _cpu.Allocate(6), sv = _cpu.Allocate(5);
        _cpu.MatMul3(dq, q, dk, k, dv, v, xb, 1);
        _cpu.MatMul(sq, q, xb, 1);
        _cpu.MatMul(sk, k, xb, 1);
        _cpu.MatMul(sv, v, xb, 1);
        Assert.Equal(Get(sq, 10), Get(dq, 10));
        Assert.Equal(Get(sk, 6), Get(dk, 6));
        Assert.Equal(Get(sv, 5), Get(dv, 5));

        using var wg = new HostWeight("g", DType.F16, 10, cols, i => MathF.Cos(0.7f * i));
        using DeviceWeight g = _cpu.Upload(wg.View);
        using DeviceBuffer h = _cpu.Allocate(10), scratch = _cpu.Allocate(10), gate = _cpu.Allocate(10), up = _cpu.Allocate(10);
        _cpu.MatMulSwiGlu(h, g, q, xb, 1, scratch);
        _cpu.MatMul(gate, g, xb, 1);
        _cpu.MatMul(up, q, xb, 1);
        float[] gv = Get(gate, 10), uv = Get(up, 10), hv = Get(h, 10);
        for (int i = 0; i < 10; i++)
        {
            double want = gv[i] / (1 + Math.Exp(-gv[i])) * uv[i];
            Assert.True(Math.Abs(hv[i] - want) <= 1e-6 * Math.Max(1, Math.Abs(want)), $"element {i}: got {hv[i]}, want {want}");
        }
    }

    private float[] Get(DeviceBuffer b, int n)
    {
        var a = new float[n];
        _cpu.Read(b, a);
        return a;
    }

    private static float[] Random(int n, int seed, float scale = 1.0f) => KernelTestData.Uniform(n, seed, scale);
}
