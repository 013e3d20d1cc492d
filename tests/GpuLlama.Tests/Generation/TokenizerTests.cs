using System.Text;
using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Generation;
using GpuLlama.Tests.Formats;
using Xunit;

namespace GpuLlama.Tests.Generation;

public class TokenizerTests
{
    private const string SpmGguf = "vocab/ggml-vocab-llama-spm.gguf";
    private const string SpmModel = "vocab/llama2-tokenizer.model";
    private const string Llama3Json = "vocab/llama3/tokenizer.json";
    private const string TinyA = "tiny-llama-a/tokenizer.model";
    private const string TinyC = "tiny-llama-c/tokenizer.model";
    private const string Tok512 = "stories260K/tok512.bin";

    private static readonly Lazy<ModelTokenizer> s_llama2 = new(() => ModelTokenizer.Load(Fixtures.Get(SpmModel)));
    private static readonly Lazy<ModelTokenizer> s_llama3 = new(() => ModelTokenizer.Load(Fixtures.Get(Llama3Json)));

    /// <summary>golden.json "tokenizer_tests": llama-tokenize ids (BOS added, special tokens parsed) and their pieces.</summary>
    private static List<(string Text, int[] Ids, string[] Pieces)> GoldenCases(string fixture)
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get(fixture, "golden.json")));
        var cases = new List<(string, int[], string[])>();
        foreach (JsonElement c in doc.RootElement.GetProperty("tokenizer_tests").EnumerateArray())
        {
            cases.Add((
                c.GetProperty("text").GetString()!,
                c.GetProperty("ids_llama_tokenize").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!).ToArray()));
        }

        Assert.NotEmpty(cases);
        return cases;
    }

    private static int[] GoldenPromptIds(string fixture)
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get(fixture, "golden.json")));
        return doc.RootElement.GetProperty("prompt").GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }

    private static void AssertGolden(ModelTokenizer tokenizer, string fixture)
    {
        foreach ((string text, int[] ids, string[] pieces) in GoldenCases(fixture))
        {
            int[] got = tokenizer.Encode(text);
            Assert.True(ids.SequenceEqual(got), $"'{text}': expected [{string.Join(' ', ids)}] got [{string.Join(' ', got)}]");
            Assert.Equal(pieces, got.Select(tokenizer.Piece).ToArray());
        }
    }

    [FixtureFact(SpmGguf)]
    public void VocabGolden_LlamaTokenizeIdsAndPieces_FromGgufAndTokenizerModel()
    {
        AssertGolden(ModelTokenizer.Load(Fixtures.Get(SpmGguf)), "vocab");
        AssertGolden(s_llama2.Value, "vocab");
    }

    [FixtureFact(TinyA)]
    public void TinyLlamaA_GoldenIds_FromTokenizerModelDirectoryAndEveryGguf()
    {
        int[] prompt = GoldenPromptIds("tiny-llama-a");
        Assert.Equal(28, prompt.Length);
        const string text = "Once upon a time there was a small robot";

        ModelTokenizer model = ModelTokenizer.Load(Fixtures.Get(TinyA));
        AssertGolden(model, "tiny-llama-a");
        Assert.Equal(prompt, model.Encode(text));
        Assert.Equal(512, model.VocabSize);
        Assert.Equal(1, model.BosId);
        Assert.Equal([2], model.EosIds);
        Assert.True(model.AddBos);

        Assert.Equal(prompt, ModelTokenizer.Load(Fixtures.Get("tiny-llama-a")).Encode(text));

        string[] ggufs = Directory.GetFiles(Fixtures.Get("tiny-llama-a"), "*.gguf");
        Assert.Equal(7, ggufs.Length);
        foreach (string gguf in ggufs)
        {
            Assert.Equal(prompt, ModelTokenizer.Load(gguf).Encode(text));
            using GgufSource source = GgufSource.Open(gguf);
            Assert.Equal(prompt, ModelTokenizer.ForSource(source).Encode(text));
        }

        using IWeightSource hf = WeightSource.Open(Fixtures.Get("tiny-llama-a"));
        Assert.Equal(prompt, ModelTokenizer.ForSource(hf).Encode(text));
    }

    [FixtureFact(TinyC)]
    public void TinyLlamaC_GoldenIds_FromTokenizerModelAndDirectory()
    {
        int[] prompt = GoldenPromptIds("tiny-llama-c");
        ModelTokenizer model = ModelTokenizer.Load(Fixtures.Get(TinyC));
        AssertGolden(model, "tiny-llama-c");
        Assert.Equal(prompt, model.Encode("Once upon a time there was a small robot"));
        Assert.Equal(32000, model.VocabSize);

        using IWeightSource hf = WeightSource.Open(Fixtures.Get("tiny-llama-c"));
        Assert.Equal(prompt, ModelTokenizer.ForSource(hf).Encode("Once upon a time there was a small robot"));
    }

    /// <summary>tok512.bin is tiny-llama-a's tokenizer.model exported by llama2.c's tokenizer.py, so its ids are tiny-llama-a's.</summary>
    [FixtureFact(Tok512)]
    public void Stories260K_Tok512Bin_GivesTinyLlamaAIds()
    {
        ModelTokenizer tok = ModelTokenizer.Load(Fixtures.Get(Tok512));
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal("<s>", tok.Piece(1));
        Assert.Equal("<0x0A>", tok.Piece(13));
        foreach ((string text, int[] ids, _) in GoldenCases("tiny-llama-a"))
        {
            Assert.Equal(ids, tok.Encode(text));
        }

        using IWeightSource checkpoint = WeightSource.Open(Fixtures.Get("stories260K", "stories260K.bin"));
        var e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.ForSource(checkpoint));
        Assert.Contains("stories260K.bin", e.Message);
        Assert.Contains("--tokenizer tokenizer.bin", e.Message);
        Assert.Equal(GoldenPromptIds("tiny-llama-a"), ModelTokenizer.ForSource(checkpoint, Fixtures.Get(Tok512)).Encode("Once upon a time there was a small robot"));
    }

    [Fact]
    public void Llama2cCheckpoint_FindsTokenizerBinBesideIt()
    {
        using var dir = new ScratchDirectory();
        string tokenizer = Path.Combine(dir.Path, "tokenizer.bin");
        WriteLlama2cTokenizer(tokenizer);
        ModelTokenizer tok = ModelTokenizer.Load(tokenizer);
        Assert.Equal(3 + 256 + 4, tok.VocabSize);
        Assert.Equal([1, tok.Find("▁ab"), tok.Find("c")], tok.Encode("abc"));
        Assert.Equal("abc", tok.Decode(tok.Encode("abc")));
        Assert.Equal([1, tok.Find("▁ab"), 3 + 0xE2, 3 + 0x80, 3 + 0x99], tok.Encode("ab\u2019"));
    }

    /// <summary>A llama2.c tokenizer.bin as its tokenizer.py writes one: "▁" stored as " ", BOS/EOS wrapped in newlines.</summary>
    private static void WriteLlama2cTokenizer(string path)
    {
        var pieces = new List<(string, float)> { ("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0) };
        for (int b = 0; b < 256; b++)
        {
            pieces.Add(($"<0x{b:X2}>", 0));
        }

        pieces.Add((" a", -1));
        pieces.Add(("b", -2));
        pieces.Add((" ab", -3));
        pieces.Add(("c", -4));
        using var w = new BinaryWriter(File.Create(path));
        w.Write(pieces.Max(p => Encoding.UTF8.GetByteCount(p.Item1)));
        foreach ((string piece, float score) in pieces)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            w.Write(score);
            w.Write(bytes.Length);
            w.Write(bytes);
        }
    }

    [Fact]
    public void SyntheticModel_TokenizesFromItsMetadata()
    {
        using SyntheticSource source = SyntheticSource.Create("tiny:f32");
        ModelTokenizer tok = ModelTokenizer.ForSource(source);
        Assert.Equal(source.Config.VocabSize, tok.VocabSize);
        const string text = "karo bani shuto 42!";
        int[] ids = tok.Encode(text);
        Assert.Equal(1, ids[0]);
        Assert.True(ids.Length < Encoding.UTF8.GetByteCount(text), "the synthetic pieces should merge characters");
        Assert.Equal(text, tok.Decode(ids));
    }

    private static readonly string[] s_roundTripTexts =
    [
        "Hello world",
        "Once upon a time there was a small robot.",
        " leading space and trailing space ",
        "tabs\tand\nnewlines\n\nhere\n",
        "Unicode: café naïve — “quotes” 日本語 Привет 🦙🚀",
        "1,000,000 + 3.14159 = ?!",
        "<b>not special</b> [INST] <<SYS>>",
        "🦙llama 𝐀𝐁𝐂 𠀀text 🚀1 x🦙",
    ];

    public static TheoryData<string> RoundTripTexts => new(s_roundTripTexts);

    [FixtureTheory(SpmModel)]
    [MemberData(nameof(RoundTripTexts))]
    public void RoundTrip_Llama2(string text)
    {
        ModelTokenizer tok = s_llama2.Value;
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
        Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true, parseSpecial: false)));
    }

    [FixtureTheory(Llama3Json)]
    [MemberData(nameof(RoundTripTexts))]
    public void RoundTrip_Llama3(string text)
    {
        ModelTokenizer tok = s_llama3.Value;
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
        Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: false)));
    }

    [FixtureFact(SpmGguf)]
    public void RoundTrip_AllVectorTexts()
    {
        ModelTokenizer spm = ModelTokenizer.Load(Fixtures.Get(SpmGguf));
        foreach ((string text, _) in TokenizerVectorTests.SpmVectors)
        {
            Assert.Equal(text, spm.Decode(spm.Encode(text, parseSpecial: false)));
            Assert.Equal(text, s_llama2.Value.Decode(s_llama2.Value.Encode(text, parseSpecial: false)));
        }

        foreach ((string text, _) in TokenizerVectorTests.Llama3Vectors)
        {
            Assert.Equal(text, s_llama3.Value.Decode(s_llama3.Value.Encode(text, parseSpecial: false)));
        }
    }

    [FixtureFact(SpmModel)]
    public void Llama2_SpecialTokens_BosEosAndLeadingSpace()
    {
        ModelTokenizer tok = s_llama2.Value;
        Assert.Equal(1, tok.BosId);
        Assert.Equal([2], tok.EosIds);
        Assert.True(tok.IsEos(2));
        Assert.False(tok.IsEos(1));
        Assert.True(tok.AddBos);
        Assert.Equal("", tok.Decode([1, 2]));
        Assert.Equal("▁Hello", tok.Piece(15043));

        // "<s>" in the text is BOS when special tokens are parsed; the text after it gets the dummy prefix.
        int hi = tok.Find("▁hi");
        Assert.Equal([1, 1, hi], tok.Encode("<s>hi"));
        Assert.Equal([hi], tok.Encode("hi", addBos: false));
        Assert.DoesNotContain(1, tok.Encode("<s>hi", addBos: false, parseSpecial: false));
        Assert.Equal([], tok.Encode("", addBos: false));
        Assert.Equal([1], tok.Encode(""));

        // llama.cpp's detokenizer drops the dummy-prefix space only on the first piece after BOS.
        Assert.Equal("Hello world", tok.Decode([1, 15043, 3186]));
        Assert.Equal(" Hello world", tok.Decode([15043, 3186]));
    }

    [FixtureFact(Llama3Json)]
    public void Llama3_SpecialTokens()
    {
        ModelTokenizer tok = s_llama3.Value;
        Assert.Equal(128256, tok.VocabSize);
        Assert.Equal(128000, tok.BosId);
        Assert.Equal([128001, 128009], tok.EosIds);
        Assert.True(tok.IsEos(128009));
        Assert.True(tok.AddBos);
        Assert.Equal("<|eot_id|>", tok.Piece(128009));
        Assert.Equal("Ġworld", tok.Piece(1917));

        int[] ids = tok.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
        Assert.Equal([128000, 128006, 882, 128007, 271, 13347, 128009], ids);
        Assert.Equal("user\n\nHi", tok.Decode(ids));
        Assert.DoesNotContain(128006, tok.Encode("<|start_header_id|>", parseSpecial: false));
        Assert.Equal("Hello world", tok.Decode([128000, 9906, 1917, 128001]));
    }

    [FixtureFact(SpmModel)]
    public void StreamingDecoder_AssemblesByteFallbackUtf8()
    {
        ModelTokenizer tok = s_llama2.Value;
        StreamingDecoder d = tok.CreateStreamingDecoder();
        // ’ = E2 80 99 as byte-fallback tokens (<0xXX> is id 3 + byte).
        Assert.Equal("", d.Push(3 + 0xE2));
        Assert.Equal("", d.Push(3 + 0x80));
        Assert.Equal("’", d.Push(3 + 0x99));
        // 🦙 = F0 9F A6 99: nothing until the 4th byte, then both UTF-16 halves at once.
        Assert.Equal("", d.Push(3 + 0xF0));
        Assert.Equal("", d.Push(3 + 0x9F));
        Assert.Equal("", d.Push(3 + 0xA6));
        Assert.Equal("🦙", d.Push(3 + 0x99));
        // An incomplete sequence before a normal piece becomes U+FFFD; one left at the end comes out on Flush.
        Assert.Equal("\uFFFD Hello", d.Push(3 + 0xE2) + d.Push(15043));
        Assert.Equal("", d.Push(3 + 0xE2));
        Assert.Equal("\uFFFD", d.Flush());
    }

    [FixtureFact(SpmModel)]
    public void StreamingDecoder_EqualsDecode_OnVectorTextsAndRandomIds()
    {
        var tokenizers = new List<ModelTokenizer> { s_llama2.Value };
        if (Fixtures.Has(Llama3Json))
        {
            tokenizers.Add(s_llama3.Value);
        }

        if (Fixtures.Has(TinyA))
        {
            tokenizers.Add(ModelTokenizer.Load(Fixtures.Get(TinyA)));
        }

        var texts = TokenizerVectorTests.SpmVectors.Select(c => c.Text).Concat(s_roundTripTexts).ToList();
        var rng = new Random(1234);
        foreach (ModelTokenizer tok in tokenizers)
        {
            foreach (string text in texts)
            {
                AssertStreamingEqualsDecode(tok, tok.Encode(text));
            }

            for (int trial = 0; trial < 200; trial++)
            {
                int[] ids = new int[rng.Next(1, 40)];
                for (int i = 0; i < ids.Length; i++)
                {
                    // Half the draws from the low ids (byte-fallback tokens in SPM vocabularies, single bytes in byte-level ones).
                    ids[i] = rng.Next(2) == 0 ? rng.Next(Math.Min(300, tok.VocabSize)) : rng.Next(tok.VocabSize);
                }

                AssertStreamingEqualsDecode(tok, ids);
            }
        }
    }

    private static void AssertStreamingEqualsDecode(ModelTokenizer tok, int[] ids)
    {
        StreamingDecoder d = tok.CreateStreamingDecoder();
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            string chunk = d.Push(id);
            AssertWholeScalars(chunk);
            sb.Append(chunk);
        }

        string tail = d.Flush();
        AssertWholeScalars(tail);
        sb.Append(tail);
        Assert.Equal(tok.Decode(ids), sb.ToString());
    }

    private static void AssertWholeScalars(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]))
            {
                Assert.True(i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]), $"lone high surrogate in chunk '{s}'");
                i++;
            }
            else
            {
                Assert.False(char.IsLowSurrogate(s[i]), $"lone low surrogate in chunk '{s}'");
            }
        }
    }

    [Fact]
    public void Load_MissingOrCorruptFiles_OneLineErrorNamingTheFile()
    {
        using var dir = new ScratchDirectory();
        string missing = Path.Combine(dir.Path, "tokenizer.model");
        var e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(missing));
        Assert.Contains(missing, e.Message);

        string corrupt = Path.Combine(dir.Path, "bad.model");
        File.WriteAllBytes(corrupt, [0x0A, 0xFF, 0xFF, 0x07, 1, 2]);
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(corrupt));
        Assert.StartsWith(corrupt + ": not a SentencePiece model", e.Message);

        string json = Path.Combine(dir.Path, "tokenizer.json");
        File.WriteAllText(json, "{\"model\": {\"type\": \"Unigram\"}}");
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(json));
        Assert.Contains(json, e.Message);
        Assert.Contains("Unigram", e.Message);

        File.WriteAllText(json, "{ not json");
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(json));
        Assert.StartsWith(json + ": invalid JSON", e.Message);

        string bin = Path.Combine(dir.Path, "tokenizer.bin");
        File.WriteAllBytes(bin, [8, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0]);
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(bin));
        Assert.StartsWith(bin + ": token 0 has length 99", e.Message);

        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void FromMetadata_UnsupportedModel_NamesPathAndModel()
    {
        var md = new Dictionary<string, object> { ["tokenizer.ggml.model"] = "bert", ["tokenizer.ggml.tokens"] = new[] { "a" } };
        var e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.FromMetadata(md, "model.gguf"));
        Assert.StartsWith("model.gguf: tokenizer model 'bert' is not supported", e.Message);

        md = new Dictionary<string, object> { ["general.architecture"] = "llama" };
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.FromMetadata(md, "model.gguf"));
        Assert.StartsWith("model.gguf: no 'tokenizer.ggml.model'", e.Message);
    }

    [FixtureFact(SpmGguf)]
    public void GgufMetadata_WithoutTokenTypes_AndWithAddEos()
    {
        var md = new Dictionary<string, object>(GgufSource.ReadMetadata(Fixtures.Get(SpmGguf)));
        md.Remove("tokenizer.ggml.token_type");
        ModelTokenizer untyped = ModelTokenizer.FromMetadata(md, "vocab.gguf");
        foreach ((string text, int[] ids) in TokenizerVectorTests.SpmVectors)
        {
            Assert.Equal(ids, untyped.Encode(text, addBos: false, parseSpecial: false));
            Assert.Equal(text, untyped.Decode(untyped.Encode(text, parseSpecial: false)));
        }

        Assert.Equal("\n", untyped.Decode([13]));
        Assert.Equal("", untyped.Decode([0, 1, 2]));

        md["tokenizer.ggml.add_eos_token"] = true;
        ModelTokenizer withEos = ModelTokenizer.FromMetadata(md, "vocab.gguf");
        Assert.Equal([1, 7251, 2], withEos.Encode("hi"));
        Assert.Equal([7251], withEos.Encode("hi", addBos: false));
    }
}
