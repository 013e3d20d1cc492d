using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace GpuLlama.Generation;

/// <summary>
/// Byte-level BPE through Microsoft.ML.Tokenizers' <see cref="TiktokenTokenizer"/>, used whenever it gives exactly
/// what llama.cpp's merge-ranked BPE (<see cref="ByteLevelBpe"/>) gives. Tiktoken ranks a candidate pair by the id of
/// the token it forms and merges any adjacent pair that forms a token; GPT-2 style BPE ranks by position in the merges
/// list and merges only listed pairs. The two agree when (checked at load by <see cref="TryCreate"/>):
/// <list type="bullet">
/// <item>the merged token's id never decreases along the merges list (several merges may form the same token: HF's
/// tiktoken converter lists every split), so rank-by-id orders merges as rank-by-merge does;</item>
/// <item>every split of a token into two tokens is a listed merge, so tiktoken merges nothing BPE would not;</item>
/// <item>every merge forms a normal token and all 256 single-byte tokens exist, so BPE never falls back to bytes;</item>
/// <item>the vocabulary has ignore_merges (tiktoken takes a word that is a token whole, as Llama 3's tokenizer.json
/// and llama.cpp's <c>LLAMA_VOCAB_PRE_TYPE_LLAMA3</c> do), and no control or user-defined token is such a word.</item>
/// </list>
/// Llama 3 (tiktoken-born) satisfies all of them; GPT-2's one-merge-per-token list does not and keeps
/// <see cref="ByteLevelBpe"/>.
/// </summary>
/// <remarks>
/// The library gets our pre-tokenizer split (<see cref="ByteLevelBpe.Split(Regex, string)"/>): its
/// <see cref="RegexPreTokenizer"/> would run the pattern on UTF-16 units and cut characters outside the BMP between
/// their surrogates. It gets no special tokens: <see cref="ModelTokenizer"/> cuts them out first (honouring
/// parse_special), and handing them over would let a raw fragment that spells one become that token.
/// </remarks>
internal static class TiktokenBpe
{
    /// <summary>The library tokenizer for this vocabulary, or null when it would not be exact (see the class remarks).</summary>
    public static Tokenizer? TryCreate(
        string[] pieces, int[] types, Dictionary<string, int> pieceToId, IReadOnlyList<(string Left, string Right)> merges, string pattern, bool ignoreMerges)
    {
        if (!ignoreMerges)
        {
            return null;
        }

        // The tokens tiktoken may form: normal pieces made only of mapped bytes (the last id of a duplicated piece).
        var ranked = new bool[pieces.Length];
        for (int id = 0; id < pieces.Length; id++)
        {
            string piece = pieces[id];
            ranked[id] = types[id] == TokenType.Normal && piece.Length > 0 && pieceToId[piece] == id && IsByteLevel(piece);
        }

        var lookup = pieceToId.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int b = 0; b < 256; b++)
        {
            if (!lookup.TryGetValue([ByteLevelBpe.ByteToChar((byte)b)], out int id) || !ranked[id])
            {
                return null;
            }
        }

        // Live merges (both sides can occur: reachable symbols are single bytes and merge results) in list order.
        var seen = new HashSet<long>(merges.Count);
        int previous = -1;
        Span<char> buffer = stackalloc char[256];
        foreach ((string left, string right) in merges)
        {
            if (!IsRankedPiece(left) || !IsRankedPiece(right))
            {
                continue;
            }

            int length = left.Length + right.Length;
            Span<char> joined = length <= buffer.Length ? buffer[..length] : new char[length];
            left.CopyTo(joined);
            right.CopyTo(joined[left.Length..]);
            if (!lookup.TryGetValue(joined, out int id) || !ranked[id] || id < previous)
            {
                return null;
            }

            previous = id;
            seen.Add(((long)id << 32) | (uint)left.Length);
        }

        // Completeness: each split of a token into two tokens is a merge. The merges are a subset of these splits,
        // so counting suffices.
        long splits = 0;
        for (int id = 0; id < pieces.Length; id++)
        {
            if (!ranked[id])
            {
                continue;
            }

            ReadOnlySpan<char> piece = pieces[id];
            for (int cut = 1; cut < piece.Length; cut++)
            {
                if (IsRankedSpan(piece[..cut]) && IsRankedSpan(piece[cut..]))
                {
                    splits++;
                }
            }
        }

        if (splits != seen.Count)
        {
            return null;
        }

        // ignore_merges looks every word up among all pieces; tiktoken among its ranks only. A control or
        // user-defined piece that the pre-tokenizer can produce as one word would tell them apart.
        Regex split = ByteLevelBpe.SplitRegex(pattern);
        for (int id = 0; id < pieces.Length; id++)
        {
            string piece = pieces[id];
            if (!ranked[id] && piece.Length > 0 && pieceToId[piece] == id && IsByteLevel(piece)
                && TextOf(piece) is { } text && ByteLevelBpe.Split(split, text) is [(0, int wordLength)] && wordLength == text.Length)
            {
                return null;
            }
        }

        return TiktokenTokenizer.Create(RanksStream(pieces, ranked), new WordSplitter(split), normalizer: null, specialTokens: null);

        bool IsRankedPiece(string piece) => lookup.TryGetValue(piece, out int id) && ranked[id];

        bool IsRankedSpan(ReadOnlySpan<char> piece) => lookup.TryGetValue(piece, out int id) && ranked[id];
    }

    private static bool IsByteLevel(string piece)
    {
        foreach (char c in piece)
        {
            if (ByteLevelBpe.CharToByte(c) < 0)
            {
                return false;
            }
        }

        return true;
    }

    private static byte[] BytesOf(string piece)
    {
        var bytes = new byte[piece.Length];
        for (int i = 0; i < piece.Length; i++)
        {
            bytes[i] = (byte)ByteLevelBpe.CharToByte(piece[i]);
        }

        return bytes;
    }

    /// <summary>The text a byte-level piece stands for, or null when its bytes are not valid UTF-8.</summary>
    private static string? TextOf(string piece)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(BytesOf(piece));
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }

    /// <summary>The ranks in tiktoken's file format ("Capacity: n", then "base64(bytes) rank" lines), rank = token id.</summary>
    private static MemoryStream RanksStream(string[] pieces, bool[] ranked)
    {
        var stream = new MemoryStream();
        using (var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true))
        {
            writer.Write("Capacity: ");
            writer.Write(ranked.Count(r => r));
            writer.Write('\n');
            for (int id = 0; id < pieces.Length; id++)
            {
                if (ranked[id])
                {
                    writer.Write(Convert.ToBase64String(BytesOf(pieces[id])));
                    writer.Write(' ');
                    writer.Write(id);
                    writer.Write('\n');
                }
            }
        }

        stream.Position = 0;
        return stream;
    }

    /// <summary>The pre-tokenizer words of <see cref="ByteLevelBpe"/>, code-point exact.</summary>
    private sealed class WordSplitter(Regex split) : PreTokenizer
    {
        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
            => string.IsNullOrEmpty(text) ? [] : ByteLevelBpe.Split(split, text);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
            => text.IsEmpty ? [] : ByteLevelBpe.Split(split, text.ToString());
    }
}
