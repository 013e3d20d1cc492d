using ILGPU;
using ILGPU.Algorithms;

namespace GpuLlama.Kernels;

public struct RopeArgs
{
    public int Position;
    public int Heads;
    public int KvHeads;
    public int HeadDim;

    /// <summary>1: rotate (x[2i], x[2i+1]) (GGUF, ggml "normal"); 0: rotate (x[i], x[i+d/2]) (HF, ggml "neox").</summary>
    public int Interleaved;
}

public struct AttentionArgs
{
    public int Position;
    public int Heads;
    public int KvHeads;
    public int HeadDim;
    public float Scale;

    /// <summary>Key-range splits per (row, head) (flash-decoding); 1 writes the normalized output directly.</summary>
    public int Splits;

    /// <summary>Keys per split, a multiple of the group size.</summary>
    public int SplitLength;

    /// <summary>How the caches store values: <see cref="WeightCode"/> F32, F16, BF16, Q8_0 or Q4_0.</summary>
    public int KType;

    public int VType;

    /// <summary>Quantized caches: the 16-bit index of the first block scale (see IlgpuKvCache).</summary>
    public long KScales;

    public long VScales;
}

internal static class AttentionKernels
{
    /// <summary>Largest head dimension the attention kernel's shared q/output tiles hold.</summary>
    public const int MaxHeadDim = 512;

    /// <summary>One thread per rotated pair of q or k: rows × (Heads + KvHeads) × HeadDim/2 threads.</summary>
    public static void Rope(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> table, RopeArgs a)
    {
        RopePair p = Pair(i, table, a);
        if (p.Head < a.Heads)
        {
            Rotate(q, (long)p.Row * a.Heads * a.HeadDim + p.Head * a.HeadDim, p.A, p.B, p.Cos, p.Sin);
        }
        else
        {
            Rotate(k, (long)p.Row * a.KvHeads * a.HeadDim + (p.Head - a.Heads) * a.HeadDim, p.A, p.B, p.Cos, p.Sin);
        }
    }

    /// <summary>Thread i's rotated pair: its row, its head (q heads first, then k heads), the pair's two indices in the head, cos and sin.</summary>
    private struct RopePair
    {
        public int Row;
        public int Head;
        public int A;
        public int B;
        public float Cos;
        public float Sin;
    }

    private static RopePair Pair(int i, ArrayView<float> table, RopeArgs a)
    {
        int half = a.HeadDim / 2;
        int pair = i % half;
        int rest = i / half;
        int heads = a.Heads + a.KvHeads;
        RopePair p;
        p.Head = rest % heads;
        p.Row = rest / heads;
        long cs = ((long)(a.Position + p.Row) * half + pair) * 2;
        p.Cos = table[cs];
        p.Sin = table[cs + 1];
        p.A = a.Interleaved != 0 ? 2 * pair : pair;
        p.B = a.Interleaved != 0 ? 2 * pair + 1 : pair + half;
        return p;
    }

    /// <summary>
    /// <see cref="Rope"/> and <see cref="StoreKv"/> in one launch, for plain-typed caches: a thread of a q pair rotates
    /// it in place; a thread of a k pair rotates it, writes it back and stores it at element <paramref name="offset"/>
    /// + its index, with v's two values at the same places (the pairs of the k heads cover every value of v).
    /// </summary>
    public static void RopeStoreKv(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> table,
        ArrayView<uint> kCache, ArrayView<uint> vCache, RopeArgs a, long offset, int kType, int vType)
    {
        RopePair p = Pair(i, table, a);
        if (p.Head < a.Heads)
        {
            Rotate(q, (long)p.Row * a.Heads * a.HeadDim + p.Head * a.HeadDim, p.A, p.B, p.Cos, p.Sin);
            return;
        }

        long kBase = (long)p.Row * a.KvHeads * a.HeadDim + (p.Head - a.Heads) * a.HeadDim;
        Rotate(k, kBase, p.A, p.B, p.Cos, p.Sin);
        Store(kCache, kType, offset + kBase + p.A, k[kBase + p.A]);
        Store(kCache, kType, offset + kBase + p.B, k[kBase + p.B]);
        Store(vCache, vType, offset + kBase + p.A, v[kBase + p.A]);
        Store(vCache, vType, offset + kBase + p.B, v[kBase + p.B]);
    }

