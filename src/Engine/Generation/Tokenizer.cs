using System.Text;
using GpuLlama.Formats;
using Microsoft.ML.Tokenizers;

namespace GpuLlama.Generation;

/// <summary>Which merge algorithm a vocabulary uses (llama.cpp's <c>LLAMA_VOCAB_TYPE_SPM</c> / <c>_BPE</c>).</summary>
internal enum VocabKind
{
    SentencePiece,
    ByteLevelBpe,
}

/// <summary>llama.cpp's <c>llama_token_type</c> values, which are also SentencePiece's piece types.</summary>
internal static class TokenType
{
    public const int Undefined = 0;
    public const int Normal = 1;
    public const int Unknown = 2;
    public const int Control = 3;
    public const int UserDefined = 4;
    public const int Unused = 5;
    public const int Byte = 6;
}

/// <summary>
/// The model's tokenizer, built from whatever the model came with (GGUF metadata, <c>tokenizer.model</c>,
/// <c>tokenizer.json</c>, llama2.c <c>tokenizer.bin</c>), behaving like llama.cpp's <c>llama_tokenize</c> /
/// <c>llama_token_to_piece</c> so that prompts give llama.cpp's ids.
/// SentencePiece vocabularies encode through <see cref="SentencePieceBpe"/>: Microsoft.ML.Tokenizers'
/// <see cref="SentencePieceTokenizer"/> model, normalizer and byte fallback around our own merge step (it says why).
/// Byte-level BPE ones use the library's <see cref="TiktokenTokenizer"/> when the vocabulary passes the exactness check
/// of <see cref="TiktokenBpe"/> (Llama 3 does), else our merge-ranked <see cref="ByteLevelBpe"/>.
/// Special tokens are cut out here first (<see cref="Partition"/>) whichever encodes the rest.
/// </summary>
/// <remarks>
/// <para>
/// Special tokens are ours for every vocabulary: llama.cpp cuts them out longest first, control ones only with
/// parse_special and user-defined ones always, and gives the raw text after each of them SentencePiece's dummy prefix.
/// The library's special tokens (a fixed set per tokenizer, split by a regex alternation, dummy prefix only at the start
/// of the text) would give "&lt;s&gt;hi&lt;/s&gt;there" "there" where llama.cpp gives "▁there".
/// </para>
/// <para>
/// Decoding is ours for every vocabulary: a token's text is a precomputed byte table lookup, which gives llama.cpp's
/// token_to_piece rules (control tokens write nothing, SentencePiece byte tokens and "▁") and lets
/// <see cref="StreamingDecoder"/> hold incomplete UTF-8 across tokens, which the library's string Decode cannot.
/// <see cref="SentencePieceTokenizer.Decode(IEnumerable{int})"/> agrees with it after BOS, but writes control tokens
/// other than BOS/EOS/UNK as text and drops the dummy-prefix space of the first piece whatever precedes it, so that a
/// continuation decoded on its own would lose the space between words.
/// </para>
/// </remarks>
public sealed class ModelTokenizer
{
    private readonly string[] _pieces;
    private readonly int[] _types;
    private readonly Dictionary<string, int> _pieceToId;
    private readonly bool _addEos;
    private readonly byte[][] _text;
    private readonly int[] _specials; // control / unknown / user-defined ids, longest text first
    private readonly HashSet<int> _eos;
    private readonly SentencePieceBpe? _spm;
    private readonly ByteLevelBpe? _bpe;
    private readonly Tokenizer? _tiktoken;

