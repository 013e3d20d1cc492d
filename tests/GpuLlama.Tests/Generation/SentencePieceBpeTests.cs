using GpuLlama.Formats;
using GpuLlama.Tests.Formats;
using GpuLlama.Generation;
using Microsoft.ML.Tokenizers;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// SentencePiece through Microsoft.ML.Tokenizers: the library's model of every SentencePiece vocabulary, and our merge
/// step where the library's is wrong (see <see cref="SentencePieceBpe"/>).
/// </summary>
public class SentencePieceBpeTests
{
    private const string SpmGguf = "vocab/ggml-vocab-llama-spm.gguf";
    private const string SpmModel = "vocab/llama2-tokenizer.model";

    /// <summary>
    /// A SentencePiece vocabulary as GGUF metadata: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, the 256 byte pieces, then
    /// <paramref name="pieces"/> (normal, with their scores).
    /// </summary>
    private static Dictionary<string, object> Metadata(params (string Piece, float Score)[] pieces)
    {
        string[] tokens = ["<unk>", "<s>", "</s>", .. Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>"), .. pieces.Select(p => p.Piece)];
        int[] types = [TokenType.Unknown, TokenType.Control, TokenType.Control, .. Enumerable.Repeat(TokenType.Byte, 256), .. pieces.Select(_ => TokenType.Normal)];
        float[] scores = [0, 0, 0, .. new float[256], .. pieces.Select(p => p.Score)];
        return new Dictionary<string, object>
        {
            ["tokenizer.ggml.model"] = "llama",
            ["tokenizer.ggml.tokens"] = tokens,
            ["tokenizer.ggml.token_type"] = types,
            ["tokenizer.ggml.scores"] = scores,
        };
    }

    /// <summary>
    /// The library breaks a tie between equal scores toward the rightmost pair, SentencePiece and llama.cpp toward the
    /// leftmost: in "▁aaa" both "aa" pairs score the same; llama.cpp gives ▁ aa a, the library ▁ a aa.
    /// </summary>
    [Fact]
    public void Merge_TiesGoToTheLeftmostPair_WhereTheLibraryTakesTheRightmost()
    {
        TokenizerData data = TokenizerFiles.FromGguf(Metadata(("▁", -3), ("a", -2), ("aa", -1)), "tiny.gguf");
        var tok = new ModelTokenizer(data);
        int space = tok.Find("▁"), a = tok.Find("a"), aa = tok.Find("aa");

        Assert.Equal([space, aa, a], tok.Encode("aaa", addBos: false));
        Assert.Equal([space, aa, aa, a], tok.Encode("aaaaa", addBos: false));
        Assert.Equal([space, a, aa], data.SentencePiece!.EncodeToIds("aaa", addBeginningOfSentence: false, addEndOfSentence: false));
        Assert.Equal([space, a, aa, aa], data.SentencePiece!.EncodeToIds("aaaaa", addBeginningOfSentence: false, addEndOfSentence: false));

        // Characters that are no piece: the library's byte fallback, after our merge.
        Assert.Equal([space, aa, 3 + 0xE2, 3 + 0x80, 3 + 0x99, 3 + (byte)'b', a], tok.Encode("aa\u2019ba", addBos: false));
    }

    /// <summary>
    /// Llama 2's tokenizer.model in the library as it is (LlamaTokenizer) misses llama.cpp's ids on exactly the two
    /// llama-spm vectors with runs of repeated punctuation; our merge over the library's model matches all 46,
    /// from the tokenizer.model and from the GGUF.
    /// </summary>
    [FixtureFact(SpmModel)]
    public void Llama2_LibraryMisses2Of46Vectors_OursMatchesAll()
    {
        var cases = TokenizerVectorTests.SpmVectors;
        Assert.Equal(46, cases.Count);
        LlamaTokenizer library;
        using (FileStream model = File.OpenRead(Fixtures.Get(SpmModel)))
        {
            library = LlamaTokenizer.Create(model, addBeginOfSentence: false, addEndOfSentence: false);
        }

        var libraryMisses = cases.Where(c => !library.EncodeToIds(c.Text).SequenceEqual(c.Ids)).Select(c => c.Text).ToList();
        Assert.Equal(2, libraryMisses.Count);
        Assert.Equal("!!!!!!", libraryMisses[0]);
        Assert.Contains("......!!!!!!??????", libraryMisses[1], StringComparison.Ordinal);

        // "!!!!!!" → ▁!! then "!!!!": llama.cpp merges the leftmost "!!" first (!! !!!), the library the rightmost (!!! !!).
        Assert.Equal([1738, 6824, 21004], cases.Single(c => c.Text == "!!!!!!").Ids);
        Assert.Equal([1738, 21004, 6824], library.EncodeToIds("!!!!!!"));

        var ours = new List<ModelTokenizer> { ModelTokenizer.Load(Fixtures.Get(SpmModel)) };
        if (Fixtures.Has(SpmGguf))
        {
            ours.Add(ModelTokenizer.Load(Fixtures.Get(SpmGguf)));
        }

        foreach (ModelTokenizer tok in ours)
        {
            Assert.Equal("SentencePieceBpe", tok.Encoder);
            foreach ((string text, int[] ids) in cases)
            {
                Assert.Equal(ids, tok.Encode(text, addBos: false, parseSpecial: false));
            }
        }
    }

    /// <summary>
    /// The GGUF vocabulary written back into a ModelProto is, to the library, Llama 2's tokenizer.model: the same pieces
    /// and ids, special ids, byte fallback and dummy prefix, and the same (library) encoding of every vector.
    /// </summary>
    [FixtureFact(SpmGguf)]
    public void Gguf_WrittenModelProto_IsTheTokenizerModelToTheLibrary()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        TokenizerData gguf = TokenizerFiles.Load(Fixtures.Get(SpmGguf));
        long ggufMs = sw.ElapsedMilliseconds;
        sw.Restart();
        TokenizerData model = TokenizerFiles.Load(Fixtures.Get(SpmModel));
        long modelMs = sw.ElapsedMilliseconds;
        sw.Restart();
        _ = new ModelTokenizer(model);
        long indexMs = sw.ElapsedMilliseconds;
        Console.WriteLine($"Llama 2 vocabulary load: GGUF {ggufMs} ms, tokenizer.model {modelMs} ms, ModelTokenizer {indexMs} ms");

        SentencePieceTokenizer fromGguf = gguf.SentencePiece!, fromModel = model.SentencePiece!;
        Assert.Equal(32000, fromGguf.Vocabulary.Count);
        Assert.Equal(fromModel.Vocabulary.OrderBy(p => p.Value), fromGguf.Vocabulary.OrderBy(p => p.Value));
        Assert.Equal((0, 1, 2), (fromGguf.UnknownId, fromGguf.BeginningOfSentenceId, fromGguf.EndOfSentenceId));
        Assert.Equal((0, 1, 2), (fromModel.UnknownId, fromModel.BeginningOfSentenceId, fromModel.EndOfSentenceId));
        Assert.True(fromGguf.ByteFallback && fromModel.ByteFallback);
        Assert.True(fromGguf.AddDummyPrefix && fromModel.AddDummyPrefix);
        foreach ((string text, _) in TokenizerVectorTests.SpmVectors)
        {
            Assert.Equal(fromModel.EncodeToIds(text), fromGguf.EncodeToIds(text));
        }

        // Our reading of the tokenizer.model and the ModelProto written from the GGUF agree field by field.
        TokenizerData reread = SentencePieceModelProto.Read(SentencePieceModelProto.Write(gguf, "vocab.gguf"), "written");
        foreach (TokenizerData data in new[] { model, reread })
        {
            Assert.Equal(gguf.Pieces, data.Pieces);
            Assert.Equal(gguf.Scores, data.Scores);
            Assert.Equal(gguf.Types, data.Types);
            Assert.Equal((gguf.UnkId, gguf.BosId, gguf.EosIds[0], gguf.AddSpacePrefix), (data.UnkId, data.BosId, data.EosIds[0], data.AddSpacePrefix));
        }
    }

