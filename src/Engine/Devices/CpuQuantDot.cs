using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// Fused dequantize-and-dot kernels for block-quantized weight rows on the CPU, with float32 activations: the result
/// is the float dot product of <see cref="QuantBlocks.DequantizeRow"/>'s output with x, up to summation order. The CPU
/// device uses them in exact mode and for the formats <see cref="CpuQ8Dot"/> (llama.cpp's 8-bit activations) lacks.
/// </summary>
/// <remarks>
/// On AVX-512 each format has a decoder that turns 64 values of raw blocks into four vectors of dequantized floats,
/// bit-identical to the scalar reference; two drivers use it: <c>Dot</c> multiplies them into four independent
/// accumulators (four FMA chains hide the FMA latency) and <c>Store</c> writes them out (<see cref="Dequantize"/>:
/// the prompt GEMM's weight panels, embeddings). Decoders are structs with static methods, so each driver is specialized per
/// format with the decoder inlined and the accumulators in registers. 4- and 5-bit formats dequantize by table
/// lookup: the 16 (32) possible values of a (sub-)block form one (two) vector(s) — <c>(q - 8)·d</c>,
/// <c>d·sc·q - dmin·m</c> — and <c>vpermps</c>/<c>vpermt2ps</c> pick them by index, which replaces mask, convert and
/// multiply. Without AVX-512, Q8_0 and Q4_0 have AVX2 dot kernels, Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K an AVX2 dequantization
/// into a stack buffer followed by a vectorized dot, and the rest (Q2_K, Q3_K; Q8_K everywhere) the scalar block
/// dequantization.
/// </remarks>
public static unsafe class CpuQuantDot
{
    private const int ChunkFloats = 1024;

    private static readonly bool s_avx512 = Avx512F.IsSupported && Avx512BW.IsSupported;

    private static readonly bool s_avx2 = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Σ dequant(row)[j] · x[j] for j &lt; cols, for a row of <paramref name="type"/> (block-quantized, F32, F16 or BF16).</summary>
    public static float DotRow(DType type, byte* row, float* x, int cols)
    {
        CheckCols(type, cols);
        if (s_avx512 && HasAvx512Kernel(type))
        {
            return DotAvx512(type, row, x, cols);
        }

        if (s_avx2)
        {
            if (type == DType.Q8_0)
            {
                return DotQ8_0Avx2(row, x, cols / QuantBlocks.QK);
            }

            if (type == DType.Q4_0)
            {
                return DotQ4_0Avx2(row, x, cols / QuantBlocks.QK);
            }
        }

        return DotChunked(type, row, x, cols);
    }

    /// <summary>
    /// Dequantizes a row of <paramref name="cols"/> values into <paramref name="dst"/>; the same values as
    /// <see cref="QuantBlocks.DequantizeRow"/>, vectorized (token embedding lookups, the prompt GEMM's weight panels).
    /// </summary>
    public static void Dequantize(DType type, byte* row, float* dst, int cols)
    {
        CheckCols(type, cols);
        switch (type)
        {
            case DType.F32:
                Buffer.MemoryCopy(row, dst, 4L * cols, 4L * cols);
                return;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(row, cols), new Span<float>(dst, cols));
                return;
            case DType.BF16:
                ConvertBf16(row, dst, cols);
                return;
        }

        if (s_avx512 && HasAvx512Kernel(type))
        {
            DequantizeAvx512(type, row, dst, cols);
            return;
        }

        if (s_avx2 && DequantizeAvx2(type, row, dst, cols))
        {
            return;
        }

