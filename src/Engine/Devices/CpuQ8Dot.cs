using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// Activation rows rounded to 8 bits the way llama.cpp's CPU backend rounds them before a quantized dot product:
/// 32-value blocks (<c>quantize_row_q8_0</c>: d = max|x|/127 stored as F16, q = round-to-even(x·127/max|x|)) for
/// Q8_0/Q4_0/Q5_0 weights (with <c>quantize_row_q8_1</c>'s s = d·Σq for Q4_1/Q5_1), and 256-value blocks
/// (<c>quantize_row_q8_K_ref</c>: d = 1/(−127/m) with m the value of largest magnitude, q = nearest(x·(−127/m))
/// capped at 127, plus the sums of each 16) for the K-quants.
/// Kept as separate arrays so that the kernels load the quants of a row contiguously.
/// </summary>
internal sealed unsafe class Q8Activations : IDisposable
{
    private byte* _memory;
    private long _capacity;

    /// <summary>Columns per row of the last <see cref="Quantize"/>.</summary>
    public int Cols { get; private set; }

    public int Rows { get; private set; }

    /// <summary>Quants of row r: Qs + r·Cols.</summary>
    public sbyte* Qs { get; private set; }

    /// <summary>Q8_1's s of each 32-block (d·Σq, F16-rounded, as floats): what Q4_1/Q5_1 minimums multiply.</summary>
    public float* S32 { get; private set; }

    /// <summary>
    /// D32, Sum32 and S32 with each whole group of eight blocks in the order 0 2 4 6 1 3 5 7 — the lanes of the pair
    /// kernels' block sums, so that they load x's side ready-made instead of permuting it for every weight row.
    /// </summary>
    public float* D32Ord { get; private set; }

    public int* Sum32Ord { get; private set; }

    public float* S32Ord { get; private set; }

    /// <summary>Q8_0 scales (Cols/32 per row; F16-rounded, as floats) and sums of each block's quants.</summary>
    public float* D32 { get; private set; }

    public int* Sum32 { get; private set; }

    /// <summary>Q8_K scales (Cols/256 per row) and sums of each 16 quants (Cols/16 per row).</summary>
    public float* D256 { get; private set; }

    public short* BSums { get; private set; }

    /// <summary>
    /// Quantizes <paramref name="rows"/> rows of <paramref name="cols"/> floats: into 32-blocks when
    /// <paramref name="blocks32"/>, into 256-blocks when <paramref name="blocks256"/> (cols must be a multiple). The
    /// layouts only the 512-bit decode kernels read are written when asked for (and the CPU has them):
    /// <paramref name="quads"/> for grouped Q4_0 (<see cref="Quads32"/>, <see cref="Corr32"/>), <paramref name="kOrder"/>
    /// for Q4_K/Q5_K (<see cref="QsK"/>); otherwise they are null.
    /// </summary>
    public void Quantize(float* x, int rows, int cols, bool blocks32, bool blocks256, bool quads = false, bool kOrder = false)
    {
        long n = (long)rows * cols;
        long qsBytes = Align(blocks32 && blocks256 ? 2 * n : n);
        long pairBytes = blocks32 ? Align(n) : 0;
        long d32Bytes = Align(4 * (n / 32));
        long d256Bytes = Align(4 * (n / 256));
        long baseNeed = qsBytes + pairBytes + 6 * d32Bytes + d256Bytes + Align(2 * (n / 16));
        bool wideK = kOrder && blocks256 && CpuQ8Dot.Has512;
        quads = quads && blocks32 && CpuQ8Dot.Has512;
        long kBytes = wideK ? Align(n) : 0, quadBytes = quads ? Align(n) : 0, corrBytes = quads ? Align(n / 2) : 0;
        long need = baseNeed + kBytes + quadBytes + corrBytes;
        if (need > _capacity)
        {
            NativeMemory.AlignedFree(_memory);
            _memory = (byte*)NativeMemory.AlignedAlloc((nuint)need, 64);
            _capacity = need;
        }

        Qs = (sbyte*)_memory;
        D32 = (float*)(_memory + qsBytes);
        Sum32 = (int*)(_memory + qsBytes + d32Bytes);
        D256 = (float*)(_memory + qsBytes + 2 * d32Bytes);
        BSums = (short*)(_memory + qsBytes + 2 * d32Bytes + d256Bytes);
        S32 = (float*)(_memory + baseNeed - pairBytes - d32Bytes);
        D32Ord = (float*)(_memory + baseNeed - pairBytes - 2 * d32Bytes);
        Sum32Ord = (int*)(_memory + baseNeed - pairBytes - 3 * d32Bytes);
        S32Ord = (float*)(_memory + baseNeed - pairBytes - 4 * d32Bytes);
        Pairs32 = (sbyte*)(_memory + baseNeed - pairBytes);
        QsK = wideK ? (sbyte*)(_memory + baseNeed) : null;
        Quads32 = quads ? (sbyte*)(_memory + baseNeed + kBytes) : null;
        Corr32 = quads ? (int*)(_memory + baseNeed + kBytes + quadBytes) : null;
        Rows = rows;
        Cols = cols;

        // One layout of quants serves both kinds only when one kind is asked for; with both (a layer mixing Q8_0 and
        // K-quant weights), the 32-blocks go to the second half of the quant buffer.
        if (blocks32 && blocks256)
        {
            Qs32 = Qs + n;
        }
        else
        {
            Qs32 = Qs;
        }

        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * cols;
            if (blocks32)
            {
                for (int b = 0; b < cols / 32; b++)
                {
                    long i = (long)r * (cols / 32) + b;
                    QuantizeBlock32(xr + 32 * b, Qs32 + (long)r * cols + 32 * b, out D32[i], out Sum32[i], out S32[i]);
                }

                // the scales and sums again in the lane order the pair kernels' block sums come out in
                long row0 = (long)r * (cols / 32);
                for (int g = 0; g + 8 <= cols / 32; g += 8)
                {
                    for (int k = 0; k < 8; k++)
                    {
                        int from = g + (k < 4 ? 2 * k : 2 * (k - 4) + 1);
                        D32Ord[row0 + g + k] = D32[row0 + from];
                        Sum32Ord[row0 + g + k] = Sum32[row0 + from];
                        S32Ord[row0 + g + k] = S32[row0 + from];
                    }
                }

                // the pair layout of the 4-bit kernels: for blocks A, B: A[0..15] B[0..15] A[16..31] B[16..31]
                sbyte* q = Qs32 + (long)r * cols;
                sbyte* pq = Pairs32 + (long)r * cols;
                for (int b = 0; b + 2 <= cols / 32; b += 2)
                {
                    Vector128<sbyte> a0 = Vector128.Load(q + 32 * b), a1 = Vector128.Load(q + 32 * b + 16);
                    Vector128<sbyte> b0 = Vector128.Load(q + 32 * b + 32), b1 = Vector128.Load(q + 32 * b + 48);
                    a0.Store(pq + 32 * b);
                    b0.Store(pq + 32 * b + 16);
                    a1.Store(pq + 32 * b + 32);
                    b1.Store(pq + 32 * b + 48);
                }

                if (quads)
                {
                    WriteQuads(q, Quads32 + (long)r * cols, Corr32 + (long)r * (cols / 8), cols / 32);
                }
            }

            if (blocks256)
            {
                for (int b = 0; b < cols / 256; b++)
                {
                    QuantizeBlock256(xr + 256 * b, Qs + (long)r * cols + 256 * b, out D256[(long)r * (cols / 256) + b],
                                     BSums + (long)r * (cols / 16) + 16 * b);
                }

                if (wideK)
                {
                    // each 128 values as 0..31, 64..95, 32..63, 96..127: the low nibbles of two 32-byte quant rows
                    // of a K-quant block meet the first half, their high nibbles the second
                    sbyte* src = Qs + (long)r * cols, dst = QsK + (long)r * cols;
                    for (int i = 0; i < cols; i += 128)
                    {
                        Vector256.Load(src + i).Store(dst + i);
                        Vector256.Load(src + i + 64).Store(dst + i + 32);
                        Vector256.Load(src + i + 32).Store(dst + i + 64);
                        Vector256.Load(src + i + 96).Store(dst + i + 96);
                    }
                }
            }
        }
    }

    /// <summary>
    /// The 32-block quants again, two blocks A, B at a time as A[0..15] B[0..15] A[16..31] B[16..31]: the order in
    /// which the low and high nibbles of two Q4_0/Q5_0 blocks come out of one 32-byte register.
    /// </summary>
    public sbyte* Pairs32 { get; private set; }

    /// <summary>The 32-block quants for <see cref="CpuQ8Dot.DotQ4_0Grouped"/> (see WriteQuads; null without AVX-512 BW).</summary>
    public sbyte* Quads32 { get; private set; }

    /// <summary>Per 32-block, four int32 lanes of 8·Σx for the grouped Q4_0 kernel (see WriteQuads).</summary>
    public int* Corr32 { get; private set; }

    /// <summary>
    /// The 256-block quants again with each 128 values as 0..31, 64..95, 32..63, 96..127, for the 512-bit K-quant
    /// kernels (null unless <see cref="Quantize"/> was asked for it).
    /// </summary>
    public sbyte* QsK { get; private set; }

    /// <summary>
    /// The quantized rows back as floats, d·q ([Rows, Cols] into <paramref name="dst"/>), from the 256-blocks or the
    /// 32-blocks: the input of a float matrix product that then computes Σ dequant(w)·dequant(q8(x)), llama.cpp's
    /// quantity, up to float rounding.
    /// </summary>
    public void Dequantize(bool blocks256, float* dst)
    {
        int block = blocks256 ? 256 : 32;
        sbyte* qs = blocks256 ? Qs : Qs32;
        float* d = blocks256 ? D256 : D32;
        long blocks = (long)Rows * Cols / block;
        for (long b = 0; b < blocks; b++)
        {
            Vector256<float> scale = Vector256.Create(d[b]);
            for (int i = 0; i < block; i += 8)
            {
                Vector256<int> q = Avx2.ConvertToVector256Int32(qs + b * block + i);
                Vector256.Store(Avx.ConvertToVector256Single(q) * scale, dst + b * block + i);
            }
        }
    }

    /// <summary>Quants of the 32-blocks (the same buffer as <see cref="Qs"/> unless both kinds were made).</summary>
    public sbyte* Qs32 { get; private set; }

    private static long Align(long bytes) => (bytes + 63) & ~63L;

    /// <summary>
    /// <see cref="Quads32"/> and <see cref="Corr32"/> of one row: per four blocks, their values 0..15, then their
    /// values 16..31 (what the low and the high nibbles of four grouped Q4_0 blocks meet), and the 16 sums of 8·x that
    /// vpmaddubsw/vpmaddwd give for nibbles all equal to 8 (Σ(q−8)·x = Σq·x − that, lane by lane).
    /// </summary>
    private static void WriteQuads(sbyte* q, sbyte* quads, int* corr, int blocks)
    {
        Vector512<byte> eights = Vector512.Create((byte)8);
        Vector512<short> ones = Vector512.Create((short)1);
        for (int b = 0; b + 4 <= blocks; b += 4)
        {
            sbyte* o = quads + 32 * b;
            for (int k = 0; k < 4; k++)
            {
                Vector128.Load(q + 32 * (b + k)).Store(o + 16 * k);
                Vector128.Load(q + 32 * (b + k) + 16).Store(o + 64 + 16 * k);
            }

            Vector512<short> p = Avx512BW.MultiplyAddAdjacent(eights, Vector512.Load(o)) + Avx512BW.MultiplyAddAdjacent(eights, Vector512.Load(o + 64));
            Avx512BW.MultiplyAddAdjacent(p, ones).Store(corr + 4 * b);
        }
    }

    /// <summary>
    /// One Q8_0 block (F16 d, 32 int8 quants) of x[0..32) as <see cref="QuantizeBlock32"/> rounds it (a KV cache row,
    /// as llama.cpp's CPU backend stores one); scalar where AVX2 is missing, with the same arithmetic.
    /// </summary>
    public static void QuantizeQ8_0(float* x, byte* dst)
    {
        if (CpuQ8Dot.IsSupported)
        {
            QuantizeBlock32(x, (sbyte*)(dst + 2), out float d, out _, out _);
            *(Half*)dst = (Half)d; // d is F16-rounded already
            return;
        }

        float amax = 0;
        for (int j = 0; j < 32; j++)
        {
            amax = MathF.Max(amax, MathF.Abs(x[j]));
        }

        *(Half*)dst = (Half)(amax / 127f);
        float id = amax != 0 ? 127f / amax : 0f;
        for (int j = 0; j < 32; j++)
        {
            dst[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.ToEven);
        }
    }

    /// <summary>quantize_row_q8_0 (its AVX2 path): d = amax/127 rounded to F16, q = round-to-even(x · (127/amax)).</summary>
    private static void QuantizeBlock32(float* x, sbyte* q, out float d, out int sum, out float s)
    {
        Vector256<float> signMask = Vector256.Create(-0.0f);
        Vector256<float> a = Vector256.Load(x), b = Vector256.Load(x + 8), c = Vector256.Load(x + 16), e = Vector256.Load(x + 24);
        Vector256<float> m = Vector256.Max(Vector256.Max(Vector256.AndNot(a, signMask), Vector256.AndNot(b, signMask)),
                                           Vector256.Max(Vector256.AndNot(c, signMask), Vector256.AndNot(e, signMask)));
        float amax = MaxAcross(m);
        d = (float)(Half)(amax / 127f);
        float id = amax != 0 ? 127f / amax : 0f;
        Vector256<float> mul = Vector256.Create(id);
        Vector256<int> qa = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(a * mul));
        Vector256<int> qb = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(b * mul));
        Vector256<int> qc = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(c * mul));
        Vector256<int> qe = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(e * mul));
        sum = Vector256.Sum(qa + qb + qc + qe);
        s = (float)(Half)(amax / 127f * sum); // quantize_row_q8_1's s: the unrounded d times the sum, stored as F16
        Store8(qa, q);
        Store8(qb, q + 8);
        Store8(qc, q + 16);
        Store8(qe, q + 24);
    }

    /// <summary>quantize_row_q8_K_ref: m = the first value of largest magnitude, iscale = −127/m, q = min(127, nearest(iscale·x)).</summary>
    private static void QuantizeBlock256(float* x, sbyte* q, out float d, short* bsums)
    {
        Vector256<float> signMask = Vector256.Create(-0.0f);
        Vector256<float> m = Vector256<float>.Zero;
        for (int i = 0; i < 256; i += 8)
        {
            m = Vector256.Max(m, Vector256.AndNot(Vector256.Load(x + i), signMask));
        }

        float amax = MaxAcross(m);
        if (amax == 0)
        {
            d = 0;
            new Span<sbyte>(q, 256).Clear();
            new Span<short>(bsums, 16).Clear();
            return;
        }

        float max = 0;
        for (int i = 0; i < 256; i++)
        {
            if (MathF.Abs(x[i]) == amax)
            {
                max = x[i];
                break;
            }
        }

        float iscale = -127f / max;
        Vector256<float> mul = Vector256.Create(iscale);
        Vector256<int> cap = Vector256.Create(127);
        for (int g = 0; g < 16; g++)
        {
            Vector256<int> q0 = Vector256.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Vector256.Load(x + 16 * g) * mul)), cap);
            Vector256<int> q1 = Vector256.Min(Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(Vector256.Load(x + 16 * g + 8) * mul)), cap);
            bsums[g] = (short)Vector256.Sum(q0 + q1);
            Store8(q0, q + 16 * g);
            Store8(q1, q + 16 * g + 8);
        }

        d = 1 / iscale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxAcross(Vector256<float> v)
    {
        Vector128<float> h = Vector128.Max(v.GetLower(), v.GetUpper());
        h = Vector128.Max(h, Sse.Shuffle(h, h, 0b_01_00_11_10));
        h = Vector128.Max(h, Sse.Shuffle(h, h, 0b_10_11_00_01));
        return h.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8(Vector256<int> v, sbyte* q)
    {
        // the values are in [-127, 127]: narrowing with saturation is exact
        Vector128<short> s = Sse2.PackSignedSaturate(v.GetLower(), v.GetUpper());
        Sse2.StoreScalar((long*)q, Sse2.PackSignedSaturate(s, s).AsInt64());
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(_memory);
        _memory = null;
        _capacity = 0;
    }
}

