using System.Text;
using System.Text.RegularExpressions;

namespace GpuLlama.Generation;

/// <summary>
/// GPT-2 style byte-level BPE as llama.cpp runs it (<c>llm_tokenizer_bpe_session</c>), for GGUF "gpt2" vocabularies
/// and Hugging Face <c>tokenizer.json</c> files (Llama 3). The text is split by the pre-tokenizer regex, each word's
/// UTF-8 bytes are mapped to printable characters (<see cref="ByteToChar"/>), then the adjacent pair with the lowest
/// merge rank is merged (ties → leftmost) until none is left.
/// </summary>
/// <remarks>
/// Ranks come from the merges list, not from token ids. Microsoft.ML.Tokenizers' <c>TiktokenTokenizer</c> ranks by
/// id, which agrees for Llama 3 (tiktoken-born) but not for byte-level vocabularies in general (GPT-2's among them):
/// <see cref="ModelTokenizer"/> uses the library where <see cref="TiktokenBpe.TryCreate"/> finds it exact and this
/// class, exact for every "gpt2" vocabulary, everywhere else. The pre-tokenizer split (<see cref="Split(Regex, string)"/>)
/// serves both.
/// </remarks>
internal sealed partial class ByteLevelBpe
{
    /// <summary>Llama 3's pre-tokenizer split (llama.cpp <c>LLAMA_VOCAB_PRE_TYPE_LLAMA3</c>, tokenizer.json's Split pattern).</summary>
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2's pre-tokenizer split (HF ByteLevel with use_regex, llama.cpp <c>LLAMA_VOCAB_PRE_TYPE_GPT2</c>).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] s_byteToChar = BuildByteToChar();

    private readonly Dictionary<string, int> _pieceToId;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly Regex _split;
    private readonly bool _ignoreMerges;

    public ByteLevelBpe(Dictionary<string, int> pieceToId, IReadOnlyList<(string Left, string Right)> merges, string pattern, bool ignoreMerges)
    {
        _pieceToId = pieceToId;
        _ranks = new Dictionary<(string, string), int>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            _ranks.TryAdd(merges[i], i);
        }

