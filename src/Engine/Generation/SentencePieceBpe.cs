using System.Runtime.InteropServices;
using Microsoft.ML.Tokenizers;

namespace GpuLlama.Generation;

/// <summary>
/// SentencePiece BPE encoding of raw text as llama.cpp does it (<c>llm_tokenizer_spm_session::tokenize</c>), for every
/// SentencePiece vocabulary (GGUF "llama", <c>tokenizer.model</c>, llama2.c <c>tokenizer.bin</c>): Microsoft.ML.Tokenizers'
/// <see cref="SentencePieceNormalizer"/> escapes the text, our merge step merges it, and the library's
/// <see cref="SentencePieceTokenizer"/> (the vocabulary's own SentencePiece model, see <see cref="SentencePieceModelProto"/>)
/// byte-falls back what is left that is no piece.
/// </summary>
/// <remarks>
/// <para>
/// Why the merge step is ours. The library's SentencePiece BPE (behind <see cref="SentencePieceTokenizer"/> and
/// <see cref="LlamaTokenizer"/>, version 2.0.1) merges the highest-scoring adjacent pair first, as SentencePiece and
/// llama.cpp do, but breaks a tie between equal scores toward the rightmost pair (its internal
/// <c>SentencePieceBpeModel.SymbolPair.CompareTo</c> orders equal scores by descending left index), where SentencePiece's
/// <c>bpe_model.cc</c> and llama.cpp's <c>llm_bigram_spm::comparator</c> take the leftmost. Equal scores meet wherever
/// one piece can form at overlapping places, i.e. in runs of a repeated character: Llama 2 encodes "!!!!!!" as
/// ▁!! !! !!! (1738 6824 21004) in llama.cpp and ▁!! !!! !! (1738 21004 6824) in the library, and such runs make the
/// library miss 2 of llama.cpp's 46 <c>llama-spm</c> test vectors (SentencePieceBpeTests shows both).
/// The step cannot be swapped inside the library (the model class, its constructors and the ModelProto it takes are
/// internal; <see cref="SentencePieceTokenizer.Create"/> takes only a stream), and re-scoring the model cannot steer it
/// (the tied pairs are the same piece, with the same score), so the step is replaced: the library gets each run of
/// characters the merge left unmerged and not in the vocabulary, on which its own merge has nothing to merge and only
/// its byte fallback acts.
/// </para>
/// <para>
/// Like llama.cpp, the merge treats every piece alike (SentencePiece would re-split UNUSED pieces; Llama vocabularies
/// have none) and each merged symbol is a piece, so llama.cpp's re-segmentation of final symbols reduces to byte
/// fallback of single characters.
/// </para>
/// </remarks>
internal sealed class SentencePieceBpe
{
    // llama.cpp: add_space_prefix prepends " " to raw text after BOS or a special token, then llama_escape_whitespace
    // turns every ' ' into '▁'. No other normalization (no character map, no whitespace folding).
    private static readonly SentencePieceNormalizer s_withDummyPrefix = new(
        removeExtraWhiteSpaces: false, addDummyPrefix: true, escapeWhiteSpaces: true, treatWhitespaceAsSuffix: false, specialTokens: null);

    private static readonly SentencePieceNormalizer s_escapeOnly = new(
        removeExtraWhiteSpaces: false, addDummyPrefix: false, escapeWhiteSpaces: true, treatWhitespaceAsSuffix: false, specialTokens: null);

    private readonly SentencePieceTokenizer _library;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _pieceToId;
    private readonly float[] _scores;

    /// <param name="library">The vocabulary's SentencePiece model, for byte fallback.</param>
    /// <param name="pieceToId">Every piece (llama.cpp's text_to_token), including pieces added past the model.</param>
    /// <param name="scores">The score of each id; merges rank by it.</param>
    public SentencePieceBpe(SentencePieceTokenizer library, Dictionary<string, int> pieceToId, float[] scores)
    {
        _library = library;
        _pieceToId = pieceToId.GetAlternateLookup<ReadOnlySpan<char>>();
        _scores = scores;
    }