        QuantBlocks.DequantizeRow(type, new ReadOnlySpan<byte>(row, checked((int)type.RowBytes(cols))), new Span<float>(dst, cols));
    }

    private static void CheckCols(DType type, int cols)
    {
        int bs = type.BlockSize();
        if (bs == 0 || cols < 0 || cols % bs != 0)
        {
            throw new ArgumentException($"{DTypeInfo.DisplayName(type)} rows hold whole blocks of {bs}; got {cols} columns", nameof(cols));
        }
    }

    private static void ConvertBf16(byte* row, float* dst, int cols)
    {
        ushort* s = (ushort*)row;
        for (int i = 0; i < cols; i++)
        {
            dst[i] = BitConverter.UInt32BitsToSingle((uint)s[i] << 16);
        }
    }

    /// <summary>Generic path: dequantize 1024 columns at a time to the stack, then a vectorized dot.</summary>
    internal static float DotChunked(DType type, byte* row, float* x, int cols)
    {
        if (type == DType.F32)
        {
            return TensorPrimitives.Dot(new ReadOnlySpan<float>(row, cols), new ReadOnlySpan<float>(x, cols));
        }

        float* chunk = stackalloc float[ChunkFloats];
        float sum = 0;
        for (int c0 = 0; c0 < cols; c0 += ChunkFloats)
        {
            int n = Math.Min(ChunkFloats, cols - c0);
            Dequantize(type, row + type.RowBytes(c0), chunk, n);
            sum += TensorPrimitives.Dot(new ReadOnlySpan<float>(chunk, n), new ReadOnlySpan<float>(x + c0, n));
        }

        return sum;
    }

    /// <summary>
    /// binary16 → float through a 65536-entry table (256 KiB, ggml's old <c>ggml_table_f32_f16</c>): .NET exposes no
    /// F16C <c>vcvtph2ps</c>, and one L2-resident load that the JIT can fold into <c>vbroadcastss</c> beats a dozen
    /// scalar bit operations per block. Exact for every half, Inf and NaN included.
    /// </summary>
    private static readonly float* s_halfTable = BuildHalfTable();

    private static float* BuildHalfTable()
    {
        float* table = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int h = 0; h < 65536; h++)
        {
            table[h] = (float)BitConverter.UInt16BitsToHalf((ushort)h);
        }

        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Half(byte* p) => s_halfTable[*(ushort*)p];

    /// <summary>The table itself, for kernels that keep it in a register (a static read per block costs a helper call).</summary>
    internal static float* HalfTable => s_halfTable;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> BroadcastHalf(byte* p) => Vector512.Create(s_halfTable[*(ushort*)p]);

    // ---------------------------------------------------------------- AVX-512 kernels

    /// <summary>
    /// Turns 64 consecutive values of a row (group <c>g</c>: values 64g … 64g+63) into four vectors of dequantized
    /// floats, bit-identical to <see cref="QuantBlocks.DequantizeRow"/>. Implemented by empty structs so the drivers
    /// below are specialized per format and the decoder inlines into their loop, accumulators staying in registers.
    /// </summary>
    private interface IDecoder
    {
        static abstract void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3);
    }

    private static bool HasAvx512Kernel(DType type) =>
        type is DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K
            or DType.IQ4_NL or DType.IQ4_XS;

    private static float DotAvx512(DType type, byte* row, float* x, int cols) => type switch
    {
        DType.Q8_0 => Dot<Q8_0Decoder>(type, row, x, cols),
        DType.Q4_0 => Dot<Q4_0Decoder>(type, row, x, cols),
        DType.Q4_1 => Dot<Q4_1Decoder>(type, row, x, cols),
        DType.Q5_0 => Dot<Q5_0Decoder>(type, row, x, cols),
        DType.Q5_1 => Dot<Q5_1Decoder>(type, row, x, cols),
        DType.Q2_K => Dot<Q2_KDecoder>(type, row, x, cols),
        DType.Q3_K => Dot<Q3_KDecoder>(type, row, x, cols),
        DType.Q4_K => Dot<Q4_KDecoder>(type, row, x, cols),
        DType.Q5_K => Dot<Q5_KDecoder>(type, row, x, cols),
        DType.IQ4_NL => Dot<IQ4_NLDecoder>(type, row, x, cols),
        DType.IQ4_XS => Dot<IQ4_XSDecoder>(type, row, x, cols),
        _ => Dot<Q6_KDecoder>(type, row, x, cols),
    };

    private static void DequantizeAvx512(DType type, byte* row, float* dst, int cols)
    {
        switch (type)
        {
            case DType.Q8_0: Store<Q8_0Decoder>(type, row, dst, cols); break;
            case DType.Q4_0: Store<Q4_0Decoder>(type, row, dst, cols); break;
            case DType.Q4_1: Store<Q4_1Decoder>(type, row, dst, cols); break;
            case DType.Q5_0: Store<Q5_0Decoder>(type, row, dst, cols); break;
            case DType.Q5_1: Store<Q5_1Decoder>(type, row, dst, cols); break;
            case DType.Q2_K: Store<Q2_KDecoder>(type, row, dst, cols); break;
            case DType.Q3_K: Store<Q3_KDecoder>(type, row, dst, cols); break;
            case DType.Q4_K: Store<Q4_KDecoder>(type, row, dst, cols); break;
            case DType.Q5_K: Store<Q5_KDecoder>(type, row, dst, cols); break;
            case DType.IQ4_NL: Store<IQ4_NLDecoder>(type, row, dst, cols); break;
            case DType.IQ4_XS: Store<IQ4_XSDecoder>(type, row, dst, cols); break;
            default: Store<Q6_KDecoder>(type, row, dst, cols); break;
        }
    }

    /// <summary>Four independent FMA chains (one per decoded vector) hide the FMA latency.</summary>
    private static float Dot<TDecoder>(DType type, byte* row, float* x, int cols)
        where TDecoder : struct, IDecoder
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int groups = cols / 64;
        for (int g = 0; g < groups; g++)
        {
            TDecoder.Decode(row, g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3);
            float* xg = x + 64 * g;
            a0 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(xg), a0);
            a1 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(xg + 16), a1);
            a2 = Avx512F.FusedMultiplyAdd(w2, Vector512.Load(xg + 32), a2);
            a3 = Avx512F.FusedMultiplyAdd(w3, Vector512.Load(xg + 48), a3);
        }

        float sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        if (cols % 64 != 0)
        {
            // A trailing 32-value block of a legacy format: the scalar reference, then a plain dot.
            float* tail = stackalloc float[QuantBlocks.QK];
            int done = groups * 64;
            QuantBlocks.DequantizeBlock(type, new ReadOnlySpan<byte>(row + type.RowBytes(done), type.BlockBytes()), new Span<float>(tail, QuantBlocks.QK));
            sum += TensorPrimitives.Dot(new ReadOnlySpan<float>(tail, QuantBlocks.QK), new ReadOnlySpan<float>(x + done, QuantBlocks.QK));
        }

        return sum;
    }

    private static void Store<TDecoder>(DType type, byte* row, float* dst, int cols)
        where TDecoder : struct, IDecoder
    {
        int groups = cols / 64;
        for (int g = 0; g < groups; g++)
        {
            TDecoder.Decode(row, g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3);
            float* d = dst + 64 * g;
            w0.Store(d);
            w1.Store(d + 16);
            w2.Store(d + 32);
            w3.Store(d + 48);
        }

        if (cols % 64 != 0)
        {
            int done = groups * 64;
            QuantBlocks.DequantizeBlock(type, new ReadOnlySpan<byte>(row + type.RowBytes(done), type.BlockBytes()), new Span<float>(dst + done, QuantBlocks.QK));
        }
    }

    private static Vector512<float> Iota16 => Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f, 10f, 11f, 12f, 13f, 14f, 15f);

    private static Vector512<uint> Iota16UInt => Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Bytes16(byte* p) => Avx512F.ConvertToVector512Int32(Vector128.Load(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SBytesToFloat(Vector128<sbyte> v) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(v));

    /// <summary>Low-nibble and high-nibble lookups of 16 packed bytes in a 16-entry table (vpermps reads only an index's low 4 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Nibbles(Vector512<float> tableLow, Vector512<float> tableHigh, byte* qs, out Vector512<float> low, out Vector512<float> high)
    {
        Vector512<int> v = Bytes16(qs);
        low = Avx512F.PermuteVar16x32(tableLow, v);
        high = Avx512F.PermuteVar16x32(tableHigh, Avx512F.ShiftRightLogical(v, 4));
    }

    /// <summary>
    /// 32-entry lookups for the 5-bit legacy formats: element j's index is its nibble plus 16 × bit j of <paramref name="qh"/>
    /// (ggml's <c>xh_0</c>/<c>xh_1</c>); vpermt2ps picks from the two table halves by the index's bit 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FiveBit(Vector512<float> tLow, Vector512<float> tHigh, uint qh, byte* qs, out Vector512<float> low, out Vector512<float> high)
    {
        Vector512<int> v = Bytes16(qs);
        Vector512<int> bit4 = Vector512.Create(0x10);
        Vector512<int> h0 = Avx512F.ShiftRightLogicalVariable(Vector512.Create(qh << 4), Iota16UInt).AsInt32() & bit4;
        Vector512<int> h1 = Avx512F.ShiftRightLogicalVariable(Vector512.Create(qh >> 12), Iota16UInt).AsInt32() & bit4;
        low = Avx512F.PermuteVar16x32x2(tLow, (v & Vector512.Create(0xF)) | h0, tHigh);
        high = Avx512F.PermuteVar16x32x2(tLow, Avx512F.ShiftRightLogical(v, 4) | h1, tHigh);
    }

    /// <summary>Q8_0: sign-extend 16 int8 → int32 → float, times d (the reference's <c>q·d</c>).</summary>
    private struct Q8_0Decoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 68 * g;
            Vector512<float> d0 = BroadcastHalf(b);
            Vector512<float> d1 = BroadcastHalf(b + 34);
            w0 = SBytesToFloat(Vector128.Load((sbyte*)(b + 2))) * d0;
            w1 = SBytesToFloat(Vector128.Load((sbyte*)(b + 18))) * d0;
            w2 = SBytesToFloat(Vector128.Load((sbyte*)(b + 36))) * d1;
            w3 = SBytesToFloat(Vector128.Load((sbyte*)(b + 52))) * d1;
        }
    }

    /// <summary>Q4_0: table (q − 8)·d.</summary>
    private struct Q4_0Decoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 36 * g;
            Vector512<float> iotaMinus8 = Iota16 - Vector512.Create(8f);
            Vector512<float> t0 = iotaMinus8 * BroadcastHalf(b);
            Vector512<float> t1 = iotaMinus8 * BroadcastHalf(b + 18);
            Nibbles(t0, t0, b + 2, out w0, out w1);
            Nibbles(t1, t1, b + 20, out w2, out w3);
        }
    }

    /// <summary>IQ4_NL's 16 levels as floats (<see cref="QuantBlocks.IQ4Values"/>).</summary>
    private static Vector512<float> IQ4Levels => Vector512.Create(-127f, -104f, -83f, -65f, -49f, -35f, -22f, -10f, 1f, 13f, 25f, 38f, 53f, 69f, 89f, 113f);

    /// <summary>IQ4_NL: table levels·d, two blocks a group.</summary>
    private struct IQ4_NLDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 36 * g;
            Vector512<float> t0 = IQ4Levels * BroadcastHalf(b);
            Vector512<float> t1 = IQ4Levels * BroadcastHalf(b + 18);
            Nibbles(t0, t0, b + 2, out w0, out w1);
            Nibbles(t1, t1, b + 20, out w2, out w3);
        }
    }

    /// <summary>IQ4_XS: table levels·dl per 32-value sub-block, dl = d·(ls − 32); a group is two sub-blocks.</summary>
    private struct IQ4_XSDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 136 * (g >> 2);
            int pair = g & 3;
            float d = Half(b);
            int scalesH = *(ushort*)(b + 2), scalesL = b[4 + pair];
            int ls0 = (scalesL & 0xF) | (((scalesH >> (4 * pair)) & 3) << 4);
            int ls1 = (scalesL >> 4) | (((scalesH >> (4 * pair + 2)) & 3) << 4);
            Vector512<float> t0 = IQ4Levels * Vector512.Create(d * (ls0 - 32));
            Vector512<float> t1 = IQ4Levels * Vector512.Create(d * (ls1 - 32));
            byte* qs = b + 8 + 32 * pair;
            Nibbles(t0, t0, qs, out w0, out w1);
            Nibbles(t1, t1, qs + 16, out w2, out w3);
        }
    }

    /// <summary>Q4_1: table q·d + m.</summary>
    private struct Q4_1Decoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 40 * g;
            Vector512<float> t0 = Iota16 * BroadcastHalf(b) + BroadcastHalf(b + 2);
            Vector512<float> t1 = Iota16 * BroadcastHalf(b + 20) + BroadcastHalf(b + 22);
            Nibbles(t0, t0, b + 4, out w0, out w1);
            Nibbles(t1, t1, b + 24, out w2, out w3);
        }
    }

    /// <summary>Q5_0: 32-entry table (q − 16)·d.</summary>
    private struct Q5_0Decoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 44 * g;
            Vector512<float> low = Iota16 - Vector512.Create(16f);
            Vector512<float> d0 = BroadcastHalf(b);
            Vector512<float> d1 = BroadcastHalf(b + 22);
            FiveBit(low * d0, Iota16 * d0, *(uint*)(b + 2), b + 6, out w0, out w1);
            FiveBit(low * d1, Iota16 * d1, *(uint*)(b + 24), b + 28, out w2, out w3);
        }
    }

    /// <summary>Q5_1: 32-entry table q·d + m.</summary>
    private struct Q5_1Decoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 48 * g;
            Vector512<float> high = Iota16 + Vector512.Create(16f);
            Vector512<float> d0 = BroadcastHalf(b);
            Vector512<float> m0 = BroadcastHalf(b + 2);
            Vector512<float> d1 = BroadcastHalf(b + 24);
            Vector512<float> m1 = BroadcastHalf(b + 26);
            FiveBit(Iota16 * d0 + m0, high * d0 + m0, *(uint*)(b + 4), b + 8, out w0, out w1);
            FiveBit(Iota16 * d1 + m1, high * d1 + m1, *(uint*)(b + 28), b + 32, out w2, out w3);
        }
    }

    /// <summary>Q4_K: per 32-value sub-block a table d·sc·q − dmin·m (the reference's <c>d1 * q - m1</c>).</summary>
    private struct Q4_KDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 144 * (g >> 2);
            int j = g & 3;
            KScales(b, j, out Vector512<float> t1, out Vector512<float> t2, out _, out _, fiveBit: false);
            byte* qs = b + 16 + 32 * j;
            Nibbles(t1, t2, qs, out w0, out w2);
            Nibbles(t1, t2, qs + 16, out w1, out w3);
        }
    }

    /// <summary>Q5_K: as Q4_K with a 32-entry table; the 5th bit of value l of sub-block 2j(+1) is bit 2j(+1) of qh[l].</summary>
    private struct Q5_KDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 176 * (g >> 2);
            int j = g & 3;
            KScales(b, j, out Vector512<float> t1, out Vector512<float> t2, out Vector512<float> t1High, out Vector512<float> t2High, fiveBit: true);
            byte* qs = b + 48 + 32 * j;
            Vector512<int> v0 = Bytes16(qs);
            Vector512<int> v1 = Bytes16(qs + 16);
            Vector512<int> h0 = Bytes16(b + 16);
            Vector512<int> h1 = Bytes16(b + 32);
            Vector512<int> nibble = Vector512.Create(0xF);

            // Bit 2j (low sub-block) / 2j+1 (high) of each qh byte becomes bit 4 of the index.
            Vector128<int> sLow = Vector128.CreateScalar(2 * j);
            Vector128<int> sHigh = Vector128.CreateScalar(2 * j + 1);
            Vector512<int> i0 = (v0 & nibble) | ShiftToBit4(h0, sLow);
            Vector512<int> i1 = (v1 & nibble) | ShiftToBit4(h1, sLow);
            Vector512<int> i2 = Avx512F.ShiftRightLogical(v0, 4) | ShiftToBit4(h0, sHigh);
            Vector512<int> i3 = Avx512F.ShiftRightLogical(v1, 4) | ShiftToBit4(h1, sHigh);
            w0 = Avx512F.PermuteVar16x32x2(t1, i0, t1High);
            w1 = Avx512F.PermuteVar16x32x2(t1, i1, t1High);
            w2 = Avx512F.PermuteVar16x32x2(t2, i2, t2High);
            w3 = Avx512F.PermuteVar16x32x2(t2, i3, t2High);
        }

        /// <summary>Bit <paramref name="bit"/> of each lane moved to bit 4 (the index bit that selects the table's upper half).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<int> ShiftToBit4(Vector512<int> v, Vector128<int> bit) =>
            Avx512F.ShiftLeftLogical(Avx512F.ShiftRightLogical(v, bit) & Vector512.Create(1), 4);
    }

    /// <summary>
    /// Q2_K: group j (0..3) of a super-block is half c = j/2, bit pairs 2p and 2p+1 (p = j%2) of its 32 quant bytes,
    /// with the four 16-value scales 4j..4j+3. The 2-bit value indexes a table repeated every 4 lanes
    /// (<c>(i &amp; 3)·dl − ml</c>), so the shifted byte needs no mask: vpermps reads the low 4 bits only.
    /// </summary>
    private struct Q2_KDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 84 * (g >> 2);
            int j = g & 3;
            byte* sc = b + 4 * j;
            float d = Half(b + 80);
            float dmin = Half(b + 82);
            byte* qs = b + 16 + 32 * (j >> 1);
            Vector512<int> v0 = Bytes16(qs);
            Vector512<int> v1 = Bytes16(qs + 16);
            Vector128<int> shift0 = Vector128.CreateScalar(4 * (j & 1));
            Vector128<int> shift1 = Vector128.CreateScalar(4 * (j & 1) + 2);
            w0 = Avx512F.PermuteVar16x32(Table2(d, dmin, sc[0]), Avx512F.ShiftRightLogical(v0, shift0));
            w1 = Avx512F.PermuteVar16x32(Table2(d, dmin, sc[1]), Avx512F.ShiftRightLogical(v1, shift0));
            w2 = Avx512F.PermuteVar16x32(Table2(d, dmin, sc[2]), Avx512F.ShiftRightLogical(v0, shift1));
            w3 = Avx512F.PermuteVar16x32(Table2(d, dmin, sc[3]), Avx512F.ShiftRightLogical(v1, shift1));
        }

        /// <summary>The reference's <c>dl * q - ml</c>, dl = d·(sc &amp; 15), ml = dmin·(sc &gt;&gt; 4), for q = lane &amp; 3.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Table2(float d, float dmin, byte sc) =>
            Vector512.Create(0f, 1f, 2f, 3f, 0f, 1f, 2f, 3f, 0f, 1f, 2f, 3f, 0f, 1f, 2f, 3f) * Vector512.Create(d * (sc & 0xF)) - Vector512.Create(dmin * (sc >> 4));
    }

    /// <summary>
    /// Q3_K: as Q2_K for the low two bits; the third comes from hmask[l] bit 4c+k and joins the index as bit 2, over a
    /// table <c>((i &amp; 7) − 4)·dl</c> (a clear bit means "minus 4"). The 6-bit scales of the group are decoded
    /// directly: low nibble from byte s (s &lt; 8) or the high nibble of byte s−8, top bits from byte 8+s%4, pair s/4.
    /// </summary>
    private struct Q3_KDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 110 * (g >> 2);
            int j = g & 3;
            int c = j >> 1;
            int k0 = 2 * (j & 1);
            float d = Half(b + 108);
            byte* qs = b + 32 + 32 * c;
            Vector512<int> v0 = Bytes16(qs);
            Vector512<int> v1 = Bytes16(qs + 16);
            Vector512<int> h0 = Bytes16(b);
            Vector512<int> h1 = Bytes16(b + 16);
            Vector512<int> three = Vector512.Create(3);
            Vector512<int> one = Vector512.Create(1);
            Vector128<int> q0Shift = Vector128.CreateScalar(2 * k0);
            Vector128<int> q1Shift = Vector128.CreateScalar(2 * k0 + 2);
            Vector128<int> h0Shift = Vector128.CreateScalar(4 * c + k0);
            Vector128<int> h1Shift = Vector128.CreateScalar(4 * c + k0 + 1);
            Vector512<int> i0 = (Avx512F.ShiftRightLogical(v0, q0Shift) & three) | Avx512F.ShiftLeftLogical(Avx512F.ShiftRightLogical(h0, h0Shift) & one, 2);
            Vector512<int> i1 = (Avx512F.ShiftRightLogical(v1, q0Shift) & three) | Avx512F.ShiftLeftLogical(Avx512F.ShiftRightLogical(h1, h0Shift) & one, 2);
            Vector512<int> i2 = (Avx512F.ShiftRightLogical(v0, q1Shift) & three) | Avx512F.ShiftLeftLogical(Avx512F.ShiftRightLogical(h0, h1Shift) & one, 2);
            Vector512<int> i3 = (Avx512F.ShiftRightLogical(v1, q1Shift) & three) | Avx512F.ShiftLeftLogical(Avx512F.ShiftRightLogical(h1, h1Shift) & one, 2);
            byte* p = b + 96;
            w0 = Avx512F.PermuteVar16x32(Table3(d, Scale(p, 4 * j)), i0);
            w1 = Avx512F.PermuteVar16x32(Table3(d, Scale(p, 4 * j + 1)), i1);
            w2 = Avx512F.PermuteVar16x32(Table3(d, Scale(p, 4 * j + 2)), i2);
            w3 = Avx512F.PermuteVar16x32(Table3(d, Scale(p, 4 * j + 3)), i3);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static int Scale(byte* p, int s)
        {
            int low4 = s < 8 ? p[s] & 0xF : p[s - 8] >> 4;
            int high2 = (p[8 + (s & 3)] >> (2 * (s >> 2))) & 3;
            return (low4 | (high2 << 4)) - 32;
        }

        /// <summary>The reference's <c>dl * (q − 4·!hbit)</c>, dl = d·(scale − 32), for index q | hbit &lt;&lt; 2 = lane &amp; 7.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Table3(float d, int scale) =>
            Vector512.Create(-4f, -3f, -2f, -1f, 0f, 1f, 2f, 3f, -4f, -3f, -2f, -1f, 0f, 1f, 2f, 3f) * Vector512.Create(d * scale);
    }

    /// <summary>
    /// Sub-blocks 2j and 2j+1 of a Q4_K/Q5_K super-block as lookup tables <c>d·sc·q − dmin·m</c> for q = 0..15
    /// (and q = 16..31 for Q5_K), computed in the reference's order (<c>d1 = d·sc</c>, then <c>d1·q − m1</c>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void KScales(byte* b, int j, out Vector512<float> t1, out Vector512<float> t2, out Vector512<float> t1High, out Vector512<float> t2High, bool fiveBit)
    {
        float d = Half(b);
        float dmin = Half(b + 2);
        byte* q = b + 4;

        // get_scale_min_k4 for sub-blocks 2j and 2j+1 (see QuantBlocks.ScaleMinK4) as byte pairs [sc1, sc2] and
        // [m1, m2]: for j < 2 the low 6 bits of bytes 2j.. and 2j+4..; for j ≥ 2 the nibbles of bytes 2j+4.. plus the
        // top 2 bits of bytes 2j-4.. (scales) and 2j.. (mins).
        uint scPair, mPair;
        if (j < 2)
        {
            scPair = *(ushort*)(q + 2 * j) & 0x3F3Fu;
            mPair = *(ushort*)(q + 2 * j + 4) & 0x3F3Fu;
        }
        else
        {
            uint low = *(ushort*)(q + 2 * j + 4);
            scPair = (low & 0x0F0Fu) | (((uint)*(ushort*)(q + 2 * j - 4) >> 2) & 0x3030u);
            mPair = ((low >> 4) & 0x0F0Fu) | (((uint)*(ushort*)(q + 2 * j) >> 2) & 0x3030u);
        }

        // [d·sc1, d·sc2, dmin·m1, dmin·m2] in one convert and multiply, then broadcast lane by lane.
        Vector128<float> f = Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(Vector128.CreateScalar(scPair | (mPair << 16)).AsByte()))
            * Vector128.Create(d, d, dmin, dmin);
        Vector512<float> fz = f.ToVector256Unsafe().ToVector512Unsafe();
        Vector512<float> d1 = Avx512F.PermuteVar16x32(fz, Vector512.Create(0));
        Vector512<float> d2 = Avx512F.PermuteVar16x32(fz, Vector512.Create(1));
        Vector512<float> min1 = Avx512F.PermuteVar16x32(fz, Vector512.Create(2));
        Vector512<float> min2 = Avx512F.PermuteVar16x32(fz, Vector512.Create(3));
        t1 = Iota16 * d1 - min1;
        t2 = Iota16 * d2 - min2;
        if (fiveBit)
        {
            Vector512<float> high = Iota16 + Vector512.Create(16f);
            t1High = high * d1 - min1;
            t2High = high * d2 - min2;
        }
        else
        {
            t1High = t1;
            t2High = t2;
        }
    }

    /// <summary>
    /// Q6_K: 64 values = one quarter pair of a 128-value half. Part 0 (values 0-63 of the half) takes the low nibbles of
    /// ql[0..63] and qh bit pairs 0 and 1, part 1 the high nibbles and bit pairs 2 and 3; assembled 16 at a time in byte
    /// lanes, biased to signed, widened to float and multiplied by d·scale (the reference's <c>d * sc * q</c>).
    /// </summary>
    private struct Q6_KDecoder : IDecoder
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int g, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
        {
            byte* b = row + 210 * (g >> 2);
            int c = (g >> 1) & 1;
            int part = g & 1;
            byte* ql = b + 64 * c;
            byte* qh = b + 128 + 32 * c;
            sbyte* sc = (sbyte*)(b + 192) + 8 * c + 4 * part;
            float d = Half(b + 208);
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            Vector128<byte> low2 = Vector128.Create((byte)0x03);
            Vector128<byte> a0 = Vector128.Load(ql);
            Vector128<byte> a1 = Vector128.Load(ql + 16);
            Vector128<byte> a2 = Vector128.Load(ql + 32);
            Vector128<byte> a3 = Vector128.Load(ql + 48);
            Vector128<byte> h0 = Vector128.Load(qh);
            Vector128<byte> h1 = Vector128.Load(qh + 16);
            Vector128<byte> q0, q1, q2, q3;
            if (part == 0)
            {
                q0 = (a0 & low4) | ((h0 & low2) << 4);
                q1 = (a1 & low4) | ((h1 & low2) << 4);
                q2 = (a2 & low4) | (((h0 >> 2) & low2) << 4);
                q3 = (a3 & low4) | (((h1 >> 2) & low2) << 4);
            }
            else
            {
                q0 = (a0 >> 4) | (((h0 >> 4) & low2) << 4);
                q1 = (a1 >> 4) | (((h1 >> 4) & low2) << 4);
                q2 = (a2 >> 4) | ((h0 >> 6) << 4);
                q3 = (a3 >> 4) | ((h1 >> 6) << 4);
            }

            // [d·sc0 … d·sc3] in one convert and multiply, then broadcast lane by lane.
            Vector128<float> f = Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(Vector128.CreateScalar(*(uint*)sc).AsSByte())) * Vector128.Create(d);
            Vector512<float> fz = f.ToVector256Unsafe().ToVector512Unsafe();
            Vector128<sbyte> bias = Vector128.Create((sbyte)32);
            w0 = SBytesToFloat(q0.AsSByte() - bias) * Avx512F.PermuteVar16x32(fz, Vector512.Create(0));
            w1 = SBytesToFloat(q1.AsSByte() - bias) * Avx512F.PermuteVar16x32(fz, Vector512.Create(1));
            w2 = SBytesToFloat(q2.AsSByte() - bias) * Avx512F.PermuteVar16x32(fz, Vector512.Create(2));
            w3 = SBytesToFloat(q3.AsSByte() - bias) * Avx512F.PermuteVar16x32(fz, Vector512.Create(3));
        }
    }

    // ---------------------------------------------------------------- AVX2 kernels (no AVX-512)

    /// <summary>Writes values 64g … 64g+63 of a row as floats, bit-identical to the reference (AVX2, 8 lanes).</summary>
    private interface IDecoder256
    {
        static abstract void Decode(byte* row, int g, float* dst);
    }

    /// <summary>
    /// AVX2 dequantization of the legacy and 4/5/6-bit K formats into a buffer; without AVX-512 the dot products of these
    /// types go through it (<see cref="DotChunked"/>), which beats the scalar reference by far.
    /// </summary>
    internal static bool DequantizeAvx2(DType type, byte* row, float* dst, int cols)
    {
        switch (type)
        {
            case DType.Q8_0: Store256<Q8_0Decoder256>(type, row, dst, cols); return true;
            case DType.Q4_0: Store256<Q4_0Decoder256>(type, row, dst, cols); return true;
            case DType.Q4_1: Store256<Q4_1Decoder256>(type, row, dst, cols); return true;
            case DType.Q5_0: Store256<Q5_0Decoder256>(type, row, dst, cols); return true;
            case DType.Q5_1: Store256<Q5_1Decoder256>(type, row, dst, cols); return true;
            case DType.Q4_K: Store256<Q4_KDecoder256>(type, row, dst, cols); return true;
            case DType.Q5_K: Store256<Q5_KDecoder256>(type, row, dst, cols); return true;
            case DType.Q6_K: Store256<Q6_KDecoder256>(type, row, dst, cols); return true;
            default: return false;
        }
    }

    private static void Store256<TDecoder>(DType type, byte* row, float* dst, int cols)
        where TDecoder : struct, IDecoder256
    {
        int groups = cols / 64;
        for (int g = 0; g < groups; g++)
        {
            TDecoder.Decode(row, g, dst + 64 * g);
        }

        if (cols % 64 != 0)
        {
            int done = groups * 64;
            QuantBlocks.DequantizeBlock(type, new ReadOnlySpan<byte>(row + type.RowBytes(done), type.BlockBytes()), new Span<float>(dst + done, QuantBlocks.QK));
        }
    }

    /// <summary>Zero-extends 8 bytes (the low or the high half of <paramref name="v"/>) to floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Bytes8(Vector128<byte> v, bool upper) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(upper ? Sse2.ShiftRightLogical128BitLane(v, 8) : v));

    /// <summary>Sign-extends 8 bytes (the low or the high half of <paramref name="v"/>) to floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SBytes8(Vector128<sbyte> v, bool upper) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(upper ? Sse2.ShiftRightLogical128BitLane(v, 8) : v));

    /// <summary>16 signed values times a scale, stored as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16(Vector128<sbyte> q, Vector256<float> scale, float* dst)
    {
        (SBytes8(q, false) * scale).Store(dst);
        (SBytes8(q, true) * scale).Store(dst + 8);
    }

    private struct Q8_0Decoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            for (int k = 0; k < 2; k++)
            {
                byte* b = row + 68 * g + 34 * k;
                Vector256<float> d = Vector256.Create(Half(b));
                Store16(Vector128.Load((sbyte*)(b + 2)), d, dst + 32 * k);
                Store16(Vector128.Load((sbyte*)(b + 18)), d, dst + 32 * k + 16);
            }
        }
    }

    private struct Q4_0Decoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            Vector128<sbyte> eight = Vector128.Create((sbyte)8);
            for (int k = 0; k < 2; k++)
            {
                byte* b = row + 36 * g + 18 * k;
                Vector256<float> d = Vector256.Create(Half(b));
                Vector128<byte> qs = Vector128.Load(b + 2);
                Store16((qs & low4).AsSByte() - eight, d, dst + 32 * k);
                Store16((qs >> 4).AsSByte() - eight, d, dst + 32 * k + 16);
            }
        }
    }

    private struct Q5_0Decoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            Vector128<sbyte> sixteen = Vector128.Create((sbyte)16);
            for (int k = 0; k < 2; k++)
            {
                byte* b = row + 44 * g + 22 * k;
                Vector256<float> d = Vector256.Create(Half(b));
                HighBits5(*(uint*)(b + 2), out Vector128<byte> h0, out Vector128<byte> h1);
                Vector128<byte> qs = Vector128.Load(b + 6);
                Store16(((qs & low4) | h0).AsSByte() - sixteen, d, dst + 32 * k);
                Store16(((qs >> 4) | h1).AsSByte() - sixteen, d, dst + 32 * k + 16);
            }
        }
    }

    /// <summary>16 unsigned values q as <c>q·d + m</c> (the reference's order: convert, multiply, add), stored as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreAffine16(Vector128<byte> q, Vector256<float> d, Vector256<float> m, float* dst)
    {
        (Bytes8(q, false) * d + m).Store(dst);
        (Bytes8(q, true) * d + m).Store(dst + 8);
    }

    /// <summary>
    /// The 5th bits of a legacy 5-bit block as 0x10 in byte lanes: bit j of qh → lane j of h0 (values 0-15) and bit 16+j → lane j
    /// of h1 (values 16-31), by spreading qh's bytes (byte j/8 to lane j) and testing each lane's bit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void HighBits5(uint qhWord, out Vector128<byte> h0, out Vector128<byte> h1)
    {
        Vector128<byte> bits = Vector128.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        Vector128<byte> lowBytes = Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        Vector128<byte> highBytes = Vector128.Create((byte)2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        Vector128<byte> qh = Vector128.Create(qhWord).AsByte();
        h0 = Vector128.Equals(Ssse3.Shuffle(qh, lowBytes) & bits, bits) & Vector128.Create((byte)0x10);
        h1 = Vector128.Equals(Ssse3.Shuffle(qh, highBytes) & bits, bits) & Vector128.Create((byte)0x10);
    }

    private struct Q4_1Decoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            for (int k = 0; k < 2; k++)
            {
                byte* b = row + 40 * g + 20 * k;
                Vector256<float> d = Vector256.Create(Half(b));
                Vector256<float> m = Vector256.Create(Half(b + 2));
                Vector128<byte> qs = Vector128.Load(b + 4);
                StoreAffine16(qs & low4, d, m, dst + 32 * k);
                StoreAffine16(qs >> 4, d, m, dst + 32 * k + 16);
            }
        }
    }

    private struct Q5_1Decoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            for (int k = 0; k < 2; k++)
            {
                byte* b = row + 48 * g + 24 * k;
                Vector256<float> d = Vector256.Create(Half(b));
                Vector256<float> m = Vector256.Create(Half(b + 2));
                HighBits5(*(uint*)(b + 4), out Vector128<byte> h0, out Vector128<byte> h1);
                Vector128<byte> qs = Vector128.Load(b + 8);
                StoreAffine16((qs & low4) | h0, d, m, dst + 32 * k);
                StoreAffine16((qs >> 4) | h1, d, m, dst + 32 * k + 16);
            }
        }
    }

    private struct Q4_KDecoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            byte* b = row + 144 * (g >> 2);
            int j = g & 3;
            float d = Half(b);
            float dmin = Half(b + 2);
            ReadOnlySpan<byte> scales = new(b + 4, QuantBlocks.KScaleSize);
            QuantBlocks.ScaleMinK4(2 * j, scales, out int sc1, out int m1);
            QuantBlocks.ScaleMinK4(2 * j + 1, scales, out int sc2, out int m2);
            Vector256<float> d1 = Vector256.Create(d * sc1);
            Vector256<float> min1 = Vector256.Create(dmin * m1);
            Vector256<float> d2 = Vector256.Create(d * sc2);
            Vector256<float> min2 = Vector256.Create(dmin * m2);
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            byte* qs = b + 16 + 32 * j;
            for (int half = 0; half < 2; half++)
            {
                Vector128<byte> a = Vector128.Load(qs + 16 * half);
                Vector128<byte> lo = a & low4;
                Vector128<byte> hi = a >> 4;
                float* o = dst + 16 * half;
                (Bytes8(lo, false) * d1 - min1).Store(o);
                (Bytes8(lo, true) * d1 - min1).Store(o + 8);
                (Bytes8(hi, false) * d2 - min2).Store(o + 32);
                (Bytes8(hi, true) * d2 - min2).Store(o + 40);
            }
        }
    }

    private struct Q5_KDecoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            // As Q4_K; value l of sub-block 2j (low nibbles) takes bit 2j of qh[l] as its 5th bit, sub-block 2j+1 bit 2j+1.
            byte* b = row + 176 * (g >> 2);
            int j = g & 3;
            float d = Half(b);
            float dmin = Half(b + 2);
            ReadOnlySpan<byte> scales = new(b + 4, QuantBlocks.KScaleSize);
            QuantBlocks.ScaleMinK4(2 * j, scales, out int sc1, out int m1);
            QuantBlocks.ScaleMinK4(2 * j + 1, scales, out int sc2, out int m2);
            Vector256<float> d1 = Vector256.Create(d * sc1);
            Vector256<float> min1 = Vector256.Create(dmin * m1);
            Vector256<float> d2 = Vector256.Create(d * sc2);
            Vector256<float> min2 = Vector256.Create(dmin * m2);
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            Vector128<byte> one = Vector128.Create((byte)1);
            byte* qs = b + 48 + 32 * j;
            for (int half = 0; half < 2; half++)
            {
                Vector128<byte> a = Vector128.Load(qs + 16 * half);
                Vector128<byte> h = Vector128.Load(b + 16 + 16 * half);
                Vector128<byte> lo = (a & low4) | (((h >> (2 * j)) & one) << 4);
                Vector128<byte> hi = (a >> 4) | (((h >> (2 * j + 1)) & one) << 4);
                float* o = dst + 16 * half;
                (Bytes8(lo, false) * d1 - min1).Store(o);
                (Bytes8(lo, true) * d1 - min1).Store(o + 8);
                (Bytes8(hi, false) * d2 - min2).Store(o + 32);
                (Bytes8(hi, true) * d2 - min2).Store(o + 40);
            }
        }
    }

    private struct Q6_KDecoder256 : IDecoder256
    {
        public static void Decode(byte* row, int g, float* dst)
        {
            // The same quarter pairs as the AVX-512 decoder: part 0 low nibbles and bit pairs 0/1, part 1 high nibbles and pairs 2/3.
            byte* b = row + 210 * (g >> 2);
            int c = (g >> 1) & 1;
            int part = g & 1;
            byte* ql = b + 64 * c;
            byte* qh = b + 128 + 32 * c;
            sbyte* sc = (sbyte*)(b + 192) + 8 * c + 4 * part;
            float d = Half(b + 208);
            Vector128<byte> low4 = Vector128.Create((byte)0x0F);
            Vector128<byte> low2 = Vector128.Create((byte)0x03);
            Vector128<sbyte> bias = Vector128.Create((sbyte)32);
            for (int v = 0; v < 4; v++)
            {
                Vector128<byte> a = Vector128.Load(ql + 16 * v);
                Vector128<byte> h = Vector128.Load(qh + 16 * (v & 1));
                int pair = 2 * (v >> 1) + 4 * part;
                Vector128<byte> nibble = part == 0 ? a & low4 : a >> 4;
                Vector128<byte> q = nibble | (((h >> pair) & low2) << 4);
                Store16(q.AsSByte() - bias, Vector256.Create(d * sc[v]), dst + 16 * v);
            }
        }
    }

    internal static float DotQ8_0Avx2(byte* row, float* x, int nb)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int i = 0; i < nb; i++)
        {
            byte* b = row + i * 34;
            sbyte* q = (sbyte*)(b + 2);
            Vector256<float> d = Vector256.Create(Half(b));
            float* xb = x + i * 32;
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q)) * d, Vector256.Load(xb), a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 8)) * d, Vector256.Load(xb + 8), a1);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 16)) * d, Vector256.Load(xb + 16), a2);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 24)) * d, Vector256.Load(xb + 24), a3);
        }

        return Vector256.Sum((a0 + a1) + (a2 + a3));
    }

    internal static float DotQ4_0Avx2(byte* row, float* x, int nb)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector128<byte> low4 = Vector128.Create((byte)0x0F);
        Vector128<sbyte> eight = Vector128.Create((sbyte)8);
        for (int i = 0; i < nb; i++)
        {
            byte* b = row + i * 18;
            Vector256<float> d = Vector256.Create(Half(b));
            Vector128<byte> qs = Vector128.Load(b + 2);
            Vector128<sbyte> lo = (qs & low4).AsSByte() - eight;
            Vector128<sbyte> hi = (qs >> 4).AsSByte() - eight;
            float* xb = x + i * 32;
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(lo)) * d, Vector256.Load(xb), a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(lo, 8))) * d, Vector256.Load(xb + 8), a1);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(hi)) * d, Vector256.Load(xb + 16), a2);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(hi, 8))) * d, Vector256.Load(xb + 24), a3);
        }

        return Vector256.Sum((a0 + a1) + (a2 + a3));
    }
}
