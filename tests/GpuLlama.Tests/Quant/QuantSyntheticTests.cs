using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Quant;

public class QuantSyntheticTests
{
    [Theory]
    [InlineData("tiny:q8_0", DType.Q8_0)]
    [InlineData("tiny:q4_0", DType.Q4_0)]
    [InlineData("tiny:q4_1", DType.Q4_1)]
    [InlineData("tiny:q5_1", DType.Q5_1)]
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

    [Theory]
    [InlineData("synthetic:tiny:q4_1", DType.Q4_1)]
    [InlineData("synthetic:llama-110m:Q5_1", DType.Q5_1)]
    [InlineData("synthetic:tiny:q5_k", DType.Q5_K)]
    [InlineData("llama2-7b:q5_K", DType.Q5_K)]
    public void Dtype_names_parse(string spec, DType type) => Assert.Equal(type, SyntheticSource.Parse(spec).Type);

    [Fact]
    public void Q5_K_synthetic_weights_are_the_f32_weights_quantized()
    {
        // The smallest preset with rows of 256 (llama-110m) takes long to quantize to Q5_K; a one-layer shape suffices.
        var preset = new SyntheticPreset("q5k-test", "a one-layer test model", 256, 1, 4, 2, 512, 260, 64);
        using SyntheticSource q = SyntheticSource.Create(preset, DType.Q5_K);
        using SyntheticSource f = SyntheticSource.Create(preset, DType.F32);
        foreach (string name in new[] { TensorNames.Wq(0), TensorNames.FfnDown(0), TensorNames.TokenEmbedding })
        {
            TensorInfo qi = q.Tensors[name];
            Assert.Equal(DType.Q5_K, qi.Type);
            int cols = (int)qi.Cols;
            float[] want = new float[cols];
            byte[] requantized = new byte[DType.Q5_K.RowBytes(cols)];
            for (long r = 0; r < qi.Rows; r++)
            {
                QuantBlocks.DequantizeRow(DType.F32, f.View(f.Tensors[name]).Row(r), want);
                BlockQuantizer.QuantizeRow(DType.Q5_K, want, requantized);
                Assert.True(q.View(qi).Row(r).SequenceEqual(requantized), $"{name} row {r} is not the quantized f32 row");
            }
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