    /// <param name="data">The vocabulary.</param>
    /// <param name="useLibrary">False forces our <see cref="ByteLevelBpe"/> even where the library is exact (tests, timings).</param>
    internal ModelTokenizer(TokenizerData data, bool useLibrary = true)
    {
        _pieces = data.Pieces;
        _types = data.Types;
        Kind = data.Kind;
        BosId = data.BosId;
        AddBos = data.AddBos && data.BosId >= 0;
        _addEos = data.AddEos && data.EosIds.Count > 0 && data.EosIds[0] >= 0;
        AddSpacePrefix = data.AddSpacePrefix;
        ChatTemplate = data.ChatTemplate;
        EosIds = data.EosIds.Distinct().Where(id => id >= 0).ToArray();
        _eos = [.. EosIds];

        var pieceToId = _pieceToId = new Dictionary<string, int>(_pieces.Length, StringComparer.Ordinal);
        for (int id = 0; id < _pieces.Length; id++)
        {
            if (_types[id] != TokenType.Unused || _pieces[id].Length > 0)
            {
                // llama.cpp's token_to_id keeps the last id of a duplicated piece; so do we.
                pieceToId[_pieces[id]] = id;
            }
        }

        _text = new byte[_pieces.Length][];
        for (int id = 0; id < _pieces.Length; id++)
        {
            _text[id] = PieceText(id);
        }

        _specials = Enumerable.Range(0, _pieces.Length)
            .Where(id => _types[id] is TokenType.Control or TokenType.Unknown or TokenType.UserDefined && _pieces[id].Length > 0)
            .OrderByDescending(id => _pieces[id].Length)
            .ThenBy(id => id)
            .ToArray();

        if (Kind == VocabKind.SentencePiece)
        {
            SentencePieceTokenizer library = data.SentencePiece
                ?? throw new InvalidOperationException("a SentencePiece vocabulary needs its library model (TokenizerFiles builds it)");
            _spm = new SentencePieceBpe(library, pieceToId, data.Scores ?? new float[_pieces.Length]);
        }
        else
        {
            IReadOnlyList<(string, string)> merges = data.Merges ?? [];
            string pattern = data.Pattern ?? ByteLevelBpe.Gpt2Pattern;
            _tiktoken = useLibrary ? TiktokenBpe.TryCreate(_pieces, _types, pieceToId, merges, pattern, data.IgnoreMerges) : null;
            if (_tiktoken is null)
            {
                _bpe = new ByteLevelBpe(pieceToId, merges, pattern, data.IgnoreMerges);
            }
        }
    }

    internal VocabKind Kind { get; }

    /// <summary>What encodes raw text: <see cref="SentencePieceBpe"/>, the library's tiktoken or our <see cref="ByteLevelBpe"/>.</summary>
    internal string Encoder => _spm is not null ? nameof(SentencePieceBpe) : _tiktoken is not null ? nameof(TiktokenTokenizer) : nameof(ByteLevelBpe);

    public int VocabSize => _pieces.Length;

    public int BosId { get; }

    /// <summary>EOS and the end-of-turn tokens that also end generation (e.g. Llama 3's &lt;|eot_id|&gt;).</summary>
    public IReadOnlyList<int> EosIds { get; }

    /// <summary>Whether <see cref="Encode"/> prepends BOS (the vocabulary's add_bos_token).</summary>
    public bool AddBos { get; }

    /// <summary>SentencePiece's add_dummy_prefix: raw text after BOS / a special token gets a leading "▁".</summary>
    public bool AddSpacePrefix { get; }

    /// <summary>The Jinja chat template the model shipped with, or null.</summary>
    public string? ChatTemplate { get; }

    public bool IsEos(int id) => _eos.Contains(id);

    /// <summary>The raw vocabulary piece ("▁Hello", "Ġworld", "&lt;0x0A&gt;", "&lt;s&gt;").</summary>
    public string Piece(int id)
    {
        CheckId(id);
        return _pieces[id];
    }

    /// <summary>The id of a piece written exactly as in the vocabulary, or -1.</summary>
    public int Find(string piece) => _pieceToId.TryGetValue(piece, out int id) ? id : -1;

    /// <summary>
    /// llama.cpp's <c>llama_tokenize(text, add_special: addBos, parse_special)</c>: BOS when <paramref name="addBos"/>
    /// and the vocabulary adds it (and EOS at the end for the rare vocabularies with add_eos_token); control tokens
    /// written in the text ("&lt;|eot_id|&gt;", "&lt;s&gt;") become their ids when <paramref name="parseSpecial"/>;
    /// user-defined tokens always do.
    /// </summary>
    public int[] Encode(string text, bool addBos = true, bool parseSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && AddBos)
        {
            output.Add(BosId);
        }

        if (text.Length == 0)
        {
            AppendEos(output, addBos);
            return output.ToArray();
        }

        // llama.cpp's is_prev_special starts true: the first raw fragment gets the dummy prefix too.
        bool prevSpecial = true;
        foreach ((int token, int start, int length) in Partition(text, parseSpecial))
        {
            if (token >= 0)
            {
                output.Add(token);
                prevSpecial = true;
                continue;
            }

            string fragment = text.Substring(start, length);
            if (_spm is not null)
            {
                // llama.cpp: the dummy-prefix space goes before raw text that follows BOS or a special token.
                _spm.Encode(fragment, dummyPrefix: AddSpacePrefix && prevSpecial, output);
            }
            else if (_tiktoken is not null)
            {
                output.AddRange(_tiktoken.EncodeToIds(fragment, considerPreTokenization: true, considerNormalization: false));
            }
            else
            {
                _bpe!.Tokenize(fragment, output);
            }

            prevSpecial = false;
        }

