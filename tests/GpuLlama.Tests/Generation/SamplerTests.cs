using GpuLlama.Generation;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// The sampler chain against its definitions (llama.cpp's common_sampler order: penalties → top-k → top-p → min-p →
/// temperature → draw): each filter on logits where it decides the outcome, and the draw's frequencies against the
/// tempered softmax.
/// </summary>
public sealed class SamplerTests
{
    private static readonly SamplerSettings Plain = new() { Temperature = 1, TopK = 0, TopP = 1, MinP = 0 };

    private static float[] Logits(params double[] p) => [.. p.Select(x => (float)Math.Log(x))];

    private static double[] Frequencies(SamplerSettings s, float[] logits, int draws, IReadOnlyList<int>? history = null)
    {
        var sampler = new Sampler(s with { Seed = 42 });
        var counts = new double[logits.Length];
        for (int i = 0; i < draws; i++)
        {
            counts[sampler.Sample(logits, history ?? [])]++;
        }

        return [.. counts.Select(c => c / draws)];
    }

    [Fact]
    public void Greedy_is_the_argmax_and_ties_go_to_the_lowest_id()
    {
        var greedy = new Sampler(new SamplerSettings { Temperature = 0 });
        Assert.True(greedy.IsGreedy);
        Assert.Equal(2, greedy.Sample([0.1f, 0.5f, 0.9f, -1f], []));
        Assert.Equal(1, greedy.Sample([0.1f, 0.9f, 0.9f, -1f], []));
        Assert.False(new Sampler(new SamplerSettings { Temperature = 0, PresencePenalty = 0.5f }).IsGreedy);
    }

    [Theory]
    // logits 2.0, 1.9, -0.5; token 0 seen twice, token 2 once: repeat 1.1 → 2.0/1.1 = 1.82 < 1.9
    [InlineData(1.1f, 0f, 0f, 1)]
    [InlineData(1.04f, 0f, 0f, 0)]   // 1.92 > 1.9
    [InlineData(1f, 0.06f, 0f, 1)]   // 2 − 2·0.06 = 1.88
    [InlineData(1f, 0.04f, 0f, 0)]   // 1.92
    [InlineData(1f, 0f, 0.11f, 1)]   // 2 − 0.11 = 1.89: once, however often it was seen
    [InlineData(1f, 0f, 0.09f, 0)]   // 1.91
    public void Penalties_follow_llama_cpps_formula(float repeat, float frequency, float presence, int want)
    {
        var s = new SamplerSettings { Temperature = 0, RepeatPenalty = repeat, FrequencyPenalty = frequency, PresencePenalty = presence };
        Assert.Equal(want, new Sampler(s).Sample([2.0f, 1.9f, -0.5f], [0, 2, 0]));
        // a negative logit is multiplied by the repeat penalty: token 2 (−0.5) of [−0.6, −0.55, −0.5] drops below the others
        var neg = new SamplerSettings { Temperature = 0, RepeatPenalty = 1.2f };
        Assert.Equal(1, new Sampler(neg).Sample([-0.6f, -0.55f, -0.5f], [2]));
        // only the last RepeatLastN tokens count
        Assert.Equal(0, new Sampler(s with { RepeatLastN = 1 }).Sample([2.0f, 1.9f, -0.5f], [0, 0, 2]));
    }

    [Fact]
    public void Draws_follow_the_softmax_at_the_temperature()
    {
        float[] l = Logits(0.1, 0.2, 0.7);
        double[] f = Frequencies(Plain, l, 40000);
        Assert.Equal([0.1, 0.2, 0.7], f, (a, b) => Math.Abs(a - b) < 0.01);
        // temperature 0.5 squares the probabilities: 0.01, 0.04, 0.49 over 0.54
        double[] cold = Frequencies(Plain with { Temperature = 0.5f }, l, 40000);
        Assert.Equal([0.01 / 0.54, 0.04 / 0.54, 0.49 / 0.54], cold, (a, b) => Math.Abs(a - b) < 0.01);
    }

    [Fact]
    public void Top_k_top_p_and_min_p_cut_the_candidates()
    {
        float[] l = Logits(0.1, 0.2, 0.3, 0.4);
        // top-k 2: tokens 3 and 2 in proportion 4:3
        double[] k = Frequencies(Plain with { TopK = 2 }, l, 30000);
        Assert.Equal([0, 0, 3 / 7.0, 4 / 7.0], k, (a, b) => Math.Abs(a - b) < 0.012);
        // top-p 0.65: 0.4 + 0.3 reach it, 0.2 is not needed
        double[] p = Frequencies(Plain with { TopP = 0.65f }, l, 30000);
        Assert.Equal([0, 0, 3 / 7.0, 4 / 7.0], p, (a, b) => Math.Abs(a - b) < 0.012);
        // min-p 0.6: p ≥ 0.24 stays (0.3 and 0.4)
        double[] m = Frequencies(Plain with { MinP = 0.6f }, l, 30000);
        Assert.Equal([0, 0, 3 / 7.0, 4 / 7.0], m, (a, b) => Math.Abs(a - b) < 0.012);
        // min-p 0.8: only the most likely
        Assert.Equal([0, 0, 0, 1.0], Frequencies(Plain with { MinP = 0.8f }, l, 1000));
    }

