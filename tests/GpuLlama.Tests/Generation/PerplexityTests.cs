using GpuLlama.Devices;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>Perplexity as llama-perplexity measures it.</summary>
public sealed class PerplexityTests
{
    /// <summary>A fixed 600-word text (the same the llama.cpp number below was measured on).</summary>
    private static string Text()
    {
        string[] words = ["the", "model", "runs", "every", "layer", "on", "a", "device", "and", "tokens", "flow", "through", "cache", "with", "keys", "values", "small", "fast", "quiet", "river", "stone", "light"];
        return string.Join(" ", Enumerable.Range(0, 600).Select(i => words[(i * 7 + i / 3) % words.Length]));
    }

    /// <summary>
    /// llama.cpp c392e509's llama-perplexity on tiny-llama-a-f32.gguf and <see cref="Text"/>, -c 64 -b 32 (two
    /// batches a chunk) -ctk f32 -ctv f32: "Final estimate: PPL = 359090.6410 +/- 56370.98315" over 31 chunks. A random
    /// model's perplexity is huge, and its logarithm is what the logits decide: ours matches it to 1e-6.
    /// </summary>
    [FixtureFact("tiny-llama-a/tiny-llama-a-f32.gguf")]
    public void Matches_llama_perplexity_on_the_same_file_and_text()
    {
        using LlamaModel model = LlamaModel.Load(Fixtures.Get("tiny-llama-a", "tiny-llama-a-f32.gguf"), new LoadOptions
        {
            ContextLength = 64, BatchSize = 32, LogitRows = 32, Threads = 2, CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32,
        });
        PerplexityResult r = Perplexity.Compute(model, model.Tokenizer.Encode(Text(), addBos: true));
        Assert.Equal(31, r.Chunks);
        Assert.Equal(31 * (64 - 32 - 1), r.ScoredTokens);
        Assert.True(Math.Abs(r.Value / 359090.6410 - 1) < 1e-6, $"PPL {r.Value:F4}, llama.cpp 359090.6410");
        Assert.True(Math.Abs(r.Uncertainty / 56370.98315 - 1) < 1e-5, $"± {r.Uncertainty:F5}, llama.cpp 56370.98315");
    }

    /// <summary>
    /// The definition on a model the test builds: the chunks' second halves scored from logits of every position
    /// (here a batch of 16 with two batches a chunk, against one batch of 32 and a float64 log-softmax).
    /// </summary>
    [Fact]
    public void Is_the_exp_of_the_mean_nll_of_each_chunks_second_half()
    {
        var options = new LoadOptions { ContextLength = 32, BatchSize = 16, LogitRows = 16, CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32 };
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", options);
        int[] tokens = model.Tokenizer.Encode(Text(), addBos: true);
        var chunks = new List<int>();
        PerplexityResult r = Perplexity.Compute(model, tokens, maxChunks: 3, onChunk: (i, _) => chunks.Add(i));
        Assert.Equal([1, 2, 3], chunks);
        Assert.Equal(3 * 15, r.ScoredTokens);

        using LlamaModel whole = LlamaModel.Load("synthetic:tiny:f32", options with { BatchSize = 32, LogitRows = 32 });
        var nll = new List<double>();
        for (int c = 0; c < 3; c++)
        {
            int[] chunk = tokens[(c * 32)..(c * 32 + 32)];
            chunk[0] = model.Tokenizer.BosId;
            whole.Transformer.Forward(chunk, 0, allLogits: true);
            for (int p = 16; p < 31; p++)
            {
                float[] l = whole.Transformer.Logits(p).ToArray();
                double max = l.Max(), sum = l.Sum(x => Math.Exp(x - max));
                nll.Add(-(l[tokens[c * 32 + p + 1]] - max - Math.Log(sum)));
            }
        }

        double mean = nll.Average();
        double sd = Math.Sqrt(nll.Sum(v => v * v) / nll.Count - mean * mean);
        Assert.True(Math.Abs(r.Value / Math.Exp(mean) - 1) < 1e-4, $"PPL {r.Value}, reference {Math.Exp(mean)}");
        Assert.True(Math.Abs(r.Uncertainty / (Math.Exp(mean) * sd / Math.Sqrt(nll.Count - 1)) - 1) < 1e-3);
    }

    [Fact]
    public void Too_little_text_or_no_logit_rows_is_a_one_line_error()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { ContextLength = 32, BatchSize = 32, LogitRows = 32 });
        var e = Assert.Throws<GpuLlamaException>(() => Perplexity.Compute(model, model.Tokenizer.Encode("a few words", addBos: true)));
        Assert.Contains("needs at least 64", e.Message);
        using LlamaModel generation = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { ContextLength = 32 });
        e = Assert.Throws<GpuLlamaException>(() => Perplexity.Compute(generation, model.Tokenizer.Encode(Text(), addBos: true)));
        Assert.Contains("LogitRows", e.Message);
    }
}
