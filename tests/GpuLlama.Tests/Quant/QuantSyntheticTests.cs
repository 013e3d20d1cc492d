using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

public class QuantSyntheticTests
{
    [Theory]
    [InlineData("tiny:q8_0", DType.Q8_0)]
    [InlineData("tiny:q4_0", DType.Q4_0)]
    [InlineData("llama-110m:q4_k", DType.Q4_K)]
    public void Quantized_synthetic_weights_are_the_f32_weights_quantized(string spec, DType type)
    {
        string preset = spec.Split(':')[0];
        using SyntheticSource q = SyntheticSource.Create(spec);
        using SyntheticSource f = SyntheticSource.Create(preset + ":f32");
        Assert.Equal(type, q.DType);
        TensorInfo qi = q.Tensors[TensorNames.Wq(0)];
        TensorInfo fi = f.Tensors[TensorNames.Wq(0)];
        Assert.Equal(type, qi.Type);
        Assert.Equal(DType.F32, q.Tensors[TensorNames.AttnNorm(0)].Type);
        int cols = (int)qi.Cols;
        float[] want = new float[cols];
        byte[] requantized = new byte[type.RowBytes(cols)];
        foreach (long r in new long[] { 0, qi.Rows / 2, qi.Rows - 1 })
        {
            QuantBlocks.DequantizeRow(DType.F32, f.View(fi).Row(r), want);
            BlockQuantizer.QuantizeRow(type, want, requantized);
            Assert.True(q.View(qi).Row(r).SequenceEqual(requantized), $"{spec} row {r} is not the quantized f32 row");
        }
    }

    [Fact]
    public void K_quant_synthetic_weights_need_rows_of_256()
    {
        var e = Assert.Throws<GpuLlamaException>(() => SyntheticSource.Create("tiny:q4_k"));
        Assert.Contains("multiple of 256", e.Message);
        Assert.Contains("synthetic:tiny", e.Message);
    }
}
