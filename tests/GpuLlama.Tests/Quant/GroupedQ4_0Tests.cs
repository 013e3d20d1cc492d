using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>
/// Q4_0 weights that the CPU backend copies into groups of eight blocks at upload (AVX-512 machines, rows of a multiple
/// of 256): the copy keeps every value, and decode, prompt and embedding through it give what the file's layout gives.
/// </summary>
public sealed unsafe class GroupedQ4_0Tests
{
    private static byte[] RandomQ4_0(int rows, int cols, Random rng)
    {
        int rowBytes = (int)DType.Q4_0.RowBytes(cols);
        byte[] w = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            BlockSpec.RandomRow(DType.Q4_0, cols, rng).CopyTo(w.AsSpan(r * rowBytes));
        }

        return w;
    }

    [Fact]
    public void Grouping_keeps_every_value()
    {
        if (!CpuQ8Dot.GroupsQ4_0(DType.Q4_0, 512))
        {
            return; // no AVX-512 BW here: Q4_0 stays in the file's layout, tested by the other quant tests
        }

        const int rows = 3, cols = 512;
        byte[] w = RandomQ4_0(rows, cols, new Random(5));
        byte[] g = new byte[w.Length];
        float[] want = new float[cols], got = new float[cols];
        fixed (byte* pw = w, pg = g)
        fixed (float* pgot = got)
        {
            CpuQ8Dot.GroupQ4_0(pw, pg, rows, cols);
            for (int r = 0; r < rows; r++)
            {
                QuantBlocks.DequantizeRow(DType.Q4_0, w.AsSpan(r * 288, 288), want);
                CpuQ8Dot.DequantizeGroupedQ4_0(pg + r * 288, pgot, cols);
                Assert.Equal(want, got);
            }
        }
    }

    [Fact]
    public void Decode_prompt_and_embed_match_the_file_layout()
    {
        if (!CpuQ8Dot.IsSupported)
        {
            return; // no AVX2: the CPU computes quantized weights exactly (CpuQuantDot), tested elsewhere
        }

        const int rows = 9, cols = 768, tokens = 7;
        var rng = new Random(11);
        byte[] w = RandomQ4_0(rows, cols, rng);
        float[] x = Enumerable.Range(0, tokens * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var info = new TensorInfo("blk.0.ffn_up.weight", DType.Q4_0, [rows, cols], 0, 0, w.Length);
        using var cpu = new CpuDevice(2);
        fixed (byte* pw = w)
        fixed (float* px = x)
        {
            using DeviceWeight weight = cpu.Upload(new WeightView(info, pw));
            Assert.Equal(CpuQ8Dot.GroupsQ4_0(DType.Q4_0, cols), ((CpuWeight)weight).GroupedQ4_0);

            // the reference: llama.cpp's integer dots on the file's blocks, with the same 8-bit activations
            using var q8 = new Q8Activations();
            q8.Quantize(px, tokens, cols, true, false, quads: true);
            double[] want = new double[tokens * rows];
            double[] mag = new double[tokens * rows];
            float[] wd = new float[cols];
            for (int o = 0; o < rows; o++)
            {
                QuantBlocks.DequantizeRow(DType.Q4_0, w.AsSpan(o * 432, 432), wd);
                for (int t = 0; t < tokens; t++)
                {
                    want[t * rows + o] = CpuQ8Dot.Dot(DType.Q4_0, pw + o * 432, q8, t, use512: false);
                    for (int i = 0; i < cols; i++)
                    {
                        mag[t * rows + o] += Math.Abs(wd[i] * x[t * cols + i]);
                    }
                }
            }

            using DeviceBuffer xs = cpu.Allocate(tokens * cols);
            using DeviceBuffer dst = cpu.Allocate(tokens * rows);
            cpu.Write(xs, x);
            foreach (int n in new[] { 1, tokens }) // one row: the decode kernels; seven: the prompt GEMM
            {
                cpu.MatMul(dst, weight, xs, n);
                float[] got = new float[tokens * rows];
                cpu.Read(dst, got);
                for (int i = 0; i < n * rows; i++)
                {
                    Assert.True(Math.Abs(got[i] - want[i]) <= 1e-5 * mag[i], $"rows {n}, output {i}: got {got[i]:R}, want {want[i]:R}");
                }
            }

            using DeviceBuffer e = cpu.Allocate(2 * cols);
            cpu.Embed(e, weight, [4, 0]);
            float[] embedded = new float[2 * cols];
            cpu.Read(e, embedded);
            QuantBlocks.DequantizeRow(DType.Q4_0, w.AsSpan(4 * 432, 432), wd);
            Assert.Equal(wd, embedded[..cols]);
            QuantBlocks.DequantizeRow(DType.Q4_0, w.AsSpan(0, 432), wd);
            Assert.Equal(wd, embedded[cols..]);
        }
    }
}