    /// <summary>
    /// Where the library's SentencePieceTokenizer is not llama.cpp, so ModelTokenizer keeps its own code: special tokens
    /// (llama.cpp gives the raw text after each one the dummy prefix; the library only the start of the text) and
    /// decoding (the library writes control tokens other than BOS/EOS/UNK, and drops the leading space of the first
    /// piece even without BOS). Where they coincide, after BOS, both decode every vector back to its text.
    /// </summary>
    [FixtureFact(SpmModel)]
    public void SpecialTokensAndDecoding_AreOursWhereTheLibraryIsNotLlamaCpp()
    {
        ModelTokenizer tok = ModelTokenizer.Load(Fixtures.Get(SpmModel));
        SentencePieceTokenizer withSpecials;
        using (FileStream model = File.OpenRead(Fixtures.Get(SpmModel)))
        {
            withSpecials = SentencePieceTokenizer.Create(model, false, false, new Dictionary<string, int> { ["<s>"] = 1, ["</s>"] = 2 });
        }

        int hi = tok.Find("▁hi"), there = tok.Find("▁there"), thereNoSpace = tok.Find("there");
        Assert.Equal([1, hi, 2, there], tok.Encode("<s>hi</s>there", addBos: false));
        Assert.Equal([1, hi, 2, thereNoSpace], withSpecials.EncodeToIds("<s>hi</s>there"));

        SentencePieceTokenizer library = TokenizerFiles.Load(Fixtures.Get(SpmModel)).SentencePiece!;
        foreach ((string text, _) in TokenizerVectorTests.SpmVectors)
        {
            int[] ids = tok.Encode(text, parseSpecial: false);
            Assert.Equal(text, tok.Decode(ids));
            Assert.Equal(text, library.Decode(ids));
        }

        Assert.Equal(" Hello world", tok.Decode([15043, 3186]));
        Assert.Equal("Hello world", library.Decode([15043, 3186]));

        var md = Metadata(("▁", -1), ("a", -2), ("<ctl>", 0));
        ((int[])md["tokenizer.ggml.token_type"])[^1] = TokenType.Control;
        TokenizerData data = TokenizerFiles.FromGguf(md, "tiny.gguf");
        int[] withControl = [1, 259, 260, 261, 260];
        Assert.Equal("aa", new ModelTokenizer(data).Decode(withControl));
        Assert.Equal("a<ctl>a", data.SentencePiece!.Decode(withControl));
    }

