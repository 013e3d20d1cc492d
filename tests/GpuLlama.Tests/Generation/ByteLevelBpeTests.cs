using GpuLlama.Generation;
using Xunit;

namespace GpuLlama.Tests.Generation;

public class ByteLevelBpeTests
{
    private static string[] Words(string pattern, string text)
    {
        var bpe = new ByteLevelBpe(new Dictionary<string, int>(), [], pattern, ignoreMerges: false);
        return bpe.Split(text).Select(w => text.Substring(w.Start, w.Length)).ToArray();
    }

    /// <summary>The split works on code points: characters outside the BMP are not cut between their surrogates.</summary>
    [Fact]
    public void Llama3Split_TreatsSupplementaryCharactersAsOneCodePoint()
    {
        Assert.Equal(["🦙abc", " def", " 𝐀𝐁𝐂", "12", " x", "🚀"], Words(ByteLevelBpe.Llama3Pattern, "🦙abc def 𝐀𝐁𝐂12 x🚀"));
        Assert.Equal(["Hello", ",", " world", "!\n", "123", "4"], Words(ByteLevelBpe.Llama3Pattern, "Hello, world!\n1234"));
        Assert.Equal(["I", "'ll", " go", "  ", " now"], Words(ByteLevelBpe.Llama3Pattern, "I'll go   now"));
    }

    [Fact]
    public void Gpt2Split()
    {
        Assert.Equal(["Hello", ",", " world", "!", "\n", "1234", " 𝐀𝐁"], Words(ByteLevelBpe.Gpt2Pattern, "Hello, world!\n1234 𝐀𝐁"));
    }

    [Fact]
    public void ByteMap_IsGpt2BytesToUnicode()
    {
        Assert.Equal('A', ByteLevelBpe.ByteToChar((byte)'A'));
        Assert.Equal('Ġ', ByteLevelBpe.ByteToChar((byte)' '));
        Assert.Equal('Ċ', ByteLevelBpe.ByteToChar((byte)'\n'));
        for (int b = 0; b < 256; b++)
        {
            Assert.Equal(b, ByteLevelBpe.CharToByte(ByteLevelBpe.ByteToChar((byte)b)));
        }

        Assert.Equal(-1, ByteLevelBpe.CharToByte('€'));
    }

    /// <summary>BPE merges by rank, not by the merged token's id, ties to the leftmost pair.</summary>
    [Fact]
    public void Merges_FollowRankOrderNotIds()
    {
        var vocab = new Dictionary<string, int> { ["a"] = 0, ["b"] = 1, ["c"] = 2, ["bc"] = 3, ["ab"] = 4, ["abc"] = 5 };
        // "a b" ranks before "b c" although "ab" has the larger id: "abc" → ab + c → abc.
        var bpe = new ByteLevelBpe(vocab, [("a", "b"), ("b", "c"), ("ab", "c")], ByteLevelBpe.Gpt2Pattern, ignoreMerges: false);
        var output = new List<int>();
        bpe.Tokenize("abc", output);
        Assert.Equal([5], output);

        bpe = new ByteLevelBpe(vocab, [("b", "c"), ("a", "b")], ByteLevelBpe.Gpt2Pattern, ignoreMerges: false);
        output.Clear();
        bpe.Tokenize("abc", output);
        Assert.Equal([0, 3], output);

        output.Clear();
        bpe.Tokenize("abcabc", output);
        Assert.Equal([0, 3, 0, 3], output);
    }

    /// <summary>A byte-level vocabulary: the 256 byte tokens (ids 0-255 in byte order), then <paramref name="extra"/> from id 256.</summary>
    private static ModelTokenizer SmallVocab(string[] extra, (string, string)[] merges, bool useLibrary = true)
    {
        string[] pieces = [.. Enumerable.Range(0, 256).Select(b => ByteLevelBpe.ByteToChar((byte)b).ToString()), .. extra];
        var data = new TokenizerData
        {
            Kind = VocabKind.ByteLevelBpe,
            Pieces = pieces,
            Types = Enumerable.Repeat(TokenType.Normal, pieces.Length).ToArray(),
            Merges = merges,
            Pattern = ByteLevelBpe.Llama3Pattern,
            IgnoreMerges = true,
        };
        return new ModelTokenizer(data, useLibrary);
    }