    private static void Rotate(ArrayView<float> v, long baseIndex, int ia, int ib, float c, float s)
    {
        float x0 = v[baseIndex + ia];
        float x1 = v[baseIndex + ib];
        v[baseIndex + ia] = x0 * c - x1 * s;
        v[baseIndex + ib] = x0 * s + x1 * c;
    }

    /// <summary>
    /// Appends rows of k and v at element <paramref name="offset"/> = position * kvDim in one launch, each value rounded
    /// to its cache's type (<see cref="WeightCode"/>; 16-bit caches are written as 16-bit words).
    /// </summary>
    public static void StoreKv(Index1D i, ArrayView<uint> kCache, ArrayView<uint> vCache, ArrayView<float> k, ArrayView<float> v, long offset, int kType, int vType)
    {
        Store(kCache, kType, offset + i, k[i]);
        Store(vCache, vType, offset + i, v[i]);
    }

    private static void Store(ArrayView<uint> cache, int type, long index, float value)
    {
        if (type == WeightCode.F32)
        {
            cache[index] = Interop.FloatAsInt(value);
        }
        else
        {
            cache.Cast<ushort>()[index] = (ushort)(type == WeightCode.BF16 ? KernelMath.ToBf16(value) : KernelMath.ToF16(value));
        }
    }

    /// <summary>
    /// Writes values to one cache from element <paramref name="offset"/>: for a plain type thread i stores value i
    /// rounded to the type; for Q8_0 and Q4_0 thread i quantizes block i of 32 values as llama.cpp's CPU backend
    /// quantizes a cache row — Q8_0 as quantize_row_q8_0 (d = max|x|/127 rounded to F16, q = round-to-even(x·127/max|x|)),
    /// Q4_0 as quantize_row_q4_0_ref (d = m/−8 for m the value of largest magnitude, q = min(15, trunc(x/d + 8.5))) —
    /// and writes its quants and scale (IlgpuKvCache's planes: whole words, and one 16-bit scale).
    /// </summary>
    public static void StoreCache(Index1D i, ArrayView<uint> cache, ArrayView<float> src, long offset, int type, long scales)
    {
        if (type != WeightCode.Q8_0 && type != WeightCode.Q4_0)
        {
            Store(cache, type, offset + i, src[i]);
            return;
        }

        int n = i;
        long x = (long)n * 32;
        long block = offset / 32 + n;
        float amax = 0;
        float max = 0;
        for (int j = 0; j < 32; j++)
        {
            float v = src[x + j];
            if (amax < XMath.Abs(v))
            {
                amax = XMath.Abs(v);
                max = v;
            }
        }

        uint d;
        if (type == WeightCode.Q8_0)
        {
            d = KernelMath.ToF16(amax / 127f);
            float id = amax != 0 ? 127f / amax : 0f;
            for (int w = 0; w < 8; w++)
            {
                uint word = 0;
                for (int j = 0; j < 4; j++)
                {
                    int q = (int)XMath.RoundToEven(src[x + 4 * w + j] * id);
                    word |= ((uint)q & 0xFFu) << (8 * j);
                }

                cache[block * 8 + w] = word;
            }
        }
        else
        {
            float scale = max / -8f;
            float id = scale != 0 ? 1.0f / scale : 0f;
            d = KernelMath.ToF16(scale);
            for (int w = 0; w < 4; w++)
            {
                uint word = 0;
                for (int j = 0; j < 4; j++)
                {
                    int e = 4 * w + j;
                    int lo = XMath.Min(15, (int)(src[x + e] * id + 8.5f));
                    int hi = XMath.Min(15, (int)(src[x + e + 16] * id + 8.5f));
                    word |= (uint)(lo | (hi << 4)) << (8 * j);
                }

                cache[block * 4 + w] = word;
            }
        }

        cache.Cast<ushort>()[scales + block] = (ushort)d;
    }

    /// <summary>dst[i] = element offset + i of a cache of any type as float32 (what attention reads; a context shift reads rows back).</summary>
    public static void LoadCache(Index1D i, ArrayView<uint> cache, ArrayView<float> dst, long offset, int type, long scales) =>
        dst[i] = LoadKv(cache, type, offset + i, scales);

