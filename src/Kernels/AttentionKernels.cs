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
}

internal static class AttentionKernels
{
    /// <summary>Largest head dimension the attention kernel's shared q/output tiles hold.</summary>
    public const int MaxHeadDim = 512;

    /// <summary>One thread per rotated pair of q or k: rows × (Heads + KvHeads) × HeadDim/2 threads.</summary>
    public static void Rope(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> table, RopeArgs a)
    {
        int half = a.HeadDim / 2;
        int pair = i % half;
        int rest = i / half;
        int heads = a.Heads + a.KvHeads;
        int head = rest % heads;
        int r = rest / heads;
        long cs = ((long)(a.Position + r) * half + pair) * 2;
        float c = table[cs];
        float s = table[cs + 1];
        int ia = a.Interleaved != 0 ? 2 * pair : pair;
        int ib = a.Interleaved != 0 ? 2 * pair + 1 : pair + half;
        if (head < a.Heads)
        {
            Rotate(q, (long)r * a.Heads * a.HeadDim + head * a.HeadDim, ia, ib, c, s);
        }
        else
        {
            Rotate(k, (long)r * a.KvHeads * a.HeadDim + (head - a.Heads) * a.HeadDim, ia, ib, c, s);
        }
    }

    private static void Rotate(ArrayView<float> v, long baseIndex, int ia, int ib, float c, float s)
    {
        float x0 = v[baseIndex + ia];
        float x1 = v[baseIndex + ib];
        v[baseIndex + ia] = x0 * c - x1 * s;
        v[baseIndex + ib] = x0 * s + x1 * c;
    }

    /// <summary>Appends rows of k and v at <paramref name="offset"/> = position * kvDim in one launch.</summary>
    public static void StoreKv(Index1D i, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v, long offset)
    {
        kCache[offset + i] = k[i];
        vCache[offset + i] = v[i];
    }

    /// <summary>
    /// Causal GQA attention, one group per (row, head). Keys are visited in chunks of one key per thread with an
    /// online softmax (running max m and denominator l, rescaling the output by exp(m_old - m_new), as in
    /// FlashAttention), so shared memory is fixed and any context length works. Reductions are fixed-order.
    /// q and the output accumulator live in shared memory; output dimension d belongs to thread d mod group size.
    /// </summary>
    public static void Attention(ArrayView<float> dst, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, AttentionArgs a)
    {
        ArrayView<float> qs = SharedMemory.Allocate<float>(MaxHeadDim);
        ArrayView<float> os = SharedMemory.Allocate<float>(MaxHeadDim);
        ArrayView<float> ps = SharedMemory.Allocate<float>(KernelMath.MaxGroupSize);
        ArrayView<float> scratch = SharedMemory.Allocate<float>(KernelMath.MaxWarps);
        int tid = Group.IdxX;
        int gs = Group.DimX;
        int hd = a.HeadDim;
        int r = Grid.IdxX / a.Heads;
        int h = Grid.IdxX - r * a.Heads;
        int p = a.Position + r;
        int kvDim = a.KvHeads * hd;
        int kvOffset = h / (a.Heads / a.KvHeads) * hd;
        long qBase = (long)r * a.Heads * hd + h * hd;
        for (int d = tid; d < hd; d += gs)
        {
            qs[d] = q[qBase + d];
            os[d] = 0;
        }

        Group.Barrier();
        float m = float.NegativeInfinity;
        float l = 0;
        for (int t0 = 0; t0 <= p; t0 += gs)
        {
            int t = t0 + tid;
            float score = float.NegativeInfinity;
            if (t <= p)
            {
                long kBase = (long)t * kvDim + kvOffset;
                float dot = 0;
                for (int d = 0; d < hd; d++)
                {
                    dot += qs[d] * kCache[kBase + d];
                }

                score = dot * a.Scale;
            }

            float mNew = XMath.Max(m, KernelMath.GroupMax(score, scratch));
            float e = t <= p ? XMath.Exp(score - mNew) : 0.0f;
            float alpha = XMath.Exp(m - mNew);
            ps[tid] = e;
            l = l * alpha + KernelMath.GroupSum(e, scratch);
            m = mNew;
            int n = XMath.Min(gs, p - t0 + 1);
            for (int d = tid; d < hd; d += gs)
            {
                float acc = os[d] * alpha;
                long vBase = (long)t0 * kvDim + kvOffset + d;
                for (int j = 0; j < n; j++)
                {
                    acc += ps[j] * vCache[vBase + (long)j * kvDim];
                }

                os[d] = acc;
            }

            Group.Barrier();
        }

        float inv = 1.0f / l;
        for (int d = tid; d < hd; d += gs)
        {
            dst[qBase + d] = os[d] * inv;
        }
    }
}