    /// <summary>
    /// Mirostat's point: whatever the distribution, the surprise −log₂ p of the drawn tokens (p renormalized over the
    /// tokens it kept) averages τ, μ learning the cut. On a Zipf distribution over 2000 tokens both versions hold a
    /// 3- or 5-bit target, and a higher τ lets the draws reach further down the full distribution.
    /// </summary>
    [Theory]
    [InlineData(1, 3.0f)]
    [InlineData(2, 3.0f)]
    [InlineData(1, 5.0f)]
    [InlineData(2, 5.0f)]
    public void Mirostat_holds_the_surprise_near_tau(int version, float tau)
    {
        double[] zipf = [.. Enumerable.Range(1, 2000).Select(r => 1.0 / r)];
        double total = zipf.Sum();
        float[] l = [.. zipf.Select(x => (float)Math.Log(x))];
        var sampler = new Sampler(new SamplerSettings { Temperature = 1, Mirostat = version, MirostatTau = tau, MirostatEta = 0.1f, Seed = 11 });
        Assert.False(sampler.IsGreedy);
        Assert.Equal(2 * tau, sampler.MirostatMu);
        double observed = 0, full = 0;
        const int warmup = 200, draws = 4000;
        for (int i = 0; i < warmup + draws; i++)
        {
            int t = sampler.Sample(l, [0, 0, 0]); // penalties do not apply under mirostat
            if (i >= warmup)
            {
                observed += sampler.MirostatSurprise;
                full += -Math.Log2(zipf[t] / total);
            }
        }

        Assert.InRange(observed / draws, tau - 0.25, tau + 0.25);
        Assert.InRange(full / draws, tau, tau + 2.5); // the cut tail's mass makes the full distribution's surprise higher
        Assert.Throws<GpuLlamaException>(() => new Sampler(new SamplerSettings { Mirostat = 3 }));
    }

    [Fact]
    public void Typical_keeps_the_tokens_nearest_the_entropy()
    {
        // p = 0.5, 0.3, 0.1, 0.1: H = 1.168 nats; |−ln p − H| = 0.475, 0.036, 1.135, 1.135 — token 1 first (0.3),
        // then 0: 0.8 passes 0.7, so tokens 2 and 3 go, and 0 and 1 are drawn 5:3
        float[] l = Logits(0.5, 0.3, 0.1, 0.1);
        double[] f = Frequencies(Plain with { TypicalP = 0.7f }, l, 30000);
        Assert.Equal([5 / 8.0, 3 / 8.0, 0, 0], f, (a, b) => Math.Abs(a - b) < 0.012);
        // 0.25 is passed by token 1 alone: only it stays
        Assert.Equal([0, 1.0, 0, 0], Frequencies(Plain with { TypicalP = 0.25f }, l, 1000));
    }

    [Fact]
    public void Xtc_removes_the_likeliest_but_the_last_above_the_threshold()
    {
        // p = 0.5, 0.3, 0.15, 0.05, threshold 0.1: 0.5, 0.3 and 0.15 are above it, all but 0.15 go — tokens 2 and 3
        // then drawn 3:1; at probability 0.5, half the draws are of the whole distribution
        float[] l = Logits(0.5, 0.3, 0.15, 0.05);
        Assert.Equal([0, 0, 0.75, 0.25], Frequencies(Plain with { XtcProbability = 1, XtcThreshold = 0.1f }, l, 30000), (a, b) => Math.Abs(a - b) < 0.012);
        Assert.Equal([0.25, 0.15, 0.45, 0.15], Frequencies(Plain with { XtcProbability = 0.5f, XtcThreshold = 0.1f }, l, 40000), (a, b) => Math.Abs(a - b) < 0.012);
        // a threshold above 0.5 turns it off; so does a single candidate above the threshold
        Assert.Equal([0.5, 0.3, 0.15, 0.05], Frequencies(Plain with { XtcProbability = 1, XtcThreshold = 0.6f }, l, 40000), (a, b) => Math.Abs(a - b) < 0.012);
        Assert.Equal([0.5, 0.3, 0.15, 0.05], Frequencies(Plain with { XtcProbability = 1, XtcThreshold = 0.45f }, l, 40000), (a, b) => Math.Abs(a - b) < 0.012);
    }

    [Fact]
    public void Logit_bias_comes_first_and_minus_infinity_bans()
    {
        float[] l = [2.0f, 1.9f, -0.5f];
        var ban = new SamplerSettings { Temperature = 0, LogitBias = new Dictionary<int, float> { [0] = float.NegativeInfinity } };
        Assert.False(new Sampler(ban).IsGreedy); // the device's argmax would not see the bias
        Assert.Equal(1, new Sampler(ban).Sample(l, []));
        var lift = new SamplerSettings { Temperature = 0, LogitBias = new Dictionary<int, float> { [2] = 2.6f, [99] = 5 } }; // ids past the vocabulary are ignored
        Assert.Equal(2, new Sampler(lift).Sample(l, []));
        // banned under sampling too, whatever the draws
        Assert.Equal(0, Frequencies(Plain with { LogitBias = new Dictionary<int, float> { [2] = float.NegativeInfinity } }, Logits(0.1, 0.2, 0.7), 2000)[2]);
    }

    [Fact]
    public void A_seed_reproduces_the_draws()
    {
        float[] l = Logits(0.25, 0.25, 0.25, 0.25);
        int[] Draw(uint? seed)
        {
            var sampler = new Sampler(Plain with { Seed = seed });
            return [.. Enumerable.Range(0, 64).Select(_ => sampler.Sample(l, []))];
        }

        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
    }
}
