using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Host;
using GpuLlama.Tests.Formats;
using Xunit;

namespace GpuLlama.Tests.Cli;

[CollectionDefinition("console", DisableParallelization = true)]
public sealed class ConsoleCollection
{
}

/// <summary>The gpullama command end to end: exit codes, one-line errors (no stack traces), JSON outputs.</summary>
[Collection("console")]
public sealed class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        TextWriter stdout = Console.Out, stderr = Console.Error;
        var o = new StringWriter();
        var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int code = Program.Main(args);
            return (code, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
        }
    }

    private static void AssertOneLineError((int Code, string Out, string Err) r, params string[] contains)
    {
        Assert.NotEqual(0, r.Code);
        // Progress lines (device, load time) may come before the failure; the failure itself is one line, last.
        string[] lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string error = Assert.Single(lines, l => l.Contains("error", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(lines[^1], error);
        Assert.StartsWith("gpullama: error: ", error);
        Assert.DoesNotContain("   at ", r.Err);
        foreach (string c in contains)
        {
            Assert.Contains(c, error);
        }
    }

    [Fact]
    public void MissingModelIsOneLine() => AssertOneLineError(Run("run", "/nonexistent/model.gguf", "-p", "hi"), "/nonexistent/model.gguf", "not found");

    [Fact]
    public void TruncatedGgufIsOneLine()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gpullama-truncated-{Guid.NewGuid():N}.gguf");
        try
        {
            Run("export", "synthetic:tiny", path);
            byte[] bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
            AssertOneLineError(Run("run", path, "-p", "hi"), path);
            AssertOneLineError(Run("info", path), path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BadFlagsAreOneLine()
    {
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--gpu-layers", "lots"), "--gpu-layers");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--tensor-split", "1,x"), "--tensor-split");
        AssertOneLineError(Run("run", "synthetic:nonexistent"), "nonexistent");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--devices", "cuda:42"), "cuda:42");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--op-offload-min-batch", "0"), "--op-offload-min-batch", "positive");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--stop", ""), "--stop", "empty");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--stop"), "--stop");
        AssertOneLineError(Run("bench", "synthetic:tiny", "-p", "8", "-n", "0", "-r", "1", "--no-op-offload", "0,2"), "--no-op-offload", "0 or 1");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "-ctk", "q8_0"), "--cache-type-k q8_0", "blocks of 32 values", "heads have 48");
        AssertOneLineError(Run("plan", "synthetic:tiny", "-ctv", "q4_0"), "--cache-type-v q4_0", "blocks of 32 values");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "-ctv", "q4_1"), "--cache-type-v q4_1", "not supported", "q8_0 or q4_0");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--keep", "-3"), "--keep -3", "-1");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--grammar", "root ::= foo"), "--grammar:1:10", "'foo' is used but not defined");
        AssertOneLineError(Run("chat", "synthetic:tiny", "--grammar-file", "/nonexistent/g.gbnf"), "--grammar-file /nonexistent/g.gbnf", "not found");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--grammar", "root ::= \"a\"", "--json-schema", "{}"), "only one of --grammar, --grammar-file, --json-schema");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "-j", "{\"type\": \"string\", \"format\": \"date\"}"), "--json-schema: the schema: 'format' is not supported");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--json-schema-file", "/nonexistent/s.json"), "--json-schema-file /nonexistent/s.json", "not found");
        AssertOneLineError(Run("perplexity", "synthetic:tiny", "-f", "/nonexistent/wiki.test.raw"), "--file /nonexistent/wiki.test.raw", "not found");
        AssertOneLineError(Run("embed", "synthetic:tiny", "-p", "hi", "--pooling", "max"), "--pooling max", "mean, last, cls or none");
        AssertOneLineError(Run("embed", "synthetic:tiny", "-p", "hi", "--embd-normalize", "-2"), "--embd-normalize -2");
        AssertOneLineError(Run("embed", "synthetic:tiny"), "one of --prompt and --file");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--mirostat", "3"), "--mirostat 3", "0 (off), 1 or 2");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--logit-bias", "15+x"), "--logit-bias 15+x", "TOKEN_ID+BIAS");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "--cache-type-v", "f8"), "--cache-type-v f8", "f32, f16, bf16");
        AssertOneLineError(Run("bench", "synthetic:tiny", "-p", "8", "-n", "0", "-r", "1", "-ctk", "f16,x"), "--cache-type-k x");
    }

    [Fact]
    public void CacheTypesSetTheKvMemoryThePlanCountsAndChangeTheLogitsOnlyByRounding()
    {
        // all of tiny on the emulated device: F16 caches (the default) take half the bytes of F32 ones, the plan and
        // --verbose agree with what the device allocated, and the logits move by about F16's precision
        string f16 = Path.GetTempFileName(), f32 = Path.GetTempFileName();
        try
        {
            string[] common = ["run", "synthetic:tiny", "--devices", "emulated:0", "--gpu-layers", "all", "--ctx", "32", "--prompt-tokens", "1,100,200,300", "-n", "1", "--temp", "0", "--json", "--verbose"];
            var a = Run([.. common, "--logits-out", f16]);
            var b = Run([.. common, "--logits-out", f32, "-ctk", "f32", "-ctv", "f32"]);
            Assert.True(a.Code == 0 && b.Code == 0, a.Err + b.Err);
            Assert.Matches(@"memory emulated:0: estimated [\d.]+ MiB .*\(100\.0 ?% of the estimate\)", a.Err);
            Assert.Matches(@"memory emulated:0: estimated [\d.]+ MiB .*\(100\.0 ?% of the estimate\)", b.Err);
            float[] la = ReadFloats(f16), lb = ReadFloats(f32);
            double max = lb.Max(v => Math.Abs(v)), diff = la.Zip(lb).Max(p => Math.Abs(p.First - p.Second));
            Assert.InRange(diff / max, 1e-7, 1e-2);
        }
        finally
        {
            File.Delete(f16);
            File.Delete(f32);
        }

        long Kv(params string[] flags)
        {
            var plan = Run(["plan", "synthetic:tiny", "--ctx", "1024", "--gpu-layers", "0", "--json", .. flags]);
            Assert.True(plan.Code == 0, plan.Err);
            using JsonDocument d = JsonDocument.Parse(plan.Out);
            return d.RootElement.GetProperty("devices").EnumerateArray().Sum(x => x.GetProperty("kv_bytes").GetInt64());
        }

        using GpuLlama.Formats.IWeightSource tiny = GpuLlama.Formats.WeightSource.Open("synthetic:tiny");
        long positions = 1024L * tiny.Config.KvDim * tiny.Config.Layers;
        Assert.Equal(positions * 4, Kv()); // F16 keys and values
        Assert.Equal(positions * 8, Kv("-ctk", "f32", "-ctv", "f32"));
        Assert.Equal(positions * 6, Kv("-ctk", "f32"));
        var text = Run("plan", "synthetic:tiny", "--gpu-layers", "0", "-ctv", "bf16");
        Assert.True(text.Code == 0, text.Err);
        Assert.Contains("KV cache f16 keys / bf16 values", text.Out);
    }

    [Fact]
    public void PerplexityPrintsLlamaCppsLinesOrJson()
    {
        string text = Path.GetTempFileName();
        try
        {
            File.WriteAllText(text, string.Join(" ", Enumerable.Range(0, 300).Select(i => $"word{i % 37}")));
            var plain = Run("perplexity", "synthetic:tiny:f32", "-f", text, "-c", "32", "--chunks", "2");
            Assert.True(plain.Code == 0, plain.Err);
            Assert.Matches(@"^\[1\][\d.]+,\[2\][\d.]+,\s+Final estimate: PPL = [\d.]+ \+/- [\d.]+\s*$", plain.Out);
            var json = Run("perplexity", "synthetic:tiny:f32", "-f", text, "-c", "32", "--chunks", "2", "--json");
            Assert.True(json.Code == 0, json.Err);
            using JsonDocument d = JsonDocument.Parse(json.Out);
            Assert.Equal(2, d.RootElement.GetProperty("chunks").GetInt32());
            Assert.Equal(2 * 15, d.RootElement.GetProperty("tokens_scored").GetInt32());
            Assert.Contains($"PPL = {d.RootElement.GetProperty("ppl").GetDouble():F4} ", plain.Out);
        }
        finally
        {
            File.Delete(text);
        }
    }

    [Fact]
    public void EmbedPrintsUnitVectorsAndTheGpuPathGivesTheSame()
    {
        float[] Vector(params string[] extra)
        {
            var r = Run(["embed", "synthetic:tiny:f32", "-p", "Once upon a time", "-ctk", "f32", "-ctv", "f32", .. extra]);
            Assert.True(r.Code == 0, r.Err);
            using JsonDocument d = JsonDocument.Parse(r.Out);
            Assert.Equal(288, d.RootElement.GetProperty("n_embd").GetInt32());
            JsonElement data = d.RootElement.GetProperty("data");
            Assert.Equal(1, data.GetArrayLength());
            return [.. data[0].GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle())];
        }

        float[] cpu = Vector("--gpu-layers", "0"), gpu = Vector("--devices", "emulated:0", "--gpu-layers", "all");
        Assert.Equal(1.0, Math.Sqrt(cpu.Sum(v => (double)v * v)), 5);
        Assert.Equal(32760f, Vector("--gpu-layers", "0", "--embd-normalize", "0").Max(Math.Abs), 1); // max-abs to the int16 range
        Assert.True(cpu.Zip(gpu).Max(p => Math.Abs(p.First - p.Second)) < 1e-4);
    }

    [Fact]
    public void LogitBiasFlagsReachTheSampler()
    {
        int[] Tokens(params string[] flags)
        {
            var r = Run(["run", "synthetic:tiny", "-p", "Once", "-n", "3", "--temp", "0", "--ignore-eos", "--json", .. flags]);
            Assert.True(r.Code == 0, r.Err);
            using JsonDocument d = JsonDocument.Parse(r.Out);
            return [.. d.RootElement.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32())];
        }

        Assert.Equal([401, 401, 401], Tokens("-l", "401+100"));
        Assert.Equal([402, 402, 402], Tokens("--logit-bias", "401+100", "--logit-bias", "402+200"));
        int first = Tokens()[0];
        Assert.NotEqual(first, Tokens("-l", $"{first}-inf")[0]);
    }

    [Fact]
    public void RunFollowsAGrammar()
    {
        var r = Run("run", "synthetic:tiny", "-p", "Answer:", "--grammar", "root ::= (\"yes\" | \"no\") \".\"", "-n", "10", "--seed", "3", "--json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument d = JsonDocument.Parse(r.Out);
        Assert.Contains(d.RootElement.GetProperty("text").GetString(), new[] { "yes.", "no." });
        Assert.Equal("eos", d.RootElement.GetProperty("stop_reason").GetString());
    }

    [Fact]
    public void RunShiftsAFullContextUnlessToldNotTo()
    {
        string[] common = ["run", "synthetic:tiny", "--ctx", "32", "-p", "Once upon a time", "-n", "40", "--temp", "0", "--ignore-eos", "--json"];
        var shifted = Run(common);
        var stopped = Run([.. common, "--no-context-shift"]);
        Assert.True(shifted.Code == 0 && stopped.Code == 0, shifted.Err + stopped.Err);
        using JsonDocument a = JsonDocument.Parse(shifted.Out), b = JsonDocument.Parse(stopped.Out);
        Assert.Equal("limit", a.RootElement.GetProperty("stop_reason").GetString());
        Assert.Equal(40, a.RootElement.GetProperty("tokens").GetArrayLength());
        Assert.True(a.RootElement.GetProperty("context_shifts").GetInt32() >= 1);
        Assert.Equal("context_full", b.RootElement.GetProperty("stop_reason").GetString());
        Assert.Equal(0, b.RootElement.GetProperty("context_shifts").GetInt32());
        int[] Tokens(JsonDocument d) => [.. d.RootElement.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32())];
        int[] before = Tokens(b);
        Assert.Equal(32 - a.RootElement.GetProperty("prompt_tokens").GetArrayLength() + 1, before.Length);
        Assert.Equal(before, Tokens(a)[..before.Length]); // the same tokens until the context is full
    }

    [Fact]
    public void QuantizedCachesTakeTheirBlockBytesAndMoveTheLogitsByTheirPrecision()
    {
        // llama-110m (heads of 64: two 32-blocks) on the CPU: Q8_0 and Q4_0 caches hold 34 and 18 bytes per 32 values,
        // the plan and --verbose agree with what was allocated, and the logits move from the F32 cache's as little as
        // 8 and 4 bits allow — Q4_0 further than Q8_0
        string[] files = [Path.GetTempFileName(), Path.GetTempFileName(), Path.GetTempFileName()];
        try
        {
            string[] common = ["run", "synthetic:llama-110m:f16", "--ctx", "32", "--prompt-tokens", "1,100,200,300,400", "-n", "1", "--temp", "0", "--json", "--verbose"];
            string[][] caches = [["f32", "f32"], ["q8_0", "q8_0"], ["q4_0", "q4_0"]];
            for (int i = 0; i < 3; i++)
            {
                var r = Run([.. common, "--logits-out", files[i], "-ctk", caches[i][0], "-ctv", caches[i][1]]);
                Assert.True(r.Code == 0, r.Err);
                Assert.Matches(@"memory cpu: estimated [\d.]+ MiB .*\(100\.0 ?% of the estimate\)", r.Err);
            }

            float[] exact = ReadFloats(files[0]);
            double max = exact.Max(v => Math.Abs(v));
            double Moved(int i) => ReadFloats(files[i]).Zip(exact).Max(p => Math.Abs(p.First - p.Second)) / max;
            double q8 = Moved(1), q4 = Moved(2);
            Assert.InRange(q8, 1e-6, 2e-2);
            Assert.InRange(q4, 2 * q8, 2e-1);
        }
        finally
        {
            Array.ForEach(files, File.Delete);
        }

        long Kv(params string[] flags)
        {
            var plan = Run(["plan", "synthetic:llama-110m", "--ctx", "1024", "--gpu-layers", "0", "--json", .. flags]);
            Assert.True(plan.Code == 0, plan.Err);
            using JsonDocument d = JsonDocument.Parse(plan.Out);
            return d.RootElement.GetProperty("devices").EnumerateArray().Sum(x => x.GetProperty("kv_bytes").GetInt64());
        }

        long blocks = 1024L * 768 / 32 * 12; // positions × kv dim / 32 × layers
        Assert.Equal(blocks * 34 * 2, Kv("-ctk", "q8_0", "-ctv", "q8_0"));
        Assert.Equal(blocks * (18 + 64), Kv("-ctk", "q4_0"));
    }

    [Fact]
    public void PromptOffloadIsReportedAndItsSlotsAreInTheMemoryEstimate()
    {
        // synthetic:tiny (6 layers) with its last two on the emulated device: the other four stream for prompts of 4+
        // tokens; run --verbose says so, the device allocates what the plan estimated with the slots, and the tokens are
        // those of the run that keeps them on the CPU (both with exact float math, as the device does)
        var r = Run("run", "synthetic:tiny", "--devices", "emulated:0", "--gpu-layers", "2", "--op-offload-min-batch", "4", "--exact-quant", "--ctx", "32", "--batch", "8",
            "--prompt-tokens", "1,100,200,300,400", "-n", "1", "--temp", "0", "--json", "--verbose");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("prompt offload: batches of 4+ tokens stream 4 CPU layer(s) to emulated:0", r.Err);
        Assert.Contains("prompt offload: 4 layer run(s) streamed to emulated:0", r.Err); // the 5-token prompt, once
        Assert.Matches(@"memory emulated:0: estimated [\d.]+ MiB .*\(100\.0 ?% of the estimate\)", r.Err);
        var off = Run("run", "synthetic:tiny", "--devices", "emulated:0", "--gpu-layers", "2", "--no-op-offload", "--exact-quant", "--ctx", "32", "--batch", "8",
            "--prompt-tokens", "1,100,200,300,400", "-n", "1", "--temp", "0", "--json", "--verbose");
        Assert.True(off.Code == 0, off.Err);
        Assert.DoesNotContain("prompt offload", off.Err);
        using JsonDocument a = JsonDocument.Parse(r.Out), b = JsonDocument.Parse(off.Out);
        Assert.Equal(b.RootElement.GetProperty("tokens").GetRawText(), a.RootElement.GetProperty("tokens").GetRawText());

        // plan counts the slots (one layer of tiny's F16 weights) in the device's scratch, and none without offload
        var plan = Run("plan", "synthetic:tiny", "--devices", "emulated:0", "--gpu-layers", "2", "--json");
        var planOff = Run("plan", "synthetic:tiny", "--devices", "emulated:0", "--gpu-layers", "2", "--json", "--no-op-offload");
        using JsonDocument p = JsonDocument.Parse(plan.Out), q = JsonDocument.Parse(planOff.Out);
        long slots = p.RootElement.GetProperty("offload_slot_bytes").GetInt64();
        using GpuLlama.Formats.IWeightSource tiny = GpuLlama.Formats.WeightSource.Open("synthetic:tiny");
        Assert.Equal(tiny.Tensors.Values.Where(t => t.Name.StartsWith("blk.0.", StringComparison.Ordinal)).Sum(t => GpuLlama.Devices.MemoryPlan.DeviceBytes(t.ByteLength)), slots);
        Assert.Equal(0, q.RootElement.GetProperty("offload_slot_bytes").GetInt64());
        long Scratch(JsonDocument d) => d.RootElement.GetProperty("devices").EnumerateArray().Single(x => x.GetProperty("name").GetString() == "emulated:0").GetProperty("scratch_bytes").GetInt64();
        Assert.Equal(slots, Scratch(p) - Scratch(q));
    }

    [Fact]
    public void PromptLongerThanTheContextIsOneLine()
    {
        string longPrompt = string.Join(" ", Enumerable.Repeat("once upon a time", 40));
        AssertOneLineError(Run("run", "synthetic:tiny", "--ctx", "16", "-p", longPrompt), "context");
    }

    [Fact]
    public void ParseErrorsAreOneLineWithASuggestion()
    {
        var r = Run("run", "synthetic:tiny", "--ctx-siz", "16", "-p", "hi");
        AssertOneLineError(r, "unknown option '--ctx-siz'", "did you mean --ctx-size?", "gpullama run --help");
        Assert.Equal(2, r.Code);
        Assert.DoesNotContain("Usage:", r.Out + r.Err); // no help dump burying the error
        AssertOneLineError(Run("bench", "synthetic:tiny", "--sweep"), "did you mean --sweep-gpu-layers?");
        AssertOneLineError(Run("rn", "synthetic:tiny"), "unknown command 'rn'", "did you mean run?");
        AssertOneLineError(Run("run", "synthetic:tiny", "-n", "abc"), "'abc'", "--n-predict", "expected an integer");
        AssertOneLineError(Run("run", "synthetic:tiny", "--split-mode", "rows"), "'rows'", "expected one of Layer, None");
        AssertOneLineError(Run("run", "synthetic:tiny", "-p", "hi", "stray"), "unexpected argument 'stray'");
    }

    [Fact]
    public void LlamaCppLongFlagNamesAreAccepted()
    {
        string longPrompt = string.Join(" ", Enumerable.Repeat("once upon a time", 40));
        AssertOneLineError(Run("run", "synthetic:tiny", "--ctx-size", "16", "-p", longPrompt), "context");
        var r = Run("run", "synthetic:tiny", "-p", "Once upon a time", "--predict", "3", "--n-gpu-layers", "0", "--batch-size", "2", "--temp", "0", "--json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        Assert.Equal(3, doc.RootElement.GetProperty("tokens").GetArrayLength());
    }

    [Fact]
    public void RunJsonHasTokensTextAndTimingsAndIsDeterministic()
    {
        var a = Run("run", "synthetic:tiny", "-p", "Once upon a time", "-n", "8", "--temp", "0", "--json");
        Assert.True(a.Code == 0, a.Err);
        using JsonDocument doc = JsonDocument.Parse(a.Out);
        JsonElement root = doc.RootElement;
        Assert.Equal(8, root.GetProperty("tokens").GetArrayLength());
        Assert.Equal(1, root.GetProperty("prompt_tokens")[0].GetInt32()); // BOS
        Assert.True(root.GetProperty("timings").GetProperty("generation_tokens_per_s").GetDouble() > 0);
        Assert.Equal("limit", root.GetProperty("stop_reason").GetString());
        var b = Run("run", "synthetic:tiny", "-p", "Once upon a time", "-n", "8", "--temp", "0.9", "--seed", "7", "--json");
        var c = Run("run", "synthetic:tiny", "-p", "Once upon a time", "-n", "8", "--temp", "0.9", "--seed", "7", "--json");
        using JsonDocument db = JsonDocument.Parse(b.Out), dc = JsonDocument.Parse(c.Out);
        Assert.Equal(db.RootElement.GetProperty("tokens").GetRawText(), dc.RootElement.GetProperty("tokens").GetRawText());
    }

    [Fact]
    public void ChatContinuesFromTheCacheAfterATurnThatHitTheTokenLimit()
    {
        TextReader stdin = Console.In;
        Console.SetIn(new StringReader("hello there\nand again\n"));
        try
        {
            var r = Run("chat", "synthetic:tiny", "-n", "6", "--temp", "0", "--verbose");
            Assert.True(r.Code == 0, r.Err);
            var turns = System.Text.RegularExpressions.Regex.Matches(r.Err, @"turn (\d): (\d+) new prompt tokens at position (\d+)");
            Assert.Equal(2, turns.Count);
            int prompt1 = int.Parse(turns[0].Groups[2].Value), at2 = int.Parse(turns[1].Groups[3].Value);
            Assert.Equal(0, int.Parse(turns[0].Groups[3].Value));
            // the second turn starts where the first one's prompt and its 6 replied tokens end (the sixth is run
            // with the new prompt), and sends only the new part of the conversation
            Assert.Equal(prompt1 + 5, at2);
            Assert.InRange(int.Parse(turns[1].Groups[2].Value), 2, prompt1 + 20);
        }
        finally
        {
            Console.SetIn(stdin);
        }
    }

    [Fact]
    public void ChatSaysWhenAMessageDoesNotFitAndGoesOn()
    {
        TextReader stdin = Console.In;
        string tooLong = string.Join(" ", Enumerable.Repeat("once upon a time", 80));
        Console.SetIn(new StringReader($"hello\n{tooLong}\nhi\n"));
        try
        {
            var r = Run("chat", "synthetic:tiny", "--ctx", "256", "-n", "4", "--temp", "0", "--verbose");
            Assert.True(r.Code == 0, r.Err);
            Assert.Contains("gpullama: the message needs", r.Err);
            Assert.Contains("(raise --ctx)", r.Err);
            Assert.Matches(@"turn 2: \d+ new prompt tokens at position [1-9]", r.Err); // the cache of turn 1 kept
        }
        finally
        {
            Console.SetIn(stdin);
        }
    }

    [Fact]
    public void StopStringsEndTheOutputBeforeThem()
    {
        var free = Run("run", "synthetic:tiny", "-p", "Once upon a time", "-n", "16", "--temp", "0", "--json");
        using JsonDocument f = JsonDocument.Parse(free.Out);
        string text = f.RootElement.GetProperty("text").GetString()!;
        string stop = text.Substring(text.Length / 2, 3);
        var cut = Run("run", "synthetic:tiny", "-p", "Once upon a time", "-n", "16", "--temp", "0", "--json", "--stop", "zzzz", "-r", stop);
        Assert.True(cut.Code == 0, cut.Err);
        using JsonDocument c = JsonDocument.Parse(cut.Out);
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], c.RootElement.GetProperty("text").GetString());
        Assert.Equal("word", c.RootElement.GetProperty("stop_reason").GetString());
        Assert.Equal(stop, c.RootElement.GetProperty("stopping_word").GetString());

        // escapes are processed in -p (as llama.cpp does), not with --no-escape
        var escaped = Run("run", "synthetic:tiny", "-p", @"Once\nupon", "-n", "1", "--temp", "0", "--json");
        var literal = Run("run", "synthetic:tiny", "-p", @"Once\nupon", "-n", "1", "--temp", "0", "--json", "--no-escape");
        var newline = Run("run", "synthetic:tiny", "-p", "Once\nupon", "-n", "1", "--temp", "0", "--json");
        using JsonDocument e = JsonDocument.Parse(escaped.Out), l = JsonDocument.Parse(literal.Out), n = JsonDocument.Parse(newline.Out);
        Assert.Equal(n.RootElement.GetProperty("prompt_tokens").GetRawText(), e.RootElement.GetProperty("prompt_tokens").GetRawText());
        Assert.NotEqual(n.RootElement.GetProperty("prompt_tokens").GetRawText(), l.RootElement.GetProperty("prompt_tokens").GetRawText());
    }

    [Fact]
    public void LogitsOutWritesTheVocabulary()
    {
        string path = Path.GetTempFileName();
        try
        {
            var r = Run("run", "synthetic:tiny", "--prompt-tokens", "1,100,200", "-n", "1", "--temp", "0", "--logits-out", path, "--json");
            Assert.True(r.Code == 0, r.Err);
            Assert.Equal(4096 * 4, new FileInfo(path).Length);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ExactQuantChangesTheQuantizedCpuNumerics()
    {
        // synthetic:tiny:q8_0 on the CPU: by default the activations are rounded to 8 bits (llama.cpp's numerics),
        // with --exact-quant they stay float32; the logits differ a little, and the exact ones (with float32 KV caches)
        // are the library's.
        string rounded = Path.GetTempFileName(), exact = Path.GetTempFileName();
        try
        {
            var a = Run("run", "synthetic:tiny:q8_0", "--prompt-tokens", "1,100,200", "-n", "1", "--temp", "0", "--logits-out", rounded, "--json");
            var b = Run("run", "synthetic:tiny:q8_0", "--prompt-tokens", "1,100,200", "-n", "1", "--temp", "0", "--logits-out", exact, "--json", "--exact-quant",
                "-ctk", "f32", "-ctv", "f32"); // float32 caches, as the reference below

            Assert.True(a.Code == 0 && b.Code == 0, a.Err + b.Err);
            float[] la = ReadFloats(rounded), lb = ReadFloats(exact);
            double max = lb.Max(v => Math.Abs(v)), diff = la.Zip(lb).Max(p => Math.Abs(p.First - p.Second));
            if (GpuLlama.Devices.CpuQ8Dot.IsSupported)
            {
                Assert.InRange(diff / max, 1e-6, 5e-2); // different numerics, the same model
            }
            else
            {
                Assert.Equal(0, diff); // no integer kernels without AVX2: both runs are exact
            }

            using GpuLlama.Formats.IWeightSource source = GpuLlama.Formats.WeightSource.Open("synthetic:tiny:q8_0");
            using var cpu = new GpuLlama.Devices.CpuDevice(2, exactQuantDots: true);
            (float[] want, _) = GpuLlama.Tests.Golden.GoldenRun.Run(source, GpuLlama.Model.DevicePlacement.All(cpu, source.Config.Layers), [1, 100, 200], 1);
            Assert.True(want.Zip(lb).Max(p => Math.Abs(p.First - p.Second)) <= 1e-5 * max);
        }
        finally
        {
            File.Delete(rounded);
            File.Delete(exact);
        }
    }

    private static float[] ReadFloats(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        var f = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, f, 0, bytes.Length);
        return f;
    }

    [Fact]
    public void InfoVerifiesTheModel()
    {
        var r = Run("info", "synthetic:tinyllama-1.1b:bf16");
        Assert.Equal(0, r.Code);
        Assert.Contains("verify: ok", r.Out);
        Assert.Contains("1,100,048,384", r.Out); // TinyLlama-1.1B's published parameter count
    }

    [Theory]
    [InlineData(DType.Q4_1, "5.00")]
    [InlineData(DType.Q5_1, "6.00")]
    [InlineData(DType.Q5_K, "5.50")]
    public void InfoPrintsBitsPerWeightOfExportedQuantizedModels(DType type, string bpw)
    {
        // A small shape with rows of 256 (K-quants), written the way `gpullama export` writes.
        using var file = new TempFile();
        var preset = new SyntheticPreset("info-test", "a one-layer test model", 256, 1, 4, 2, 256, 260, 64);
        using (SyntheticSource source = SyntheticSource.Create(preset, type))
        {
            GgufExport.ExportGguf(source, file.Path);
        }

        var r = Run("info", file.Path);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("verify: ok", r.Out);
        Assert.Matches($@"\n\s+{type}\s+\d+ tensors .* {bpw} bpw", r.Out);
    }

    [Fact]
    public void BenchPrintsLlamaBenchJson()
    {
        var r = Run("bench", "--synthetic", "tiny", "-p", "8", "-n", "4", "-r", "2", "-o", "json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        Assert.Equal(2, doc.RootElement.GetArrayLength());
        JsonElement tg = doc.RootElement[1];
        Assert.Equal(4, tg.GetProperty("n_gen").GetInt32());
        Assert.Equal(2, tg.GetProperty("samples_ns").GetArrayLength());
        Assert.True(tg.GetProperty("bytes_per_token").GetInt64() > 0);
        Assert.True(tg.GetProperty("roofline_pct").GetDouble() > 0);

        // -b is a list like the others: one row per batch size, n_batch as given
        var batches = Run("bench", "--synthetic", "tiny", "-p", "16", "-n", "0", "-b", "4,16", "-r", "1", "-o", "json");
        Assert.True(batches.Code == 0, batches.Err);
        using JsonDocument b = JsonDocument.Parse(batches.Out);
        Assert.Equal([4, 16], b.RootElement.EnumerateArray().Select(x => x.GetProperty("n_batch").GetInt32()));

        // the cache types are lists too, reported as llama-bench's type_k/type_v (f16 by default)
        Assert.Equal("f16", tg.GetProperty("type_k").GetString());
        var types = Run("bench", "--synthetic", "tiny", "-p", "0", "-n", "2", "-ctk", "f16,f32", "-ctv", "bf16", "-r", "1", "-o", "json");
        Assert.True(types.Code == 0, types.Err);
        using JsonDocument t = JsonDocument.Parse(types.Out);
        Assert.Equal([("f16", "bf16"), ("f32", "bf16")], t.RootElement.EnumerateArray().Select(x => (x.GetProperty("type_k").GetString(), x.GetProperty("type_v").GetString())));

        // -d: the tests run after that many tokens in the context (llama-bench's n_depth); a tg row's bytes per token
        // count the KV cache it reads: 2 bytes for each of K and V, per KV dimension, layer and position attended to
        var depth = Run("bench", "--synthetic", "tiny", "-p", "4", "-n", "2", "-d", "0,16", "-r", "1", "-o", "json");
        Assert.True(depth.Code == 0, depth.Err);
        using JsonDocument dd = JsonDocument.Parse(depth.Out);
        JsonElement[] rows = [.. dd.RootElement.EnumerateArray()];
        Assert.Equal([(4, 0, 0), (0, 2, 0), (4, 0, 16), (0, 2, 16)], rows.Select(x => (x.GetProperty("n_prompt").GetInt32(), x.GetProperty("n_gen").GetInt32(), x.GetProperty("n_depth").GetInt32())));
        using GpuLlama.Formats.IWeightSource tiny = GpuLlama.Formats.WeightSource.Open("synthetic:tiny");
        Assert.Equal(16L * tiny.Config.Layers * tiny.Config.KvDim * 4, rows[3].GetProperty("bytes_per_token").GetInt64() - rows[1].GetProperty("bytes_per_token").GetInt64());
        var depthMd = Run("bench", "--synthetic", "tiny", "-p", "4", "-n", "0", "-d", "8", "-r", "1");
        Assert.True(depthMd.Code == 0, depthMd.Err);
        Assert.Matches(@"\|\s+pp4 @ d8 \|", depthMd.Out);
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-p", "4", "-n", "0", "-d", "5000", "-r", "1"), "-p 4 at depth 5000", "context");

        // llama-bench's pg test after the others: both token counts, t/s over both
        var pg = Run("bench", "--synthetic", "tiny", "-p", "0", "-n", "0", "-pg", "8,4", "-pg", "4,2", "-r", "1", "-o", "json");
        Assert.True(pg.Code == 0, pg.Err);
        using JsonDocument p = JsonDocument.Parse(pg.Out);
        Assert.Equal([(8, 4), (4, 2)], p.RootElement.EnumerateArray().Select(x => (x.GetProperty("n_prompt").GetInt32(), x.GetProperty("n_gen").GetInt32())));
        Assert.All(p.RootElement.EnumerateArray(), x => Assert.True(x.GetProperty("avg_ts").GetDouble() > 0));
    }

    [Fact]
    public void BenchMeasuresPromptOffloadBothWays()
    {
        // tiny's last two layers on the emulated device, prompts of 4+ tokens streaming the other four (nopo 0) or not (1)
        var r = Run("bench", "--synthetic", "tiny", "-p", "8", "-n", "0", "-r", "1", "-ngl", "2", "--devices", "emulated:0",
            "--op-offload-min-batch", "4", "--no-op-offload", "0,1", "-o", "json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        Assert.Equal([0, 1], doc.RootElement.EnumerateArray().Select(x => x.GetProperty("no_op_offload").GetInt32()));
        Assert.All(doc.RootElement.EnumerateArray(), x => Assert.Equal(2, x.GetProperty("n_gpu_layers").GetInt32()));
        Assert.All(doc.RootElement.EnumerateArray(), x => Assert.True(x.GetProperty("avg_ts").GetDouble() > 0));
    }

    [Fact]
    public void BenchPrintsTheMarkdownTableAndCsv()
    {
        var md = Run("bench", "--synthetic", "tiny", "-p", "8", "-n", "4", "-r", "1");
        Assert.True(md.Code == 0, md.Err);
        string[] lines = md.Out.TrimEnd('\n').Split('\n');
        Assert.Equal(4, lines.Length); // header, alignment, pp8, tg4
        Assert.StartsWith("| model", lines[0]);
        Assert.Matches(@"\|\s+pp8 \|", lines[2]);
        Assert.Matches(@"\|\s+tg4 \|", lines[3]);
        Assert.Contains("measured synthetic:tiny:f16", md.Err);

        var csv = Run("bench", "--synthetic", "tiny", "-p", "0", "-n", "2", "-r", "1", "-o", "csv");
        Assert.True(csv.Code == 0, csv.Err);
        string[] rows = csv.Out.TrimEnd('\n').Split('\n');
        Assert.Equal(2, rows.Length); // -p 0 skips pp
        Assert.StartsWith("build_commit,", rows[0]);
        Assert.Equal(rows[0].Split(',').Length, rows[1].Split(',').Length);
        Assert.Equal("", csv.Err); // progress lines only with the table

        // columns for settings off llama-bench's defaults only: the cache types here
        var f32 = Run("bench", "--synthetic", "tiny", "-p", "0", "-n", "2", "-r", "1", "-ctk", "f32");
        Assert.True(f32.Code == 0, f32.Err);
        Assert.Matches(@"\| threads \| type_k \|\s+test \|", f32.Out);
        Assert.DoesNotContain("type_k", md.Out);
    }

    [Fact]
    public void BenchFlagsAreCheckedInOneLine()
    {
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-o", "xml"), "--output xml");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-p", "8,x"), "--n-prompt");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-n", "-1"), "--n-gen");
        AssertOneLineError(Run("bench"), "MODEL");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-p", "4096", "-n", "0", "-r", "1"), "context");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-pg", "512"), "-pg '512'", "PP,TG");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-pg", "8,0"), "-pg '8,0'");
        AssertOneLineError(Run("bench", "--synthetic", "tiny", "-b", "8,0"), "--batch '8,0'");
    }

    [Fact]
    public void PlanNeedsNoWeights()
    {
        var r = Run("plan", "synthetic:tiny", "--gpu-layers", "0", "--json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        Assert.Equal(0, doc.RootElement.GetProperty("offloaded").GetInt32());
    }

    [FixtureFact("vocab/llama3/tokenizer.json")]
    public void TokenizePrintsIdsAndPieces()
    {
        var r = Run("tokenize", Fixtures.Get("tiny-llama-a", "tokenizer.model"), "Once upon a time there was a small robot", "--json");
        Assert.True(r.Code == 0, r.Err);
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        int[] ids = [.. doc.RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32())];
        Assert.Equal(Golden.Golden.Load("tiny-llama-a", "f32").PromptIds, ids);
    }
}