/// <summary>
/// Integer dot products of block-quantized weight rows with <see cref="Q8Activations"/> rows — llama.cpp's
/// <c>ggml_vec_dot_*_q8_0</c> / <c>*_q8_K</c> arithmetic: the products of quants are summed exactly in integers per block
/// (vpmaddubsw/vpmaddwd), each block's sum is scaled by d_w·d_x in float. The integer sums equal llama.cpp's, so the
/// results differ from it only by the order of the float additions, and the logits match its quantized runs, not
/// exact float math on the dequantized weights (see <see cref="CpuQuantDot"/> for that). Two to three times fewer
/// instructions per weight than widening every quant to float, which is what lets decoding run at memory speed.
/// AVX2 (256-bit) code, which runs on every AVX2 machine; Q4_K and Q5_K also have 512-bit kernels (AVX-512 BW), used
/// where the CPU has it. On Zen 4 a 512-bit op costs two 256-bit ones, so 512 bits pay only where they halve the
/// instructions without adding shuffles: a K-quant block's 128 contiguous quant bytes fill two registers (decoding
/// TinyLlama-shape Q4_K_M 8% and Q5_K_M 4% faster on the 2-core Zen 4 guest, paired A/B). 512-bit versions of Q4_0
/// (its 18-byte blocks need byte gathers) and Q6_K were measured no faster and are not kept.
/// </summary>
internal static unsafe class CpuQ8Dot
{
    public static readonly bool IsSupported = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Whether the 512-bit Q4_K/Q5_K kernels (and the grouped Q4_0 one) run here.</summary>
    public static readonly bool Has512 = IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Whether <paramref name="type"/> has an integer kernel here.</summary>
    public static bool Handles(DType type) =>
        IsSupported && type is DType.Q8_0 or DType.Q4_0 or DType.Q5_0 or DType.Q4_1 or DType.Q5_1
            or DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K or DType.IQ4_NL or DType.IQ4_XS;

    /// <summary>Whether the kernel for <paramref name="type"/> reads 256-blocks (Q8_K) rather than 32-blocks (Q8_0/Q8_1).</summary>
    public static bool UsesBlocks256(DType type) => type is DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K or DType.IQ4_XS;

    /// <summary>Σ dequant(w)·dequant(x row r) for one weight row of <paramref name="type"/>, llama.cpp's way.</summary>
    public static float Dot(DType type, byte* w, Q8Activations x, int r) => Dot(type, w, x, r, Has512);

