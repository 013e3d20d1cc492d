using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using GpuLlama.Formats;
using Microsoft.ML.Tokenizers;

namespace GpuLlama.Generation;

/// <summary>A vocabulary as read from a file, before <see cref="ModelTokenizer"/> indexes it.</summary>
internal sealed class TokenizerData
{
    public required VocabKind Kind { get; init; }
    public required string[] Pieces { get; init; }
    public required int[] Types { get; init; }
    public float[]? Scores { get; init; }
    public IReadOnlyList<(string Left, string Right)>? Merges { get; init; }
    public string? Pattern { get; init; }
    public bool IgnoreMerges { get; init; }
    public int BosId { get; set; } = -1;
    public List<int> EosIds { get; } = [];
    public int UnkId { get; set; }
    public bool AddBos { get; set; }
    public bool AddEos { get; set; }
    public bool AddSpacePrefix { get; set; }
    public string? ChatTemplate { get; set; }

    /// <summary>Microsoft.ML.Tokenizers' model of a SentencePiece vocabulary (null for byte-level BPE).</summary>
    public SentencePieceTokenizer? SentencePiece { get; set; }

    /// <summary>
    /// Adds end-of-turn tokens found by their text, as llama.cpp does when a vocabulary names no eot id
    /// (<c>llama_vocab::impl::load</c>: "&lt;|eot_id|&gt;", "&lt;|im_end|&gt;", "&lt;|end|&gt;", "&lt;end_of_turn&gt;"…).
    /// </summary>
    public void AddEndOfTurnTokens()
    {
        string[] texts = ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>", "<EOT>"];
        for (int id = 0; id < Pieces.Length; id++)
        {
            if (Types[id] is TokenType.Control or TokenType.UserDefined && Array.IndexOf(texts, Pieces[id]) >= 0)
            {
                EosIds.Add(id);
            }
        }
    }

    public int IdOf(string piece) => Array.IndexOf(Pieces, piece);
}

/// <summary>Readers for every tokenizer file the engine accepts.</summary>
internal static class TokenizerFiles
{
    private const string ConfigFileName = "tokenizer_config.json";

    public static TokenizerData Load(string path)
    {
        if (Directory.Exists(path))
        {
            // Hugging Face directory: SentencePiece's own model is exact for SPM models (their tokenizer.json is a
            // conversion), so it wins over tokenizer.json.
            string model = Path.Combine(path, "tokenizer.model");
            string json = Path.Combine(path, "tokenizer.json");
            if (File.Exists(model))
            {
                return LoadSentencePiece(model);
            }

            if (File.Exists(json))
            {
                return LoadHfJson(json);
            }

            GpuLlamaException.ThrowFile(path, "no tokenizer.model or tokenizer.json in this directory");
        }

        if (!File.Exists(path))
        {
            GpuLlamaException.ThrowFile(path, "tokenizer file not found");
        }

        string ext = Path.GetExtension(path).ToLowerInvariant();
        Span<byte> head = stackalloc byte[4];
        int got;
        using (FileStream fs = File.OpenRead(path))
        {
            got = fs.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        }

        if (got == 4 && head.SequenceEqual("GGUF"u8))
        {
            return FromGguf(GgufSource.ReadMetadata(path), path);
        }

        return ext switch
        {
            ".json" => LoadHfJson(path),
            ".model" => LoadSentencePiece(path),
            ".bin" => LoadLlama2c(path),
            ".gguf" => throw new GpuLlamaException($"{path}: not a GGUF file (bad magic)"),
            _ when got > 0 && head[0] == (byte)'{' => LoadHfJson(path),
            _ when got > 0 && head[0] == 0x0A => LoadSentencePiece(path),
            _ => throw new GpuLlamaException($"{path}: unknown tokenizer format (expected tokenizer.model, tokenizer.json, .gguf or llama2.c tokenizer.bin)"),
        };
    }

    // ---------------------------------------------------------------- GGUF

