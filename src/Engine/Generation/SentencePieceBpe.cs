using System.Runtime.InteropServices;
using System.Text;

namespace GpuLlama.Generation;

/// <summary>
/// The SentencePiece merge step exactly as llama.cpp runs it (<c>llm_tokenizer_spm_session::tokenize</c>), used for
/// every SentencePiece vocabulary (GGUF "llama", <c>tokenizer.model</c>, llama2.c <c>tokenizer.bin</c>).
/// We do not use Microsoft.ML.Tokenizers' <c>LlamaTokenizer</c> for this: it orders merges differently in runs of
/// repeated punctuation ("!!!!!!") and so disagrees with llama.cpp on 2 of its 46 <c>llama-spm</c> test vectors,
/// and it cannot be built from GGUF or llama2.c vocabularies anyway.
/// </summary>
/// <remarks>
/// The text (already whitespace-escaped to "▁") is split into UTF-8 characters; then the adjacent pair whose
/// concatenation is a vocabulary piece with the highest score is merged, ties going to the leftmost pair, until no
/// pair merges. A final symbol that is not a piece is re-split along the merges that built it, and a character that
/// is in no piece falls back to its <c>&lt;0xXX&gt;</c> byte tokens (<c>&lt;unk&gt;</c> where the vocabulary has none).
/// </remarks>
internal sealed class SentencePieceBpe
{
    private readonly Dictionary<string, int> _pieceToId;
    private readonly float[] _scores;
    private readonly int[] _byteTokens;
    private readonly int _unkId;

    public SentencePieceBpe(Dictionary<string, int> pieceToId, float[] scores, int[] byteTokens, int unkId)
    {
        _pieceToId = pieceToId;
        _scores = scores;
        _byteTokens = byteTokens;
        _unkId = unkId;
    }

    private struct Symbol
    {
        public int Prev;
        public int Next;
        public int Start;   // offset in the text (UTF-16 units)
        public int Length;  // 0 once merged into its left neighbour
    }

    private readonly record struct Bigram(int Left, int Right, float Score, int Length);

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

    /// <summary>Appends the tokens of <paramref name="text"/> (whitespace already escaped) to <paramref name="output"/>.</summary>
    public void Tokenize(string text, List<int> output)
    {
        if (text.Length == 0)
        {
            return;
        }

        // One symbol per Unicode scalar (llama.cpp splits on UTF-8 character boundaries; a surrogate pair is one character).
        var symbols = new List<Symbol>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            symbols.Add(new Symbol { Prev = symbols.Count - 1, Next = i + len < text.Length ? symbols.Count + 1 : -1, Start = i, Length = len });
            i += len;
        }

        Span<Symbol> sym = CollectionsMarshal.AsSpan(symbols);
        var queue = new PriorityQueue<Bigram, (float, int)>(BigramOrder.Instance);
        // How a merged piece was built (length of its left part), for re-splitting final symbols that are not pieces.
        var revMerge = new Dictionary<string, int>(StringComparer.Ordinal);

        for (int i = 1; i < sym.Length; i++)
        {
            TryAddBigram(text, sym, i - 1, i, queue, revMerge);
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
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                sym[right.Next].Prev = bigram.Left;
            }

            TryAddBigram(text, sym, left.Prev, bigram.Left, queue, revMerge);
            TryAddBigram(text, sym, bigram.Left, left.Next, queue, revMerge);
        }

        for (int i = 0; i >= 0; i = sym[i].Next)
        {
            Resegment(text, sym[i].Start, sym[i].Length, revMerge, output);
        }
    }

    private void TryAddBigram(string text, Span<Symbol> sym, int left, int right, PriorityQueue<Bigram, (float, int)> queue,
        Dictionary<string, int> revMerge)
    {
        if (left < 0 || right < 0)
        {
            return;
        }

        int length = sym[left].Length + sym[right].Length;
        string piece = text.Substring(sym[left].Start, length);
        if (!_pieceToId.TryGetValue(piece, out int id))
        {
            return;
        }

        queue.Enqueue(new Bigram(left, right, _scores[id], length), (_scores[id], left));
        revMerge[piece] = sym[left].Length;
    }

    // llama.cpp's resegment(): a piece → its id; else split along the merge that built it; else byte fallback.
    private void Resegment(string text, int start, int length, Dictionary<string, int> revMerge, List<int> output)
    {
        string piece = text.Substring(start, length);
        if (_pieceToId.TryGetValue(piece, out int id))
        {
            output.Add(id);
            return;
        }

        if (revMerge.TryGetValue(piece, out int leftLength))
        {
            // The split is recorded by length: the same piece text splits the same way wherever it occurs.
            Resegment(text, start, leftLength, revMerge, output);
            Resegment(text, start + leftLength, length - leftLength, revMerge, output);
            return;
        }

        Span<byte> utf8 = stackalloc byte[16];
        int n = Encoding.UTF8.GetBytes(piece.AsSpan(), utf8);
        for (int b = 0; b < n; b++)
        {
            int token = _byteTokens[utf8[b]];
            output.Add(token >= 0 ? token : _unkId);
        }
    }
}