    /// <summary>
    /// Attention scores over a quantized key cache: dst[i·dstStride + t] = <see cref="Dot(DType, byte*, Q8Activations, int)"/>
    /// of key t (Q8_0 or Q4_0 rows <paramref name="keyStride"/> bytes apart from <paramref name="keys"/>) with activation
    /// row r0 + i, for <paramref name="count"/> keys and <paramref name="rows"/> rows (a KV head's query heads). Bit for
    /// bit Dot's: a head of fewer than 8 blocks runs Dot's per-block loop here, inlined, each key's blocks read once for
    /// all the rows and the type dispatched once, not per key (a decode step makes heads × context of these dots).
    /// </summary>
    public static void KeyScores(DType type, byte* keys, long keyStride, int count, Q8Activations x, int r0, int rows, float* dst, int dstStride)
    {
        int cols = x.Cols, nb = cols / 32;
        if (nb >= 8 || type is not (DType.Q8_0 or DType.Q4_0))
        {
            for (int t = 0; t < count; t++)
            {
                for (int i = 0; i < rows; i++)
                {
                    dst[(long)i * dstStride + t] = Dot(type, keys + t * keyStride, x, r0 + i);
                }
            }

            return;
        }

        float* ht = CpuQuantDot.HalfTable;
        for (int t = 0; t < count; t++)
        {
            byte* w = keys + t * keyStride;
            for (int i = 0; i < rows; i++)
            {
                int r = r0 + i;
                sbyte* xq = x.Qs32 + (long)r * cols;
                float* xd = x.D32 + (long)r * nb;
                Vector256<float> acc = default;
                if (type == DType.Q8_0)
                {
                    for (int b = 0; b < nb; b++)
                    {
                        byte* w0 = w + 34 * b;
                        acc = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[b]), Avx.ConvertToVector256Single(BlockSum8(w0, xq + 32 * b)), acc);
                    }
                }
                else
                {
                    int* xs = x.Sum32 + (long)r * nb;
                    for (int b = 0; b < nb; b++)
                    {
                        byte* wb = w + 18 * b;
                        Vector256<int> p0 = SumPairs(Nibbles32(wb + 2), Vector256.Load(xq + 32 * b)) - Vector256.CreateScalar(8 * xs[b]);
                        acc = Fma.MultiplyAdd(Vector256.Create(H(ht, wb) * xd[b]), Avx.ConvertToVector256Single(p0), acc);
                    }
                }

                dst[(long)i * dstStride + t] = Sum(acc);
            }
        }
    }

    /// <summary><see cref="Dot(DType, byte*, Q8Activations, int)"/> with the 512-bit kernels on or off (tests run both).</summary>
    internal static float Dot(DType type, byte* w, Q8Activations x, int r, bool use512)
    {
        int cols = x.Cols;
        return type switch
        {
            DType.Q8_0 => DotQ8_0(w, x.Qs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), cols / 32),
            DType.Q4_0 => DotQ4_0(w, x.Qs32 + (long)r * cols, x.Pairs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), x.Sum32 + (long)r * (cols / 32),
                                  x.D32Ord + (long)r * (cols / 32), x.Sum32Ord + (long)r * (cols / 32), cols / 32),
            DType.Q5_0 => DotQ5_0(w, x.Qs32 + (long)r * cols, x.Pairs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), x.Sum32 + (long)r * (cols / 32),
                                  x.D32Ord + (long)r * (cols / 32), x.Sum32Ord + (long)r * (cols / 32), cols / 32),
            DType.Q4_1 => DotQ4_1(w, x.Qs32 + (long)r * cols, x.Pairs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), x.S32 + (long)r * (cols / 32),
                                  x.D32Ord + (long)r * (cols / 32), x.S32Ord + (long)r * (cols / 32), cols / 32),
            DType.Q5_1 => DotQ5_1(w, x.Qs32 + (long)r * cols, x.Pairs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), x.S32 + (long)r * (cols / 32),
                                  x.D32Ord + (long)r * (cols / 32), x.S32Ord + (long)r * (cols / 32), cols / 32),
            DType.Q2_K => DotQ2_K(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q3_K => DotQ3_K(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q4_K when use512 && x.QsK != null => DotQ4_K512(w, x.QsK + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q4_K => DotQ4_K(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q5_K when use512 && x.QsK != null => DotQ5_K512(w, x.QsK + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q5_K => DotQ5_K(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.Q6_K => DotQ6_K(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), x.BSums + (long)r * (cols / 16), cols / 256),
            DType.IQ4_NL => DotIQ4_NL(w, x.Qs32 + (long)r * cols, x.D32 + (long)r * (cols / 32), cols / 32),
            DType.IQ4_XS => DotIQ4_XS(w, x.Qs + (long)r * cols, x.D256 + (long)r * (cols / 256), cols / 256),
            _ => throw new ArgumentException($"no integer kernel for {DTypeInfo.DisplayName(type)}", nameof(type)),
        };
    }

    private static Vector256<short> Ones16 => Vector256.Create((short)1);

    /// <summary>
    /// Σ u[i]·s[i] over 32 byte pairs, as 8 int32 partial sums. vpmaddubsw saturates pairs at ±32767; exact here
    /// because every caller's unsigned operand is at most 127 (2·127·127 &lt; 2^15).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SumPairs(Vector256<byte> u, Vector256<sbyte> s) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Ones16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector256<float> v) => Vector256.Sum(v);

    /// <summary>
    /// Q8_0: 34-byte blocks (F16 d, 32 int8 quants); signed × signed through |w| and sign(w)·x. Eight blocks per step,
    /// their sums reduced to one vector by horizontal adds and scaled by one vector of the eight scales
    /// (<see cref="BlockScales"/>).
    /// </summary>
    private static float DotQ8_0(byte* w, sbyte* xq, float* xd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        BlockScales scales = s_q8_0Scales;
        Vector256<float> acc = default;
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            byte* w0 = w + 34 * b;
            CpuPrefetch.Ahead(w0, 272);
            sbyte* x0 = xq + 32 * b;
            Vector256<int> h01 = Avx2.HorizontalAdd(BlockSum8(w0, x0), BlockSum8(w0 + 34, x0 + 32));
            Vector256<int> h23 = Avx2.HorizontalAdd(BlockSum8(w0 + 68, x0 + 64), BlockSum8(w0 + 102, x0 + 96));
            Vector256<int> h45 = Avx2.HorizontalAdd(BlockSum8(w0 + 136, x0 + 128), BlockSum8(w0 + 170, x0 + 160));
            Vector256<int> h67 = Avx2.HorizontalAdd(BlockSum8(w0 + 204, x0 + 192), BlockSum8(w0 + 238, x0 + 224));
            Vector256<int> lo = Avx2.HorizontalAdd(h01, h23), hi = Avx2.HorizontalAdd(h45, h67); // halves of blocks 0-3 | 4-7
            Vector256<int> sums = Avx2.Permute2x128(lo, hi, 0x20) + Avx2.Permute2x128(lo, hi, 0x31);
            Vector256<float> scale = scales.Read(w0) * Vector256.Load(xd + b);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
        }

        for (; b < nb; b++)
        {
            byte* w0 = w + 34 * b;
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[b]), Avx.ConvertToVector256Single(BlockSum8(w0, xq + 32 * b)), acc);
        }

        return Sum(acc);
    }

    /// <summary>Eight partial sums of one Q8_0 block's products with x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockSum8(byte* w, sbyte* x)
    {
        Vector256<sbyte> q = Vector256.Load((sbyte*)(w + 2));
        return SumPairs(Avx2.Sign(q, q).AsByte(), Avx2.Sign(Vector256.Load(x), q));
    }

    private static Vector256<int> NaturalOrder => Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);

    /// <summary>IQ4_NL's 16 levels in both 128-bit lanes, for vpshufb (<see cref="QuantBlocks.IQ4Values"/>).</summary>
    private static Vector256<sbyte> IQ4Levels => Vector256.Create(
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

    /// <summary>
    /// Σ level·x over an IQ4_NL-shaped block (16 bytes of nibbles: values 0-15 low, 16-31 high) and 32 int8
    /// activations, as sixteen int16 pair sums: the low and high nibbles side by side in one register, looked up in
    /// one vpshufb, multiplied through |w| and sign(w)·x as Q8_0's (|level| ≤ 127, so no pair saturates).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> IQ4Pairs(byte* qs, sbyte* x, Vector256<sbyte> levels)
    {
        Vector128<byte> v = Vector128.Load(qs);
        Vector256<byte> nibbles = Vector256.Create(v, Vector128.ShiftRightLogical(v.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
        Vector256<sbyte> q = Avx2.Shuffle(levels, nibbles.AsSByte());
        return Avx2.MultiplyAddAdjacent(Avx2.Sign(q, q).AsByte(), Avx2.Sign(Vector256.Load(x), q));
    }

    private static float DotIQ4_NL(byte* w, sbyte* xq, float* xd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<sbyte> levels = IQ4Levels;
        Vector256<float> acc1 = default, acc2 = default;
        int b = 0;
        for (; b + 1 < nb; b += 2)
        {
            byte* w0 = w + 18 * b;
            CpuPrefetch.Ahead(w0, 36);
            Vector256<int> p1 = Avx2.MultiplyAddAdjacent(IQ4Pairs(w0 + 2, xq + 32 * b, levels), Ones16);
            Vector256<int> p2 = Avx2.MultiplyAddAdjacent(IQ4Pairs(w0 + 20, xq + 32 * b + 32, levels), Ones16);
            acc1 = Fma.MultiplyAdd(Vector256.Create(xd[b] * H(ht, w0)), Avx.ConvertToVector256Single(p1), acc1);
            acc2 = Fma.MultiplyAdd(Vector256.Create(xd[b + 1] * H(ht, w0 + 18)), Avx.ConvertToVector256Single(p2), acc2);
        }

        float sum = Sum(acc1 + acc2);
        ReadOnlySpan<sbyte> table = QuantBlocks.IQ4Values;
        for (; b < nb; b++)
        {
            byte* w0 = w + 18 * b;
            sbyte* x0 = xq + 32 * b;
            int s1 = 0, s2 = 0;
            for (int j = 0; j < 16; j++)
            {
                s1 += x0[j] * table[w0[2 + j] & 0xF];
                s2 += x0[j + 16] * table[w0[2 + j] >> 4];
            }

            sum += xd[b] * H(ht, w0) * (s1 + s2);
        }

        return sum;
    }

    /// <summary>
    /// IQ4_XS × Q8_K, as llama.cpp's AVX2 ggml_vec_dot_iq4_xs_q8_K: per super-block, each sub-block's int16 pair sums
    /// times its scale ls − 32 (vpmaddwd) summed exactly in int32 (the odd sub-blocks in a second register, as there),
    /// then one FMA by d_w·d_x. The four sub-block pairs are written out: the JIT does not unroll, and the loop's
    /// scalar scale unpacking between the vector steps cost a third of the time.
    /// </summary>
    private static float DotIQ4_XS(byte* w, sbyte* xq, float* xd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<sbyte> levels = IQ4Levels;
        Vector256<float> acc = default;
        for (int i = 0; i < nb; i++)
        {
            byte* wb = w + 136 * i;
            CpuPrefetch.Ahead(wb, 136);
            sbyte* x0 = xq + 256 * i;
            uint sh = *(ushort*)(wb + 2);
            uint sl = *(uint*)(wb + 4);
            Vector256<int> sum1 = Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 8, x0, levels), Scale(sl, sh, 0))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 40, x0 + 64, levels), Scale(sl, sh, 2))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 72, x0 + 128, levels), Scale(sl, sh, 4))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 104, x0 + 192, levels), Scale(sl, sh, 6));
            Vector256<int> sum2 = Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 24, x0 + 32, levels), Scale(sl, sh, 1))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 56, x0 + 96, levels), Scale(sl, sh, 3))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 88, x0 + 160, levels), Scale(sl, sh, 5))
                + Avx2.MultiplyAddAdjacent(IQ4Pairs(wb + 120, x0 + 224, levels), Scale(sl, sh, 7));
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, wb) * xd[i]), Avx.ConvertToVector256Single(sum1 + sum2), acc);
        }

        return Sum(acc);
    }

    /// <summary>Sub-block <paramref name="s"/>'s IQ4_XS scale ls − 32 (nibble s of scales_l, bits 2s, 2s+1 of scales_h), broadcast.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Scale(uint scalesL, uint scalesH, int s) =>
        Vector256.Create((short)((((scalesL >> (4 * s)) & 0xF) | (((scalesH >> (2 * s)) & 3) << 4)) - 32));

    /// <summary>
    /// Q4_0: 18-byte blocks (F16 d, 16 bytes of nibbles). Eight blocks per step: two blocks share a register (their
    /// low nibbles in one, high nibbles in the other, against x in <see cref="Q8Activations.Pairs32"/> order), the
    /// four pair sums reduce to eight block sums with three horizontal adds, and the eight scales come in as one
    /// vector (<see cref="BlockScales"/>) — per 256 weights a third of the instructions of a block-at-a-time loop, whose
    /// per-block int-to-float, scale broadcast and FMA were most of its work. Σ(q−8)·x = Σq·x − 8·Σx with the unsigned nibbles.
    /// </summary>
    private static float DotQ4_0(byte* w, sbyte* xq, sbyte* xp, float* xd, int* xs, float* xdOrd, int* xsOrd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        BlockScales scales = s_q4_0Scales;
        int b = 0;
        byte* w0 = w;
        sbyte* x0 = xp;
        for (; b + 8 <= nb; b += 8, w0 += 144, x0 += 256)
        {
            CpuPrefetch.Ahead(w0, 144);
            Vector256<int> p0 = PairSum4(w0, x0, low);
            Vector256<int> p1 = PairSum4(w0 + 36, x0 + 64, low);
            Vector256<int> p2 = PairSum4(w0 + 72, x0 + 128, low);
            Vector256<int> p3 = PairSum4(w0 + 108, x0 + 192, low);
            Vector256<int> sums = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3)); // blocks 0 2 4 6 | 1 3 5 7
            sums -= Vector256.Load(xsOrd + b) << 3;
            Vector256<float> scale = scales.Read(w0) * Vector256.Load(xdOrd + b);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
        }

        for (; b < nb; b++)
        {
            byte* wb = w + 18 * b;
            Vector256<int> p0 = SumPairs(Nibbles32(wb + 2), Vector256.Load(xq + 32 * b)) - Vector256.CreateScalar(8 * xs[b]);
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, wb) * xd[b]), Avx.ConvertToVector256Single(p0), acc);
        }

        return Sum(acc);
    }

    // ---- Q4_0 grouped: what llama.cpp's repacking buys, for one row at a time ----
    //
    // A file's Q4_0 blocks are 18 bytes (F16 d, 16 nibble bytes): no 64-byte load holds only nibbles, and a 512-bit
    // kernel on them spends its time gathering bytes (tried: no faster). On AVX-512 machines the CPU backend copies
    // Q4_0 matrices once, at upload, into groups of eight blocks — the eight scales (16 bytes), then the eight blocks'
    // nibbles (128 bytes) — the same 144 bytes per 256 weights and the same row offsets, so memory stays the file's
    // size and one row is still one stream. Two full loads then hold eight blocks' nibbles; paired A/B on TinyLlama
    // shape: 9% less time per token than the file-layout kernel.

    /// <summary>Whether the CPU backend stores <paramref name="type"/> weights of <paramref name="cols"/> columns grouped.</summary>
    public static bool GroupsQ4_0(DType type, long cols) => Has512 && type == DType.Q4_0 && cols % 256 == 0;

    /// <summary>Copies Q4_0 rows of <paramref name="cols"/> (a multiple of 256) into the grouped layout.</summary>
    public static void GroupQ4_0(byte* src, byte* dst, long rows, int cols)
    {
        long groups = rows * (cols / 256);
        for (long g = 0; g < groups; g++)
        {
            byte* s = src + 144 * g, d = dst + 144 * g;
            for (int k = 0; k < 8; k++)
            {
                *(ushort*)(d + 2 * k) = *(ushort*)(s + 18 * k);
                Vector128.Store(Vector128.Load(s + 18 * k + 2), d + 16 + 16 * k);
            }
        }
    }

    /// <summary>A grouped Q4_0 row segment of <paramref name="n"/> values (a multiple of 256) as floats: d·(q − 8).</summary>
    public static void DequantizeGroupedQ4_0(byte* row, float* dst, int n)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector512<int> low = Vector512.Create(0x0F);
        for (int g = 0; g < n / 256; g++, row += 144, dst += 256)
        {
            for (int k = 0; k < 8; k++)
            {
                Vector512<float> d = Vector512.Create(ht[((ushort*)row)[k]]);
                Vector512<int> q = Avx512F.ConvertToVector512Int32(Vector128.Load(row + 16 + 16 * k));
                Vector512.Store(Avx512F.ConvertToVector512Single((q & low) - Vector512.Create(8)) * d, dst + 32 * k);
                Vector512.Store(Avx512F.ConvertToVector512Single((q >> 4) - Vector512.Create(8)) * d, dst + 32 * k + 16);
            }
        }
    }

    /// <summary>
    /// Σ dequant(w)·dequant(x row r) for a grouped Q4_0 row, llama.cpp's integer sums: per four blocks one register of
    /// nibbles, low nibbles against x values 0..15 and high against 16..31 (<see cref="Q8Activations.Quads32"/>),
    /// 16 lane sums (4 per block) less 8·Σx lane by lane, each lane scaled by its block's d_w·d_x.
    /// </summary>
    public static float DotQ4_0Grouped(byte* w, Q8Activations x, int r)
    {
        int cols = x.Cols, nb = cols / 32;
        sbyte* xq = x.Quads32 + (long)r * cols;
        int* corr = x.Corr32 + (long)r * (cols / 8);
        float* xd = x.D32 + (long)r * nb;
        Vector512<float> acc = default;
        Vector512<byte> low = Vector512.Create((byte)0x0F);
        Vector512<short> ones = Vector512.Create((short)1);
        Vector512<int> lanes0 = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        Vector512<int> lanes1 = lanes0 + Vector512.Create(4);
        for (int b = 0; b < nb; b += 8, w += 144, xq += 256, corr += 32)
        {
            CpuPrefetch.Ahead(w, 144);
            Vector512<float> scale = (HalfToSingle(Vector128.Load((ushort*)w)) * Vector256.Load(xd + b)).ToVector512Unsafe();
            Vector512<byte> q = Vector512.Load(w + 16);
            Vector512<short> p = Avx512BW.MultiplyAddAdjacent(q & low, Vector512.Load(xq)) +
                                 Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low, Vector512.Load(xq + 64));
            Vector512<int> sums = Avx512BW.MultiplyAddAdjacent(p, ones) - Vector512.Load(corr); // |p| ≤ 2·15·127 per pair
            acc = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), Avx512F.PermuteVar16x32(scale, lanes0), acc);

            q = Vector512.Load(w + 80);
            p = Avx512BW.MultiplyAddAdjacent(q & low, Vector512.Load(xq + 128)) +
                Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low, Vector512.Load(xq + 192));
            sums = Avx512BW.MultiplyAddAdjacent(p, ones) - Vector512.Load(corr + 16);
            acc = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), Avx512F.PermuteVar16x32(scale, lanes1), acc);
        }

        return Vector512.Sum(acc);
    }

    // ---- several activation rows at once: short prompts ----
    //
    // A prompt shorter than CpuGemm.MinIntegerRows multiplies each weight row by every activation row while the row
    // is in L1 (CpuDevice). One row at a time, each row re-does the weight side of the work: the loads, the nibble
    // unpacking or Q8_0's |w|, the weight scales. These kernels do it once per group of blocks for all the rows, then run each row's
    // half of the original kernel — the same instructions on the same values in the same order, so each result is
    // bit for bit Dot's (tested), and a short prompt still equals its rows decoded one by one. Their accumulators
    // live in a stack array, one dependency chain per row through a store and a load each step: with 2 rows that
    // latency costs more than the shared unpacking saves (TinyLlama Q4_0 pp2 on Zen 4, four runs: 37 t/s, 39 one row
    // at a time), so 1-2 rows keep the one-row kernels.

    /// <summary>Fewest rows <see cref="DotRows"/> takes through the several-row kernels.</summary>
    private const int MinRows = 3;

    /// <summary>Most activation rows one call of <see cref="DotRows"/> takes.</summary>
    public const int MaxRows = 8;

    /// <summary>
    /// dst[j] = <see cref="Dot(DType, byte*, Q8Activations, int)"/> of rows r0 + j, j &lt; n ≤ <see cref="MaxRows"/>
    /// (<see cref="DotQ4_0Grouped"/> when <paramref name="groupedQ4_0"/>), bit for bit; Q8_0 and Q4_0 unpack each
    /// weight block once for all n rows (3+), the other formats run the one-row kernel per row.
    /// </summary>
    public static void DotRows(DType type, bool groupedQ4_0, byte* w, Q8Activations x, int r0, int n, float* dst)
    {
        int cols = x.Cols, nb = cols / 32;
        if (n < MinRows)
        {
            for (int j = 0; j < n; j++)
            {
                dst[j] = groupedQ4_0 ? DotQ4_0Grouped(w, x, r0 + j) : Dot(type, w, x, r0 + j);
            }
        }
        else if (groupedQ4_0)
        {
            DotQ4_0GroupedRows(w, x, r0, n, dst);
        }
        else if (type == DType.Q8_0)
        {
            DotQ8_0Rows(w, x.Qs32 + (long)r0 * cols, cols, x.D32 + (long)r0 * nb, nb, n, dst);
        }
        else if (type == DType.Q4_0)
        {
            DotQ4_0Rows(w, x.Qs32 + (long)r0 * cols, x.Pairs32 + (long)r0 * cols, cols, x.D32 + (long)r0 * nb, x.Sum32 + (long)r0 * nb,
                        x.D32Ord + (long)r0 * nb, x.Sum32Ord + (long)r0 * nb, nb, n, dst);
        }
        else
        {
            for (int j = 0; j < n; j++)
            {
                dst[j] = Dot(type, w, x, r0 + j);
            }
        }
    }

    /// <summary><see cref="DotQ4_0Grouped"/> for rows r0..r0+n−1: per eight blocks, the scales and nibbles unpacked once.</summary>
    private static void DotQ4_0GroupedRows(byte* w, Q8Activations x, int r0, int n, float* dst)
    {
        int cols = x.Cols, nb = cols / 32;
        Vector512<float>* acc = stackalloc Vector512<float>[MaxRows];
        for (int j = 0; j < n; j++)
        {
            acc[j] = default;
        }

        Vector512<byte> low = Vector512.Create((byte)0x0F);
        Vector512<short> ones = Vector512.Create((short)1);
        Vector512<int> lanes0 = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        Vector512<int> lanes1 = lanes0 + Vector512.Create(4);
        sbyte* xq0 = x.Quads32 + (long)r0 * cols;
        int* corr0 = x.Corr32 + (long)r0 * (cols / 8);
        float* xd0 = x.D32 + (long)r0 * nb;
        for (int b = 0; b < nb; b += 8, w += 144)
        {
            CpuPrefetch.Ahead(w, 144);
            Vector256<float> dw = HalfToSingle(Vector128.Load((ushort*)w));
            Vector512<byte> q = Vector512.Load(w + 16), q2 = Vector512.Load(w + 80);
            Vector512<byte> lo0 = q & low, hi0 = Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low;
            Vector512<byte> lo1 = q2 & low, hi1 = Vector512.ShiftRightLogical(q2.AsUInt16(), 4).AsByte() & low;
            for (int j = 0; j < n; j++)
            {
                sbyte* xq = xq0 + (long)j * cols + 32 * b;
                int* corr = corr0 + (long)j * (cols / 8) + b * 4;
                Vector512<float> scale = (dw * Vector256.Load(xd0 + (long)j * nb + b)).ToVector512Unsafe();
                Vector512<short> p = Avx512BW.MultiplyAddAdjacent(lo0, Vector512.Load(xq)) + Avx512BW.MultiplyAddAdjacent(hi0, Vector512.Load(xq + 64));
                Vector512<int> sums = Avx512BW.MultiplyAddAdjacent(p, ones) - Vector512.Load(corr);
                Vector512<float> a = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), Avx512F.PermuteVar16x32(scale, lanes0), acc[j]);
                p = Avx512BW.MultiplyAddAdjacent(lo1, Vector512.Load(xq + 128)) + Avx512BW.MultiplyAddAdjacent(hi1, Vector512.Load(xq + 192));
                sums = Avx512BW.MultiplyAddAdjacent(p, ones) - Vector512.Load(corr + 16);
                acc[j] = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), Avx512F.PermuteVar16x32(scale, lanes1), a);
            }
        }

        for (int j = 0; j < n; j++)
        {
            dst[j] = Vector512.Sum(acc[j]);
        }
    }

    /// <summary><see cref="DotQ8_0"/> for n rows of x (rows <paramref name="xs"/> quants apart): per eight blocks, q and |q| loaded once.</summary>
    private static void DotQ8_0Rows(byte* w, sbyte* xq0, int xs, float* xd0, int nb, int n, float* dst)
    {
        float* ht = CpuQuantDot.HalfTable;
        BlockScales scales = s_q8_0Scales;
        Vector256<float>* acc = stackalloc Vector256<float>[MaxRows];
        for (int j = 0; j < n; j++)
        {
            acc[j] = default;
        }

        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            byte* w0 = w + 34 * b;
            CpuPrefetch.Ahead(w0, 272);
            Vector256<sbyte> q0 = Vector256.Load((sbyte*)(w0 + 2)), q1 = Vector256.Load((sbyte*)(w0 + 36));
            Vector256<sbyte> q2 = Vector256.Load((sbyte*)(w0 + 70)), q3 = Vector256.Load((sbyte*)(w0 + 104));
            Vector256<sbyte> q4 = Vector256.Load((sbyte*)(w0 + 138)), q5 = Vector256.Load((sbyte*)(w0 + 172));
            Vector256<sbyte> q6 = Vector256.Load((sbyte*)(w0 + 206)), q7 = Vector256.Load((sbyte*)(w0 + 240));
            Vector256<byte> a0 = Avx2.Sign(q0, q0).AsByte(), a1 = Avx2.Sign(q1, q1).AsByte(), a2 = Avx2.Sign(q2, q2).AsByte(), a3 = Avx2.Sign(q3, q3).AsByte();
            Vector256<byte> a4 = Avx2.Sign(q4, q4).AsByte(), a5 = Avx2.Sign(q5, q5).AsByte(), a6 = Avx2.Sign(q6, q6).AsByte(), a7 = Avx2.Sign(q7, q7).AsByte();
            Vector256<float> dw = scales.Read(w0);
            for (int j = 0; j < n; j++)
            {
                sbyte* x0 = xq0 + (long)j * xs + 32 * b;
                Vector256<int> h01 = Avx2.HorizontalAdd(SumPairs(a0, Avx2.Sign(Vector256.Load(x0), q0)), SumPairs(a1, Avx2.Sign(Vector256.Load(x0 + 32), q1)));
                Vector256<int> h23 = Avx2.HorizontalAdd(SumPairs(a2, Avx2.Sign(Vector256.Load(x0 + 64), q2)), SumPairs(a3, Avx2.Sign(Vector256.Load(x0 + 96), q3)));
                Vector256<int> h45 = Avx2.HorizontalAdd(SumPairs(a4, Avx2.Sign(Vector256.Load(x0 + 128), q4)), SumPairs(a5, Avx2.Sign(Vector256.Load(x0 + 160), q5)));
                Vector256<int> h67 = Avx2.HorizontalAdd(SumPairs(a6, Avx2.Sign(Vector256.Load(x0 + 192), q6)), SumPairs(a7, Avx2.Sign(Vector256.Load(x0 + 224), q7)));
                Vector256<int> lo = Avx2.HorizontalAdd(h01, h23), hi = Avx2.HorizontalAdd(h45, h67);
                Vector256<int> sums = Avx2.Permute2x128(lo, hi, 0x20) + Avx2.Permute2x128(lo, hi, 0x31);
                acc[j] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), dw * Vector256.Load(xd0 + (long)j * nb + b), acc[j]);
            }
        }

        for (int j = 0; j < n; j++)
        {
            Vector256<float> a = acc[j];
            sbyte* xq = xq0 + (long)j * xs;
            float* xd = xd0 + (long)j * nb;
            for (int c = b; c < nb; c++)
            {
                byte* w0 = w + 34 * c;
                a = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[c]), Avx.ConvertToVector256Single(BlockSum8(w0, xq + 32 * c)), a);
            }

            dst[j] = Sum(a);
        }
    }

    /// <summary><see cref="DotQ4_0"/> for n rows of x (rows <paramref name="xs"/> quants apart): per eight blocks, the nibbles and scales unpacked once.</summary>
    private static void DotQ4_0Rows(byte* w, sbyte* xq0, sbyte* xp0, int xs, float* xd0, int* xsum0, float* xdOrd0, int* xsOrd0, int nb, int n, float* dst)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        BlockScales scales = s_q4_0Scales;
        Vector256<float>* acc = stackalloc Vector256<float>[MaxRows];
        for (int j = 0; j < n; j++)
        {
            acc[j] = default;
        }

        int b = 0;
        byte* w0 = w;
        for (; b + 8 <= nb; b += 8, w0 += 144)
        {
            CpuPrefetch.Ahead(w0, 144);
            Vector256<byte> q0 = Vector256.Create(Vector128.Load(w0 + 2), Vector128.Load(w0 + 20));
            Vector256<byte> q1 = Vector256.Create(Vector128.Load(w0 + 38), Vector128.Load(w0 + 56));
            Vector256<byte> q2 = Vector256.Create(Vector128.Load(w0 + 74), Vector128.Load(w0 + 92));
            Vector256<byte> q3 = Vector256.Create(Vector128.Load(w0 + 110), Vector128.Load(w0 + 128));
            Vector256<byte> l0 = q0 & low, h0 = High(q0) & low, l1 = q1 & low, h1 = High(q1) & low;
            Vector256<byte> l2 = q2 & low, h2 = High(q2) & low, l3 = q3 & low, h3 = High(q3) & low;
            Vector256<float> dw = scales.Read(w0);
            for (int j = 0; j < n; j++)
            {
                sbyte* x0 = xp0 + (long)j * xs + 32 * b;
                Vector256<int> p0 = NibbleSums(l0, h0, x0), p1 = NibbleSums(l1, h1, x0 + 64);
                Vector256<int> p2 = NibbleSums(l2, h2, x0 + 128), p3 = NibbleSums(l3, h3, x0 + 192);
                Vector256<int> sums = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3));
                sums -= Vector256.Load(xsOrd0 + (long)j * nb + b) << 3;
                acc[j] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), dw * Vector256.Load(xdOrd0 + (long)j * nb + b), acc[j]);
            }
        }

        for (int j = 0; j < n; j++)
        {
            Vector256<float> a = acc[j];
            sbyte* xq = xq0 + (long)j * xs;
            float* xd = xd0 + (long)j * nb;
            int* xsum = xsum0 + (long)j * nb;
            for (int c = b; c < nb; c++)
            {
                byte* wb = w + 18 * c;
                Vector256<int> p0 = SumPairs(Nibbles32(wb + 2), Vector256.Load(xq + 32 * c)) - Vector256.CreateScalar(8 * xsum[c]);
                a = Fma.MultiplyAdd(Vector256.Create(H(ht, wb) * xd[c]), Avx.ConvertToVector256Single(p0), a);
            }

            dst[j] = Sum(a);
        }
    }

    /// <summary><see cref="PairSumNibbles"/> on nibbles already split: low against x, high against x + 32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NibbleSums(Vector256<byte> lo, Vector256<byte> hi, sbyte* x)
    {
        Vector256<short> p = Avx2.MultiplyAddAdjacent(lo, Vector256.Load(x)) + Avx2.MultiplyAddAdjacent(hi, Vector256.Load(x + 32));
        return Avx2.MultiplyAddAdjacent(p, Ones16);
    }

    /// <summary>
    /// Reads the F16 scale (or minimum, at <c>offset</c>) of eight consecutive blocks of <c>stride</c> bytes, in a given
    /// lane order. With AVX-512 VBMI, byte permutes (vpermi2b) over 128-byte windows of the eight blocks — the cache
    /// lines the quants come from — pick the 16 bytes; that is cheaper on Zen 4 than the vpgatherdd it replaces (the
    /// gather is the fallback). The windows never leave the eight blocks (which span at least 144 bytes).
    /// </summary>
    // built once: index vectors for the byte permutes of each block layout (a per-row construction cost as much as
    // the row's dot product for short rows)
    private static readonly BlockScales s_q8_0Scales = new(34, 0, NaturalOrder);
    private static readonly BlockScales s_q4_0Scales = new(18, 0, BlockOrder);
    private static readonly BlockScales s_q5_0Scales = new(22, 0, BlockOrder);
    private static readonly BlockScales s_q4_1Scales = new(20, 0, BlockOrder);
    private static readonly BlockScales s_q4_1Mins = new(20, 2, BlockOrder);
    private static readonly BlockScales s_q5_1Scales = new(24, 0, BlockOrder);
    private static readonly BlockScales s_q5_1Mins = new(24, 2, BlockOrder);

    private readonly struct BlockScales
    {
        private readonly int _stride, _offset, _start2;
        private readonly Vector512<byte> _index1, _index2;
        private readonly Vector256<int> _order;
        private readonly bool _permute, _oneWindow;

        public BlockScales(int stride, int offset, Vector256<int> order)
        {
            _stride = stride;
            _offset = offset;
            _order = order;
            int group = 8 * stride;
            // one window when all eight fit in the first 128 bytes (Q4_0); else blocks 0-3 from the first window and
            // 4-7 from a second one that ends inside the group
            _oneWindow = 7 * stride + offset + 1 < 128;
            _start2 = Math.Min(4 * stride, group - 128);
            byte* i1 = stackalloc byte[64];
            byte* i2 = stackalloc byte[64];
            new Span<byte>(i1, 64).Clear();
            new Span<byte>(i2, 64).Clear();
            for (int lane = 0; lane < 8; lane++)
            {
                int block = _oneWindow ? order.GetElement(lane) : lane;
                if (_oneWindow || block < 4)
                {
                    i1[2 * (_oneWindow ? lane : block)] = (byte)(block * stride + offset);
                    i1[2 * (_oneWindow ? lane : block) + 1] = (byte)(block * stride + offset + 1);
                }
                else
                {
                    i2[2 * (block - 4)] = (byte)(block * stride + offset - _start2);
                    i2[2 * (block - 4) + 1] = (byte)(block * stride + offset - _start2 + 1);
                }
            }

            _index1 = Vector512.Load(i1);
            _index2 = Vector512.Load(i2);
            _permute = !_oneWindow && order != NaturalOrder;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Read(byte* group)
        {
            if (!Avx512Vbmi.IsSupported)
            {
                return Scales8(group + _offset, _stride, _order);
            }

            Vector128<ushort> h = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(group), _index1, Vector512.Load(group + 64)).GetLower().GetLower().AsUInt16();
            if (_oneWindow)
            {
                return HalfToSingle(h);
            }

            byte* g2 = group + _start2;
            Vector128<ushort> h2 = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(g2), _index2, Vector512.Load(g2 + 64)).GetLower().GetLower().AsUInt16();
            Vector256<float> f = HalfToSingle(Sse2.UnpackLow(h.AsUInt64(), h2.AsUInt64()).AsUInt16());
            return _permute ? Avx2.PermuteVar8x32(f, _order) : f;
        }
    }

    /// <summary>Eight halves to floats: the bits placed in a float times 2^112 (exact for finite halves, denormals too).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfToSingle(Vector128<ushort> h8)
    {
        Vector256<int> h = Avx2.ConvertToVector256Int32(h8).AsInt32();
        Vector256<int> magnitude = (h & Vector256.Create(0x7fff)) << 13;
        Vector256<int> sign = (h & Vector256.Create(0x8000)) << 16;
        return (magnitude.AsSingle() * Vector256.Create(5.192296858534828e33f)) | sign.AsSingle();
    }

    /// <summary>Low nibbles of 16 bytes (values 0..15 of a block), then the high nibbles (values 16..31).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles32(byte* qs)
    {
        Vector128<byte> v = Vector128.Load(qs);
        Vector128<byte> m = Vector128.Create((byte)0x0F);
        return Vector256.Create(v & m, Vector128.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m);
    }

    /// <summary>Lane order of the block sums after the horizontal adds of eight blocks in pairs.</summary>
    private static Vector256<int> BlockOrder => Vector256.Create(0, 2, 4, 6, 1, 3, 5, 7);

    /// <summary>Nibble × x sums of two Q4_0 blocks at w (A) and w + 18 (B): lanes 0-3 A's partial sums, 4-7 B's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairSum4(byte* w, sbyte* x, Vector256<byte> low) => PairSumNibbles(w + 2, w + 20, x, low);

    /// <summary>Nibble × x sums of two blocks whose 16 bytes of nibbles are at qa and qb.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairSumNibbles(byte* qa, byte* qb, sbyte* x, Vector256<byte> low)
    {
        Vector256<byte> q = Vector256.Create(Vector128.Load(qa), Vector128.Load(qb));
        Vector256<short> p = Avx2.MultiplyAddAdjacent(q & low, Vector256.Load(x)) +
                             Avx2.MultiplyAddAdjacent(High(q) & low, Vector256.Load(x + 32)); // |each| ≤ 4·15·127
        return Avx2.MultiplyAddAdjacent(p, Ones16);
    }

    /// <summary>
    /// The F16 scales of eight blocks <paramref name="stride"/> bytes apart, in the given order, as floats:
    /// one gather, and the half's bits placed in a float times 2^112 (exact for finite halves, denormals included).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Scales8(byte* w, int stride, Vector256<int> order)
    {
        Vector256<int> h = Avx2.GatherVector256((int*)w, order * stride, 1);
        Vector256<int> magnitude = (h & Vector256.Create(0x7fff)) << 13;
        Vector256<int> sign = (h & Vector256.Create(0x8000)) << 16;
        return (magnitude.AsSingle() * Vector256.Create(5.192296858534828e33f)) | sign.AsSingle();
    }

    /// <summary>0x10 in byte j where bit j of <paramref name="bits"/> is set (ggml's bytes_from_bits_32, masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Bit4FromBits32(uint bits)
    {
        Vector256<byte> spread = Avx2.Shuffle(Vector256.Create(bits).AsByte(),
            Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        Vector256<byte> bit = Vector256.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        return Vector256.Equals(spread & bit, bit) & Vector256.Create((byte)0x10);
    }

    /// <summary>Q5_0: 22-byte blocks (F16 d, 32 high bits, 16 bytes of nibbles), eight at a time as in <see cref="DotQ4_0"/>; Σ(q−16)·x = Σq·x − 16·Σx.</summary>
    private static float DotQ5_0(byte* w, sbyte* xq, sbyte* xp, float* xd, int* xs, float* xdOrd, int* xsOrd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        BlockScales scales = s_q5_0Scales;
        Vector256<float> acc = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            byte* w0 = w + 22 * b;
            CpuPrefetch.Ahead(w0, 176);
            sbyte* x0 = xp + 32 * b;
            Vector256<int> p0 = PairSum5(w0, x0, low);
            Vector256<int> p1 = PairSum5(w0 + 44, x0 + 64, low);
            Vector256<int> p2 = PairSum5(w0 + 88, x0 + 128, low);
            Vector256<int> p3 = PairSum5(w0 + 132, x0 + 192, low);
            Vector256<int> sums = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3));
            sums -= Vector256.Load(xsOrd + b) << 4;
            Vector256<float> scale = scales.Read(w0) * Vector256.Load(xdOrd + b);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
        }

        for (; b < nb; b++)
        {
            byte* w0 = w + 22 * b;
            Vector256<byte> q = Nibbles32(w0 + 6) | Bit4FromBits32(*(uint*)(w0 + 2));
            Vector256<int> p = SumPairs(q, Vector256.Load(xq + 32 * b)) - Vector256.CreateScalar(16 * xs[b]);
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[b]), Avx.ConvertToVector256Single(p), acc);
        }

        return Sum(acc);
    }

    /// <summary><see cref="PairSum4"/> for two Q5_0 blocks: the fifth bits of A's and B's low (high) halves join one mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairSum5(byte* w, sbyte* x, Vector256<byte> low) => PairSumFiveBit(w + 6, w + 28, *(uint*)(w + 2), *(uint*)(w + 24), x, low);

    /// <summary>Five-bit values × x for two blocks: nibbles at qa, qb, fifth bits ha, hb.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairSumFiveBit(byte* qa, byte* qb, uint ha, uint hb, sbyte* x, Vector256<byte> low)
    {
        Vector256<byte> q = Vector256.Create(Vector128.Load(qa), Vector128.Load(qb));
        Vector256<byte> lo = (q & low) | Bit4FromBits32((ha & 0xFFFF) | (hb << 16));
        Vector256<byte> hi = (High(q) & low) | Bit4FromBits32((ha >> 16) | (hb & 0xFFFF0000));
        Vector256<short> p = Avx2.MultiplyAddAdjacent(lo, Vector256.Load(x)) + Avx2.MultiplyAddAdjacent(hi, Vector256.Load(x + 32)); // |each| ≤ 4·31·127
        return Avx2.MultiplyAddAdjacent(p, Ones16);
    }

    /// <summary>
    /// Q2_K: 84-byte super-blocks (16 bytes of 4-bit scale | 4-bit min per 16 values, 64 bytes of 2-bit quants, F16 d
    /// and dmin). Each 32 bytes of quants hold 128 values: bits 2j..2j+1 of byte l are value 32j + l. Σ = d·d_x·Σ_g
    /// sc_g·(Σq·x)_g − dmin·d_x·Σ_g m_g·(Σx)_g over the 16 groups of 16, the x sums from the Q8_K block sums.
    /// </summary>
    private static float DotQ2_K(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        float minAcc = 0;
        Vector256<byte> three = Vector256.Create((byte)3);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 84 * b;
            CpuPrefetch.Ahead(blk, 84);
            Vector128<byte> packed = Vector128.Load(blk);
            Vector256<short> scales = Avx2.ConvertToVector256Int16(packed & Vector128.Create((byte)0x0F));
            Vector256<short> mins = Avx2.ConvertToVector256Int16(Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
            int minSum = Vector256.Sum(Avx2.MultiplyAddAdjacent(mins, Vector256.Load(bsums + 16 * b)));
            sbyte* xb = xq + 256 * b;
            Vector256<int> sumi = default;
            for (int n = 0; n < 2; n++)
            {
                Vector256<byte> q = Vector256.Load(blk + 16 + 32 * n);
                Vector128<short> half = n == 0 ? scales.GetLower() : scales.GetUpper();
                Vector256<short> sc = Vector256.Create(half, half);
                sbyte* x = xb + 128 * n;
                sumi += SumGroups(sc, x,
                    q & three,
                    Vector256.ShiftRightLogical(q.AsUInt16(), 2).AsByte() & three,
                    Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & three,
                    Vector256.ShiftRightLogical(q.AsUInt16(), 6).AsByte() & three);
            }

            float dx = xd[b];
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, blk + 80) * dx), Avx.ConvertToVector256Single(sumi), acc);
            minAcc += H(ht, blk + 82) * dx * minSum;
        }

        return Sum(acc) - minAcc;
    }

    /// <summary>
    /// Q3_K: 110-byte super-blocks (32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, F16 d).
    /// Value 128n + 32j + l is ((q[32n + l] &gt;&gt; 2j) &amp; 3) − 4, plus 4 when bit 4n + j of hmask[l] is set: as
    /// unsigned u = q2 + 4·bit, Σ(u − 4)·x = Σu·x − 4·Σx per group of 16; scales are 6-bit values − 32.
    /// </summary>
    private static float DotQ3_K(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        Vector256<byte> three = Vector256.Create((byte)3);
        Vector256<byte> four = Vector256.Create((byte)4);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 110 * b;
            CpuPrefetch.Ahead(blk, 110);
            Vector256<short> scales = Avx2.ConvertToVector256Int16(UnpackScalesQ3K(blk + 96)) - Vector256.Create((short)32);
            Vector256<int> sumi = -(Avx2.MultiplyAddAdjacent(scales, Vector256.Load(bsums + 16 * b)) << 2);
            Vector256<ushort> hm = Vector256.Load(blk).AsUInt16();
            sbyte* xb = xq + 256 * b;
            for (int n = 0; n < 2; n++)
            {
                Vector256<ushort> q = Vector256.Load(blk + 32 + 32 * n).AsUInt16();
                Vector128<short> half = n == 0 ? scales.GetLower() : scales.GetUpper();
                Vector256<short> sc = Vector256.Create(half, half);
                sbyte* x = xb + 128 * n;
                // the high bit of group j of this half is bit 4n + j of hmask: move it to bit 2 of each byte
                int hb = 4 * n;
                Vector256<byte> u0 = (q.AsByte() & three) | (Shift(hm, 2 - hb) & four);
                Vector256<byte> u1 = (Vector256.ShiftRightLogical(q, 2).AsByte() & three) | (Shift(hm, 1 - hb) & four);
                Vector256<byte> u2 = (Vector256.ShiftRightLogical(q, 4).AsByte() & three) | (Shift(hm, -hb) & four);
                Vector256<byte> u3 = (Vector256.ShiftRightLogical(q, 6).AsByte() & three) | (Shift(hm, -1 - hb) & four);
                sumi += SumGroups(sc, x, u0, u1, u2, u3);
            }

            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, blk + 108) * xd[b]), Avx.ConvertToVector256Single(sumi), acc);
        }

        return Sum(acc);
    }

    /// <summary>Bytes of v shifted left by <paramref name="k"/> bits (right for negative k) within 16-bit lanes; callers mask one bit per byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Shift(Vector256<ushort> v, int k) =>
        (k >= 0 ? Vector256.ShiftLeft(v, k) : Vector256.ShiftRightLogical(v, -k)).AsByte();

    /// <summary>The 16 packed 6-bit Q3_K scales (ggml's kmask unpacking), as bytes 0..63.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> UnpackScalesQ3K(byte* p)
    {
        const uint k2 = 0x03030303, k4 = 0x0f0f0f0f;
        uint a0 = *(uint*)p, a1 = *(uint*)(p + 4), t = *(uint*)(p + 8);
        return Vector128.Create(
            (a0 & k4) | ((t & k2) << 4),
            (a1 & k4) | (((t >> 2) & k2) << 4),
            ((a0 >> 4) & k4) | (((t >> 4) & k2) << 4),
            ((a1 >> 4) & k4) | (((t >> 6) & k2) << 4)).AsByte();
    }

    /// <summary>
    /// Q4_K: 144-byte super-blocks of 256 (F16 d and dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles:
    /// each 32 bytes hold 64 values, low nibbles first). Σ = d·d_x·Σ_j sc_j·(Σ q·x)_j − dmin·d_x·Σ_j m_j·(Σ x)_j,
    /// with the x sums from the Q8_K block sums. The scales and mins are unpacked with 32-bit integer ops into 16
    /// shorts (one vpmovzxbw) and each scale is spread over a vector by a byte shuffle, as in ggml's AVX2 kernel:
    /// byte-by-byte unpacking on the stack cost as much as the dot products.
    /// </summary>
    /// <summary>
    /// <see cref="DotQ4_K"/> with 512-bit registers: each holds two 32-byte quant rows (four 32-value sub-blocks, low
    /// nibbles then high), against x in <see cref="Q8Activations.QsK"/> order; one vpermw spreads two sub-blocks' scales.
    /// </summary>
    private static float DotQ4_K512(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector512<float> acc = default;
        Vector128<float> accMin = default;
        Vector512<byte> low = Vector512.Create((byte)0x0F);
        Vector512<short> i0 = Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2);
        Vector512<short> i1 = i0 + Vector512<short>.One, i2 = i0 + Vector512.Create((short)4), i3 = i0 + Vector512.Create((short)5);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 144 * b;
            CpuPrefetch.Ahead(blk, 144);
            Vector256<short> scalesMins = UnpackScalesMinsK4(blk + 4);
            Vector128<short> xSums32 = Ssse3.HorizontalAdd(Vector128.Load(bsums + 16 * b), Vector128.Load(bsums + 16 * b + 8));
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(scalesMins.GetUpper(), xSums32);
            Vector512<short> sc = scalesMins.ToVector512Unsafe();

            sbyte* xb = xq + 256 * b;
            Vector512<byte> qa = Vector512.Load(blk + 16), qb = Vector512.Load(blk + 80);
            Vector512<int> sumi =
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(qa & low, Vector512.Load(xb)), Avx512BW.PermuteVar32x16(sc, i0)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(qa.AsUInt16(), 4).AsByte() & low, Vector512.Load(xb + 64)), Avx512BW.PermuteVar32x16(sc, i1)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(qb & low, Vector512.Load(xb + 128)), Avx512BW.PermuteVar32x16(sc, i2)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(qb.AsUInt16(), 4).AsByte() & low, Vector512.Load(xb + 192)), Avx512BW.PermuteVar32x16(sc, i3));

            float dx = xd[b];
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(H(ht, blk) * dx), Avx512F.ConvertToVector512Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector128.Create(H(ht, blk + 2) * dx), Sse2.ConvertToVector128Single(mins), accMin);
        }

        return Vector512.Sum(acc) - Vector128.Sum(accMin);
    }

    /// <summary><see cref="DotQ5_K"/> as <see cref="DotQ4_K512"/> computes Q4_K; variable shifts place each half's 5th bits.</summary>
    private static float DotQ5_K512(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector512<float> acc = default;
        Vector128<float> accMin = default;
        Vector512<byte> low = Vector512.Create((byte)0x0F);
        Vector512<byte> bit4 = Vector512.Create((byte)0x10);
        Vector512<short> i0 = Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2);
        Vector512<short> i1 = i0 + Vector512<short>.One, i2 = i0 + Vector512.Create((short)4), i3 = i0 + Vector512.Create((short)5);
        Vector512<ushort> l42 = Halves(4, 2), l31 = Halves(3, 1), r02 = Halves(0, 2), r13 = Halves(1, 3);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 176 * b;
            CpuPrefetch.Ahead(blk, 176);
            Vector256<short> scalesMins = UnpackScalesMinsK4(blk + 4);
            Vector128<short> xSums32 = Ssse3.HorizontalAdd(Vector128.Load(bsums + 16 * b), Vector128.Load(bsums + 16 * b + 8));
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(scalesMins.GetUpper(), xSums32);
            Vector512<short> sc = scalesMins.ToVector512Unsafe();

            sbyte* xb = xq + 256 * b;
            Vector256<ushort> qh256 = Vector256.Load(blk + 16).AsUInt16();
            Vector512<ushort> qh = Vector512.Create(qh256, qh256);
            Vector512<byte> qa = Vector512.Load(blk + 48), qb = Vector512.Load(blk + 112);
            Vector512<byte> u0 = (qa & low) | (Avx512BW.ShiftLeftLogicalVariable(qh, l42).AsByte() & bit4);
            Vector512<byte> u1 = (Vector512.ShiftRightLogical(qa.AsUInt16(), 4).AsByte() & low) | (Avx512BW.ShiftLeftLogicalVariable(qh, l31).AsByte() & bit4);
            Vector512<byte> u2 = (qb & low) | (Avx512BW.ShiftRightLogicalVariable(qh, r02).AsByte() & bit4);
            Vector512<byte> u3 = (Vector512.ShiftRightLogical(qb.AsUInt16(), 4).AsByte() & low) | (Avx512BW.ShiftRightLogicalVariable(qh, r13).AsByte() & bit4);
            Vector512<int> sumi =
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u0, Vector512.Load(xb)), Avx512BW.PermuteVar32x16(sc, i0)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u1, Vector512.Load(xb + 64)), Avx512BW.PermuteVar32x16(sc, i1)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u2, Vector512.Load(xb + 128)), Avx512BW.PermuteVar32x16(sc, i2)) +
                Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u3, Vector512.Load(xb + 192)), Avx512BW.PermuteVar32x16(sc, i3));

            float dx = xd[b];
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(H(ht, blk) * dx), Avx512F.ConvertToVector512Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector128.Create(H(ht, blk + 2) * dx), Sse2.ConvertToVector128Single(mins), accMin);
        }

        return Vector512.Sum(acc) - Vector128.Sum(accMin);
    }

    /// <summary>Shift counts: <paramref name="a"/> in the 16 words of the lower 256 bits, <paramref name="b"/> in the upper.</summary>
    private static Vector512<ushort> Halves(ushort a, ushort b) => Vector512.Create(Vector256.Create(a), Vector256.Create(b));

    private static float DotQ4_K(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        Vector128<float> accMin = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 144 * b;
            CpuPrefetch.Ahead(blk, 144);
            Vector256<short> scalesMins = UnpackScalesMinsK4(blk + 4);
            Vector128<short> xSums32 = Ssse3.HorizontalAdd(Vector128.Load(bsums + 16 * b), Vector128.Load(bsums + 16 * b + 8));
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(scalesMins.GetUpper(), xSums32);
            Vector256<short> scales = Vector256.Create(scalesMins.GetLower(), scalesMins.GetLower());

            sbyte* xb = xq + 256 * b;
            byte* q = blk + 16;
            Vector256<byte> q0 = Vector256.Load(q), q1 = Vector256.Load(q + 32), q2 = Vector256.Load(q + 64), q3 = Vector256.Load(q + 96);
            Vector256<int> sumi =
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q0 & low, Vector256.Load(xb)), Spread(scales, 0)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(High(q0) & low, Vector256.Load(xb + 32)), Spread(scales, 1)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q1 & low, Vector256.Load(xb + 64)), Spread(scales, 2)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(High(q1) & low, Vector256.Load(xb + 96)), Spread(scales, 3)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q2 & low, Vector256.Load(xb + 128)), Spread(scales, 4)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(High(q2) & low, Vector256.Load(xb + 160)), Spread(scales, 5)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q3 & low, Vector256.Load(xb + 192)), Spread(scales, 6)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(High(q3) & low, Vector256.Load(xb + 224)), Spread(scales, 7));

            float dx = xd[b];
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, blk) * dx), Avx.ConvertToVector256Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector128.Create(H(ht, blk + 2) * dx), Sse2.ConvertToVector128Single(mins), accMin);
        }

        return Sum(acc) - Vector128.Sum(accMin);
    }

    /// <summary>
    /// Q4_1: 20-byte blocks (F16 d and m, 16 bytes of nibbles), value d·q + m, against Q8_1 activations:
    /// Σ = d·d_x·Σq·x + m·s_x with s_x = d_x·Σx (ggml_vec_dot_q4_1_q8_1). Eight blocks a step as in <see cref="DotQ4_0"/>.
    /// </summary>
    private static float DotQ4_1(byte* w, sbyte* xq, sbyte* xp, float* xd, float* xs, float* xdOrd, float* xsOrd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        BlockScales scales = s_q4_1Scales;
        BlockScales mins = s_q4_1Mins;
        Vector256<float> acc = default, accMin = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            byte* w0 = w + 20 * b;
            CpuPrefetch.Ahead(w0, 160);
            sbyte* x0 = xp + 32 * b;
            Vector256<int> p0 = PairSumNibbles(w0 + 4, w0 + 24, x0, low);
            Vector256<int> p1 = PairSumNibbles(w0 + 44, w0 + 64, x0 + 64, low);
            Vector256<int> p2 = PairSumNibbles(w0 + 84, w0 + 104, x0 + 128, low);
            Vector256<int> p3 = PairSumNibbles(w0 + 124, w0 + 144, x0 + 192, low);
            Vector256<int> sums = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scales.Read(w0) * Vector256.Load(xdOrd + b), acc);
            accMin = Fma.MultiplyAdd(mins.Read(w0), Vector256.Load(xsOrd + b), accMin);
        }

        float tail = 0;
        for (; b < nb; b++)
        {
            byte* w0 = w + 20 * b;
            Vector256<int> p = SumPairs(Nibbles32(w0 + 4), Vector256.Load(xq + 32 * b));
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[b]), Avx.ConvertToVector256Single(p), acc);
            tail += H(ht, w0 + 2) * xs[b];
        }

        return Sum(acc) + (Sum(accMin) + tail);
    }

    /// <summary>Q5_1: 24-byte blocks (F16 d and m, 32 high bits, 16 bytes of nibbles), value d·q + m, against Q8_1 activations.</summary>
    private static float DotQ5_1(byte* w, sbyte* xq, sbyte* xp, float* xd, float* xs, float* xdOrd, float* xsOrd, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        BlockScales scales = s_q5_1Scales;
        BlockScales mins = s_q5_1Mins;
        Vector256<float> acc = default, accMin = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            byte* w0 = w + 24 * b;
            CpuPrefetch.Ahead(w0, 192);
            sbyte* x0 = xp + 32 * b;
            Vector256<int> p0 = PairSumFiveBit(w0 + 8, w0 + 32, *(uint*)(w0 + 4), *(uint*)(w0 + 28), x0, low);
            Vector256<int> p1 = PairSumFiveBit(w0 + 56, w0 + 80, *(uint*)(w0 + 52), *(uint*)(w0 + 76), x0 + 64, low);
            Vector256<int> p2 = PairSumFiveBit(w0 + 104, w0 + 128, *(uint*)(w0 + 100), *(uint*)(w0 + 124), x0 + 128, low);
            Vector256<int> p3 = PairSumFiveBit(w0 + 152, w0 + 176, *(uint*)(w0 + 148), *(uint*)(w0 + 172), x0 + 192, low);
            Vector256<int> sums = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scales.Read(w0) * Vector256.Load(xdOrd + b), acc);
            accMin = Fma.MultiplyAdd(mins.Read(w0), Vector256.Load(xsOrd + b), accMin);
        }

        float tail = 0;
        for (; b < nb; b++)
        {
            byte* w0 = w + 24 * b;
            Vector256<byte> q = Nibbles32(w0 + 8) | Bit4FromBits32(*(uint*)(w0 + 4));
            Vector256<int> p = SumPairs(q, Vector256.Load(xq + 32 * b));
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, w0) * xd[b]), Avx.ConvertToVector256Single(p), acc);
            tail += H(ht, w0 + 2) * xs[b];
        }

        return Sum(acc) + (Sum(accMin) + tail);
    }

    /// <summary>
    /// Q5_K: 176-byte super-blocks (F16 d and dmin, 12 bytes of scales and mins as in Q4_K, 32 bytes of fifth bits, 128
    /// bytes of nibbles); value 64j + l takes bit 2j of qh[l] as its fifth bit, value 64j + 32 + l bit 2j + 1.
    /// <see cref="DotQ4_K"/> with the fifth bits or-ed in before the products.
    /// </summary>
    private static float DotQ5_K(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        Vector128<float> accMin = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        Vector256<byte> bit4 = Vector256.Create((byte)0x10);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 176 * b;
            CpuPrefetch.Ahead(blk, 176);
            Vector256<short> scalesMins = UnpackScalesMinsK4(blk + 4);
            Vector128<short> xSums32 = Ssse3.HorizontalAdd(Vector128.Load(bsums + 16 * b), Vector128.Load(bsums + 16 * b + 8));
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(scalesMins.GetUpper(), xSums32);
            Vector256<short> scales = Vector256.Create(scalesMins.GetLower(), scalesMins.GetLower());

            sbyte* xb = xq + 256 * b;
            Vector256<ushort> qh = Vector256.Load(blk + 16).AsUInt16();
            byte* q = blk + 48;
            Vector256<byte> q0 = Vector256.Load(q), q1 = Vector256.Load(q + 32), q2 = Vector256.Load(q + 64), q3 = Vector256.Load(q + 96);
            Vector256<int> sumi =
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((q0 & low) | (Vector256.ShiftLeft(qh, 4).AsByte() & bit4), Vector256.Load(xb)), Spread(scales, 0)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((High(q0) & low) | (Vector256.ShiftLeft(qh, 3).AsByte() & bit4), Vector256.Load(xb + 32)), Spread(scales, 1)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((q1 & low) | (Vector256.ShiftLeft(qh, 2).AsByte() & bit4), Vector256.Load(xb + 64)), Spread(scales, 2)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((High(q1) & low) | (Vector256.ShiftLeft(qh, 1).AsByte() & bit4), Vector256.Load(xb + 96)), Spread(scales, 3)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((q2 & low) | (qh.AsByte() & bit4), Vector256.Load(xb + 128)), Spread(scales, 4)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((High(q2) & low) | (Vector256.ShiftRightLogical(qh, 1).AsByte() & bit4), Vector256.Load(xb + 160)), Spread(scales, 5)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((q3 & low) | (Vector256.ShiftRightLogical(qh, 2).AsByte() & bit4), Vector256.Load(xb + 192)), Spread(scales, 6)) +
                Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent((High(q3) & low) | (Vector256.ShiftRightLogical(qh, 3).AsByte() & bit4), Vector256.Load(xb + 224)), Spread(scales, 7));

            float dx = xd[b];
            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, blk) * dx), Avx.ConvertToVector256Single(sumi), acc);
            accMin = Fma.MultiplyAdd(Vector128.Create(H(ht, blk + 2) * dx), Sse2.ConvertToVector128Single(mins), accMin);
        }

        return Sum(acc) - Vector128.Sum(accMin);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> High(Vector256<byte> q) => Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte();

    /// <summary>Short <paramref name="k"/> of each 128-bit half, in all eight shorts of the half (vpshufb).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Spread(Vector256<short> v, [ConstantExpected] byte k) =>
        Avx2.Shuffle(v.AsByte(), Vector256.Create((ushort)(0x0100 + 0x0202 * k)).AsByte()).AsInt16();

    /// <summary>
    /// The 6-bit scales (shorts 0..7) and mins (shorts 8..15) of a Q4_K/Q5_K super-block from its 12 packed bytes
    /// (ggml's get_scale_min_k4 for all eight at once).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> UnpackScalesMinsK4(byte* p)
    {
        const uint k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
        uint a = *(uint*)p, b = *(uint*)(p + 4), c = *(uint*)(p + 8);
        uint sc0 = a & k6;                                      // scales 0-3
        uint sc1 = (c & k4) | (((a >> 6) & k2) << 4);          // scales 4-7
        uint mn0 = b & k6;                                      // mins 0-3
        uint mn1 = ((c >> 4) & k4) | (((b >> 6) & k2) << 4);   // mins 4-7
        return Avx2.ConvertToVector256Int16(Vector128.Create(sc0, sc1, mn0, mn1).AsByte());
    }

    /// <summary>
    /// Q6_K: 210-byte super-blocks of 256 (128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, F16 d).
    /// Each half of 128 values: low nibbles of ql[0..31] are values 0..31, of ql[32..63] 32..63, high nibbles 64..127,
    /// with highs from qh bits 0-1, 2-3, 4-5, 6-7; one scale per 16 values. Σ(q−32)·x = Σq·x − 32·Σx per 16, from the
    /// Q8_K block sums.
    /// </summary>
    private static float DotQ6_K(byte* w, sbyte* xq, float* xd, short* bsums, int nb)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector256<float> acc = default;
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        Vector256<byte> bits45 = Vector256.Create((byte)0x30);
        for (int b = 0; b < nb; b++)
        {
            byte* blk = w + 210 * b;
            CpuPrefetch.Ahead(blk, 210);
            Vector256<short> scales = Avx2.ConvertToVector256Int16(Vector128.Load((sbyte*)(blk + 192)));
            // Σ_g sc_g·(Σq·x − 32·Σx)_g: the offsets of all 16 groups in one vpmaddwd against the block sums
            Vector256<int> sumi = -(Avx2.MultiplyAddAdjacent(scales, Vector256.Load(bsums + 16 * b)) << 5);
            sbyte* xb = xq + 256 * b;
            for (int n = 0; n < 2; n++)
            {
                byte* ql = blk + 64 * n;
                Vector256<ushort> qh = Vector256.Load(blk + 128 + 32 * n).AsUInt16();
                Vector256<byte> qa = Vector256.Load(ql);
                Vector256<byte> qb = Vector256.Load(ql + 32);
                Vector256<byte> q1 = (qa & low) | (Vector256.ShiftLeft(qh, 4).AsByte() & bits45);
                Vector256<byte> q2 = (qb & low) | (Vector256.ShiftLeft(qh, 2).AsByte() & bits45);
                Vector256<byte> q3 = (High(qa) & low) | (qh.AsByte() & bits45);
                Vector256<byte> q4 = (High(qb) & low) | (Vector256.ShiftRightLogical(qh, 2).AsByte() & bits45);
                Vector128<short> half = n == 0 ? scales.GetLower() : scales.GetUpper();  // this half's 8 scales
                Vector256<short> sc = Vector256.Create(half, half);
                sbyte* x = xb + 128 * n;
                sumi += SumGroups(sc, x, q1, q2, q3, q4);
            }

            acc = Fma.MultiplyAdd(Vector256.Create(H(ht, blk + 208) * xd[b]), Avx.ConvertToVector256Single(sumi), acc);
        }

        return Sum(acc);
    }

    /// <summary>
    /// Σ over four 32-value groups of unsigned quants u_j against x[32j..32j+31], each half of a group (16 values)
    /// weighted by its own scale: shorts 2j and 2j+1 of sc (the Q2_K, Q3_K and Q6_K layout of 16-value scales).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SumGroups(Vector256<short> sc, sbyte* x, Vector256<byte> u0, Vector256<byte> u1, Vector256<byte> u2, Vector256<byte> u3) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u0, Vector256.Load(x)), SpreadPair(sc, 0)) +
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u1, Vector256.Load(x + 32)), SpreadPair(sc, 1)) +
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u2, Vector256.Load(x + 64)), SpreadPair(sc, 2)) +
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u3, Vector256.Load(x + 96)), SpreadPair(sc, 3));

    /// <summary>Short 2k of v in every short of the low 128-bit half, short 2k+1 in every short of the high half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> SpreadPair(Vector256<short> v, [ConstantExpected] byte k) =>
        Avx2.Shuffle(v.AsByte(), Vector256.Create(Vector128.Create((ushort)(0x0100 + 0x0404 * k)), Vector128.Create((ushort)(0x0302 + 0x0404 * k))).AsByte()).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float H(float* table, byte* p) => table[*(ushort*)p];
}