    public static TokenizerData FromGguf(IReadOnlyDictionary<string, object> md, string path)
    {
        string model = md.TryGetValue("tokenizer.ggml.model", out object? m) && m is string s
            ? s
            : throw new GpuLlamaException($"{path}: no 'tokenizer.ggml.model' key; the file carries no tokenizer");
        string[] tokens = md.TryGetValue("tokenizer.ggml.tokens", out object? t) && t is string[] list && list.Length > 0
            ? list
            : throw new GpuLlamaException($"{path}: 'tokenizer.ggml.tokens' is missing or not a string array");
        int[] types = IntArray(md, "tokenizer.ggml.token_type", path) ?? InferTypes(tokens);
        if (types.Length != tokens.Length)
        {
            throw new GpuLlamaException($"{path}: 'tokenizer.ggml.token_type' has {types.Length} entries, expected {tokens.Length} (one per token)");
        }

        TokenizerData data;
        switch (model)
        {
            case "llama":
            {
                float[]? scores = null;
                if (md.TryGetValue("tokenizer.ggml.scores", out object? sc))
                {
                    scores = sc as float[] ?? throw new GpuLlamaException($"{path}: 'tokenizer.ggml.scores' is not a float32 array");
                    if (scores.Length != tokens.Length)
                    {
                        throw new GpuLlamaException($"{path}: 'tokenizer.ggml.scores' has {scores.Length} entries, expected {tokens.Length}");
                    }
                }

                // llama.cpp's SPM defaults: <unk>=0, <s>=1, </s>=2, add BOS, dummy prefix.
                data = new TokenizerData { Kind = VocabKind.SentencePiece, Pieces = tokens, Types = types, Scores = scores };
                data.BosId = Int(md, "tokenizer.ggml.bos_token_id", path) ?? 1;
                data.EosIds.Add(Int(md, "tokenizer.ggml.eos_token_id", path) ?? 2);
                data.UnkId = Int(md, "tokenizer.ggml.unknown_token_id", path) ?? 0;
                data.AddBos = Bool(md, "tokenizer.ggml.add_bos_token", path) ?? true;
                data.AddSpacePrefix = Bool(md, "tokenizer.ggml.add_space_prefix", path) ?? true;
                break;
            }

            case "gpt2":
            {
                string[] mergeList = md.TryGetValue("tokenizer.ggml.merges", out object? mg) && mg is string[] ml
                    ? ml
                    : throw new GpuLlamaException($"{path}: 'tokenizer.ggml.merges' is missing or not a string array (needed by a 'gpt2' tokenizer)");
                string pre = md.TryGetValue("tokenizer.ggml.pre", out object? p) && p is string ps ? ps : "gpt-2";
                (string pattern, bool ignoreMerges) = pre switch
                {
                    // llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3 sets ignore_merges like Llama 3's tokenizer.json.
                    "llama3" or "llama-v3" or "llama-bpe" => (ByteLevelBpe.Llama3Pattern, true),
                    "gpt-2" or "gpt2" => (ByteLevelBpe.Gpt2Pattern, false),
                    _ => throw new GpuLlamaException($"{path}: pre-tokenizer 'tokenizer.ggml.pre' = '{pre}' is not supported (supported: llama-bpe, llama3, gpt-2)"),
                };
                data = new TokenizerData
                {
                    Kind = VocabKind.ByteLevelBpe,
                    Pieces = tokens,
                    Types = types,
                    Merges = ParseMerges(mergeList, path, "tokenizer.ggml.merges"),
                    Pattern = pattern,
                    IgnoreMerges = ignoreMerges,
                };
                data.BosId = Int(md, "tokenizer.ggml.bos_token_id", path) ?? -1;
                if (Int(md, "tokenizer.ggml.eos_token_id", path) is { } eos)
                {
                    data.EosIds.Add(eos);
                }

                data.UnkId = Int(md, "tokenizer.ggml.unknown_token_id", path) ?? -1;
                data.AddBos = Bool(md, "tokenizer.ggml.add_bos_token", path) ?? data.BosId >= 0;
                data.AddSpacePrefix = Bool(md, "tokenizer.ggml.add_space_prefix", path) ?? false;
                break;
            }

            default:
                throw new GpuLlamaException($"{path}: tokenizer model '{model}' is not supported (supported: 'llama' SentencePiece, 'gpt2' byte-level BPE)");
        }

        if (Int(md, "tokenizer.ggml.eot_token_id", path) is { } eot)
        {
            data.EosIds.Add(eot);
        }

        if (Int(md, "tokenizer.ggml.eom_token_id", path) is { } eom)
        {
            data.EosIds.Add(eom);
        }

        data.AddEos = Bool(md, "tokenizer.ggml.add_eos_token", path) ?? false;
        data.AddEndOfTurnTokens();
        CheckIds(data, path);
        if (!md.ContainsKey("tokenizer.ggml.token_type"))
        {
            MarkSpecials(data);
        }

        data.ChatTemplate = md.TryGetValue("tokenizer.chat_template", out object? ct) ? ct as string : null;
        if (data.Kind == VocabKind.SentencePiece)
        {
            AddLibraryModel(data, path);
        }

        return data;
    }

