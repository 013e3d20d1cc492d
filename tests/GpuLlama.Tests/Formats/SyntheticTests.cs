using System.Runtime.InteropServices;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Formats;

public sealed unsafe class SyntheticTests
{
    /// <summary>A Llama-3-shaped model small enough for tests (GQA, RoPE scaling).</summary>
    private static readonly SyntheticPreset s_small = new("small-test", "nothing", 64, 2, 4, 2, 96, 300, 128, 500000.0, new Llama3RopeScaling(8, 1, 4, 64));

    [Theory]
    [InlineData("tiny", "tiny", DType.F16)]
    [InlineData("tiny:f32", "tiny", DType.F32)]
    [InlineData("TinyLlama-1.1B:BF16", "tinyllama-1.1b", DType.BF16)]
    [InlineData("synthetic:llama3-8b:bf16", "llama3-8b", DType.BF16)]
    [InlineData("llama2-7b:F16", "llama2-7b", DType.F16)]
    [InlineData("llama-110m", "llama-110m", DType.F16)]
    public void ParsesPresetSpecs(string spec, string name, DType type)
    {
        (SyntheticPreset preset, DType parsed) = SyntheticSource.Parse(spec);
        Assert.Equal(name, preset.Name);
        Assert.Equal(type, parsed);
    }

    [Theory]
    [InlineData("gpt2", "unknown preset 'gpt2'")]
    [InlineData("tiny:q3_k", "unsupported dtype 'q3_k'")]
    [InlineData("tiny:f16:x", "unknown preset")]
    [InlineData("", "unknown preset")]
    public void RejectsBadSpecsNamingThem(string spec, string expected)
    {
        var e = Assert.Throws<GpuLlamaException>(() => SyntheticSource.Parse(spec));
        Assert.Contains($"'{spec}'", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void PresetsHaveTheRealModelsParameterCounts()
    {
        // published counts (untied heads): Llama-2-7B 6,738,415,616; Llama-3-8B 8,030,261,248; TinyLlama 1,100,048,384
        Assert.Equal(6_738_415_616, Find("llama2-7b").Parameters);
        Assert.Equal(8_030_261_248, Find("llama3-8b").Parameters);
        Assert.Equal(1_100_048_384, Find("tinyllama-1.1b").Parameters);
        foreach (SyntheticPreset p in SyntheticPreset.All)
        {
            ModelConfig c = p.ToConfig();
            c.Validate(p.Name);
            Assert.Contains(p.Name, SyntheticPreset.Help());
        }

        Assert.Equal(128, Find("llama3-8b").HeadDim);
        Assert.Equal(4, Find("tinyllama-1.1b").ToConfig().KvHeads);
        Assert.Equal(8.0, Find("llama3-8b").RopeScaling!.Factor);
    }

    private static SyntheticPreset Find(string name) => SyntheticPreset.All.Single(p => p.Name == name);

    [Fact]
    public void TinyModelIsCompleteAndDeterministic()
    {
        using SyntheticSource a = SyntheticSource.Create("tiny:f32");
        using SyntheticSource b = SyntheticSource.Create("tiny:f32");
        using SyntheticSource other = SyntheticSource.Create(SyntheticSource.Parse("tiny:f32").Preset, DType.F32, seed: 7);

        Assert.Equal("synthetic:tiny", a.Path);
        Assert.Equal("synthetic", a.Format);
        Assert.Empty(TensorNames.Verify(a.Config, a.Tensors));
        Assert.Equal((288, 6, 6, 6, 768, 4096, 1024), (a.Config.Dim, a.Config.Layers, a.Config.Heads, a.Config.KvHeads, a.Config.HiddenDim, a.Config.VocabSize, a.Config.ContextLength));
        Assert.Equal(a.Preset.Parameters * 4, a.TotalBytes);
        foreach (TensorInfo t in a.Tensors.Values)
        {
            WeightView va = a.View(t);
            Assert.Equal(0, (long)va.Pointer % 64);
            Assert.True(va.AsSpan().SequenceEqual(b.View(b.Tensors[t.Name]).AsSpan()), t.Name);
            Assert.False(va.AsSpan().SequenceEqual(other.View(other.Tensors[t.Name]).AsSpan()), t.Name);
        }

        // different tensors are not copies of each other
        Assert.False(a.View(a.Tensors[TensorNames.Wq(0)]).AsSpan().SequenceEqual(a.View(a.Tensors[TensorNames.Wo(0)]).AsSpan()));
    }

    [Fact]
    public void WeightsHaveTheIntendedScales()
    {
        using SyntheticSource s = SyntheticSource.Create("tiny:f32");
        (double mean, double std, double min, double max) = Stats(s, TensorNames.FfnDown(2));
        Assert.InRange(mean, -0.001, 0.001);
        Assert.InRange(std, 0.98 / Math.Sqrt(768), 1.02 / Math.Sqrt(768));
        Assert.InRange(max, 0.99 * Math.Sqrt(3.0 / 768), Math.Sqrt(3.0 / 768));

        (mean, std, min, max) = Stats(s, TensorNames.AttnNorm(0));
        Assert.InRange(mean, 0.99, 1.01);
        Assert.True(min >= 0.9 && max <= 1.1 && std > 0.03, $"norm weights {min}..{max}, std {std}");

        (_, std, _, _) = Stats(s, TensorNames.Output);
        Assert.InRange(std, 1.96 / Math.Sqrt(288), 2.04 / Math.Sqrt(288));
        (_, std, _, _) = Stats(s, TensorNames.TokenEmbedding);
        Assert.InRange(std, 0.99, 1.01);
    }

    private static (double Mean, double Std, double Min, double Max) Stats(SyntheticSource s, string name)
    {
        ReadOnlySpan<float> v = MemoryMarshal.Cast<byte, float>(s.View(s.Tensors[name]).AsSpan());
        double sum = 0, sq = 0, min = double.MaxValue, max = double.MinValue;
        foreach (float x in v)
        {
            sum += x;
            sq += (double)x * x;
            min = Math.Min(min, x);
            max = Math.Max(max, x);
        }

        double mean = sum / v.Length;
        return (mean, Math.Sqrt(sq / v.Length - mean * mean), min, max);
    }

    [Theory]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void HalfPrecisionModelsRoundTheSameValues(DType type)
    {
        using SyntheticSource f32 = SyntheticSource.Create(s_small, DType.F32);
        using SyntheticSource half = SyntheticSource.Create(s_small, type);
        Assert.Equal(DType.F32, half.Tensors[TensorNames.FfnNorm(1)].Type);
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wk(1), TensorNames.Output })
        {
            Assert.Equal(type, half.Tensors[name].Type);
            ReadOnlySpan<float> wide = MemoryMarshal.Cast<byte, float>(f32.View(f32.Tensors[name]).AsSpan());
            ReadOnlySpan<ushort> narrow = MemoryMarshal.Cast<byte, ushort>(half.View(half.Tensors[name]).AsSpan());
            for (int i = 0; i < wide.Length; i++)
            {
                float expected = type == DType.F16 ? (float)(Half)wide[i] : RoundToBf16(wide[i]);
                float got = type == DType.F16 ? (float)BitConverter.UInt16BitsToHalf(narrow[i]) : BitConverter.UInt32BitsToSingle((uint)narrow[i] << 16);
                Assert.Equal(expected, got);
            }
        }
    }