    /// <summary>Element <paramref name="i"/> of a cache of any type (quantized: its quant times its block's scale).</summary>
    private static float LoadKv(ArrayView<uint> cache, int type, long i, long scales)
    {
        if (type == WeightCode.Q8_0)
        {
            int q = (int)(cache[i >> 2] << (24 - 8 * (int)(i & 3))) >> 24;
            return KernelMath.F16(cache.Cast<ushort>()[scales + (i >> 5)]) * q;
        }

        if (type == WeightCode.Q4_0)
        {
            long b = (i >> 5) * 16 + (i & 15);
            uint bits = cache[b >> 2] >> (8 * (int)(b & 3));
            int q = (int)((i & 16) == 0 ? bits & 0xFu : (bits >> 4) & 0xFu) - 8;
            return KernelMath.F16(cache.Cast<ushort>()[scales + (i >> 5)]) * q;
        }

        return KernelMath.LoadWeight(cache, type, i);
    }

    /// <summary>q[d..d+4) · four int8 quants of a word (low byte first).</summary>
    private static float Dot4(ArrayView<float> qs, int d, uint w) =>
        qs[d] * ((int)(w << 24) >> 24) + qs[d + 1] * ((int)(w << 16) >> 24) + qs[d + 2] * ((int)(w << 8) >> 24) + qs[d + 3] * ((int)w >> 24);

    /// <summary>q[d..d+4) · the low nibbles of a word's bytes and q[d+16..d+20) · their high nibbles, each minus 8 (Q4_0).</summary>
    private static float Nibbles4(ArrayView<float> qs, int d, uint w) =>
        qs[d] * ((int)(w & 0xFu) - 8) + qs[d + 1] * ((int)((w >> 8) & 0xFu) - 8) + qs[d + 2] * ((int)((w >> 16) & 0xFu) - 8) + qs[d + 3] * ((int)((w >> 24) & 0xFu) - 8)
        + qs[d + 16] * ((int)((w >> 4) & 0xFu) - 8) + qs[d + 17] * ((int)((w >> 12) & 0xFu) - 8) + qs[d + 18] * ((int)((w >> 20) & 0xFu) - 8) + qs[d + 19] * ((int)(w >> 28) - 8);