        AppendEos(output, addBos);
        return output.ToArray();
    }

    private void AppendEos(List<int> output, bool addSpecial)
    {
        if (addSpecial && _addEos)
        {
            output.Add(EosIds[0]);
        }
    }

    /// <summary>The text of <paramref name="ids"/>; equals the concatenated output of a <see cref="StreamingDecoder"/>.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var decoder = CreateStreamingDecoder();
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            sb.Append(decoder.Push(id));
        }

        sb.Append(decoder.Flush());
        return sb.ToString();
    }

    public StreamingDecoder CreateStreamingDecoder() => new(this);

    /// <summary>The bytes a token contributes to the text (llama.cpp <c>token_to_piece</c> with special=false).</summary>
    internal ReadOnlySpan<byte> TextBytes(int id)
    {
        CheckId(id);
        return _text[id];
    }

    /// <summary>Whether the first text after this token has the dummy-prefix space to drop (SPM, after BOS).</summary>
    internal bool StripsSpaceAfter(int id) => AddSpacePrefix && _spm is not null && id == BosId;

    private void CheckId(int id)
    {
        if ((uint)id >= (uint)_pieces.Length)
        {
            throw new GpuLlamaException($"token id {id} is outside the vocabulary (size {_pieces.Length})");
        }
    }

    private byte[] PieceText(int id)
    {
        string piece = _pieces[id];
        switch (_types[id])
        {
            // llama.cpp's token_to_piece(special: false) writes nothing for control and unknown tokens.
            case TokenType.Control:
            case TokenType.Unknown:
            case TokenType.Unused:
            case TokenType.Undefined when piece.Length == 0:
                return [];
            case TokenType.UserDefined:
                return Encoding.UTF8.GetBytes(piece);
            case TokenType.Byte when Kind == VocabKind.SentencePiece && TryParseByteToken(piece, out byte value):
                return [value];
        }

        if (Kind == VocabKind.SentencePiece)
        {
            return Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
        }

        // Byte-level: every char of the piece stands for one byte (GPT-2 bytes_to_unicode); anything else is kept as UTF-8.
        Span<byte> bytes = piece.Length <= 256 ? stackalloc byte[piece.Length * 3] : new byte[piece.Length * 3];
        int n = 0;
        foreach (char c in piece)
        {
            int b = ByteLevelBpe.CharToByte(c);
            if (b >= 0)
            {
                bytes[n++] = (byte)b;
            }
            else
            {
                n += Encoding.UTF8.GetBytes([c], bytes[n..]);
            }
        }

        return bytes[..n].ToArray();
    }

    internal static bool TryParseByteToken(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }

    /// <summary>
    /// llama.cpp's <c>tokenizer_st_partition</c>: special tokens, longest first, are cut out of the raw text; what is
    /// left stays raw. Control and unknown tokens only when <paramref name="parseSpecial"/>, user-defined ones always.
    /// Returns (token, -, -) for a special token and (-1, start, length) for raw text.
    /// </summary>
    private List<(int Token, int Start, int Length)> Partition(string text, bool parseSpecial)
    {
        var fragments = new List<(int Token, int Start, int Length)> { (-1, 0, text.Length) };
        foreach (int id in _specials)
        {
            if (!parseSpecial && _types[id] != TokenType.UserDefined)
            {
                continue;
            }

            string special = _pieces[id];
            if (text.IndexOf(special, StringComparison.Ordinal) < 0)
            {
                continue;
            }

            var next = new List<(int Token, int Start, int Length)>(fragments.Count + 4);
            foreach ((int token, int start, int length) in fragments)
            {
                if (token >= 0)
                {
                    next.Add((token, start, length));
                    continue;
                }

                int pos = start;
                int end = start + length;
                while (pos < end)
                {
                    int hit = text.IndexOf(special, pos, end - pos, StringComparison.Ordinal);
                    if (hit < 0)
                    {
                        break;
                    }

                    if (hit > pos)
                    {
                        next.Add((-1, pos, hit - pos));
                    }

                    next.Add((id, hit, special.Length));
                    pos = hit + special.Length;
                }

                if (pos < end)
                {
                    next.Add((-1, pos, end - pos));
                }
            }

            fragments = next;
        }

        return fragments;
    }

    /// <summary>Builds the tokenizer from GGUF <c>tokenizer.ggml.*</c> metadata (a model file, a vocab-only GGUF, synthetic weights).</summary>
    public static ModelTokenizer FromMetadata(IReadOnlyDictionary<string, object> gguf, string pathForErrors)
        => new(TokenizerFiles.FromGguf(gguf, pathForErrors));

    /// <summary>
    /// Loads a tokenizer file: <c>tokenizer.model</c> (SentencePiece), <c>tokenizer.json</c> (Hugging Face byte-level BPE),
    /// a <c>.gguf</c> (vocab-only or full), a llama2.c <c>tokenizer.bin</c>, or a Hugging Face directory holding one of the first two.
    /// A <c>tokenizer_config.json</c> beside it supplies add_bos_token, bos/eos tokens and the chat template.
    /// </summary>
    public static ModelTokenizer Load(string path) => new(TokenizerFiles.Load(path));

    /// <summary>The tokenizer for a model: <paramref name="tokenizerPath"/> when given, else what the model carries or has beside it.</summary>
    public static ModelTokenizer ForSource(IWeightSource source, string? tokenizerPath = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ModelTokenizer tokenizer;
        if (tokenizerPath is not null)
        {
            tokenizer = Load(tokenizerPath);
        }
        else if (source.Metadata.ContainsKey("tokenizer.ggml.model"))
        {
            tokenizer = FromMetadata(source.Metadata, source.Path);
        }
        else if (source.Metadata.TryGetValue("hf.directory", out object? dir) && dir is string directory)
        {
            tokenizer = Load(directory);
        }
        else if (source.Format == "llama2c")
        {
            string beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(source.Path)) ?? ".", "tokenizer.bin");
            if (!File.Exists(beside))
            {
                GpuLlamaException.ThrowFile(source.Path, "a llama2.c checkpoint carries no vocabulary and there is no tokenizer.bin beside it; pass --tokenizer tokenizer.bin");
            }

            tokenizer = Load(beside);
            tokenizerPath = beside;
        }
        else
        {
            throw new GpuLlamaException($"{source.Path}: the model carries no tokenizer; pass --tokenizer (tokenizer.model, tokenizer.json, .gguf or tokenizer.bin)");
        }

        if (tokenizer.VocabSize > source.Config.VocabSize)
        {
            string where = tokenizerPath ?? source.Path;
            throw new GpuLlamaException($"{where}: the tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary is {source.Config.VocabSize}");
        }

        return tokenizer;
    }
}