    /// <summary>Without tokenizer.ggml.token_type: "&lt;0xXX&gt;" pieces are byte tokens, the rest normal.</summary>
    private static int[] InferTypes(string[] tokens)
        => Array.ConvertAll(tokens, t => ModelTokenizer.TryParseByteToken(t, out _) ? TokenType.Byte : TokenType.Normal);

    /// <summary>Without token types, BOS/EOS/UNK are still control/unknown tokens (they decode to nothing).</summary>
    private static void MarkSpecials(TokenizerData data)
    {
        if (data.BosId >= 0)
        {
            data.Types[data.BosId] = TokenType.Control;
        }

        foreach (int eos in data.EosIds)
        {
            data.Types[eos] = TokenType.Control;
        }

        if (data.UnkId >= 0)
        {
            data.Types[data.UnkId] = TokenType.Unknown;
        }
    }

    private static int? Int(IReadOnlyDictionary<string, object> md, string key, string path)
    {
        if (!md.TryGetValue(key, out object? v))
        {
            return null;
        }

        return v switch
        {
            int i => i,
            uint u when u <= int.MaxValue => (int)u,
            long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
            ulong ul when ul <= int.MaxValue => (int)ul,
            short sh => sh,
            ushort us => us,
            byte b => b,
            sbyte sb => sb,
            _ => throw new GpuLlamaException($"{path}: key '{key}' should be an integer token id, got {v}"),
        };
    }

    private static bool? Bool(IReadOnlyDictionary<string, object> md, string key, string path)
        => md.TryGetValue(key, out object? v) ? v as bool? ?? throw new GpuLlamaException($"{path}: key '{key}' should be a bool, got {v}") : null;

    private static int[]? IntArray(IReadOnlyDictionary<string, object> md, string key, string path)
    {
        if (!md.TryGetValue(key, out object? v))
        {
            return null;
        }

        return v switch
        {
            int[] ints => ints,
            uint[] uints => Array.ConvertAll(uints, u => (int)u),
            long[] longs => Array.ConvertAll(longs, l => (int)l),
            short[] shorts => Array.ConvertAll(shorts, s => (int)s),
            byte[] bytes => Array.ConvertAll(bytes, b => (int)b),
            sbyte[] sbytes => Array.ConvertAll(sbytes, b => (int)b),
            _ => throw new GpuLlamaException($"{path}: key '{key}' should be an integer array"),
        };
    }

    private static List<(string, string)> ParseMerges(string[] merges, string path, string what)
    {
        var result = new List<(string, string)>(merges.Length);
        foreach (string merge in merges)
        {
            result.Add(ParseMerge(merge, path, what));
        }

        return result;
    }

    private static (string, string) ParseMerge(string merge, string path, string what)
    {
        // llama.cpp splits at the first space after position 0 (a piece never contains a space in byte-level BPE).
        int space = merge.Length > 1 ? merge.IndexOf(' ', 1) : -1;
        if (space < 0)
        {
            throw new GpuLlamaException($"{path}: {what} entry '{merge}' is not two pieces separated by a space");
        }

        return (merge[..space], merge[(space + 1)..]);
    }

