using GpuLlama.Devices;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// Generation past a full context (llama-cli's context shift): the first n_keep tokens stay, the older half of the
/// rest goes, and the model goes on from the kept tokens evaluated again.
/// </summary>
public sealed class ContextShiftTests
{
    private const int Context = 16;

    /// <summary>
    /// Greedy tokens past a 16-token context equal llama-cli's algorithm written out here over the transformer —
    /// n_keep = --keep (+ the BOS token; -1: the whole prompt), n_discard = (n_past − n_keep) / 2 — shift for shift;
    /// before the first shift they are the tokens of a run that stops at the full context.
    /// </summary>
    [Theory]
    [InlineData(0, 1)]
    [InlineData(2, 3)]
    [InlineData(-1, 4)]
    public void Shifts_keep_the_start_drop_the_older_half_and_go_on(int keep, int nKeep)
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions
        {
            ContextLength = Context, CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32,
        });
        int[] prompt = [model.Tokenizer.BosId, 100, 200, 300];
        var greedy = new GenerationOptions { Sampling = new SamplerSettings { Temperature = 0 }, IgnoreEos = true, MaxTokens = 30, KeepTokens = keep };

        Generator shifting = model.CreateGenerator();
        int[] got = [.. shifting.Generate(prompt, greedy).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(StopReason.MaxTokens, shifting.LastStopReason);

        Generator stopping = model.CreateGenerator();
        int[] full = [.. stopping.Generate(prompt, greedy with { ContextShift = false }).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(StopReason.ContextFull, stopping.LastStopReason);
        Assert.Equal(Context - prompt.Length + 1, full.Length);
        Assert.Equal(full, got[..full.Length]);

        // the reference: llama-cli's loop over the transformer
        Transformer t = model.Transformer;
        var cache = new List<int>(prompt);
        t.Forward(prompt, 0);
        int next = t.ArgmaxLast(), shifts = 0;
        var want = new List<int>();
        while (true)
        {
            want.Add(next);
            if (want.Count == 30)
            {
                break;
            }

            if (cache.Count >= Context)
            {
                cache.RemoveRange(nKeep, (cache.Count - nKeep) / 2);
                t.Forward([.. cache], 0);
                shifts++;
            }

            t.Forward([next], cache.Count);
            cache.Add(next);
            next = t.ArgmaxLast();
        }

        Assert.Equal(want, got);
        Assert.True(shifts >= 2, $"{shifts} shifts");
        Assert.Equal(shifts, shifting.LastContextShifts);
        Assert.Equal(cache.Count, shifting.Position);
    }

    [Fact]
    public void A_prompt_that_fills_the_context_can_only_shift_after_what_it_keeps()
    {
        // --keep -1 with a prompt of the whole context: nothing after the kept prompt to drop, so the run stops
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { ContextLength = Context });
        int[] prompt = [model.Tokenizer.BosId, .. Enumerable.Range(100, Context - 1)];
        var options = new GenerationOptions { Sampling = new SamplerSettings { Temperature = 0 }, IgnoreEos = true, MaxTokens = 10, KeepTokens = -1 };
        Generator g = model.CreateGenerator();
        Assert.Single(g.Generate(prompt, options), x => x.Id >= 0);
        Assert.Equal(StopReason.ContextFull, g.LastStopReason);
        Assert.Equal(0, g.LastContextShifts);

        // --keep 0: the BOS stays, seven of the fifteen after it go, and the run reaches its limit
        g.Reset();
        Assert.Equal(10, g.Generate(prompt, options with { KeepTokens = 0 }).Count(x => x.Id >= 0));
        Assert.Equal(StopReason.MaxTokens, g.LastStopReason);
        Assert.Equal(2, g.LastContextShifts); // 16 → 9 after the first token, full again after seven more
        g.Reset();
        var e = Assert.Throws<GpuLlamaException>(() => g.Generate(prompt, options with { KeepTokens = -2 }).ToList());
        Assert.Contains("--keep -2", e.Message);
    }
}