/// <summary>
/// Turns generated ids into text as they come: returns only complete UTF-8 (byte-fallback tokens such as
/// &lt;0xE2&gt;&lt;0x80&gt;&lt;0x99&gt; are assembled; an incomplete sequence is held until it completes; invalid bytes become
/// U+FFFD). Control tokens give "". Push()… + Flush() always equals <see cref="ModelTokenizer.Decode"/> of the same ids.
/// </summary>
/// <remarks>
/// SentencePiece's dummy-prefix space is dropped from the first piece after BOS, so Decode(Encode(text)) == text.
/// llama.cpp's <c>llama_detokenize</c> instead drops it from the piece at position 0 (and keeps it after BOS); we do
/// not, because a decoder fed only generated ids continues a prompt, where that space separates the words.
/// </remarks>
public sealed class StreamingDecoder
{
    private readonly ModelTokenizer _tokenizer;
    // UTF8Encoding's decoder keeps an incomplete sequence between calls and replaces invalid bytes like GetString does.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];
    private bool _stripSpace;

    internal StreamingDecoder(ModelTokenizer tokenizer) => _tokenizer = tokenizer;

    public string Push(int id)
    {
        ReadOnlySpan<byte> bytes = _tokenizer.TextBytes(id);
        if (bytes.IsEmpty)
        {
            _stripSpace |= _tokenizer.StripsSpaceAfter(id);
            return "";
        }

        if (_stripSpace)
        {
            _stripSpace = false;
            if (bytes[0] == (byte)' ')
            {
                bytes = bytes[1..];
            }
        }

        return Convert(bytes, flush: false);
    }

    /// <summary>Emits what is held back; an unfinished UTF-8 sequence becomes U+FFFD.</summary>
    public string Flush()
    {
        _stripSpace = false;
        return Convert([], flush: true);
    }

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        // Each byte gives at most one char, plus up to 3 held-back bytes turning into U+FFFD.
        int needed = bytes.Length + 4;
        if (_chars.Length < needed)
        {
            _chars = new char[Math.Max(needed, _chars.Length * 2)];
        }

        int n = _utf8.GetChars(bytes, _chars, flush);
        return n == 0 ? "" : new string(_chars, 0, n);
    }
}