    private static void CheckIds(TokenizerData data, string path)
    {
        int n = data.Pieces.Length;
        if (data.BosId >= n)
        {
            throw new GpuLlamaException($"{path}: BOS id {data.BosId} is outside the vocabulary (size {n})");
        }

        foreach (int eos in data.EosIds)
        {
            if (eos >= n)
            {
                throw new GpuLlamaException($"{path}: EOS id {eos} is outside the vocabulary (size {n})");
            }
        }

        if (data.UnkId >= n)
        {
            throw new GpuLlamaException($"{path}: unknown-token id {data.UnkId} is outside the vocabulary (size {n})");
        }
    }

    // ---------------------------------------------------------------- SentencePiece tokenizer.model

    /// <summary>
    /// A SentencePiece <c>tokenizer.model</c>: Microsoft.ML.Tokenizers loads it as the library's model; the fields the
    /// library keeps to itself (scores, piece types) are read by <see cref="SentencePieceModelProto.Read"/>.
    /// </summary>
    public static TokenizerData LoadSentencePiece(string path)
    {
        byte[] bytes = ReadAll(path);
        TokenizerData data = SentencePieceModelProto.Read(bytes, path);
        data.SentencePiece = SentencePieceModelProto.CreateLibraryModel(bytes, path);
        SentencePieceModelProto.CheckByteFallback(data, data.SentencePiece, path);
        data = ApplyConfig(data, path);
        data.AddEndOfTurnTokens();
        CheckIds(data, path);
        return data;
    }

    /// <summary>A vocabulary that came without a tokenizer.model gets one written for the library (<see cref="SentencePieceModelProto.Write"/>).</summary>
    private static void AddLibraryModel(TokenizerData data, string path)
    {
        data.SentencePiece = SentencePieceModelProto.CreateLibraryModel(SentencePieceModelProto.Write(data, path), path);
        SentencePieceModelProto.CheckByteFallback(data, data.SentencePiece, path);
    }

    // ---------------------------------------------------------------- llama2.c tokenizer.bin

    /// <summary>
    /// llama2.c's <c>tokenizer.bin</c> (written by its tokenizer.py export): int32 max_token_length, then per token
    /// float32 score, int32 byte length, UTF-8 bytes. The export wrote "▁" as " " and BOS/EOS as "\n&lt;s&gt;\n" /
    /// "\n&lt;/s&gt;\n"; we undo both so the vocabulary is the SentencePiece one (ids 0, 1, 2 = &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;).
    /// </summary>
    public static TokenizerData LoadLlama2c(string path)
    {
        byte[] bytes = ReadAll(path);
        if (bytes.Length < 4)
        {
            throw new GpuLlamaException($"{path}: too short for a llama2.c tokenizer ({bytes.Length} bytes)");
        }

        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (maxLen is <= 0 or > 1 << 16)
        {
            throw new GpuLlamaException($"{path}: not a llama2.c tokenizer (max_token_length {maxLen})");
        }

        var pieces = new List<string>();
        var scores = new List<float>();
        int pos = 4;
        while (pos < bytes.Length)
        {
            if (pos + 8 > bytes.Length)
            {
                throw new GpuLlamaException($"{path}: truncated at token {pieces.Count} (byte {pos} of {bytes.Length})");
            }

            float score = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(pos));
            int len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(pos + 4));
            pos += 8;
            if (len < 0 || len > maxLen || pos + len > bytes.Length)
            {
                throw new GpuLlamaException($"{path}: token {pieces.Count} has length {len} (max_token_length {maxLen}, {bytes.Length - pos} bytes left)");
            }

