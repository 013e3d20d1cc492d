using System.Buffers.Binary;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

public class QuantBlocksTests
{
    public static TheoryData<DType> Types()
    {
        TheoryData<DType> data = [];
        foreach (DType t in BlockSpec.QuantTypes)
        {
            data.Add(t);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dequantize_matches_the_layout_spec_on_random_blocks(DType type)
    {
        var rng = new Random(1234 + (int)type);
        int cols = type.BlockSize() * 23;
        byte[] row = BlockSpec.RandomRow(type, cols, rng);
        float[] got = new float[cols];
        QuantBlocks.DequantizeRow(type, row, got);
        (double[] want, double[] mag) = BlockSpec.Row(type, row, cols);
        int nonzero = 0;
        for (int i = 0; i < cols; i++)
        {
            // Float rounding of at most three operations on terms of size `mag`.
            double tol = 4 * Math.Pow(2, -24) * mag[i] + 1e-30;
            Assert.True(Math.Abs(got[i] - want[i]) <= tol, $"{type} element {i}: got {got[i]:R}, spec {want[i]:R}");
            nonzero += got[i] != 0 ? 1 : 0;
        }

        Assert.True(nonzero > cols / 2, $"{type}: only {nonzero} of {cols} values are nonzero; random blocks are degenerate");
    }

    [Fact]
    public void Dequantize_handles_plain_float_types()
    {
        float[] values = [1.5f, -2.25f, 0f, 65504f, 1e-3f, -7.0e-5f, float.Epsilon, 3.14159f];
        byte[] f32 = new byte[values.Length * 4];
        byte[] f16 = new byte[values.Length * 2];
        byte[] bf16 = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(f32.AsSpan(4 * i), values[i]);
            BinaryPrimitives.WriteUInt16LittleEndian(f16.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i]));
            BinaryPrimitives.WriteUInt16LittleEndian(bf16.AsSpan(2 * i), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
        }

        float[] got = new float[values.Length];
        QuantBlocks.DequantizeRow(DType.F32, f32, got);
        Assert.Equal(values, got);
        QuantBlocks.DequantizeRow(DType.F16, f16, got);
        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal((float)(Half)values[i], got[i]);
        }