        _split = SplitRegex(pattern);
        _ignoreMerges = ignoreMerges;
    }

    /// <summary>The known patterns are source-generated (no start-up cost); any other is compiled at load.</summary>
    internal static Regex SplitRegex(string pattern) => pattern switch
    {
        Llama3Pattern => Llama3Regex(),
        Gpt2Pattern => Gpt2Regex(),
        _ => new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled),
    };

    [GeneratedRegex(Llama3Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Llama3Regex();

    [GeneratedRegex(Gpt2Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Gpt2Regex();

    /// <summary>GPT-2's <c>bytes_to_unicode</c>: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    public static char ByteToChar(byte b) => s_byteToChar[b];

    /// <summary>The inverse of <see cref="ByteToChar"/>; -1 for characters outside the map.</summary>
    public static int CharToByte(char c)
    {
        if (c < 0x100 && s_byteToChar[c] == c)
        {
            return c;
        }

        int index = Array.IndexOf(s_byteToChar, c);
        return index;
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }

    public void Tokenize(string text, List<int> output)
    {
        var word = new StringBuilder();
        Span<byte> utf8 = stackalloc byte[4];
        foreach ((int start, int length) in Split(text))
        {
            word.Clear();
            foreach (Rune rune in text.AsSpan(start, length).EnumerateRunes())
            {
                int n = rune.EncodeToUtf8(utf8);
                for (int i = 0; i < n; i++)
                {
                    word.Append(s_byteToChar[utf8[i]]);
                }
            }

            TokenizeWord(word.ToString(), output);
        }
    }

    /// <summary>
    /// The pre-tokenizer's words as (start, length) in <paramref name="text"/>, covering all of it (text between
    /// matches is a word too, as HF's Split "Isolated" behaviour keeps it).
    /// </summary>
    /// <remarks>
    /// The patterns are defined over code points, but .NET's <see cref="Regex"/> sees UTF-16 units, where a character
    /// outside the BMP is two surrogates of category Cs: "🦙abc" would split between the surrogates. So the regex runs
    /// on a shadow string in which each surrogate pair is one BMP stand-in of the same class (letter, number, other)
    /// and the matches are mapped back.
    /// </remarks>
    internal List<(int Start, int Length)> Split(string text) => Split(_split, text);

    /// <inheritdoc cref="Split(string)"/>
    internal static List<(int Start, int Length)> Split(Regex split, string text)
    {
        var words = new List<(int, int)>();
        string subject = text;
        int[]? toOriginal = null;
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0)
        {
            (subject, toOriginal) = Shadow(text);
        }

        int last = 0;
        foreach (ValueMatch m in split.EnumerateMatches(subject))
        {
            if (m.Index > last)
            {
                words.Add((last, m.Index - last));
            }

            words.Add((m.Index, m.Length));
            last = m.Index + m.Length;
        }

        if (last < subject.Length)
        {
            words.Add((last, subject.Length - last));
        }

        if (toOriginal is not null)
        {
            for (int i = 0; i < words.Count; i++)
            {
                (int start, int length) = words[i];
                int from = toOriginal[start];
                words[i] = (from, toOriginal[start + length] - from);
            }
        }

        return words;
    }

    private static (string Shadow, int[] ToOriginal) Shadow(string text)
    {
        var sb = new StringBuilder(text.Length);
        var map = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            map.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var rune = new Rune(text[i], text[i + 1]);
                // ª (Lo) is a letter, ² (No) a number, ¦ (So) neither; none is whitespace, \r, \n or in a contraction.
                sb.Append(Rune.IsLetter(rune) ? '\u00AA' : Rune.IsNumber(rune) ? '\u00B2' : '\u00A6');
                i++;
            }
            else
            {
                sb.Append(text[i]);
            }
        }

        map.Add(text.Length);
        return (sb.ToString(), map.ToArray());
    }

    private readonly record struct Bigram(int Left, int Right, string Text);

    private sealed class RankOrder : IComparer<(int Rank, int Left)>
    {
        public static readonly RankOrder Instance = new();

        public int Compare((int Rank, int Left) x, (int Rank, int Left) y)
        {
            int c = x.Rank.CompareTo(y.Rank);
            return c != 0 ? c : x.Left.CompareTo(y.Left);
        }
    }

    private void TokenizeWord(string word, List<int> output)
    {
        // Llama 3's tokenizer.json sets "ignore_merges": a word that is itself a token is taken whole.
        if (_ignoreMerges && _pieceToId.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }

        // Every mapped byte is one UTF-16 char, so symbols start as single chars.
        int count = word.Length;
        var start = new int[count];
        var length = new int[count];
        var prev = new int[count];
        var next = new int[count];
        for (int i = 0; i < count; i++)
        {
            start[i] = i;
            length[i] = 1;
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }

        var queue = new PriorityQueue<Bigram, (int, int)>(RankOrder.Instance);
        for (int i = 1; i < count; i++)
        {
            AddBigram(i - 1, i);
        }

        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            int l = bigram.Left;
            int r = bigram.Right;
            // Stale entry: a side was merged away or changed since the pair was queued.
            if (length[l] == 0 || length[r] == 0 || next[l] != r || length[l] + length[r] != bigram.Text.Length)
            {
                continue;
            }

            length[l] += length[r];
            length[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0)
            {
                prev[next[r]] = l;
            }

            AddBigram(prev[l], l);
            AddBigram(l, next[l]);
        }

        for (int i = 0; i >= 0; i = next[i])
        {
            string piece = word.Substring(start[i], length[i]);
            if (_pieceToId.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }

            // Not a token: fall back to the single mapped-byte tokens (llama.cpp does the same).
            foreach (char c in piece)
            {
                if (_pieceToId.TryGetValue(c.ToString(), out int byteId))
                {
                    output.Add(byteId);
                }
            }
        }

        void AddBigram(int left, int right)
        {
            if (left < 0 || right < 0)
            {
                return;
            }

            string a = word.Substring(start[left], length[left]);
            string b = word.Substring(start[right], length[right]);
            if (_ranks.TryGetValue((a, b), out int rank))
            {
                queue.Enqueue(new Bigram(left, right, a + b), (rank, left));
            }
        }
    }
}