    /// <summary>
    /// Causal GQA attention, one group per (row, head, split). Keys are visited in chunks of one key per thread with
    /// an online softmax (running max m and denominator l, rescaling the output by exp(m_old - m_new), as in
    /// FlashAttention), so shared memory is fixed and any context length works. Reductions are fixed-order.
    /// q and the output accumulator live in shared memory; output dimension d belongs to thread d mod group size.
    /// With Splits == 1 the group covers every key and writes the normalized output to <paramref name="dst"/>.
    /// Otherwise (decode, where rows × heads groups cannot fill the GPU) split s covers keys
    /// [s·SplitLength, (s+1)·SplitLength) and writes its unnormalized output, m and l to <paramref name="partial"/>
    /// for <see cref="AttentionCombine"/>: flash-decoding.
    /// </summary>
    public static void Attention(ArrayView<float> dst, ArrayView<float> partial, ArrayView<float> q, ArrayView<uint> kCache, ArrayView<uint> vCache, AttentionArgs a)
    {
        ArrayView<float> qs = SharedMemory.Allocate<float>(MaxHeadDim);
        ArrayView<float> os = SharedMemory.Allocate<float>(MaxHeadDim);
        ArrayView<float> ps = SharedMemory.Allocate<float>(KernelMath.MaxGroupSize);
        ArrayView<float> scratch = SharedMemory.Allocate<float>(KernelMath.MaxWarps);
        int tid = Group.IdxX;
        int gs = Group.DimX;
        int hd = a.HeadDim;
        int job = Grid.IdxX / a.Splits;
        int split = Grid.IdxX - job * a.Splits;
        int r = job / a.Heads;
        int h = job - r * a.Heads;
        int p = a.Position + r;
        int kvDim = a.KvHeads * hd;
        int kvOffset = h / (a.Heads / a.KvHeads) * hd;
        long qBase = (long)r * a.Heads * hd + h * hd;
        int first = split * a.SplitLength;
        int last = XMath.Min(p, first + a.SplitLength - 1);
        for (int d = tid; d < hd; d += gs)
        {
            qs[d] = q[qBase + d];
            os[d] = 0;
        }

        Group.Barrier();
        float m = float.NegativeInfinity;
        float l = 0;
        // 16-byte loads of key rows: four float32 values or eight 16-bit ones (head offsets are then multiples of 16 bytes)
        bool vector = a.KType == WeightCode.F32 ? (hd & 3) == 0 : (hd & 7) == 0;
        ArrayView<F4> k4 = kCache.Cast<F4>();
        ArrayView<U4> k8 = kCache.Cast<U4>();
        for (int t0 = first; t0 <= last; t0 += gs)
        {
            int t = t0 + tid;
            float score = float.NegativeInfinity;
            if (t <= last)
            {
                long kBase = (long)t * kvDim + kvOffset;
                float dot = 0;
                if (vector && a.KType == WeightCode.F32)
                {
                    // (ILGPU does not unroll loops: four loads are written out so they are in flight together)
                    long k4Base = kBase >> 2;
                    int d = 0;
                    for (; d + 12 < hd; d += 16)
                    {
                        F4 k0 = k4[k4Base + (d >> 2)];
                        F4 k1 = k4[k4Base + (d >> 2) + 1];
                        F4 k2 = k4[k4Base + (d >> 2) + 2];
                        F4 k3 = k4[k4Base + (d >> 2) + 3];
                        dot += qs[d] * k0.X + qs[d + 1] * k0.Y + qs[d + 2] * k0.Z + qs[d + 3] * k0.W
                            + qs[d + 4] * k1.X + qs[d + 5] * k1.Y + qs[d + 6] * k1.Z + qs[d + 7] * k1.W
                            + qs[d + 8] * k2.X + qs[d + 9] * k2.Y + qs[d + 10] * k2.Z + qs[d + 11] * k2.W
                            + qs[d + 12] * k3.X + qs[d + 13] * k3.Y + qs[d + 14] * k3.Z + qs[d + 15] * k3.W;
                    }

                    for (; d < hd; d += 4)
                    {
                        F4 kv = k4[k4Base + (d >> 2)];
                        dot += qs[d] * kv.X + qs[d + 1] * kv.Y + qs[d + 2] * kv.Z + qs[d + 3] * kv.W;
                    }
                }
                else if (a.KType == WeightCode.Q8_0)
                {
                    // a 32-block per step: its scale, then its 32 quants in two 16-byte loads (a head starts on a block)
                    for (int d = 0; d < hd; d += 32)
                    {
                        long at = kBase + d;
                        U4 c0 = k8[at >> 4];
                        U4 c1 = k8[(at >> 4) + 1];
                        float block = Dot4(qs, d, c0.X) + Dot4(qs, d + 4, c0.Y) + Dot4(qs, d + 8, c0.Z) + Dot4(qs, d + 12, c0.W)
                            + Dot4(qs, d + 16, c1.X) + Dot4(qs, d + 20, c1.Y) + Dot4(qs, d + 24, c1.Z) + Dot4(qs, d + 28, c1.W);
                        dot += KernelMath.F16(kCache.Cast<ushort>()[a.KScales + (at >> 5)]) * block;
                    }
                }
                else if (a.KType == WeightCode.Q4_0)
                {
                    // a 32-block per step: its scale and its 16 bytes of nibbles in one load
                    for (int d = 0; d < hd; d += 32)
                    {
                        long at = kBase + d;
                        U4 c = k8[at >> 5];
                        float block = Nibbles4(qs, d, c.X) + Nibbles4(qs, d + 4, c.Y) + Nibbles4(qs, d + 8, c.Z) + Nibbles4(qs, d + 12, c.W);
                        dot += KernelMath.F16(kCache.Cast<ushort>()[a.KScales + (at >> 5)]) * block;
                    }
                }
                else if (vector)
                {
                    long k8Base = kBase >> 3;
                    int d = 0;
                    for (; d + 8 < hd; d += 16)
                    {
                        U4 k0 = k8[k8Base + (d >> 3)];
                        U4 k1 = k8[k8Base + (d >> 3) + 1];
                        dot += Dot8(qs, d, k0, a.KType) + Dot8(qs, d + 8, k1, a.KType);
                    }

                    for (; d < hd; d += 8)
                    {
                        dot += Dot8(qs, d, k8[k8Base + (d >> 3)], a.KType);
                    }
                }
                else
                {
                    for (int d = 0; d < hd; d++)
                    {
                        dot += qs[d] * KernelMath.LoadWeight(kCache, a.KType, kBase + d);
                    }
                }

                score = dot * a.Scale;
            }

            float mNew = XMath.Max(m, KernelMath.GroupMax(score, scratch));
            float e = t <= last ? XMath.Exp(score - mNew) : 0.0f;
            float alpha = XMath.Exp(m - mNew);
            ps[tid] = e;
            l = l * alpha + KernelMath.GroupSum(e, scratch);
            m = mNew;
            int n = XMath.Min(gs, last - t0 + 1);
            for (int d = tid; d < hd; d += gs)
            {
                float acc = os[d] * alpha;
                long vBase = (long)t0 * kvDim + kvOffset + d;
                int j = 0;
                for (; j + 3 < n; j += 4)
                {
                    // four value loads in flight per step (the loop is latency-bound otherwise)
                    float v0 = LoadKv(vCache, a.VType, vBase + (long)j * kvDim, a.VScales);
                    float v1 = LoadKv(vCache, a.VType, vBase + (long)(j + 1) * kvDim, a.VScales);
                    float v2 = LoadKv(vCache, a.VType, vBase + (long)(j + 2) * kvDim, a.VScales);
                    float v3 = LoadKv(vCache, a.VType, vBase + (long)(j + 3) * kvDim, a.VScales);
                    acc += ps[j] * v0 + ps[j + 1] * v1 + ps[j + 2] * v2 + ps[j + 3] * v3;
                }

                for (; j < n; j++)
                {
                    acc += ps[j] * LoadKv(vCache, a.VType, vBase + (long)j * kvDim, a.VScales);
                }

                os[d] = acc;
            }

            Group.Barrier();
        }

        if (a.Splits == 1)
        {
            float inv = 1.0f / l;
            for (int d = tid; d < hd; d += gs)
            {
                dst[qBase + d] = os[d] * inv;
            }

            return;
        }

        // partial record of split (job, split): [o_0 .. o_{hd-1}, m, l]; an empty split (past p) leaves m = -inf, l = 0
        long pBase = (long)Grid.IdxX * (hd + 2);
        for (int d = tid; d < hd; d += gs)
        {
            partial[pBase + d] = os[d];
        }

        if (tid == 0)
        {
            partial[pBase + hd] = m;
            partial[pBase + hd + 1] = l;
        }
    }