    /// <summary>Merge ranks that agree with ids and cover every split: the library's tiktoken encodes, like our BPE.</summary>
    [Fact]
    public void AgreeingRanks_UseTheLibrary()
    {
        (string, string)[] merges = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
        ModelTokenizer tokenizer = SmallVocab(["ab", "bc", "abc"], merges);
        Assert.Equal("TiktokenTokenizer", tokenizer.Encoder);
        // "abc" is a token (ignore_merges); "abcbc!" → abc + bc + '!'; "cab" → c + ab.
        Assert.Equal([258, 257, '!', 'c', 256], tokenizer.Encode("abcbc!cab", addBos: false));
        Assert.Equal([258, 32, 'x', 'y'], tokenizer.Encode("abc xy", addBos: false));
        ModelTokenizer ours = SmallVocab(["ab", "bc", "abc"], merges, useLibrary: false);
        Assert.Equal("ByteLevelBpe", ours.Encoder);
        Assert.Equal(ours.Encode("abcbc!cab abc xy", addBos: false), tokenizer.Encode("abcbc!cab abc xy", addBos: false));
    }

    /// <summary>"b c" ranks before "a b" but "ab" has the smaller id: tiktoken would give ab + c, BPE gives a + bc.</summary>
    [Fact]
    public void DisagreeingRanks_FallBackToByteLevelBpe()
    {
        ModelTokenizer tokenizer = SmallVocab(["ab", "bc"], [("b", "c"), ("a", "b")]);
        Assert.Equal("ByteLevelBpe", tokenizer.Encoder);
        Assert.Equal(['a', 257], tokenizer.Encode("abc", addBos: false));
        Assert.Equal([256, 'a', 257], tokenizer.Encode("ababc", addBos: false));
    }

    /// <summary>"abc" can be split into a + bc, both tokens, but only "ab c" is a merge: tiktoken would merge a + bc.</summary>
    [Fact]
    public void IncompleteMerges_FallBackToByteLevelBpe()
    {
        // BPE on "xbcabc"-like words: bc (rank 0) first, then a + bc is no merge, so "abc" stays a + bc.
        ModelTokenizer tokenizer = SmallVocab(["bc", "ab", "abc"], [("b", "c"), ("a", "b"), ("ab", "c")]);
        Assert.Equal("ByteLevelBpe", tokenizer.Encoder);
        Assert.Equal(['x', 'a', 256], tokenizer.Encode("xabc", addBos: false));
    }

    /// <summary>Without ignore_merges (GPT-2's pre-tokenizer) tiktoken's whole-word lookup is not BPE's rule.</summary>
    [Fact]
    public void WithoutIgnoreMerges_FallBackToByteLevelBpe()
    {
        string[] pieces = [.. Enumerable.Range(0, 256).Select(b => ByteLevelBpe.ByteToChar((byte)b).ToString()), "ab"];
        var data = new TokenizerData
        {
            Kind = VocabKind.ByteLevelBpe,
            Pieces = pieces,
            Types = Enumerable.Repeat(TokenType.Normal, pieces.Length).ToArray(),
            Merges = [("a", "b")],
            Pattern = ByteLevelBpe.Gpt2Pattern,
            IgnoreMerges = false,
        };
        var tokenizer = new ModelTokenizer(data);
        Assert.Equal("ByteLevelBpe", tokenizer.Encoder);
        Assert.Equal([256, 'c'], tokenizer.Encode("abc", addBos: false));
    }
}
