namespace GpuLlama.Formats;

/// <summary>
/// GGUF value type ids (ggml's gguf.h <c>enum gguf_type</c>). The reader and the writer share this table and
/// the CLR mapping below, so a value written by <see cref="GgufWriter"/> reads back as the same CLR type.
/// </summary>
public enum GgufType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>Constants and the CLR ↔ GGUF type mapping of the format (ggml docs/gguf.md).</summary>
public static class Gguf
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;

    public const uint MinVersion = 2;

    public const uint MaxVersion = 3;

    /// <summary>GGUF_DEFAULT_ALIGNMENT; a file may override it with <see cref="AlignmentKey"/>.</summary>
    public const int DefaultAlignment = 32;

    public const string AlignmentKey = "general.alignment";

    public const string ArchitectureKey = "general.architecture";

    /// <summary>ggml's GGML_MAX_DIMS.</summary>
    public const int MaxDims = 4;

    /// <summary>Tensor names are shorter than ggml's GGML_MAX_NAME (64 bytes including the terminator).</summary>
    public const int MaxTensorNameBytes = 63;

    /// <summary>The spec caps keys at 65535 bytes.</summary>
    public const int MaxKeyBytes = 65535;

    /// <summary>
    /// No honest string value comes near this (the biggest are chat templates, tens of KB); the cap keeps a
    /// crafted length from making us allocate gigabytes.
    /// </summary>
    public const long MaxStringBytes = 64L << 20;

    /// <summary>Arrays nest at most this deep (real files nest once at most); guards the reader's recursion.</summary>
    public const int MaxArrayDepth = 8;

    /// <summary>Upper bounds on counts, far above any real model (Llama 3 405B has ~1.1k tensors).</summary>
    public const long MaxTensors = 1 << 20;

    public const long MaxKeyValues = 1 << 20;

    /// <summary>Bytes one stored value of a fixed-size type takes; 0 for strings and arrays.</summary>
    public static int SizeOf(GgufType t) => t switch
    {
        GgufType.UInt8 or GgufType.Int8 or GgufType.Bool => 1,
        GgufType.UInt16 or GgufType.Int16 => 2,
        GgufType.UInt32 or GgufType.Int32 or GgufType.Float32 => 4,
        GgufType.UInt64 or GgufType.Int64 or GgufType.Float64 => 8,
        _ => 0,
    };

    /// <summary>The fewest bytes a value of this type can take on disk (string: its length; array: type + count).</summary>
    internal static long MinEncodedSize(GgufType t) => t switch
    {
        GgufType.String => 8,
        GgufType.Array => 12,
        _ => SizeOf(t),
    };

    public static bool IsKnown(GgufType t) => (uint)t <= (uint)GgufType.Float64;

    /// <summary>"uint32", "string", "array" — the names gguf-py prints.</summary>
    public static string Name(GgufType t) => IsKnown(t) ? t.ToString().ToLowerInvariant() : $"type {(uint)t}";

    /// <summary>
    /// The GGUF type of a metadata value: byte, sbyte, ushort, short, uint, int, ulong, long, float, double, bool,
    /// string, or an array of one of those (nested arrays as <c>object[]</c> of arrays). Null when unsupported.
    /// </summary>
    public static GgufType? TypeOf(object value) => value switch
    {
        byte => GgufType.UInt8,
        sbyte => GgufType.Int8,
        ushort => GgufType.UInt16,
        short => GgufType.Int16,
        uint => GgufType.UInt32,
        int => GgufType.Int32,
        float => GgufType.Float32,
        bool => GgufType.Bool,
        string => GgufType.String,
        ulong => GgufType.UInt64,
        long => GgufType.Int64,
        double => GgufType.Float64,
        Array a when ElementTypeOf(a) is not null => GgufType.Array,
        _ => null,
    };

    /// <summary>
    /// The element type of a metadata array, or null when the CLR array type has no GGUF equivalent. Matched on the
    /// exact type: the runtime lets an sbyte[] pass as a byte[] (and int[] as uint[], string[] as object[]).
    /// </summary>
    public static GgufType? ElementTypeOf(Array array) => s_elementTypes.TryGetValue(array.GetType(), out GgufType t) ? t : null;

    private static readonly Dictionary<Type, GgufType> s_elementTypes = new()
    {
        [typeof(byte[])] = GgufType.UInt8,
        [typeof(sbyte[])] = GgufType.Int8,
        [typeof(ushort[])] = GgufType.UInt16,
        [typeof(short[])] = GgufType.Int16,
        [typeof(uint[])] = GgufType.UInt32,
        [typeof(int[])] = GgufType.Int32,
        [typeof(float[])] = GgufType.Float32,
        [typeof(bool[])] = GgufType.Bool,
        [typeof(string[])] = GgufType.String,
        [typeof(ulong[])] = GgufType.UInt64,
        [typeof(long[])] = GgufType.Int64,
        [typeof(double[])] = GgufType.Float64,
        [typeof(object[])] = GgufType.Array,
    };

    /// <summary>
    /// A name or string from a file, quoted for a one-line error message: control characters escaped and long
    /// text shortened, since a crafted file can put newlines or 64 KB into a key.
    /// </summary>
    public static string Quote(string text)
    {
        const int max = 96;
        var sb = new System.Text.StringBuilder(Math.Min(text.Length, max) + 8);
        sb.Append('\'');
        foreach (char c in text.Length > max ? text[..max] : text)
        {
            if (char.IsControl(c) || char.IsSurrogate(c) || c is '\u2028' or '\u2029')
            {
                sb.Append(c == '\n' ? "\\n" : $"\\u{(int)c:x4}");
            }
            else
            {
                sb.Append(c);
            }
        }

        sb.Append(text.Length > max ? "…'" : "'");
        return sb.ToString();
    }

    /// <summary>Rounds <paramref name="offset"/> up to a multiple of <paramref name="alignment"/> (GGML_PAD).</summary>
    public static long Align(long offset, long alignment) => (offset + alignment - 1) / alignment * alignment;

    /// <summary>
    /// The name of a ggml tensor type this engine does not read (ggml.h <c>enum ggml_type</c>: the 1- to 3-bit IQ
    /// formats, the ternary ones, the repacked ARM layouts), for the one-line error that names it; null for ids ggml
    /// never had or has removed (Q4_2, Q4_3).
    /// </summary>
    public static string? GgmlTypeName(uint id) => id switch
    {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        21 => "IQ3_S",
        22 => "IQ2_S",
        29 => "IQ1_M",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        34 => "TQ1_0",
        35 => "TQ2_0",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        _ => null,
    };

    /// <summary>The weight types GGUF files may hold for this engine, as llama.cpp names them (not the integer types or the activations' Q8_1/Q8_K).</summary>
    public static string ReadableTypes => string.Join(", ", Enum.GetValues<DType>()
        .Where(t => t.IsKnown() && t is not (DType.I8 or DType.I16 or DType.I32 or DType.I64 or DType.F64 or DType.Q8_1 or DType.Q8_K))
        .Select(DTypeInfo.DisplayName));

    /// <summary>
    /// llama.cpp's <c>llama_ftype</c> for a model whose matrices are stored as <paramref name="type"/>
    /// (general.file_type; informational, llama.cpp prints it).
    /// </summary>
    public static uint FileType(DType type) => type switch
    {
        DType.F32 => 0, // LLAMA_FTYPE_ALL_F32
        DType.F16 => 1, // LLAMA_FTYPE_MOSTLY_F16
        DType.Q4_0 => 2,
        DType.Q4_1 => 3,
        DType.Q8_0 => 7,
        DType.Q5_0 => 8,
        DType.Q5_1 => 9,
        DType.Q2_K => 10,
        DType.Q3_K => 12, // Q3_K_M
        DType.Q4_K => 15, // Q4_K_M
        DType.Q5_K => 17, // Q5_K_M
        DType.Q6_K => 18,
        DType.IQ4_NL => 25,
        DType.IQ4_XS => 30,
        DType.BF16 => 32,
        _ => 0,
    };
}