    /// <summary>Floats of <see cref="AttentionDecode"/>'s per-warp output partials: warps × HeadDim must fit.</summary>
    public const int DecodeOutputs = 1024;

    /// <summary>
    /// Values e..e+3 of a cache (e a multiple of 4) widened to float32: one 16-byte load of F32, one 8-byte load of four
    /// 16-bit values, or one word of Q8_0 quants / Q4_0 nibbles and their block's scale (IlgpuKvCache's planes).
    /// </summary>
    private static F4 Load4(ArrayView<uint> cache, int type, long e, long scales)
    {
        F4 r;
        if (type == WeightCode.F32)
        {
            r = cache.Cast<F4>()[e >> 2];
        }
        else if (type == WeightCode.F16 || type == WeightCode.BF16)
        {
            U2 w = cache.Cast<U2>()[e >> 2];
            bool bf = type == WeightCode.BF16;
            r.X = bf ? KernelMath.Bf16(w.X) : KernelMath.F16(w.X);
            r.Y = bf ? KernelMath.Bf16High(w.X) : KernelMath.F16High(w.X);
            r.Z = bf ? KernelMath.Bf16(w.Y) : KernelMath.F16(w.Y);
            r.W = bf ? KernelMath.Bf16High(w.Y) : KernelMath.F16High(w.Y);
        }
        else if (type == WeightCode.Q8_0)
        {
            uint w = cache[e >> 2];
            float d = KernelMath.F16(cache.Cast<ushort>()[scales + (e >> 5)]);
            r.X = d * ((int)(w << 24) >> 24);
            r.Y = d * ((int)(w << 16) >> 24);
            r.Z = d * ((int)(w << 8) >> 24);
            r.W = d * ((int)w >> 24);
        }
        else
        {
            // Q4_0: values j..j+3 of a block are the low nibbles of its bytes j..j+3 (j < 16) or the high ones of j-16..
            int j = (int)(e & 31);
            uint w = cache[(e >> 5) * 4 + ((j & 15) >> 2)] >> (j >= 16 ? 4 : 0);
            float d = KernelMath.F16(cache.Cast<ushort>()[scales + (e >> 5)]);
            r.X = d * ((int)(w & 0xFu) - 8);
            r.Y = d * ((int)((w >> 8) & 0xFu) - 8);
            r.Z = d * ((int)((w >> 16) & 0xFu) - 8);
            r.W = d * ((int)((w >> 24) & 0xFu) - 8);
        }

        return r;
    }

