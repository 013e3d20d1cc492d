using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// Generation past a full context (llama-cli's context shift): the first n_keep tokens stay, the older half of the
/// rest goes, and the newer half moves down the cache with its keys rotated to their new positions.
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
                int discard = (cache.Count - nKeep) / 2;
                t.ShiftCache(nKeep + discard, nKeep, cache.Count - nKeep - discard);
                cache.RemoveRange(nKeep, discard);
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

    /// <summary>
    /// The shift itself, on the CPU for every cache type a 48-value head takes and on the emulated GPU: the moved
    /// keys are the old ones rotated back by the distance (float64 reference from the model's RoPE frequencies, then
    /// the cache type's rounding), the values and the kept positions are unchanged.
    /// </summary>
    [Theory]
    [InlineData("cpu", KvCacheType.F32)]
    [InlineData("cpu", KvCacheType.F16)]
    [InlineData("cpu", KvCacheType.BF16)]
    [InlineData("emulated:0", KvCacheType.F16)]
    public void Shift_moves_the_cache_down_and_rotates_its_keys_back(string device, KvCacheType type)
    {
        var load = new LoadOptions { ContextLength = 32, CacheTypeK = type, CacheTypeV = type };
        load = device == "cpu" ? load with { GpuLayers = 0 } : load with { Devices = [device], GpuLayers = 1 }; // the last layer on the device
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", load);
        Transformer t = model.Transformer;
        int[] tokens = [.. Enumerable.Range(0, 20).Select(i => 300 + 7 * i)];
        t.Forward(tokens, 0);
        ModelConfig c = model.Config;
        int kvDim = c.KvDim, hd = c.HeadDim, half = hd / 2;
        KvCacheLayer cache0 = model.Transformer.Cache(model.Config.Layers - 1);
        IDevice dev = cache0.Device;
        Assert.Equal(device, dev.Name);
        (float[] K, float[] V) Read(int position, int rows)
        {
            // the last layer's cache through its device's ReadKv
            using DeviceBuffer k = dev.Allocate(rows * kvDim), v = dev.Allocate(rows * kvDim);
            dev.ReadKv(cache0, k, v, position, rows);
            float[] kk = new float[rows * kvDim], vv = new float[rows * kvDim];
            dev.Read(k, kk);
            dev.Read(v, vv);
            return (kk, vv);
        }

        (float[] kept, float[] keptV) = Read(0, 4);
        (float[] before, float[] values) = Read(12, 8);
        t.ShiftCache(12, 4, 8);
        (float[] after, float[] movedV) = Read(4, 8);
        Assert.Equal(kept, Read(0, 4).K);
        Assert.Equal(keptV, Read(0, 4).V);
        Assert.Equal(values, movedV);

        double[] inv = c.RopeInverseFrequencies();
        double worst = 0;
        for (int r = 0; r < 8; r++)
        {
            for (int h = 0; h < c.KvHeads; h++)
            {
                for (int i = 0; i < half; i++)
                {
                    // the pair RoPE rotates together: (2i, 2i+1) interleaved, (i, i + hd/2) in halves
                    (int a, int b) = c.RopeStyle == RopeStyle.Interleaved ? (2 * i, 2 * i + 1) : (i, i + half);
                    int o = r * kvDim + h * hd;
                    double angle = -8 * inv[i], x = before[o + a], y = before[o + b];
                    double wantA = x * Math.Cos(angle) - y * Math.Sin(angle), wantB = x * Math.Sin(angle) + y * Math.Cos(angle);
                    worst = Math.Max(worst, Math.Max(Math.Abs(after[o + a] - wantA), Math.Abs(after[o + b] - wantB)) / (Math.Abs(x) + Math.Abs(y) + 1e-30));
                }
            }
        }

        double bound = type == KvCacheType.F32 ? 1e-5 : type == KvCacheType.F16 ? 2e-3 : 1.6e-2; // the cache's rounding of the rotated key
        Assert.True(worst <= bound, $"{device} {type}: worst relative error of a rotated pair {worst:E2} > {bound:E0}");
        Assert.True(worst > 0 || type == KvCacheType.F32, "the keys did not move");
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
