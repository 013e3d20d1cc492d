using GpuLlama.Devices;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// Stop strings: held-back text, matches that span pushes, the earliest of several stops; and through the generator,
/// greedy generation on synthetic:tiny stops just before the first occurrence of a string it would have produced.
/// </summary>
public sealed class StopSequenceTests
{
    [Fact]
    public void TextThatMayBeginAStopIsHeldBackUntilDecided()
    {
        var s = new StopSequences(["</s>", "\n\n"]);
        Assert.Equal("Hello", s.Push("Hello<", out bool stopped));
        Assert.False(stopped);
        Assert.Equal("", s.Push("/", out stopped));          // "</" may still become "</s>"
        Assert.Equal("</x there", s.Push("x there\n", out stopped)); // it did not; "\n" may begin "\n\n"
        Assert.False(stopped);
        Assert.Equal("", s.Push("\n", out stopped));         // "\n\n" completed across two pushes
        Assert.True(stopped);
        Assert.Equal("\n\n", s.Found);
    }

    [Fact]
    public void TheEarliestStopWinsAndTheTextBeforeItComesOut()
    {
        var s = new StopSequences(["world", "lo w"]);
        Assert.Equal("Hel", s.Push("Hello world", out bool stopped));
        Assert.True(stopped);
        Assert.Equal("lo w", s.Found);

        var t = new StopSequences(["abc"]);
        Assert.Equal("x", t.Push("xab", out stopped));
        Assert.False(stopped);
        Assert.Equal("ab", t.Flush());                        // generation ended otherwise: the held text was no stop
        Assert.Throws<GpuLlamaException>(() => new StopSequences(["ok", ""]));
    }

    [Fact]
    public void GenerationEndsJustBeforeTheStopString()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny");
        var options = new GenerationOptions { MaxTokens = 24, Sampling = new SamplerSettings { Temperature = 0 } };
        int[] prompt = model.Tokenizer.Encode("Once upon a time", addBos: true);

        Generator g = model.CreateGenerator();
        GeneratedToken[] free = [.. g.Generate(prompt, options)];
        string text = string.Concat(free.Select(t => t.Text));
        Assert.Equal(StopReason.MaxTokens, g.LastStopReason);

        // a stop string the free run produces, spanning a token boundary: the text from its middle on
        string stop = text.Substring(text.Length / 2, 4);
        int first = text.IndexOf(stop, StringComparison.Ordinal);
        Assert.DoesNotContain(free, t => t.Text.Contains(stop, StringComparison.Ordinal));
        g.Reset();
        GeneratedToken[] cut = [.. g.Generate(prompt, options with { StopSequences = ["never produced", stop] })];
        Assert.Equal(StopReason.StopSequence, g.LastStopReason);
        Assert.Equal(stop, g.LastStopSequence);
        Assert.Equal(text[..first], string.Concat(cut.Select(t => t.Text)));
        Assert.Equal(free.Select(t => t.Id).Take(cut.Length), cut.Select(t => t.Id)); // the same tokens up to the stop
        Assert.True(cut.Length < free.Length);

        // a stop that never comes changes nothing
        g.Reset();
        GeneratedToken[] same = [.. g.Generate(prompt, options with { StopSequences = ["never produced"] })];
        Assert.Equal(text, string.Concat(same.Select(t => t.Text)));
        Assert.Equal(StopReason.MaxTokens, g.LastStopReason);
        Assert.Null(g.LastStopSequence);
    }

    [Fact]
    public async Task StreamingStopsToo()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny");
        var options = new GenerationOptions { MaxTokens = 24, Sampling = new SamplerSettings { Temperature = 0 } };
        Generator g = model.CreateGenerator();
        var all = new System.Text.StringBuilder();
        await foreach (string piece in g.GenerateAsync("Once upon a time", options))
        {
            all.Append(piece);
        }

        string text = all.ToString();
        string stop = text.Substring(text.Length / 3, 3);
        g.Reset();
        var cut = new System.Text.StringBuilder();
        await foreach (string piece in g.GenerateAsync("Once upon a time", options with { StopSequences = [stop] }))
        {
            cut.Append(piece);
        }

        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], cut.ToString());
        Assert.Equal(StopReason.StopSequence, g.LastStopReason);
    }
}

/// <summary>A conversation continued after a call that stopped on its token limit sees every token it gave out.</summary>
public sealed class GeneratorContinuationTests
{
    [Fact]
    public void The_last_token_of_a_limited_call_is_run_before_the_next_prompt()
    {
        // float32 caches: a batch and token-by-token runs differ in summation order, which an F16 cache can turn into
        // a 1-ulp F16 difference (~5e-4), more than the bound this test needs to see a missing token
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { CacheTypeK = KvCacheType.F32, CacheTypeV = KvCacheType.F32 });
        var greedy = new GenerationOptions { Sampling = new SamplerSettings { Temperature = 0 }, KeepPromptLogits = true };
        int[] first = model.Tokenizer.Encode("Once upon a time", addBos: true);
        int[] second = model.Tokenizer.Encode(" and then", addBos: false);

        Generator a = model.CreateGenerator();
        int[] reply = [.. a.Generate(first, greedy with { MaxTokens = 5 }).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(5, reply.Length);
        Assert.Equal(first.Length + 4, a.Position); // the fifth token was given out, not run yet
        int[] next = [.. a.Generate(second, greedy with { MaxTokens = 4 }).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(first.Length + 5 + second.Length + 3, a.Position);

        // the same conversation from scratch, as one prompt
        Generator b = model.CreateGenerator();
        int[] want = [.. b.Generate([.. first, .. reply, .. second], greedy with { MaxTokens = 4 }).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(want, next);
        double error = Golden.Golden.RelativeError(a.LastPromptLogits!, b.LastPromptLogits!);
        Assert.True(error <= 1e-5, $"continued vs from scratch: max|Δ|/max|ref| = {error:E2}");

        // Reset forgets the pending token too
        a.Reset();
        int[] again = [.. a.Generate(first, greedy with { MaxTokens = 5 }).Where(t => t.Id >= 0).Select(t => t.Id)];
        Assert.Equal(reply, again);
    }
}

/// <summary>GenerateAsync's cancellation: the stream ends with OperationCanceledException, and the model stays usable.</summary>
public sealed class GenerateAsyncCancellationTests
{
    [Fact]
    public async Task Cancelling_mid_stream_throws_and_leaves_the_model_usable()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny");
        var options = new GenerationOptions { MaxTokens = 200, Sampling = new SamplerSettings { Temperature = 0 } };
        Generator g = model.CreateGenerator();
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (string piece in g.GenerateAsync("Once upon a time", options, cts.Token))
            {
                if (++pieces == 3)
                {
                    cts.Cancel();
                }
            }
        });
        Assert.Equal(StopReason.Cancelled, g.LastStopReason);
        Assert.True(g.LastTimings.GeneratedTokens < 200);

        // a consumer that just stops reading ends the worker too, and the generator runs again
        g.Reset();
        await foreach (string piece in g.GenerateAsync("Once upon a time", options))
        {
            break;
        }

        g.Reset();
        GeneratedToken[] again = [.. g.Generate(model.Tokenizer.Encode("Once upon a time", addBos: true), options with { MaxTokens = 4 })];
        Assert.Equal(4, again.Count(t => t.Id >= 0));
        Assert.Equal(StopReason.MaxTokens, g.LastStopReason);
    }
}