    /// <summary>The element where key <paramref name="u"/> of the chunk at <paramref name="t0"/> starts in this head, u clamped to the chunk's last key.</summary>
    private static long KeyRow(int t0, int u, int n, int kvDim, long kvOffset) => (long)(t0 + XMath.Min(u, n - 1)) * kvDim + kvOffset;

    private static float Dot(F4 a, F4 b) => a.X * b.X + a.Y * b.Y + a.Z * b.Z + a.W * b.W;

    private static F4 Scale(F4 x, float s)
    {
        F4 r;
        r.X = x.X * s;
        r.Y = x.Y * s;
        r.Z = x.Z * s;
        r.W = x.W * s;
        return r;
    }

    private static F4 Axpy(float s, F4 x, F4 y)
    {
        F4 r;
        r.X = y.X + s * x.X;
        r.Y = y.Y + s * x.Y;
        r.Z = y.Z + s * x.Z;
        r.W = y.W + s * x.W;
        return r;
    }

    /// <summary>
    /// <see cref="Attention"/> for one row (decode), with the same splits and partial records, laid out for latency: a
    /// warp reads a whole key (or value) row at once — lane l holds dimensions 4l..4l+3 and, for heads wider than 4 lanes'
    /// worth, 4l+4w..4l+4w+3 (w the warp size; heads up to 8w) — and the group's warps take the chunk's keys in turn,
    /// four at a time, so a chunk costs a few round trips to memory instead of one per key (thread-per-key scores) and
    /// one per key again (thread-per-dimension values). Keys past the chunk's end are clamped to its last key for
    /// loading and their results discarded, so the loads carry no branches. The warps' outputs meet in shared memory.
    /// </summary>
    public static void AttentionDecode(ArrayView<float> dst, ArrayView<float> partial, ArrayView<float> q, ArrayView<uint> kCache, ArrayView<uint> vCache, AttentionArgs a)
    {
        ArrayView<float> ps = SharedMemory.Allocate<float>(KernelMath.MaxGroupSize);
        ArrayView<float> os = SharedMemory.Allocate<float>(DecodeOutputs);
        ArrayView<float> scratch = SharedMemory.Allocate<float>(KernelMath.MaxWarps);
        int tid = Group.IdxX;
        int gs = Group.DimX;
        int ws = Warp.WarpSize;
        int lane = Warp.LaneIdx;
        int warp = tid / ws;
        int warps = gs / ws;
        int hd = a.HeadDim;
        int h = Grid.IdxX / a.Splits;
        int split = Grid.IdxX - h * a.Splits;
        int p = a.Position;
        int kvDim = a.KvHeads * hd;
        long kvOffset = h / (a.Heads / a.KvHeads) * hd;
        long qBase = (long)h * hd;
        int first = split * a.SplitLength;
        int last = XMath.Min(p, first + a.SplitLength - 1);

        // this lane's dimensions (clamped into the head for loading; the flags say which are real)
        int da = 4 * lane;
        int db = da + 4 * ws;
        bool ia = da < hd;
        bool ib = db < hd;
        bool two = 4 * ws < hd;
        int ca = XMath.Min(da, hd - 4);
        int cb = XMath.Min(db, hd - 4);
        F4 qa = q.Cast<F4>()[(qBase + ca) >> 2];
        F4 qb = q.Cast<F4>()[(qBase + cb) >> 2];
        F4 oa = default;
        F4 ob = default;
        float m = float.NegativeInfinity;
        float l = 0;
        for (int t0 = first; t0 <= last; t0 += gs)
        {
            int n = XMath.Min(gs, last - t0 + 1);

            // scores: keys u, u + warps, u + 2·warps, u + 3·warps of the chunk per step of a warp
            for (int u = warp; u < n; u += 4 * warps)
            {
                int u1 = u + warps;
                int u2 = u + 2 * warps;
                int u3 = u + 3 * warps;
                long e0 = KeyRow(t0, u, n, kvDim, kvOffset);
                long e1 = KeyRow(t0, u1, n, kvDim, kvOffset);
                long e2 = KeyRow(t0, u2, n, kvDim, kvOffset);
                long e3 = KeyRow(t0, u3, n, kvDim, kvOffset);
                F4 k0 = Load4(kCache, a.KType, e0 + ca, a.KScales);
                F4 k1 = Load4(kCache, a.KType, e1 + ca, a.KScales);
                F4 k2 = Load4(kCache, a.KType, e2 + ca, a.KScales);
                F4 k3 = Load4(kCache, a.KType, e3 + ca, a.KScales);
                float s0 = ia ? Dot(qa, k0) : 0.0f;
                float s1 = ia ? Dot(qa, k1) : 0.0f;
                float s2 = ia ? Dot(qa, k2) : 0.0f;
                float s3 = ia ? Dot(qa, k3) : 0.0f;
                if (two)
                {
                    F4 k4 = Load4(kCache, a.KType, e0 + cb, a.KScales);
                    F4 k5 = Load4(kCache, a.KType, e1 + cb, a.KScales);
                    F4 k6 = Load4(kCache, a.KType, e2 + cb, a.KScales);
                    F4 k7 = Load4(kCache, a.KType, e3 + cb, a.KScales);
                    s0 += ib ? Dot(qb, k4) : 0.0f;
                    s1 += ib ? Dot(qb, k5) : 0.0f;
                    s2 += ib ? Dot(qb, k6) : 0.0f;
                    s3 += ib ? Dot(qb, k7) : 0.0f;
                }

                s0 = KernelMath.WarpSum(s0);
                s1 = KernelMath.WarpSum(s1);
                s2 = KernelMath.WarpSum(s2);
                s3 = KernelMath.WarpSum(s3);
                if (lane == 0)
                {
                    ps[u] = s0 * a.Scale;
                    if (u1 < n)
                    {
                        ps[u1] = s1 * a.Scale;
                    }

                    if (u2 < n)
                    {
                        ps[u2] = s2 * a.Scale;
                    }

                    if (u3 < n)
                    {
                        ps[u3] = s3 * a.Scale;
                    }
                }
            }

            Group.Barrier();
            float score = tid < n ? ps[tid] : float.NegativeInfinity;
            float mNew = XMath.Max(m, KernelMath.GroupMax(score, scratch));
            float w = tid < n ? XMath.Exp(score - mNew) : 0.0f;
            float alpha = XMath.Exp(m - mNew);
            ps[tid] = w;
            l = l * alpha + KernelMath.GroupSum(w, scratch);
            m = mNew;

            // values: the same keys per warp, each weighted by its softmax numerator, into the warp's accumulators
            oa = Scale(oa, alpha);
            ob = Scale(ob, alpha);
            for (int u = warp; u < n; u += 4 * warps)
            {
                int u1 = u + warps;
                int u2 = u + 2 * warps;
                int u3 = u + 3 * warps;
                long e0 = KeyRow(t0, u, n, kvDim, kvOffset);
                long e1 = KeyRow(t0, u1, n, kvDim, kvOffset);
                long e2 = KeyRow(t0, u2, n, kvDim, kvOffset);
                long e3 = KeyRow(t0, u3, n, kvDim, kvOffset);
                float p0 = ps[u];
                float p1 = u1 < n ? ps[u1] : 0.0f;
                float p2 = u2 < n ? ps[u2] : 0.0f;
                float p3 = u3 < n ? ps[u3] : 0.0f;
                F4 v0 = Load4(vCache, a.VType, e0 + ca, a.VScales);
                F4 v1 = Load4(vCache, a.VType, e1 + ca, a.VScales);
                F4 v2 = Load4(vCache, a.VType, e2 + ca, a.VScales);
                F4 v3 = Load4(vCache, a.VType, e3 + ca, a.VScales);
                oa = Axpy(p0, v0, oa);
                oa = u1 < n ? Axpy(p1, v1, oa) : oa;
                oa = u2 < n ? Axpy(p2, v2, oa) : oa;
                oa = u3 < n ? Axpy(p3, v3, oa) : oa;
                if (two)
                {
                    F4 v4 = Load4(vCache, a.VType, e0 + cb, a.VScales);
                    F4 v5 = Load4(vCache, a.VType, e1 + cb, a.VScales);
                    F4 v6 = Load4(vCache, a.VType, e2 + cb, a.VScales);
                    F4 v7 = Load4(vCache, a.VType, e3 + cb, a.VScales);
                    ob = Axpy(p0, v4, ob);
                    ob = u1 < n ? Axpy(p1, v5, ob) : ob;
                    ob = u2 < n ? Axpy(p2, v6, ob) : ob;
                    ob = u3 < n ? Axpy(p3, v7, ob) : ob;
                }
            }

            Group.Barrier(); // the next chunk's scores overwrite ps
        }

        // the warps' outputs, summed in warp order
        ArrayView<F4> os4 = os.Cast<F4>();
        if (ia)
        {
            os4[(warp * hd + da) >> 2] = oa;
        }

        if (ib)
        {
            os4[(warp * hd + db) >> 2] = ob;
        }

        Group.Barrier();
        long pBase = (long)Grid.IdxX * (hd + 2);
        for (int d = tid; d < hd; d += gs)
        {
            float o = 0;
            for (int i = 0; i < warps; i++)
            {
                o += os[i * hd + d];
            }

            if (a.Splits == 1)
            {
                dst[qBase + d] = o / l;
            }
            else
            {
                partial[pBase + d] = o;
            }
        }

        if (a.Splits != 1 && tid == 0)
        {
            partial[pBase + hd] = m;
            partial[pBase + hd + 1] = l;
        }
    }

