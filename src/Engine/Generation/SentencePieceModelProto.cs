using Google.Protobuf;
using Microsoft.ML.Tokenizers;

namespace GpuLlama.Generation;

/// <summary>
/// SentencePiece's <c>ModelProto</c> (sentencepiece_model.proto, the format of <c>tokenizer.model</c>) between the
/// engine and Microsoft.ML.Tokenizers: <see cref="CreateLibraryModel"/> hands a ModelProto to the library's
/// <see cref="SentencePieceTokenizer"/>; <see cref="Read"/> takes from it what the library keeps to itself;
/// <see cref="Write"/> turns a vocabulary that came without one (GGUF "llama", llama2.c <c>tokenizer.bin</c>) into one,
/// so that the library models every SentencePiece vocabulary the same way.
/// </summary>
/// <remarks>
/// The library parses a ModelProto but exposes neither the piece scores (which our merge step, see
/// <see cref="SentencePieceBpe"/>, ranks by) nor the piece types (llama.cpp's token rules: control, user-defined,
/// byte, unused), and the ModelProto class it generated is internal; so those fields are read here, with the coded
/// streams of Google.Protobuf, the protobuf runtime the library itself uses.
/// </remarks>
internal static class SentencePieceModelProto
{
    // ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; NormalizerSpec normalizer_spec = 3; }
    // SentencePiece { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
    // TrainerSpec { ModelType model_type = 3 [default = UNIGRAM]; bool byte_fallback = 35;
    //               int32 unk_id = 40 [default = 0]; bos_id = 41 [default = 1]; eos_id = 42 [default = 2]; }
    // NormalizerSpec { string name = 1; bool add_dummy_prefix = 3 [default = true];
    //                  bool remove_extra_whitespaces = 4 [default = true]; bool escape_whitespaces = 5 [default = true]; }
    private const int ModelTypeUnigram = 1;
    private const int ModelTypeBpe = 2;