    /// <summary>Reference round-to-nearest-even to bfloat16, via double arithmetic on the exact value.</summary>
    private static float RoundToBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        float down = BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000);
        float up = BitConverter.UInt32BitsToSingle((bits & 0xFFFF0000) + 0x10000);
        double dDown = Math.Abs((double)x - down), dUp = Math.Abs((double)up - x);
        return dDown < dUp ? down : dUp < dDown ? up : ((BitConverter.SingleToUInt32Bits(down) >> 16) & 1) == 0 ? down : up;
    }

    [Fact]
    public void VocabularyIsGgufShapedAndUnique()
    {
        (string[] tokens, float[] scores, int[] types) = SyntheticVocabulary.Build(4096);
        Assert.Equal(4096, tokens.Length);
        Assert.Equal(tokens.Length, tokens.Distinct().Count());
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
        Assert.Equal("<0xFF>", tokens[258]);
        Assert.Equal([2, 3, 3], types[..3]);
        Assert.All(types[3..259], t => Assert.Equal(6, t));
        Assert.All(types[259..], t => Assert.Equal(1, t));
        Assert.Contains("▁ka", tokens);
        Assert.Contains("ro", tokens);
        for (int i = 260; i < scores.Length; i++)
        {
            Assert.True(scores[i] < scores[i - 1]);
        }

        // every multi-character piece can be reached by merging two shorter pieces (SentencePiece BPE)
        var set = new HashSet<string>(tokens[259..]);
        foreach (string piece in tokens[259..].Where(p => p.Length > 1))
        {
            Assert.True(Enumerable.Range(1, piece.Length - 1).Any(k => set.Contains(piece[..k]) && set.Contains(piece[k..])), piece);
        }

        Assert.Equal(128256, SyntheticVocabulary.Build(128256).Tokens.Distinct().Count());
    }

    [Fact]
    public void MetadataCarriesConfigAndTokenizer()
    {
        using SyntheticSource s = SyntheticSource.Create(s_small, DType.F32);
        Assert.Equal("llama", s.Metadata["general.architecture"]);
        Assert.Equal("llama", s.Metadata["tokenizer.ggml.model"]);
        Assert.Equal(300, ((string[])s.Metadata["tokenizer.ggml.tokens"]).Length);
        Assert.Equal(1u, s.Metadata["tokenizer.ggml.bos_token_id"]);
        Assert.Equal(2u, s.Metadata["tokenizer.ggml.eos_token_id"]);
        Assert.Equal(64u, s.Metadata["llama.embedding_length"]);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void ExportedGgufReadsBackAsTheSameModel(DType type)
    {
        using SyntheticSource s = SyntheticSource.Create(s_small, type);
        using var file = new TempFile();
        GgufExport.ExportGguf(s, file.Path);
        using GgufSource g = GgufSource.Open(file.Path);

        ModelConfig a = s.Config, b = g.Config;
        Assert.Equal((a.Dim, a.Layers, a.Heads, a.KvHeads, a.HeadDim, a.HiddenDim, a.VocabSize, a.ContextLength, a.RmsEps, a.RopeTheta, a.BosId, a.TiedEmbeddings, a.Name),
            (b.Dim, b.Layers, b.Heads, b.KvHeads, b.HeadDim, b.HiddenDim, b.VocabSize, b.ContextLength, b.RmsEps, b.RopeTheta, b.BosId, b.TiedEmbeddings, b.Name));
        Assert.Equal(a.EosIds, b.EosIds);

        // Llama 3 scaling travels as rope_freqs.weight and gives the same frequencies
        double[] expected = a.RopeInverseFrequencies(), got = b.RopeInverseFrequencies();
        Assert.NotNull(b.RopeFreqFactors);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i], got[i], expected[i] * 1e-6);
        }

        foreach (TensorInfo t in s.Tensors.Values)
        {
            Assert.Equal(t.Type, g.Tensors[t.Name].Type);
            Assert.Equal(t.Shape, g.Tensors[t.Name].Shape);
            Assert.True(s.View(t).AsSpan().SequenceEqual(g.View(g.Tensors[t.Name]).AsSpan()), t.Name);
        }

        Assert.Equal((string[])s.Metadata["tokenizer.ggml.tokens"], (string[])g.Metadata["tokenizer.ggml.tokens"]);
        Assert.Equal((int[])s.Metadata["tokenizer.ggml.token_type"], (int[])g.Metadata["tokenizer.ggml.token_type"]);
        Assert.Equal(Gguf.FileType(type), g.Metadata["general.file_type"]);
    }

    [Fact]
    public void ExportPermutesQkRowsOfHalvesSources()
    {
        using SyntheticSource s = SyntheticSource.Create(s_small, DType.F32);
        using var halves = new RestyledSource(s, RopeStyle.Halves);
        using var file = new TempFile();
        GgufExport.ExportGguf(halves, file.Path);
        using GgufSource g = GgufSource.Open(file.Path);

        int headDim = s.Config.HeadDim, half = headDim / 2;
        foreach ((string name, int heads) in new[] { (TensorNames.Wq(1), s.Config.Heads), (TensorNames.Wk(1), s.Config.KvHeads) })
        {
            WeightView src = s.View(s.Tensors[name]);
            WeightView dst = g.View(g.Tensors[name]);
            for (int h = 0; h < heads; h++)
            {
                for (int j = 0; j < half; j++)
                {
                    // halves layout pairs (j, j + half); ggml pairs (2j, 2j + 1)
                    Assert.True(dst.Row(h * headDim + 2 * j).SequenceEqual(src.Row(h * headDim + j)));
                    Assert.True(dst.Row(h * headDim + 2 * j + 1).SequenceEqual(src.Row(h * headDim + j + half)));
                }
            }
        }

        Assert.True(s.View(s.Tensors[TensorNames.Wv(1)]).AsSpan().SequenceEqual(g.View(g.Tensors[TensorNames.Wv(1)]).AsSpan()));
    }

    /// <summary>Presents another source's tensors under a different RoPE style (as a Hugging Face source would be).</summary>
    private sealed class RestyledSource(IWeightSource inner, RopeStyle style) : IWeightSource
    {
        public string Path => inner.Path;

        public string Format => inner.Format;

        public ModelConfig Config { get; } = inner.Config with { RopeStyle = style };

        public IReadOnlyDictionary<string, TensorInfo> Tensors => inner.Tensors;

        public IReadOnlyDictionary<string, object> Metadata => inner.Metadata;

        public WeightView View(TensorInfo tensor) => inner.View(tensor);

        public void Dispose()
        {
        }
    }

    [Fact]
    public void ViewAfterDisposeThrows()
    {
        SyntheticSource s = SyntheticSource.Create(s_small, DType.F16);
        TensorInfo t = s.Tensors[TensorNames.Output];
        s.Dispose();
        Assert.Throws<ObjectDisposedException>(() => s.View(t));
    }
}
