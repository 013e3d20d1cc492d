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
}