    /// <summary>The library's model of a ModelProto; errors name <paramref name="path"/>.</summary>
    public static SentencePieceTokenizer CreateLibraryModel(byte[] modelProto, string path)
    {
        try
        {
            using var stream = new MemoryStream(modelProto, writable: false);
            return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or ArgumentException or InvalidOperationException)
        {
            throw new GpuLlamaException($"{path}: Microsoft.ML.Tokenizers cannot load the SentencePiece model ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>
    /// The vocabulary of a <c>tokenizer.model</c>: pieces, scores and types, unk/bos/eos ids (trainer_spec) and
    /// add_dummy_prefix (normalizer_spec; remove_extra_whitespaces and the precompiled character map are ignored, as
    /// llama.cpp does). Only BPE models: llama.cpp's SentencePiece ("llama") vocabulary is BPE.
    /// </summary>
    public static TokenizerData Read(byte[] modelProto, string path)
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var types = new List<int>();
        int modelType = ModelTypeUnigram;
        bool addDummyPrefix = true;
        int unk = 0, bos = 1, eos = 2;
        try
        {
            var input = new CodedInputStream(modelProto);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                switch (tag)
                {
                    case 1 << 3 | 2:
                    {
                        CodedInputStream piece = input.ReadBytes().CreateCodedInput();
                        string text = "";
                        float score = 0;
                        int type = TokenType.Normal;
                        while ((tag = piece.ReadTag()) != 0)
                        {
                            switch (tag)
                            {
                                case 1 << 3 | 2: text = piece.ReadString(); break;
                                case 2 << 3 | 5: score = piece.ReadFloat(); break;
                                case 3 << 3 | 0: type = piece.ReadEnum(); break;
                                default: piece.SkipLastField(); break;
                            }
                        }

                        pieces.Add(text);
                        scores.Add(score);
                        types.Add(type);
                        break;
                    }

                    case 2 << 3 | 2:
                    {
                        CodedInputStream trainer = input.ReadBytes().CreateCodedInput();
                        while ((tag = trainer.ReadTag()) != 0)
                        {
                            switch (tag)
                            {
                                case 3 << 3 | 0: modelType = trainer.ReadEnum(); break;
                                case 40 << 3 | 0: unk = trainer.ReadInt32(); break;
                                case 41 << 3 | 0: bos = trainer.ReadInt32(); break;
                                case 42 << 3 | 0: eos = trainer.ReadInt32(); break;
                                default: trainer.SkipLastField(); break;
                            }
                        }

                        break;
                    }

                    case 3 << 3 | 2:
                    {
                        CodedInputStream normalizer = input.ReadBytes().CreateCodedInput();
                        while ((tag = normalizer.ReadTag()) != 0)
                        {
                            if (tag == (3 << 3 | 0))
                            {
                                addDummyPrefix = normalizer.ReadBool();
                            }
                            else
                            {
                                normalizer.SkipLastField();
                            }
                        }

                        break;
                    }

                    default:
                        input.SkipLastField();
                        break;
                }
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new GpuLlamaException($"{path}: not a SentencePiece model ({e.Message.Split('\n')[0]})");
        }

        if (pieces.Count == 0)
        {
            throw new GpuLlamaException($"{path}: not a SentencePiece model (no pieces)");
        }

        if (modelType != ModelTypeBpe)
        {
            string name = modelType switch { ModelTypeUnigram => "UNIGRAM", 3 => "WORD", 4 => "CHAR", _ => modelType.ToString() };
            throw new GpuLlamaException($"{path}: SentencePiece model type {name} is not supported (LLaMA's SentencePiece models are BPE)");
        }

        var data = new TokenizerData
        {
            Kind = VocabKind.SentencePiece,
            Pieces = pieces.ToArray(),
            Types = types.ToArray(),
            Scores = scores.ToArray(),
        };
        data.UnkId = unk;
        data.BosId = bos;
        if (eos >= 0)
        {
            data.EosIds.Add(eos);
        }

        data.AddBos = true;
        data.AddSpacePrefix = addDummyPrefix;
        return data;
    }

    /// <summary>
    /// A BPE ModelProto holding <paramref name="data"/>'s pieces, scores and types, its unk/bos/eos ids, byte_fallback
    /// when it has llama.cpp's byte pieces (<see cref="HasBytePieces"/>) and llama.cpp's normalization (add_dummy_prefix
    /// as the vocabulary says, whitespace escaped, no other normalization).
    /// </summary>
    /// <remarks>
    /// The library requires unique pieces. llama.cpp too (it asserts that every piece has its own id), after renaming an
    /// empty piece to "[EMPTY_<i>id</i>]", which we do for the library as well.
    /// </remarks>
    public static byte[] Write(TokenizerData data, string path)
    {
        int n = data.Pieces.Length;
        var seen = new Dictionary<string, int>(n, StringComparer.Ordinal);
        var pieces = new string[n];
        for (int id = 0; id < n; id++)
        {
            string piece = data.Pieces[id].Length > 0 ? data.Pieces[id] : $"[EMPTY_{id}]";
            if (!seen.TryAdd(piece, id))
            {
                throw new GpuLlamaException($"{path}: the piece '{piece}' is both token {seen[piece]} and token {id}; a SentencePiece vocabulary has each piece once");
            }

            pieces[id] = piece;
        }

        using var buffer = new MemoryStream(n * 16);
        using (var output = new CodedOutputStream(buffer, leaveOpen: true))
        {
            for (int id = 0; id < n; id++)
            {
                float score = data.Scores?[id] ?? 0;
                // GGUF's token type 0 (undefined) has no SentencePiece counterpart; the library treats it as normal.
                int type = data.Types[id] == TokenType.Undefined ? TokenType.Normal : data.Types[id];
                output.WriteTag(1, WireFormat.WireType.LengthDelimited);
                output.WriteLength(1 + CodedOutputStream.ComputeStringSize(pieces[id]) + 1 + 4 + 1 + CodedOutputStream.ComputeEnumSize(type));
                output.WriteTag(1, WireFormat.WireType.LengthDelimited);
                output.WriteString(pieces[id]);
                output.WriteTag(2, WireFormat.WireType.Fixed32);
                output.WriteFloat(score);
                output.WriteTag(3, WireFormat.WireType.Varint);
                output.WriteEnum(type);
            }

            bool byteFallback = HasBytePieces(data.Pieces, out _);
            (int Field, int Value)[] trainer = [(3, ModelTypeBpe), (35, byteFallback ? 1 : 0), (40, data.UnkId), (41, data.BosId), (42, data.EosIds.Count > 0 ? data.EosIds[0] : -1)];
            output.WriteTag(2, WireFormat.WireType.LengthDelimited);
            output.WriteLength(trainer.Sum(f => CodedOutputStream.ComputeTagSize(f.Field) + CodedOutputStream.ComputeInt32Size(f.Value)));
            foreach ((int field, int value) in trainer)
            {
                output.WriteTag(field, WireFormat.WireType.Varint);
                output.WriteInt32(value);
            }

            (int Field, bool Value)[] normalizer = [(3, data.AddSpacePrefix), (4, false), (5, true)];
            const string name = "identity";
            output.WriteTag(3, WireFormat.WireType.LengthDelimited);
            output.WriteLength(1 + CodedOutputStream.ComputeStringSize(name) + normalizer.Length * 2);
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteString(name);
            foreach ((int field, bool value) in normalizer)
            {
                output.WriteTag(field, WireFormat.WireType.Varint);
                output.WriteBool(value);
            }
        }

        return buffer.ToArray();
    }

    /// <summary>
    /// Whether the pieces "&lt;0x00&gt;" … "&lt;0xFF&gt;" all exist, in order at consecutive ids from
    /// <paramref name="first"/>. llama.cpp falls back to the piece "&lt;0xXX&gt;" of each byte of a character that is
    /// no piece; the library, when byte_fallback is on, to id(&lt;0x00&gt;) + byte. They agree on such vocabularies
    /// (SentencePiece's trainer lays byte pieces out this way), and on ones without byte pieces (both give &lt;unk&gt;).
    /// </summary>
    public static bool HasBytePieces(string[] pieces, out int first)
    {
        first = Array.IndexOf(pieces, "<0x00>");
        if (first < 0 || first + 256 > pieces.Length)
        {
            return false;
        }

        for (int b = 0; b < 256; b++)
        {
            if (pieces[first + b] != $"<0x{b:X2}>")
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Refuses a vocabulary whose byte fallback the library would do differently from llama.cpp: byte pieces but not the
    /// complete run of <see cref="HasBytePieces"/>, or a <c>tokenizer.model</c> whose byte_fallback flag disagrees with its pieces.
    /// </summary>
    public static void CheckByteFallback(TokenizerData data, SentencePieceTokenizer library, string path)
    {
        bool run = HasBytePieces(data.Pieces, out int first);
        bool any = data.Pieces.Any(p => ModelTokenizer.TryParseByteToken(p, out _));
        if (library.ByteFallback != run || (!run && any))
        {
            string pieces = run ? $"byte pieces <0x00>…<0xFF> at ids {first}…{first + 255}"
                : any ? "byte pieces, but not all 256 of <0x00>…<0xFF> in order at consecutive ids" : "no byte pieces";
            throw new GpuLlamaException($"{path}: byte_fallback is {(library.ByteFallback ? "on" : "off")} and the vocabulary has {pieces}; "
                + "byte fallback would not match llama.cpp's");
        }
    }
}