    [Fact]
    public void ModelProto_RoundTrip_AndWhatTheLibraryCouldNotModelExactly()
    {
        var md = Metadata(("▁", -3), ("a", -2), ("aa", -1));
        md["tokenizer.ggml.add_space_prefix"] = false;
        TokenizerData data = TokenizerFiles.FromGguf(md, "tiny.gguf");
        Assert.False(data.SentencePiece!.AddDummyPrefix);
        TokenizerData reread = SentencePieceModelProto.Read(SentencePieceModelProto.Write(data, "tiny.gguf"), "tiny.model");
        Assert.Equal(data.Pieces, reread.Pieces);
        Assert.Equal(data.Scores, reread.Scores);
        Assert.Equal(data.Types, reread.Types);
        Assert.False(reread.AddSpacePrefix);
        Assert.Equal([261, 260], new ModelTokenizer(data).Encode("aaa", addBos: false));

        // A tokenizer.model is loaded as such, scores, types and all.
        using var dir = new ScratchDirectory();
        string path = Path.Combine(dir.Path, "tokenizer.model");
        File.WriteAllBytes(path, SentencePieceModelProto.Write(data, "tiny.gguf"));
        ModelTokenizer loaded = ModelTokenizer.Load(path);
        Assert.Equal([261, 260], loaded.Encode("aaa", addBos: false));
        Assert.Equal([1, 261, 260], loaded.Encode("aaa"));

        // Without byte pieces a character outside the vocabulary is <unk> (llama.cpp would fail); with only some, refused.
        md = new Dictionary<string, object>
        {
            ["tokenizer.ggml.model"] = "llama",
            ["tokenizer.ggml.tokens"] = new[] { "<unk>", "<s>", "</s>", "▁", "a" },
            ["tokenizer.ggml.scores"] = new float[] { 0, 0, 0, -1, -2 },
        };
        Assert.Equal([3, 4, 0, 4], ModelTokenizer.FromMetadata(md, "nobytes.gguf").Encode("aéa", addBos: false));
        md["tokenizer.ggml.tokens"] = new[] { "<unk>", "<s>", "</s>", "<0x00>", "a" };
        var e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.FromMetadata(md, "somebytes.gguf"));
        Assert.StartsWith("somebytes.gguf: byte_fallback is off and the vocabulary has byte pieces, but not all 256", e.Message);

        // Pieces are unique in SentencePiece (and llama.cpp asserts so); empty ones are renamed as llama.cpp does.
        md["tokenizer.ggml.tokens"] = new[] { "<unk>", "<s>", "</s>", "", "" };
        Assert.Equal(5, ModelTokenizer.FromMetadata(md, "empty.gguf").VocabSize);
        md["tokenizer.ggml.tokens"] = new[] { "<unk>", "<s>", "</s>", "a", "a" };
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.FromMetadata(md, "dup.gguf"));
        Assert.Equal("dup.gguf: the piece 'a' is both token 3 and token 4; a SentencePiece vocabulary has each piece once", e.Message);

        // A ModelProto without trainer_spec is UNIGRAM (its default): not LLaMA's BPE.
        File.WriteAllBytes(path, [0x0A, 0x03, 0x0A, 0x01, (byte)'a']);
        e = Assert.Throws<GpuLlamaException>(() => ModelTokenizer.Load(path));
        Assert.Equal($"{path}: SentencePiece model type UNIGRAM is not supported (LLaMA's SentencePiece models are BPE)", e.Message);
    }
}