    /// <summary>
    /// Appends the ids of raw text (no special tokens in it) to <paramref name="output"/>; <paramref name="dummyPrefix"/>
    /// when it follows BOS or a special token and the vocabulary has add_dummy_prefix.
    /// </summary>
    public void Encode(ReadOnlySpan<char> fragment, bool dummyPrefix, List<int> output)
    {
        if (fragment.IsEmpty)
        {
            return;
        }

        string text = (dummyPrefix ? s_withDummyPrefix : s_escapeOnly).Normalize(fragment);
        List<Symbol> symbols = Merge(text);
        Span<Symbol> sym = CollectionsMarshal.AsSpan(symbols);
        int unknownStart = -1;
        int unknownEnd = 0;
        for (int i = 0; i >= 0; i = sym[i].Next)
        {
            if (sym[i].Id >= 0)
            {
                ByteFallback(text, ref unknownStart, unknownEnd, output);
                output.Add(sym[i].Id);
            }
            else
            {
                unknownStart = unknownStart < 0 ? sym[i].Start : unknownStart;
                unknownEnd = sym[i].Start + sym[i].Length;
            }
        }

        ByteFallback(text, ref unknownStart, unknownEnd, output);
    }

    // No two adjacent characters of such a run form a piece (the merge would have merged them), so the library's merge
    // leaves it alone and its byte fallback gives each character's <0xXX> pieces (or <unk> when the vocabulary has none).
    private void ByteFallback(string text, ref int start, int end, List<int> output)
    {
        if (start >= 0)
        {
            output.AddRange(_library.EncodeToIds(text.AsSpan(start, end - start), addBeginningOfSentence: false, addEndOfSentence: false,
                considerPreTokenization: false, considerNormalization: false));
            start = -1;
        }
    }

    /// <summary>A symbol of the merge: a span of the normalized text and its piece id (-1 when it is no piece).</summary>
    private struct Symbol
    {
        public int Prev;
        public int Next;
        public int Start;
        public int Length; // 0 once merged into its left neighbour
        public int Id;
    }

    private readonly record struct Bigram(int Left, int Right, int Length, int Id);

    /// <summary>llama.cpp's <c>llm_bigram_spm::comparator</c>: highest score first, then the leftmost pair.</summary>
    private sealed class BigramOrder : IComparer<(float Score, int Left)>
    {
        public static readonly BigramOrder Instance = new();

        public int Compare((float Score, int Left) x, (float Score, int Left) y)
        {
            int c = y.Score.CompareTo(x.Score);
            return c != 0 ? c : x.Left.CompareTo(y.Left);
        }
    }

    /// <summary>
    /// The merge step: the text is split into characters (Unicode scalars, as llama.cpp splits UTF-8); then the adjacent
    /// pair whose concatenation is a piece with the highest score is merged, ties going to the leftmost pair, until no
    /// pair merges. Returns the symbols, linked from index 0 through <see cref="Symbol.Next"/>.
    /// </summary>
    private List<Symbol> Merge(string text)
    {
        var symbols = new List<Symbol>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            symbols.Add(new Symbol
            {
                Prev = symbols.Count - 1,
                Next = i + len < text.Length ? symbols.Count + 1 : -1,
                Start = i,
                Length = len,
                Id = _pieceToId.TryGetValue(text.AsSpan(i, len), out int id) ? id : -1,
            });
            i += len;
        }

        Span<Symbol> sym = CollectionsMarshal.AsSpan(symbols);
        var queue = new PriorityQueue<Bigram, (float, int)>(sym.Length, BigramOrder.Instance);
        for (int i = 1; i < sym.Length; i++)
        {
            TryAddBigram(text, sym, i - 1, i, queue);
        }

        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            ref Symbol left = ref sym[bigram.Left];
            ref Symbol right = ref sym[bigram.Right];

            // Stale entry: one side was merged away, or grew since the pair was queued.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length)
            {
                continue;
            }

            left.Length += right.Length;
            left.Id = bigram.Id;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                sym[right.Next].Prev = bigram.Left;
            }

            TryAddBigram(text, sym, left.Prev, bigram.Left, queue);
            TryAddBigram(text, sym, bigram.Left, left.Next, queue);
        }

        return symbols;
    }

    private void TryAddBigram(string text, Span<Symbol> sym, int left, int right, PriorityQueue<Bigram, (float, int)> queue)
    {
        if (left < 0 || right < 0)
        {
            return;
        }

        int length = sym[left].Length + sym[right].Length;
        if (_pieceToId.TryGetValue(text.AsSpan(sym[left].Start, length), out int id))
        {
            queue.Enqueue(new Bigram(left, right, length, id), (_scores[id], left));
        }
    }
}
