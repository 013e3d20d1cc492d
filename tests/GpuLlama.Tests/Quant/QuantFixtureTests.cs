using System.Buffers.Binary;
using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

/// <summary>Real llama.cpp-written blocks: tiny-llama-a's quantized GGUFs against its F32 GGUF, and tiny-llama-kq's K-quants.</summary>
public unsafe class QuantFixtureTests
{
    private static (int Checked, int Quantized) CompareWithF32(string quantizedFile, DType[] expectTypes)
    {
        using GgufSource f32 = GgufSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-f32.gguf"));
        using GgufSource q = GgufSource.Open(Fixtures.Get("tiny-llama-a", quantizedFile));
        int tensors = 0;
        int reproduced = 0;
        var seen = new HashSet<DType>();
        foreach (TensorInfo info in q.TensorList)
        {
            if (!info.Type.IsQuantized())
            {
                continue;
            }

            seen.Add(info.Type);
            tensors++;
            TensorInfo reference = f32.Tensors[info.Name];
            Assert.Equal(DType.F32, reference.Type);
            Assert.Equal(reference.Shape, info.Shape);
            WeightView qv = q.View(info);
            WeightView fv = f32.View(reference);
            int cols = checked((int)info.Cols);
            float[] want = new float[cols];
            float[] got = new float[cols];
            float[] fast = new float[cols];
            byte[] requantized = new byte[info.Type.RowBytes(cols)];
            bool allBytesEqual = true;
            for (long r = 0; r < info.Rows; r++)
            {
                QuantBlocks.DequantizeRow(DType.F32, fv.Row(r), want);
                ReadOnlySpan<byte> row = qv.Row(r);
                QuantBlocks.DequantizeRow(info.Type, row, got);
                fixed (byte* pr = row)
                fixed (float* pf = fast)
                fixed (float* px = want)
                {
                    CpuQuantDot.Dequantize(info.Type, pr, pf, cols);
                    float dot = CpuQuantDot.DotRow(info.Type, pr, px, cols);
                    double refDot = 0;
                    double abs = 0;
                    for (int i = 0; i < cols; i++)
                    {
                        refDot += (double)got[i] * want[i];
                        abs += Math.Abs((double)got[i] * want[i]);
                    }

                    Assert.True(Math.Abs(dot - refDot) <= 1e-5 * abs, $"{info.Name} row {r}: DotRow {dot} vs {refDot}");
                }

                Assert.Equal(got, fast);
                int bb = info.Type.BlockBytes();
                for (int i = 0; i < cols; i++)
                {
                    // Every legacy type's element is (q - bias)·d with d the block's leading binary16: off by at most
                    // one step d, plus d's own rounding times the largest |q - bias| (≤ 127).
                    double d = Math.Abs((double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(row.Slice(i / 32 * bb))));
                    double bound = info.Type == DType.Q8_0 ? d / 2 + 127 * d * Math.Pow(2, -11) : d * (1 + 16 * Math.Pow(2, -11));
                    Assert.True(Math.Abs(got[i] - want[i]) <= bound, $"{info.Name} row {r} col {i}: {info.Type} {got[i]} vs f32 {want[i]} (bound {bound})");
                }

                BlockQuantizer.QuantizeRow(info.Type, want, requantized);
                allBytesEqual &= row.SequenceEqual(requantized);
            }

            reproduced += allBytesEqual ? 1 : 0;
        }

        Assert.Equal(expectTypes.OrderBy(t => t), seen.OrderBy(t => t));
        return (tensors, reproduced);
    }

    [FixtureFact("tiny-llama-a/tiny-llama-a-Q4_0.gguf")]
    public void Q4_0_file_dequantizes_to_the_f32_weights_and_our_quantizer_reproduces_it()
    {
        (int tensors, int reproduced) = CompareWithF32("tiny-llama-a-Q4_0.gguf", [DType.Q4_0, DType.Q8_0]);
        Assert.True(tensors >= 28, $"only {tensors} quantized tensors");

        // llama-quantize without an importance matrix uses quantize_row_*_ref: byte-identical output expected.
        Assert.Equal(tensors, reproduced);
    }

