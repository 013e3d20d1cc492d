using GpuLlama.Devices;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>The CPU backend's attention, RMSNorm and SwiGLU against float64 references, at head sizes with and without the register paths.</summary>
public sealed class CpuOpsTests : IDisposable
{
    private readonly CpuDevice _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(4, 2, 64, 37, 30, 2)]   // GQA, the 64-wide register path, two rows of a batch
    [InlineData(2, 1, 128, 20, 19, 1)]  // decode, the 128-wide register path
    [InlineData(3, 3, 24, 9, 0, 3)]     // head size without a register path, from position 0
    [InlineData(8, 2, 64, 60, 5, 40)]   // a prompt: keys scored 16 at a time from a transposed copy, a partial last block
    [InlineData(4, 1, 128, 33, 0, 17)]  // the same at head size 128
    public void Attention_matches_the_float64_reference(int heads, int kvHeads, int headDim, int capacity, int position, int rows)
    {
        var shape = new AttentionShape(heads, kvHeads, headDim, RopeStyle.Interleaved);
        var rng = new Random(headDim + position);
        float[] q = Random(rows * shape.QDim, rng);
        float[] k = Random(capacity * shape.KvDim, rng);
        float[] v = Random(capacity * shape.KvDim, rng);
        using KvCacheLayer kv = _cpu.AllocateKv(capacity, shape.KvDim);
        using DeviceBuffer kb = Buffer(k), vb = Buffer(v), qb = Buffer(q), o = _cpu.Allocate(rows * shape.QDim);
        _cpu.StoreKv(kv, kb, vb, 0, position + rows);
        _cpu.Attention(o, qb, kv, position, rows, shape);
        float[] got = new float[rows * shape.QDim];
        _cpu.Read(o, got);
        double[] want = KernelTestData.ReferenceAttention(q, k, v, position, rows, shape);
        for (int i = 0; i < want.Length; i++)
        {
            int r = i / shape.QDim, h = i % shape.QDim / headDim, e = i % headDim;
            Assert.True(Math.Abs(got[i] - want[i]) <= 1e-5, $"row {r} head {h} element {e}: got {got[i]}, want {want[i]}");
        }
    }

    /// <summary>
    /// Every cache type: attention equals the float64 reference over the values rounded to the cache types. With
    /// llama.cpp's numerics (the default) q is rounded to the key type and the softmax weights to the value type too, as
    /// ggml multiplies a 16-bit cache; in exact mode the rounding of K and V is the only change. Decode, a prompt, the
    /// register paths and a head size without one, mixed key/value types, blocked keys (AVX-512) and row-major ones.
    /// </summary>
    [Theory]
    [InlineData(KvCacheType.F16, KvCacheType.F16, 4, 2, 64, 37, 30, 1)]
    [InlineData(KvCacheType.F16, KvCacheType.F16, 8, 2, 64, 60, 5, 40)]
    [InlineData(KvCacheType.BF16, KvCacheType.BF16, 2, 1, 128, 20, 19, 1)]
    [InlineData(KvCacheType.BF16, KvCacheType.F16, 4, 1, 128, 33, 0, 17)]
    [InlineData(KvCacheType.F16, KvCacheType.F32, 3, 3, 24, 9, 0, 3)]
    [InlineData(KvCacheType.F32, KvCacheType.BF16, 4, 2, 64, 37, 30, 2)]
    [InlineData(KvCacheType.F16, KvCacheType.F16, 8, 2, 64, 60, 5, 40, false)]  // row-major keys (hosts without AVX-512)
    [InlineData(KvCacheType.BF16, KvCacheType.BF16, 2, 1, 128, 20, 19, 1, false)]
    [InlineData(KvCacheType.F32, KvCacheType.F32, 4, 2, 64, 37, 30, 2, false)]
    [InlineData(KvCacheType.Q8_0, KvCacheType.Q8_0, 4, 2, 64, 37, 30, 1)]      // quantized: q in Q8_0 against the key blocks
    [InlineData(KvCacheType.Q8_0, KvCacheType.Q8_0, 8, 2, 128, 60, 5, 40)]
    [InlineData(KvCacheType.Q4_0, KvCacheType.Q4_0, 4, 1, 64, 33, 0, 17)]
    [InlineData(KvCacheType.Q4_0, KvCacheType.F16, 2, 2, 96, 20, 19, 1)]       // a head of three blocks, a 16-bit V
    [InlineData(KvCacheType.F16, KvCacheType.Q8_0, 8, 2, 64, 60, 5, 40)]       // grouped 16-bit keys, quantized values
    [InlineData(KvCacheType.BF16, KvCacheType.Q4_0, 4, 2, 32, 37, 30, 2)]      // values per position (head of 32)
    public void Attention_over_each_cache_type_and_key_layout_matches_the_reference_of_the_rounded_values(KvCacheType kType, KvCacheType vType,
        int heads, int kvHeads, int headDim, int capacity, int position, int rows, bool blockedKeys = true)
    {
        var shape = new AttentionShape(heads, kvHeads, headDim, RopeStyle.Interleaved);
        var rng = new Random(headDim + position + 7);
        float[] q = Random(rows * shape.QDim, rng);
        float[] k = Random(capacity * shape.KvDim, rng);
        float[] v = Random(capacity * shape.KvDim, rng);
        double[] unrounded = KernelTestData.ReferenceAttention(q, k, v, position, rows, shape);
        foreach (bool exact in new[] { false, true })
        {
            using var cpu = new CpuDevice(2, exactQuantDots: exact) { BlockedKeys = blockedKeys && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated };
            using KvCacheLayer kv = cpu.AllocateKv(capacity, shape.KvDim, kType, vType);
            // bytes per 32 values: 128, 64, 64, and ggml's block sizes 34 (Q8_0) and 18 (Q4_0)
            static long Per32(KvCacheType t) => t switch { KvCacheType.F32 => 128, KvCacheType.Q8_0 => 34, KvCacheType.Q4_0 => 18, _ => 64 };
            Assert.Equal((long)capacity * shape.KvDim * (Per32(kType) + Per32(vType)) / 32, kv.Bytes);
            Assert.Equal(cpu.BlockedKeys && !kType.IsQuantized(), ((CpuKvCache)kv).BlockedKeys);
            using DeviceBuffer kb = Buffer(cpu, k), vb = Buffer(cpu, v), qb = Buffer(cpu, q), o = cpu.Allocate(rows * shape.QDim);
            cpu.StoreKv(kv, kb, vb, 0, position + rows);
            cpu.Attention(o, qb, kv, position, rows, shape);
            float[] got = new float[rows * shape.QDim];
            cpu.Read(o, got);
            bool ggml = !cpu.ExactQuantDots;
            double[] want = KernelTestData.ReferenceAttention(ggml ? KernelTestData.QueryFor(q, kType) : q, KernelTestData.Round(k, kType),
                KernelTestData.Round(v, vType), position, rows, shape, ggml ? KernelTestData.WeightsFor(vType) : KvCacheType.F32);
            // a weight within a float ulp of a 16-bit rounding boundary may round the other way than in float64: one
            // F16 ulp of one weight, at most 5e-4 of a value (BF16: 4e-3)
            KvCacheType weights = KernelTestData.WeightsFor(vType);
            double bound = !ggml || weights == KvCacheType.F32 ? 1e-5 : weights == KvCacheType.F16 ? 5e-4 : 4e-3;
            double moved = 0, worst = 0;
            for (int i = 0; i < want.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(got[i] - want[i]));
                moved = Math.Max(moved, Math.Abs(want[i] - unrounded[i]));
            }

            Assert.True(worst <= bound, $"exact {exact}: max |got - want| = {worst:E2} > {bound:E0}");
            // the rounding is visible (so the cache really holds 16-bit values) and as small as the type's precision
            Assert.True(kType == KvCacheType.F32 && vType == KvCacheType.F32 ? moved == 0 : moved > 1e-6, $"the cache moved the output by {moved}");
            double allowed = new[] { kType, vType }.Max(t => t switch { KvCacheType.Q4_0 => 2e-1, KvCacheType.Q8_0 or KvCacheType.BF16 => 2e-2, _ => 3e-3 });
            Assert.True(moved < allowed, $"rounding moved the output by {moved}");
        }
    }

    /// <summary>
    /// A prompt's attention (16+ rows: the transposed-key scores) equals, bit for bit, the same rows attended one at a
    /// time (decode: CpuMatMul.Dot per key), so that a prompt and the tokens generated after it see the same numbers.
    /// </summary>
    [Theory]
    [InlineData(64, 3, 45, KvCacheType.F32)]
    [InlineData(128, 0, 20, KvCacheType.F32)]
    [InlineData(64, 3, 45, KvCacheType.F16)]
    [InlineData(128, 0, 20, KvCacheType.BF16)]
    [InlineData(64, 3, 45, KvCacheType.Q8_0)]
    [InlineData(128, 0, 20, KvCacheType.Q4_0)]
    public void Prompt_attention_equals_decode_attention_bit_for_bit(int headDim, int position, int rows, KvCacheType type)
    {
        var shape = new AttentionShape(8, 2, headDim, RopeStyle.Interleaved);
        var rng = new Random(headDim * 31 + rows);
        int capacity = position + rows;
        float[] q = Random(rows * shape.QDim, rng);
        float[] k = Random(capacity * shape.KvDim, rng);
        float[] v = Random(capacity * shape.KvDim, rng);
        using KvCacheLayer kv = _cpu.AllocateKv(capacity, shape.KvDim, type, type);
        using DeviceBuffer kb = Buffer(k), vb = Buffer(v), qb = Buffer(q), o = _cpu.Allocate(rows * shape.QDim);
        _cpu.StoreKv(kv, kb, vb, 0, capacity);
        _cpu.Attention(o, qb, kv, position, rows, shape);
        float[] batch = new float[rows * shape.QDim];
        _cpu.Read(o, batch);
        for (int r = 0; r < rows; r++)
        {
            using DeviceBuffer q1 = Buffer(q.AsSpan(r * shape.QDim, shape.QDim).ToArray()), o1 = _cpu.Allocate(shape.QDim);
            _cpu.Attention(o1, q1, kv, position + r, 1, shape);
            float[] one = new float[shape.QDim];
            _cpu.Read(o1, one);
            for (int i = 0; i < shape.QDim; i++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(one[i]) == BitConverter.SingleToInt32Bits(batch[r * shape.QDim + i]),
                            $"row {r} element {i}: prompt {batch[r * shape.QDim + i]:R}, decode {one[i]:R}");
            }
        }
    }

    [Theory]
    [InlineData(2048, 1)]
    [InlineData(37, 3)]
    public void RmsNorm_matches_the_float64_reference(int dim, int rows)
    {
        var rng = new Random(dim);
        float[] x = Random(dim * rows, rng);
        float[] w = Random(dim, rng);
        using var host = new HostWeight("norm", GpuLlama.Formats.DType.F32, 1, dim, i => w[i]);
        using DeviceWeight weight = _cpu.Upload(host.View);
        using DeviceBuffer xb = Buffer(x), y = _cpu.Allocate(dim * rows);
        _cpu.RmsNorm(y, xb, weight, rows, 1e-5f);
        float[] got = new float[dim * rows];
        _cpu.Read(y, got);
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++)
            {
                ss += (double)x[r * dim + i] * x[r * dim + i];
            }

            double scale = 1 / Math.Sqrt(ss / dim + 1e-5);
            for (int i = 0; i < dim; i++)
            {
                double want = x[r * dim + i] * scale * w[i];
                Assert.True(Math.Abs(got[r * dim + i] - want) <= 1e-6 * Math.Max(1, Math.Abs(want)), $"row {r} element {i}: got {got[r * dim + i]}, want {want}");
            }
        }
    }

    [Fact]
    public void SwiGlu_matches_the_float64_reference()
    {
        var rng = new Random(3);
        float[] g = Random(1000, rng, 8), u = Random(1000, rng);
        using DeviceBuffer gb = Buffer(g), ub = Buffer(u);
        _cpu.SwiGlu(gb, ub, 1000);
        float[] got = new float[1000];
        _cpu.Read(gb, got);
        for (int i = 0; i < 1000; i++)
        {
            double want = g[i] / (1 + Math.Exp(-(double)g[i])) * u[i];
            Assert.True(Math.Abs(got[i] - want) <= 1e-6 * Math.Max(1, Math.Abs(want)), $"element {i}: got {got[i]}, want {want}");
        }
    }

    private DeviceBuffer Buffer(float[] values) => Buffer(_cpu, values);

    private static DeviceBuffer Buffer(CpuDevice cpu, float[] values)
    {
        DeviceBuffer b = cpu.Allocate(values.Length);
        cpu.Write(b, values);
        return b;
    }

    private static float[] Random(int n, Random r, float scale = 1) => KernelTestData.Uniform(n, r, scale);
}