    /// <summary>q[d..d+8) · eight 16-bit key values (F16 or BF16, two per word, low half first).</summary>
    private static float Dot8(ArrayView<float> qs, int d, U4 k, int type)
    {
        if (type == WeightCode.BF16)
        {
            return qs[d] * KernelMath.Bf16(k.X) + qs[d + 1] * KernelMath.Bf16High(k.X) + qs[d + 2] * KernelMath.Bf16(k.Y) + qs[d + 3] * KernelMath.Bf16High(k.Y)
                + qs[d + 4] * KernelMath.Bf16(k.Z) + qs[d + 5] * KernelMath.Bf16High(k.Z) + qs[d + 6] * KernelMath.Bf16(k.W) + qs[d + 7] * KernelMath.Bf16High(k.W);
        }

        return qs[d] * KernelMath.F16(k.X) + qs[d + 1] * KernelMath.F16High(k.X) + qs[d + 2] * KernelMath.F16(k.Y) + qs[d + 3] * KernelMath.F16High(k.Y)
            + qs[d + 4] * KernelMath.F16(k.Z) + qs[d + 5] * KernelMath.F16High(k.Z) + qs[d + 6] * KernelMath.F16(k.W) + qs[d + 7] * KernelMath.F16High(k.W);
    }

    /// <summary>
    /// Merges the splits of each (row, head) in split order: M = max m_s, out = Σ o_s·e^(m_s−M) / Σ l_s·e^(m_s−M).
    /// One group per (row, head); every thread reads the (few) split maxima itself, so no reduction is needed.
    /// </summary>
    public static void AttentionCombine(ArrayView<float> dst, ArrayView<float> partial, AttentionArgs a)
    {
        int hd = a.HeadDim;
        int job = Grid.IdxX;
        int r = job / a.Heads;
        int h = job - r * a.Heads;
        long first = (long)job * a.Splits * (hd + 2);
        float mMax = float.NegativeInfinity;
        for (int s = 0; s < a.Splits; s++)
        {
            mMax = XMath.Max(mMax, partial[first + (long)s * (hd + 2) + hd]);
        }

        float l = 0;
        for (int s = 0; s < a.Splits; s++)
        {
            long b = first + (long)s * (hd + 2);
            float ls = partial[b + hd + 1];
            l += ls > 0 ? ls * XMath.Exp(partial[b + hd] - mMax) : 0.0f;
        }

        float inv = 1.0f / l;
        long outBase = (long)r * a.Heads * hd + h * hd;
        for (int d = Group.IdxX; d < hd; d += Group.DimX)
        {
            float acc = 0;
            for (int s = 0; s < a.Splits; s++)
            {
                long b = first + (long)s * (hd + 2);
                float ls = partial[b + hd + 1];
                acc += ls > 0 ? partial[b + d] * XMath.Exp(partial[b + hd] - mMax) : 0.0f;
            }

            dst[outBase + d] = acc * inv;
        }
    }
}
