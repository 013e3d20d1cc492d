using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>Embeddings: llama-embedding's vectors, and what they are — the state the classifier reads.</summary>
public sealed class EmbeddingsTests
{
    /// <summary>
    /// The first eight of 128 components that llama.cpp c392e509's llama-embedding printed for tiny-llama-a-f32.gguf,
    /// "The capital of France is Paris" (17 tokens), -ctk f32 -ctv f32, --embd-normalize 2 (its JSON output keeps 7
    /// digits): ours agree to 2e-7 in every component (measured), held here to 1e-6.
    /// </summary>
    [FixtureTheory("tiny-llama-a/tiny-llama-a-f32.gguf")]
    [InlineData(Pooling.Mean, new[] { 0.0007841f, 0.0993922f, -0.0882489f, -0.0064615f, 0.0274083f, -0.103731f, -0.0046603f, 0.042056f })]
    [InlineData(Pooling.Last, new[] { 0.0278876f, 0.0585774f, -0.0428899f, -0.1475243f, -0.0744058f, -0.0186594f, 0.0881572f, 0.0804964f })]
    [InlineData(Pooling.Cls, new[] { -0.0599334f, 0.1153246f, -0.0231841f, 0.1697372f, -0.0225977f, 0.0418613f, -0.0643936f, 0.1134742f })]
    public void Match_llama_embedding(Pooling pooling, float[] llamaCpp)
    {
        using LlamaModel model = LlamaModel.Load(Fixtures.Get("tiny-llama-a", "tiny-llama-a-f32.gguf"), new LoadOptions { Threads = 2, CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32 });
        int[] tokens = model.Tokenizer.Encode("The capital of France is Paris", addBos: true);
        Assert.Equal(17, tokens.Length);
        float[] e = Assert.Single(Embeddings.Compute(model, tokens, pooling));
        Assert.Equal(128, e.Length);
        for (int i = 0; i < llamaCpp.Length; i++)
        {
            Assert.True(Math.Abs(e[i] - llamaCpp[i]) < 1e-6, $"{pooling} component {i}: {e[i]:R}, llama.cpp {llamaCpp[i]:R}");
        }

        Assert.Equal(1.0, Math.Sqrt(e.Sum(v => (double)v * v)), 6);
    }

    /// <summary>
    /// Unnormalized, the last token's embedding is what the classifier reads: the output weights times it are the
    /// logits of the same text; mean and first are the mean and first of the per-token states, across a batch boundary.
    /// </summary>
    [Fact]
    public unsafe void Are_the_final_norm_states_the_classifier_reads()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { BatchSize = 8, CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32 });
        int[] tokens = model.Tokenizer.Encode("Once upon a time there was a river and a stone", addBos: true);
        Assert.True(tokens.Length > 8); // two batches
        float[] last = Embeddings.Compute(model, tokens, Pooling.Last, normalize: -1)[0];
        float[][] each = Embeddings.Compute(model, tokens, Pooling.None, normalize: -1);
        Assert.Equal(tokens.Length, each.Length);
        Assert.Equal(last, each[^1]);
        Assert.Equal(each[0], Embeddings.Compute(model, tokens, Pooling.Cls, normalize: -1)[0]);
        float[] mean = Embeddings.Compute(model, tokens, Pooling.Mean, normalize: -1)[0];
        for (int i = 0; i < mean.Length; i++)
        {
            Assert.Equal(each.Average(r => (double)r[i]), mean[i], 5);
        }

        model.Transformer.Forward(tokens, 0);
        float[] logits = model.Transformer.LogitsLast().ToArray();
        TensorInfo head = model.Source.Tensors.TryGetValue(TensorNames.Output, out TensorInfo? o) ? o : model.Source.Tensors[TensorNames.TokenEmbedding];
        Assert.Equal(DType.F32, head.Type);
        float* w = (float*)model.Source.View(head).Pointer;
        double scale = logits.Max(Math.Abs);
        for (int v = 0; v < logits.Length; v += 97)
        {
            double dot = 0;
            for (int i = 0; i < last.Length; i++)
            {
                dot += (double)w[(long)v * last.Length + i] * last[i];
            }

            Assert.True(Math.Abs(dot - logits[v]) <= 1e-5 * scale, $"token {v}: W·e = {dot}, logit {logits[v]}");
        }
    }

    [Fact]
    public void Normalization_is_llama_cpps()
    {
        float[] e = [3, -4];
        Embeddings.Normalize(e, 2);
        Assert.Equal([0.6f, -0.8f], e);
        e = [3, -4];
        Embeddings.Normalize(e, 1);
        Assert.Equal([3 * (float)(1.0 / 7), -4 * (float)(1.0 / 7)], e); // x · (float)(1/sum), as llama.cpp scales
        e = [3, -4];
        Embeddings.Normalize(e, 0);
        Assert.Equal([3 * 32760 / 4f, -32760f], e);
        e = [3, -4];
        Embeddings.Normalize(e, -1);
        Assert.Equal([3f, -4f], e);
        Assert.Throws<GpuLlamaException>(() => Embeddings.Normalize(e, -2));
    }
}
