using System.Text.Json;
using GpuLlama.Generation;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// llama.cpp's own tokenizer conformance vectors (tests/test-tokenizer-0): every case must give llama.cpp's ids.
/// The .out ids were made with add_special=false, parse_special=false, so BOS is not expected.
/// </summary>
public class TokenizerVectorTests
{
    private const string SpmGguf = "vocab/ggml-vocab-llama-spm.gguf";
    private const string SpmModel = "vocab/llama2-tokenizer.model";
    private const string Llama3Json = "vocab/llama3/tokenizer.json";

    /// <summary>
    /// test-tokenizer-0's file convention: cases separated by "\n__ggml_vocab_test__\n" (so the newline before a
    /// separator is not part of the case); the .out holds one line of space-separated ids per case.
    /// </summary>
    internal static List<(string Text, int[] Ids)> ReadVectors(string inp, string outp)
    {
        string[] texts = File.ReadAllText(Fixtures.Get(inp)).Split("\n__ggml_vocab_test__\n");
        Assert.Equal("", texts[^1]);
        string[] lines = File.ReadAllText(Fixtures.Get(outp)).Split('\n');
        var cases = new List<(string, int[])>();
        for (int i = 0; i < texts.Length - 1; i++)
        {
            int[] ids = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            cases.Add((texts[i], ids));
        }

        return cases;
    }

    internal static List<(string Text, int[] Ids)> SpmVectors => ReadVectors(SpmGguf + ".inp", SpmGguf + ".out");

    internal static List<(string Text, int[] Ids)> Llama3Vectors => ReadVectors("vocab/llama3/llama-bpe.inp", "vocab/llama3/llama-bpe.out");

    private static void AssertAllVectors(ModelTokenizer tokenizer, List<(string Text, int[] Ids)> cases)
    {
        var failures = new List<string>();
        foreach ((string text, int[] expected) in cases)
        {
            int[] got = tokenizer.Encode(text, addBos: false, parseSpecial: false);
            if (!got.SequenceEqual(expected))
            {
                failures.Add($"'{text}': expected [{string.Join(' ', expected)}] got [{string.Join(' ', got)}]");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count}/{cases.Count} vectors differ:\n" + string.Join('\n', failures));
    }

    [FixtureFact(SpmGguf)]
    public void LlamaSpm_VocabOnlyGguf_MatchesLlamaCppOnAllVectors()
    {
        var cases = SpmVectors;
        Assert.Equal(46, cases.Count);
        AssertAllVectors(ModelTokenizer.Load(Fixtures.Get(SpmGguf)), cases);
    }

    [FixtureFact(SpmModel)]
    public void LlamaSpm_TokenizerModel_MatchesLlamaCppOnAllVectors()
    {
        var cases = SpmVectors;
        Assert.Equal(46, cases.Count);
        AssertAllVectors(ModelTokenizer.Load(Fixtures.Get(SpmModel)), cases);
    }

    [FixtureFact(Llama3Json)]
    public void Llama3_TokenizerJsonAndGgufGpt2Metadata_MatchLlamaCppOnAllVectors()
    {
        var cases = Llama3Vectors;
        Assert.Equal(46, cases.Count);
        ModelTokenizer json = ModelTokenizer.Load(Fixtures.Get(Llama3Json));
        Assert.Equal("TiktokenTokenizer", json.Encoder);
        AssertAllVectors(json, cases);

        // The same vocabulary as llama.cpp's converter writes it into a GGUF: tokenizer.ggml.model "gpt2", pre "llama-bpe".
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get(Llama3Json)));
        string[] merges = doc.RootElement.GetProperty("model").GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToArray();
        string[] tokens = Enumerable.Range(0, json.VocabSize).Select(json.Piece).ToArray();
        int[] types = Enumerable.Range(0, json.VocabSize).Select(id => id >= 128000 ? 3 : 1).ToArray();
        var metadata = new Dictionary<string, object>
        {
            ["tokenizer.ggml.model"] = "gpt2",
            ["tokenizer.ggml.pre"] = "llama-bpe",
            ["tokenizer.ggml.tokens"] = tokens,
            ["tokenizer.ggml.token_type"] = types,
            ["tokenizer.ggml.merges"] = merges,
            ["tokenizer.ggml.bos_token_id"] = 128000u,
            ["tokenizer.ggml.eos_token_id"] = 128009u,
        };
        ModelTokenizer gguf = ModelTokenizer.FromMetadata(metadata, "llama3.gguf");
        Assert.Equal("TiktokenTokenizer", gguf.Encoder);
        AssertAllVectors(gguf, cases);
        Assert.True(gguf.AddBos);
        Assert.Equal(128000, gguf.BosId);
        Assert.Equal([128009], gguf.EosIds);
        Assert.Equal(json.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi"), gguf.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi"));

        metadata["tokenizer.ggml.pre"] = "qwen2";
        var e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.FromMetadata(metadata, "llama3.gguf"));
        Assert.StartsWith("llama3.gguf: pre-tokenizer 'tokenizer.ggml.pre' = 'qwen2' is not supported", e.Message);
    }

    /// <summary>
    /// Llama 3 takes the library's tiktoken path; our merge-ranked BPE, forced, must give the same ids on the vectors
    /// and on a large mixed text (tokenizer_config.json: Jinja, JSON, code-like punctuation, long runs of spaces).
    /// </summary>
    [FixtureFact(Llama3Json)]
    public void Llama3_LibraryAndByteLevelBpe_Agree()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var library = new ModelTokenizer(TokenizerFiles.Load(Fixtures.Get(Llama3Json)));
        long libraryMs = sw.ElapsedMilliseconds;
        sw.Restart();
        var ours = new ModelTokenizer(TokenizerFiles.Load(Fixtures.Get(Llama3Json)), useLibrary: false);
        long oursMs = sw.ElapsedMilliseconds;
        Console.WriteLine($"Llama 3 tokenizer.json load: TiktokenTokenizer {libraryMs} ms, ByteLevelBpe {oursMs} ms");
        Assert.Equal("TiktokenTokenizer", library.Encoder);
        Assert.Equal("ByteLevelBpe", ours.Encoder);
        AssertAllVectors(ours, Llama3Vectors);

        string text = File.ReadAllText(Fixtures.Get("vocab/llama3/tokenizer_config.json")) + File.ReadAllText(Fixtures.Get("vocab/llama3/llama-bpe.inp"));
        int[] expected = ours.Encode(text, addBos: false, parseSpecial: false);
        Assert.True(expected.Length > 10_000, $"{expected.Length} tokens");
        Assert.Equal(expected, library.Encode(text, addBos: false, parseSpecial: false));
        Assert.Equal(ours.Encode(text), library.Encode(text));
    }
}
