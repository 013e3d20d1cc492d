using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// Fused dequantize-and-dot kernels for block-quantized weight rows on the CPU. Weights stay in their blocks;
/// activations stay float32 (llama.cpp instead rounds them to 8 bits, see <c>ggml_vec_dot_q4_0_q8_0</c>), so the
/// result is the float dot product of <see cref="QuantBlocks.DequantizeRow"/>'s output with x, up to summation order.
/// </summary>
/// <remarks>
/// On AVX-512 each format has one kernel that turns raw blocks into dequantized 16-float vectors — bit-identical
/// to the scalar reference — and hands them to a sink: <see cref="DotSink"/> multiplies them into four independent
/// accumulators (four FMA chains hide the FMA latency), <see cref="StoreSink"/> writes them out (used by
/// <see cref="Dequantize"/> and the batched <see cref="DotRows"/>). The sinks are structs, so the JIT specializes
/// each kernel per sink with no indirection. 4-bit formats dequantize by table lookup: the 16 possible values of a
/// (sub-)block are one vector (<c>(q - 8)·d</c>, <c>d·sc·q - m</c>) and <c>vpermps</c> picks them by nibble, which
/// replaces mask, convert and multiply. Without AVX-512, Q8_0 and Q4_0 have AVX2 kernels and the other types go
/// through a per-block scalar dequantization into a stack buffer.
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
        if (s_avx512)
        {
            DotSink sink = new(x);
            if (RunAvx512(type, row, cols, ref sink))
            {
                return sink.Sum();
            }
        }
        else if (s_avx2)
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
    /// One weight row against <paramref name="nx"/> activation rows (x row r starts at <c>x + r·xStride</c>):
    /// results[r] = DotRow(row, x_r). The row is dequantized once per 1024-column chunk and reused for every x row,
    /// which is what pays in prompt processing.
    /// </summary>
    public static void DotRows(DType type, byte* row, float* x, int xStride, int nx, int cols, float* results)
    {
        CheckCols(type, cols);
        if (nx == 1)
        {
            results[0] = DotRow(type, row, x, cols);
            return;
        }

        float* chunk = stackalloc float[ChunkFloats];
        new Span<float>(results, nx).Clear();
        for (int c0 = 0; c0 < cols; c0 += ChunkFloats)
        {
            int n = Math.Min(ChunkFloats, cols - c0);
            Dequantize(type, row + type.RowBytes(c0), chunk, n);
            ReadOnlySpan<float> w = new(chunk, n);
            for (int r = 0; r < nx; r++)
            {
                results[r] += TensorPrimitives.Dot(w, new ReadOnlySpan<float>(x + (long)r * xStride + c0, n));
            }
        }
    }

    /// <summary>
    /// Dequantizes a row of <paramref name="cols"/> values into <paramref name="dst"/>; the same values as
    /// <see cref="QuantBlocks.DequantizeRow"/>, vectorized (token embedding lookups, batched dots).
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

        if (s_avx512)
        {
            StoreSink sink = new(dst);
            if (RunAvx512(type, row, cols, ref sink))
            {
                return;
            }
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
    /// binary16 → float for finite values (block scales are never Inf/NaN; ggml_validate_row_data rejects them):
    /// the exponent/mantissa bits shifted into float position read as a float 2^112 too small for normals and as a
    /// float denormal for half denormals, so one multiply by 2^112 fixes both exactly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Half(byte* p)
    {
        uint h = *(ushort*)p;
        float magnitude = BitConverter.UInt32BitsToSingle((h & 0x7FFF) << 13) * 5.192296858534828e33f;
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(magnitude) | ((h & 0x8000) << 16));
    }

    // ---------------------------------------------------------------- AVX-512 kernels

    /// <summary>Receives dequantized weights, 16 at a time, at element <c>offset</c> of the row; <c>slot</c> (a constant) picks an accumulator.</summary>
    private interface ISink
    {
        void Put(int slot, int offset, Vector512<float> w);
    }

    private struct DotSink : ISink
    {
        private readonly float* _x;
        private Vector512<float> _a0;
        private Vector512<float> _a1;
        private Vector512<float> _a2;
        private Vector512<float> _a3;

        public DotSink(float* x) => _x = x;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Put(int slot, int offset, Vector512<float> w)
        {
            Vector512<float> x = Vector512.Load(_x + offset);
            switch (slot)
            {
                case 0: _a0 = Avx512F.FusedMultiplyAdd(w, x, _a0); break;
                case 1: _a1 = Avx512F.FusedMultiplyAdd(w, x, _a1); break;
                case 2: _a2 = Avx512F.FusedMultiplyAdd(w, x, _a2); break;
                default: _a3 = Avx512F.FusedMultiplyAdd(w, x, _a3); break;
            }
        }

        public readonly float Sum() => Vector512.Sum((_a0 + _a1) + (_a2 + _a3));
    }

    private readonly struct StoreSink : ISink
    {
        private readonly float* _dst;

        public StoreSink(float* dst) => _dst = dst;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Put(int slot, int offset, Vector512<float> w) => w.Store(_dst + offset);
    }

    private static bool RunAvx512<TSink>(DType type, byte* row, int cols, ref TSink sink)
        where TSink : struct, ISink
    {
        switch (type)
        {
            case DType.Q8_0: Q8_0(row, cols / QuantBlocks.QK, ref sink); return true;
            case DType.Q4_0: Q4_0(row, cols / QuantBlocks.QK, ref sink); return true;
            case DType.Q5_0: Q5_0(row, cols / QuantBlocks.QK, ref sink); return true;
            case DType.Q4_K: Q4_K(row, cols / QuantBlocks.QK_K, ref sink); return true;
            case DType.Q6_K: Q6_K(row, cols / QuantBlocks.QK_K, ref sink); return true;
            default: return false;
        }
    }

    private static Vector512<float> Iota16 => Vector512.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f, 10f, 11f, 12f, 13f, 14f, 15f);

    private static Vector512<int> Iota16Int => Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Bytes16(byte* p) => Avx512F.ConvertToVector512Int32(Vector128.Load(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SBytesToFloat(Vector128<sbyte> v) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(v));

    /// <summary>Q8_0: sign-extend 16 int8 → int32 → float, times d (the reference's <c>q·d</c>).</summary>
    private static void Q8_0<TSink>(byte* row, int nb, ref TSink sink)
        where TSink : struct, ISink
    {
        int i = 0;
        for (; i + 2 <= nb; i += 2)
        {
            byte* b = row + i * 34;
            Vector512<float> d0 = Vector512.Create(Half(b));
            Vector512<float> d1 = Vector512.Create(Half(b + 34));
            int o = i * 32;
            sink.Put(0, o, SBytesToFloat(Vector128.Load((sbyte*)(b + 2))) * d0);
            sink.Put(1, o + 16, SBytesToFloat(Vector128.Load((sbyte*)(b + 18))) * d0);
            sink.Put(2, o + 32, SBytesToFloat(Vector128.Load((sbyte*)(b + 36))) * d1);
            sink.Put(3, o + 48, SBytesToFloat(Vector128.Load((sbyte*)(b + 52))) * d1);
        }

        if (i < nb)
        {
            byte* b = row + i * 34;
            Vector512<float> d0 = Vector512.Create(Half(b));
            sink.Put(0, i * 32, SBytesToFloat(Vector128.Load((sbyte*)(b + 2))) * d0);
            sink.Put(1, i * 32 + 16, SBytesToFloat(Vector128.Load((sbyte*)(b + 18))) * d0);
        }
    }

    /// <summary>Q4_0: table[(q)] = (q − 8)·d, looked up by the low/high nibble (vpermps reads only an index's low 4 bits).</summary>
    private static void Q4_0<TSink>(byte* row, int nb, ref TSink sink)
        where TSink : struct, ISink
    {
        Vector512<float> iotaMinus8 = Iota16 - Vector512.Create(8f);
        int i = 0;
        for (; i + 2 <= nb; i += 2)
        {
            byte* b = row + i * 18;
            Vector512<float> t0 = iotaMinus8 * Vector512.Create(Half(b));
            Vector512<float> t1 = iotaMinus8 * Vector512.Create(Half(b + 18));
            Vector512<int> v0 = Bytes16(b + 2);
            Vector512<int> v1 = Bytes16(b + 20);
            int o = i * 32;
            sink.Put(0, o, Avx512F.PermuteVar16x32(t0, v0));
            sink.Put(1, o + 16, Avx512F.PermuteVar16x32(t0, Avx512F.ShiftRightLogical(v0, 4)));
            sink.Put(2, o + 32, Avx512F.PermuteVar16x32(t1, v1));
            sink.Put(3, o + 48, Avx512F.PermuteVar16x32(t1, Avx512F.ShiftRightLogical(v1, 4)));
        }

        if (i < nb)
        {
            byte* b = row + i * 18;
            Vector512<float> t0 = iotaMinus8 * Vector512.Create(Half(b));
            Vector512<int> v0 = Bytes16(b + 2);
            sink.Put(0, i * 32, Avx512F.PermuteVar16x32(t0, v0));
            sink.Put(1, i * 32 + 16, Avx512F.PermuteVar16x32(t0, Avx512F.ShiftRightLogical(v0, 4)));
        }
    }

    /// <summary>Q5_0: a 32-entry table (q − 16)·d in two vectors, indexed by nibble | 5th bit via vpermt2ps.</summary>
    private static void Q5_0<TSink>(byte* row, int nb, ref TSink sink)
        where TSink : struct, ISink
    {
        Vector512<float> iota = Iota16;
        Vector512<float> lowHalf = iota - Vector512.Create(16f);
        Vector512<int> iotaInt = Iota16Int;
        Vector512<int> nibble = Vector512.Create(0xF);
        Vector512<int> bit4 = Vector512.Create(0x10);
        for (int i = 0; i < nb; i++)
        {
            byte* b = row + i * 22;
            Vector512<float> d = Vector512.Create(Half(b));
            Vector512<float> tLow = lowHalf * d;
            Vector512<float> tHigh = iota * d;
            uint qh = *(uint*)(b + 2);
            Vector512<int> v = Bytes16(b + 6);

            // Element j's 5th bit is qh bit j (j < 16) or bit j for the high nibbles (j = 16..31), as ggml's xh_0/xh_1.
            Vector512<int> h0 = Avx512F.ShiftRightLogicalVariable(Vector512.Create(qh << 4), iotaInt.AsUInt32()).AsInt32() & bit4;
            Vector512<int> h1 = Avx512F.ShiftRightLogicalVariable(Vector512.Create(qh >> 12), iotaInt.AsUInt32()).AsInt32() & bit4;
            Vector512<int> idx0 = (v & nibble) | h0;
            Vector512<int> idx1 = Avx512F.ShiftRightLogical(v, 4) | h1;
            sink.Put(0, i * 32, Avx512F.PermuteVar16x32x2(tLow, idx0, tHigh));
            sink.Put(1, i * 32 + 16, Avx512F.PermuteVar16x32x2(tLow, idx1, tHigh));
        }
    }

    /// <summary>Q4_K: per 32-value sub-block a table d·sc·q − dmin·m (the reference's <c>d1 * q - m1</c>), looked up by nibble.</summary>
    private static void Q4_K<TSink>(byte* row, int nb, ref TSink sink)
        where TSink : struct, ISink
    {
        Vector512<float> iota = Iota16;
        for (int i = 0; i < nb; i++)
        {
            byte* b = row + i * 144;
            float d = Half(b);
            float dmin = Half(b + 2);
            ReadOnlySpan<byte> scales = new(b + 4, QuantBlocks.KScaleSize);
            byte* qs = b + 16;
            int o = i * QuantBlocks.QK_K;
            for (int g = 0; g < 4; g++)
            {
                QuantBlocks.ScaleMinK4(2 * g, scales, out int sc1, out int m1);
                QuantBlocks.ScaleMinK4(2 * g + 1, scales, out int sc2, out int m2);
                Vector512<float> t1 = iota * Vector512.Create(d * sc1) - Vector512.Create(dmin * m1);
                Vector512<float> t2 = iota * Vector512.Create(d * sc2) - Vector512.Create(dmin * m2);
                Vector512<int> v0 = Bytes16(qs + 32 * g);
                Vector512<int> v1 = Bytes16(qs + 32 * g + 16);
                int go = o + 64 * g;
                sink.Put(0, go, Avx512F.PermuteVar16x32(t1, v0));
                sink.Put(1, go + 16, Avx512F.PermuteVar16x32(t1, v1));
                sink.Put(2, go + 32, Avx512F.PermuteVar16x32(t2, Avx512F.ShiftRightLogical(v0, 4)));
                sink.Put(3, go + 48, Avx512F.PermuteVar16x32(t2, Avx512F.ShiftRightLogical(v1, 4)));
            }
        }
    }

    /// <summary>
    /// Q6_K: the four 6-bit values of a (ql, ql+32, qh) byte triple are assembled 16 at a time in byte lanes, biased
    /// to signed, widened to float and multiplied by d·scale (the reference's <c>d * sc * q</c>).
    /// </summary>
    private static void Q6_K<TSink>(byte* row, int nb, ref TSink sink)
        where TSink : struct, ISink
    {
        Vector128<byte> low4 = Vector128.Create((byte)0x0F);
        Vector128<byte> low2 = Vector128.Create((byte)0x03);
        Vector128<sbyte> bias = Vector128.Create((sbyte)32);
        for (int i = 0; i < nb; i++)
        {
            byte* b = row + i * 210;
            float d = Half(b + 208);
            sbyte* scales = (sbyte*)(b + 192);
            int o = i * QuantBlocks.QK_K;
            for (int c = 0; c < 2; c++)
            {
                byte* ql = b + 64 * c;
                byte* qh = b + 128 + 32 * c;
                sbyte* sc = scales + 8 * c;
                for (int l = 0; l < 32; l += 16)
                {
                    Vector128<byte> a = Vector128.Load(ql + l);
                    Vector128<byte> a32 = Vector128.Load(ql + 32 + l);
                    Vector128<byte> h = Vector128.Load(qh + l);
                    Vector128<byte> q1 = (a & low4) | ((h & low2) << 4);
                    Vector128<byte> q2 = (a32 & low4) | (((h >> 2) & low2) << 4);
                    Vector128<byte> q3 = (a >> 4) | (((h >> 4) & low2) << 4);
                    Vector128<byte> q4 = (a32 >> 4) | ((h >> 6) << 4);
                    int isc = l / 16;
                    int lo = o + 128 * c + l;
                    sink.Put(0, lo, SBytesToFloat(q1.AsSByte() - bias) * Vector512.Create(d * sc[isc]));
                    sink.Put(1, lo + 32, SBytesToFloat(q2.AsSByte() - bias) * Vector512.Create(d * sc[isc + 2]));
                    sink.Put(2, lo + 64, SBytesToFloat(q3.AsSByte() - bias) * Vector512.Create(d * sc[isc + 4]));
                    sink.Put(3, lo + 96, SBytesToFloat(q4.AsSByte() - bias) * Vector512.Create(d * sc[isc + 6]));
                }
            }
        }
    }

    // ---------------------------------------------------------------- AVX2 kernels (no AVX-512)

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