    [FixtureFact("tiny-llama-a/tiny-llama-a-Q4_K_M.gguf")]
    public void Q4_K_M_fallback_file_dequantizes_to_the_f32_weights_and_our_quantizer_reproduces_it()
    {
        (int tensors, int reproduced) = CompareWithF32("tiny-llama-a-Q4_K_M.gguf", [DType.Q5_0, DType.Q8_0]);
        Assert.True(tensors >= 28, $"only {tensors} quantized tensors");
        Assert.Equal(tensors, reproduced);
    }

    [FixtureFact("tiny-llama-a/tiny-llama-a-q8_0.gguf")]
    public void Q8_0_file_dequantizes_to_the_f32_weights()
    {
        (int tensors, _) = CompareWithF32("tiny-llama-a-q8_0.gguf", [DType.Q8_0]);
        Assert.True(tensors >= 28, $"only {tensors} quantized tensors");
    }

    [FixtureFact("tiny-llama-kq/tiny-llama-kq-Q4_K_M.gguf")]
    public void K_quant_files_agree_with_each_other_within_4_bit_error()
    {
        using GgufSource q4 = GgufSource.Open(Fixtures.Get("tiny-llama-kq", "tiny-llama-kq-Q4_K_M.gguf"));
        using GgufSource q6 = GgufSource.Open(Fixtures.Get("tiny-llama-kq", "tiny-llama-kq-Q6_K.gguf"));
        var seen = new HashSet<DType>();
        int compared = 0;
        foreach (TensorInfo a in q4.TensorList)
        {
            TensorInfo b = q6.Tensors[a.Name];
            if (!a.Type.IsQuantized() || b.Type != DType.Q6_K)
            {
                continue;
            }

            seen.Add(a.Type);
            compared++;
            int cols = checked((int)a.Cols);
            float[] va = new float[cols];
            float[] vb = new float[cols];
            double sumSq = 0;
            double sumDiffSq = 0;
            double maxRatio = 0;
            WeightView wa = q4.View(a);
            WeightView wb = q6.View(b);
            for (long r = 0; r < a.Rows; r++)
            {
                QuantBlocks.DequantizeRow(a.Type, wa.Row(r), va);
                QuantBlocks.DequantizeRow(b.Type, wb.Row(r), vb);
                for (int s = 0; s < cols; s += 32)
                {
                    // Within a 32-value sub-block a 4-bit grid has steps of range/15: no value may be off by more than
                    // one such step (rounding error plus the 6-bit scale and Q6_K's own error).
                    double lo = double.MaxValue;
                    double hi = double.MinValue;
                    double maxDiff = 0;
                    for (int i = s; i < s + 32; i++)
                    {
                        lo = Math.Min(lo, vb[i]);
                        hi = Math.Max(hi, vb[i]);
                        maxDiff = Math.Max(maxDiff, Math.Abs(va[i] - vb[i]));
                        sumSq += (double)vb[i] * vb[i];
                        sumDiffSq += (double)(va[i] - vb[i]) * (va[i] - vb[i]);
                    }

                    maxRatio = Math.Max(maxRatio, maxDiff / ((hi - lo) / 15));
                }
            }

            double relRms = Math.Sqrt(sumDiffSq / sumSq);
            Assert.True(maxRatio <= 1.0, $"{a.Name} ({a.Type}): a value is {maxRatio:F2} 4-bit steps from the Q6_K file");
            double rmsLimit = a.Type == DType.Q6_K ? 0.02 : 0.12;
            Assert.True(relRms <= rmsLimit, $"{a.Name} ({a.Type}): relative RMS difference {relRms:F4} > {rmsLimit}");
        }

        Assert.Contains(DType.Q4_K, seen);
        Assert.Contains(DType.Q6_K, seen);
        Assert.True(compared >= 14, $"only {compared} tensors compared");
    }
}
