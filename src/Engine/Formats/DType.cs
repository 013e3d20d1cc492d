namespace GpuLlama.Formats;

/// <summary>Tensor element types. Values are ggml's type ids (ggml.h <c>enum ggml_type</c>) so GGUF maps 1:1.</summary>
public enum DType
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ4_NL = 20,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

/// <summary>Block geometry of each type: a row of <c>cols</c> elements takes <c>cols / BlockSize * BlockBytes</c> bytes.</summary>
public static class DTypeInfo
{
    /// <summary>Elements per block (1 for plain types).</summary>
    public static int BlockSize(this DType t) => t switch
    {
        DType.F32 or DType.F16 or DType.BF16 or DType.I8 or DType.I16 or DType.I32 or DType.I64 or DType.F64 => 1,
        DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q8_0 or DType.Q8_1 or DType.IQ4_NL => 32,
        DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K or DType.Q8_K or DType.IQ4_XS => 256,
        _ => 0,
    };

    /// <summary>Bytes per block (ggml-common.h block structs).</summary>
    public static int BlockBytes(this DType t) => t switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.I8 => 1,
        DType.I16 => 2,
        DType.I32 => 4,
        DType.I64 or DType.F64 => 8,
        DType.Q4_0 => 18,
        DType.Q4_1 => 20,
        DType.Q5_0 => 22,
        DType.Q5_1 => 24,
        DType.Q8_0 => 34,
        DType.Q8_1 => 36,
        DType.Q2_K => 84,
        DType.Q3_K => 110,
        DType.Q4_K => 144,
        DType.Q5_K => 176,
        DType.Q6_K => 210,
        DType.Q8_K => 292,
        DType.IQ4_NL => 18,
        DType.IQ4_XS => 136,
        _ => 0,
    };

    /// <summary>True for the types this engine knows the layout of (ggml has more, e.g. the 1- to 3-bit IQ types).</summary>
    public static bool IsKnown(this DType t) => t.BlockSize() != 0;

    /// <summary>True for block-quantized types.</summary>
    public static bool IsQuantized(this DType t) => t.BlockSize() > 1;

    /// <summary>Bytes of one row of <paramref name="cols"/> elements; cols must be a multiple of the block size.</summary>
    public static long RowBytes(this DType t, long cols) => cols / t.BlockSize() * t.BlockBytes();

    /// <summary>Bits per weight (e.g. 4.5 for Q4_0), for `gpullama info`.</summary>
    public static double BitsPerWeight(this DType t) => 8.0 * t.BlockBytes() / t.BlockSize();

    /// <summary>The name llama.cpp prints (Q4_K, BF16 …), or "type N" for ids we do not know.</summary>
    public static string DisplayName(DType t) => Enum.IsDefined(t) ? t.ToString() : $"type {(int)t}";
}