            pieces.Add(Encoding.UTF8.GetString(bytes, pos, len).Replace(' ', '\u2581'));
            scores.Add(score);
            pos += len;
        }

        if (pieces.Count < 3)
        {
            throw new GpuLlamaException($"{path}: only {pieces.Count} tokens; a llama2.c tokenizer starts with <unk>, <s>, </s>");
        }

        var types = new int[pieces.Count];
        for (int id = 0; id < types.Length; id++)
        {
            types[id] = ModelTokenizer.TryParseByteToken(pieces[id], out _) ? TokenType.Byte : TokenType.Normal;
        }

        pieces[0] = "<unk>";
        pieces[1] = "<s>";
        pieces[2] = "</s>";
        types[0] = TokenType.Unknown;
        types[1] = TokenType.Control;
        types[2] = TokenType.Control;
        var data = new TokenizerData
        {
            Kind = VocabKind.SentencePiece,
            Pieces = pieces.ToArray(),
            Types = types,
            Scores = scores.ToArray(),
        };
        data.UnkId = 0;
        data.BosId = 1;
        data.EosIds.Add(2);
        data.AddBos = true;
        data.AddSpacePrefix = true;
        AddLibraryModel(data, path);
        return data;
    }

    // ---------------------------------------------------------------- Hugging Face tokenizer.json

    /// <summary>A Hugging Face <c>tokenizer.json</c> with a byte-level BPE model (Llama 3, GPT-2 family).</summary>
    public static TokenizerData LoadHfJson(string path)
    {
        using JsonDocument doc = ParseJson(path);
        JsonElement root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new GpuLlamaException($"{path}: not a Hugging Face tokenizer.json (no \"model\" object)");
        }

        string type = model.TryGetProperty("type", out JsonElement t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        if (type != "BPE")
        {
            throw new GpuLlamaException($"{path}: tokenizer model type '{type}' is not supported (expected \"BPE\")");
        }

        string? pattern = ByteLevelPattern(root);
        if (pattern is null)
        {
            throw new GpuLlamaException(
                $"{path}: not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer); for SentencePiece models pass tokenizer.model instead");
        }

        if (!model.TryGetProperty("vocab", out JsonElement vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            throw new GpuLlamaException($"{path}: model.vocab is missing or not an object");
        }

        var byId = new Dictionary<int, (string Piece, int Type)>();
        foreach (JsonProperty p in vocab.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new GpuLlamaException($"{path}: model.vocab entry '{p.Name}' has id {p.Value}, expected a non-negative integer");
            }

            byId[id] = (p.Name, TokenType.Normal);
        }

        if (root.TryGetProperty("added_tokens", out JsonElement added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement a in added.EnumerateArray())
            {
                if (!a.TryGetProperty("id", out JsonElement idEl) || !idEl.TryGetInt32(out int id) || id < 0
                    || !a.TryGetProperty("content", out JsonElement content) || content.ValueKind != JsonValueKind.String)
                {
                    throw new GpuLlamaException($"{path}: an added_tokens entry lacks an integer \"id\" or a string \"content\"");
                }

                bool special = a.TryGetProperty("special", out JsonElement sp) && sp.ValueKind == JsonValueKind.True;
                byId[id] = (content.GetString()!, special ? TokenType.Control : TokenType.UserDefined);
            }
        }

        int size = byId.Keys.Max() + 1;
        var pieces = new string[size];
        var types = new int[size];
        Array.Fill(pieces, "");
        Array.Fill(types, TokenType.Unused);
        foreach ((int id, (string piece, int tt)) in byId)
        {
            pieces[id] = piece;
            types[id] = tt;
        }

        var merges = new List<(string, string)>(model.TryGetProperty("merges", out JsonElement ml) && ml.ValueKind == JsonValueKind.Array ? ml.GetArrayLength() : 0);
        if (model.TryGetProperty("merges", out JsonElement mergesEl) && mergesEl.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement m in mergesEl.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String)
                {
                    merges.Add(ParseMerge(m.GetString()!, path, "model.merges"));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
                {
                    merges.Add((m[0].GetString() ?? "", m[1].GetString() ?? ""));
                }
                else
                {
                    throw new GpuLlamaException($"{path}: model.merges entry {m} is neither \"a b\" nor [\"a\", \"b\"]");
                }
            }
        }

        bool ignoreMerges = model.TryGetProperty("ignore_merges", out JsonElement im) && im.ValueKind == JsonValueKind.True;
        var data = new TokenizerData
        {
            Kind = VocabKind.ByteLevelBpe,
            Pieces = pieces,
            Types = types,
            Merges = merges,
            Pattern = pattern,
            IgnoreMerges = ignoreMerges,
        };
        data.UnkId = -1;

        // BOS: the special token the post-processor puts before the text ("single": [<|begin_of_text|>, $A]), else
        // tokenizer_config's bos_token. It is added whenever there is one unless add_bos_token says otherwise: the first
        // Llama 3 tokenizer.json had no such post-processor, and llama.cpp adds BOS for its Llama 3 pre-tokenizer too.
        string? bosText = PostProcessorBos(root);
        if (bosText is not null)
        {
            data.BosId = data.IdOf(bosText);
        }

        data.AddBos = true;

        data = ApplyConfig(data, path);
        data.AddEndOfTurnTokens();
        CheckIds(data, path);
        return data;
    }

    /// <summary>The split regex of a byte-level pre-tokenizer: Split(Regex) + ByteLevel(use_regex=false), or ByteLevel alone (GPT-2's).</summary>
    private static string? ByteLevelPattern(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out JsonElement pre) || pre.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        var steps = new List<JsonElement>();
        if (TypeOf(pre) == "Sequence" && pre.TryGetProperty("pretokenizers", out JsonElement seq) && seq.ValueKind == JsonValueKind.Array)
        {
            steps.AddRange(seq.EnumerateArray());
        }
        else
        {
            steps.Add(pre);
        }

        string? split = null;
        bool byteLevel = false;
        bool byteLevelRegex = false;
        foreach (JsonElement step in steps)
        {
            switch (TypeOf(step))
            {
                case "Split" when split is null && step.TryGetProperty("pattern", out JsonElement p)
                    && p.TryGetProperty("Regex", out JsonElement r) && r.ValueKind == JsonValueKind.String:
                    split = r.GetString();
                    break;
                case "ByteLevel":
                    byteLevel = true;
                    byteLevelRegex = !step.TryGetProperty("use_regex", out JsonElement u) || u.ValueKind != JsonValueKind.False;
                    break;
                default:
                    return null;
            }
        }

        if (!byteLevel)
        {
            return null;
        }

        return split ?? (byteLevelRegex ? ByteLevelBpe.Gpt2Pattern : null);
    }

    private static string? TypeOf(JsonElement e)
        => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out JsonElement t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;

    private static string? PostProcessorBos(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out JsonElement pp) || pp.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        var candidates = new List<JsonElement> { pp };
        if (pp.TryGetProperty("processors", out JsonElement list) && list.ValueKind == JsonValueKind.Array)
        {
            candidates.AddRange(list.EnumerateArray());
        }

        foreach (JsonElement c in candidates)
        {
            if (TypeOf(c) == "TemplateProcessing" && c.TryGetProperty("single", out JsonElement single)
                && single.ValueKind == JsonValueKind.Array && single.GetArrayLength() > 0
                && single[0].TryGetProperty("SpecialToken", out JsonElement st) && st.TryGetProperty("id", out JsonElement id))
            {
                return id.GetString();
            }
        }

        return null;
    }

    // ---------------------------------------------------------------- tokenizer_config.json

    /// <summary>
    /// Applies the <c>tokenizer_config.json</c> beside <paramref name="path"/> when there is one: extra tokens from
    /// added_tokens_decoder, bos/eos tokens, add_bos_token and chat_template.
    /// </summary>
    private static TokenizerData ApplyConfig(TokenizerData data, string path)
    {
        string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", ConfigFileName);
        if (!File.Exists(config))
        {
            return data;
        }

        using JsonDocument doc = ParseJson(config);
        JsonElement root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new GpuLlamaException($"{config}: expected a JSON object");
        }

        if (root.TryGetProperty("added_tokens_decoder", out JsonElement decoder) && decoder.ValueKind == JsonValueKind.Object)
        {
            data = WithAddedTokens(data, decoder, config);
        }

        if (TokenText(root, "bos_token") is { } bos)
        {
            int id = data.IdOf(bos);
            if (id < 0)
            {
                throw new GpuLlamaException($"{config}: bos_token '{bos}' is not in the vocabulary");
            }

            data.BosId = id;
        }
        else if (root.TryGetProperty("bos_token", out JsonElement nb) && nb.ValueKind == JsonValueKind.Null)
        {
            data.BosId = -1;
        }

        if (TokenText(root, "eos_token") is { } eos)
        {
            int id = data.IdOf(eos);
            if (id < 0)
            {
                throw new GpuLlamaException($"{config}: eos_token '{eos}' is not in the vocabulary");
            }

            data.EosIds.Remove(id);
            data.EosIds.Insert(0, id);
        }

        if (root.TryGetProperty("add_bos_token", out JsonElement ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False)
        {
            data.AddBos = ab.GetBoolean();
        }

        if (root.TryGetProperty("add_eos_token", out JsonElement ae) && ae.ValueKind is JsonValueKind.True or JsonValueKind.False)
        {
            data.AddEos = ae.GetBoolean();
        }

        if (root.TryGetProperty("chat_template", out JsonElement ct))
        {
            if (ct.ValueKind == JsonValueKind.String)
            {
                data.ChatTemplate = ct.GetString();
            }
            else if (ct.ValueKind == JsonValueKind.Array)
            {
                // Named templates [{ "name": "default", "template": "…" }, …]: take "default".
                foreach (JsonElement named in ct.EnumerateArray())
                {
                    if (named.TryGetProperty("name", out JsonElement n) && n.GetString() == "default"
                        && named.TryGetProperty("template", out JsonElement tpl))
                    {
                        data.ChatTemplate = tpl.GetString();
                    }
                }
            }
        }

        return data;
    }

    private static string? TokenText(JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out JsonElement e))
        {
            return null;
        }

        return e.ValueKind switch
        {
            JsonValueKind.String => e.GetString(),
            JsonValueKind.Object when e.TryGetProperty("content", out JsonElement c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
    }

    /// <summary>Tokens past the base vocabulary (ids ≥ its size) listed in added_tokens_decoder extend it.</summary>
    private static TokenizerData WithAddedTokens(TokenizerData data, JsonElement decoder, string config)
    {
        var extra = new SortedDictionary<int, (string Piece, int Type)>();
        foreach (JsonProperty p in decoder.EnumerateObject())
        {
            if (!int.TryParse(p.Name, out int id) || id < 0 || !p.Value.TryGetProperty("content", out JsonElement c) || c.ValueKind != JsonValueKind.String)
            {
                throw new GpuLlamaException($"{config}: added_tokens_decoder entry '{p.Name}' needs an integer key and a string \"content\"");
            }

            if (id >= data.Pieces.Length)
            {
                bool special = p.Value.TryGetProperty("special", out JsonElement s) && s.ValueKind == JsonValueKind.True;
                extra[id] = (c.GetString()!, special ? TokenType.Control : TokenType.UserDefined);
            }
        }

        if (extra.Count == 0)
        {
            return data;
        }

        int size = extra.Keys.Max() + 1;
        string[] pieces = [.. data.Pieces, .. Enumerable.Repeat("", size - data.Pieces.Length)];
        int[] types = [.. data.Types, .. Enumerable.Repeat(TokenType.Unused, size - data.Pieces.Length)];
        float[]? scores = data.Scores is null ? null : [.. data.Scores, .. new float[size - data.Pieces.Length]];
        foreach ((int id, (string piece, int type)) in extra)
        {
            pieces[id] = piece;
            types[id] = type;
        }

        var copy = new TokenizerData
        {
            Kind = data.Kind,
            Pieces = pieces,
            Types = types,
            Scores = scores,
            Merges = data.Merges,
            Pattern = data.Pattern,
            IgnoreMerges = data.IgnoreMerges,
            BosId = data.BosId,
            UnkId = data.UnkId,
            AddBos = data.AddBos,
            AddEos = data.AddEos,
            AddSpacePrefix = data.AddSpacePrefix,
            ChatTemplate = data.ChatTemplate,
            SentencePiece = data.SentencePiece,
        };
        copy.EosIds.AddRange(data.EosIds);
        return copy;
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(ReadAll(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new GpuLlamaException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})");
        }
    }

    private static byte[] ReadAll(string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot read ({e.Message})");
        }
    }
}