        QuantBlocks.DequantizeRow(DType.BF16, bf16, got);
        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal(BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(values[i]) & 0xFFFF0000), got[i]);
        }
    }

    [Fact]
    public void Dequantize_rejects_wrong_lengths()
    {
        Assert.Throws<ArgumentException>(() => QuantBlocks.DequantizeRow(DType.Q4_0, new byte[18], new float[48]));
        Assert.Throws<ArgumentException>(() => QuantBlocks.DequantizeRow(DType.Q4_0, new byte[17], new float[32]));
        Assert.Throws<NotSupportedException>(() => QuantBlocks.DequantizeRow((DType)16, new byte[32], new float[32])); // IQ2_XXS
    }

    [Fact]
    public void Q8_0_quantizer_follows_ggml_reference()
    {
        // x_j = j - 16: amax 16, d = 16/127, q = roundf(x·127/16) (half away from zero), d stored as binary16.
        float[] x = Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();
        byte[] block = new byte[34];
        BlockQuantizer.QuantizeRow(DType.Q8_0, x, block);
        float d = 16f / 127;
        Assert.Equal(BitConverter.HalfToUInt16Bits((Half)d), BinaryPrimitives.ReadUInt16LittleEndian(block));
        float id = 1 / d;
        for (int j = 0; j < 32; j++)
        {
            double t = x[j] * id;
            int want = (int)(Math.Sign(t) * Math.Floor(Math.Abs(t) + 0.5));
            Assert.Equal(want, (sbyte)block[2 + j]);
        }

        Assert.Equal(-127, (sbyte)block[2]);
    }

    [Fact]
    public void Q4_0_quantizer_follows_ggml_reference()
    {
        // x_j = j - 16: the signed extreme is -16 so d = -16 / -8 = 2; q = min(15, floor(x/2 + 8.5)).
        float[] x = Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();
        byte[] block = new byte[18];
        BlockQuantizer.QuantizeRow(DType.Q4_0, x, block);
        Assert.Equal(2f, (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block)));
        for (int j = 0; j < 32; j++)
        {
            int want = Math.Min(15, (int)Math.Floor(x[j] / 2.0 + 8.5));
            int got = j < 16 ? block[2 + j] & 15 : block[2 + j - 16] >> 4;
            Assert.Equal(want, got);
        }

        // A positive extreme flips the sign of d: the largest value maps to q = 0.
        float[] y = x.Select(v => -v).ToArray();
        BlockQuantizer.QuantizeRow(DType.Q4_0, y, block);
        Assert.Equal(-2f, (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block)));
        Assert.Equal(0, block[2] & 15);
    }

    [Fact]
    public void Q4_1_and_Q5_1_quantizers_follow_ggml_reference()
    {
        // x_j = j - 16: min -16, max 15. Q5_1: d = 31/31 = 1, m = -16, so q = trunc(x - m + 0.5) = j and every value is
        // exact. Q4_1: d = 31/15, q = min(15, trunc((x - m)/d + 0.5)) = round(15j/31) (no ties).
        float[] x = Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();
        byte[] q5 = new byte[24];
        BlockQuantizer.QuantizeRow(DType.Q5_1, x, q5);
        Assert.Equal(1f, (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q5)));
        Assert.Equal(-16f, (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q5.AsSpan(2))));
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(q5.AsSpan(4));
        for (int j = 0; j < 32; j++)
        {
            int low4 = j < 16 ? q5[8 + j] & 15 : q5[8 + j - 16] >> 4;
            Assert.Equal(j, low4 | (int)(((qh >> j) & 1) << 4));
        }

        float[] back = new float[32];
        QuantBlocks.DequantizeRow(DType.Q5_1, q5, back);
        Assert.Equal(x, back);

        byte[] q4 = new byte[20];
        BlockQuantizer.QuantizeRow(DType.Q4_1, x, q4);
        Assert.Equal((float)(Half)(31f / 15), (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q4)));
        Assert.Equal(-16f, (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q4.AsSpan(2))));
        for (int j = 0; j < 32; j++)
        {
            int got = j < 16 ? q4[4 + j] & 15 : q4[4 + j - 16] >> 4;
            Assert.Equal((int)Math.Floor(15.0 * j / 31 + 0.5), got);
        }
    }

    /// <summary>
    /// SHA-256 of llama.cpp's <c>quantize_row_*_ref</c> output (ggml's ggml-quants.c built with gcc, with and without
    /// -march=native: the same bytes) for <see cref="ReferenceTestValue"/>'s 16384 values; for IQ4_NL and IQ4_XS, of
    /// <c>ggml_quantize_chunk</c> without an importance matrix (llama-quantize's call) from llama.cpp c392e509's libggml-base.
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_1, "09431984a9fb21c674b7c7f170c1ca630710c2dc55e7afc2dbeeb563b56e9404")]
    [InlineData(DType.Q5_1, "85f99227537df3d0313c7aa2b9c1b807a447d1c7799c86f22dabb298abb53628")]
    [InlineData(DType.Q5_K, "ca6f305b2f47711e479359ffd226c7c03062d0e5c8057ad92f18ac4ec0470e1d")]
    [InlineData(DType.IQ4_NL, "2e5365658642762e5df00ab1f7fcf58b804c2de8c45508fba6183a44b07028f1")] // ggml_quantize_chunk, as llama-quantize calls it
    [InlineData(DType.IQ4_XS, "d31d89aa3337145b8001aca22f9e7a03d012ffd7d89d849a765d6b64d172954c")]
    public void Quantizer_reproduces_llama_cpp_reference_bytes(DType type, string sha256)
    {
        float[] x = Enumerable.Range(0, 256 * 64).Select(ReferenceTestValue).ToArray();
        byte[] q = new byte[type.RowBytes(x.Length)];
        BlockQuantizer.QuantizeRow(type, x, q);
        Assert.Equal(sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(q)));
    }

    /// <summary>
    /// Test data exactly representable in float32 (no platform's float rounding involved): a hashed uniform u in
    /// [-1, 1) on a 2^-22 grid, shaped per 256-value super-block (kind = block % 8) into plain data at five scales, all
    /// positive data (ggml's min clamped to 0), sub-blocks that are constant, zero, all negative or tiny, outliers,
    /// and all negative data.
    /// </summary>
    private static float ReferenceTestValue(int i)
    {
        uint h = unchecked((uint)i * 0x9E3779B1u + 12345u);
        h ^= h >> 16;
        h = unchecked(h * 0x7feb352du);
        h ^= h >> 15;
        h = unchecked(h * 0x846ca68bu);
        h ^= h >> 16;
        float u = ((int)(h >> 9) - (1 << 22)) / 4194304f;
        int block = i / 256;
        int sub = (i / 32) % 8;
        return (block % 8) switch
        {
            <= 3 => u * (block % 5) switch { 0 => 0.25f, 1 => 0.5f, 2 => 1f, 3 => 2f, _ => 4f },
            4 => MathF.Abs(u) * 0.5f + 0.25f,
            5 => sub switch { 0 => 0.5f, 1 => 0f, 2 => -MathF.Abs(u) - 0.125f, 3 => u / 1024, _ => u },
            6 => i % 32 == 7 ? u * 16 : u,
            _ => (u - 3) * 0.25f,
        };
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Quantize_round_trip_error_is_within_ggml_bounds(DType type)
    {
        // ggml test-quantize-fns: data 0.1 + 2cos(i), 4096 values, error sqrt(Σd²)/n against per-type maxima.
        const int n = 32 * 128;
        float[] data = new float[n];
        for (int i = 0; i < n; i++)
        {
            data[i] = 0.1f + 2 * MathF.Cos(i);
        }

        byte[] q = new byte[type.RowBytes(n)];
        BlockQuantizer.QuantizeRow(type, data, q);
        float[] back = new float[n];
        QuantBlocks.DequantizeRow(type, q, back);
        double sum = 0;
        double maxErr = 0;
        for (int i = 0; i < n; i++)
        {
            double diff = data[i] - back[i];
            sum += diff * diff;
            maxErr = Math.Max(maxErr, Math.Abs(diff));
        }

        double ggmlError = Math.Sqrt(sum) / n;
        double limit = type switch
        {
            DType.Q2_K => 0.0075,
            DType.Q3_K => 0.0040,
            _ => 0.002,
        };
        Assert.True(ggmlError < limit, $"{type}: total quantization error {ggmlError} ≥ {limit}");

        // A stricter per-value check: the data spans [-1.9, 2.1], so one quantization step is ≤ 4.2 / (levels - 1)
        // and no value may be off by more than one step.
        int bits = type switch
        {
            DType.Q2_K => 2,
            DType.Q3_K => 3,
            DType.Q4_0 or DType.Q4_1 or DType.Q4_K or DType.IQ4_NL or DType.IQ4_XS => 4,
            DType.Q5_0 or DType.Q5_1 or DType.Q5_K => 5,
            DType.Q6_K => 6,
            _ => 8,
        };
        double step = 4.2 / ((1 << bits) - 1);
        Assert.True(maxErr <= step, $"{type}: max error {maxErr} exceeds one step {step}");
    }

    [Fact]
    public void Q8_0_and_Q4_0_round_trip_error_is_bounded_by_the_block_scale()
    {
        var rng = new Random(7);
        float[] x = new float[32 * 64];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.NextDouble() * 4 - 2));
        }

        foreach (DType type in new[] { DType.Q8_0, DType.Q4_0 })
        {
            byte[] q = new byte[type.RowBytes(x.Length)];
            BlockQuantizer.QuantizeRow(type, x, q);
            float[] back = new float[x.Length];
            QuantBlocks.DequantizeRow(type, q, back);
            int bb = type.BlockBytes();
            for (int i = 0; i < x.Length; i++)
            {
                double d = Math.Abs((double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(q.AsSpan(i / 32 * bb))));

                // Q8_0 rounds to nearest (≤ d/2, plus d's own binary16 rounding times |q| ≤ 127); Q4_0 can clamp the
                // top value by one full step.
                double bound = type == DType.Q8_0 ? d / 2 + 127 * d * Math.Pow(2, -11) : d * (1 + 8 * Math.Pow(2, -11));
                Assert.True(Math.Abs(x[i] - back[i]) <= bound, $"{type} value {i}: {x[i]} → {back[i]}, bound {bound}");
            }
        }
    }
}
