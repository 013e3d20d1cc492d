using GpuLlama.Devices;
using GpuLlama.Formats;
using ILGPU;
using ILGPU.Runtime;

namespace GpuLlama.Kernels;

/// <summary>A <see cref="QuantRepack"/> in device memory: four word streams (see its layout notes).</summary>
public sealed class QuantWeight : IDisposable
{
    public QuantWeight(
        DType type,
        int rows,
        int cols,
        MemoryBuffer1D<uint, Stride1D.Dense> quants,
        MemoryBuffer1D<uint, Stride1D.Dense> high,
        MemoryBuffer1D<float, Stride1D.Dense> scales,
        MemoryBuffer1D<uint, Stride1D.Dense> aux)
    {
        Type = type;
        Rows = rows;
        Cols = cols;
        Quants = quants;
        High = high;
        Scales = scales;
        Aux = aux;
    }

    public DType Type { get; }

    public int Rows { get; }

    public int Cols { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> Quants { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> High { get; }

    public MemoryBuffer1D<float, Stride1D.Dense> Scales { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> Aux { get; }

    /// <summary>Bytes held on the device.</summary>
    public long Bytes => 4 * (Quants.Length + High.Length + Scales.Length + Aux.Length);

    /// <summary>Repacks raw GGUF rows and uploads them with plain allocations.</summary>
    public static unsafe QuantWeight Upload(Accelerator accelerator, DType type, byte* data, int rows, int cols)
    {
        QuantRepack r = QuantRepack.Create(type, data, rows, cols);
        return new QuantWeight(type, rows, cols, accelerator.Allocate1D(r.Quants), accelerator.Allocate1D(r.High), accelerator.Allocate1D(r.Scales), accelerator.Allocate1D(r.Aux));
    }

    public void Dispose()
    {
        Quants.Dispose();
        High.Dispose();
        Scales.Dispose();
        Aux.Dispose();
    }
}

/// <summary>
/// Quantized GEMV/GEMM and embedding lookup on the device, weights read in their (repacked) blocks. MatMul: one warp
/// per output row; a lane takes a 16-byte chunk of quants (Q8_0, K-quants) or one quant word (Q4_0/Q5_0) per step,
/// with the matching activations as float4 loads; which of the two is faster was measured per format on an H100
/// (docs/performance.md); partial sums meet in a shuffle reduction and lane 0 writes; the grid's Y
/// dimension runs over the x rows. Kernels are warp-size agnostic (ILGPU's CPU accelerator uses small warps).
/// </summary>
public sealed class QuantMatMulKernels
{
    /// <summary>Warps per thread group.</summary>
    public const int WarpsPerGroup = 4;

    private readonly Accelerator _accelerator;
    private readonly Dictionary<DType, Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<U4>, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<uint>, ArrayView<F4>, int, int, int>> _kernels = [];
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<int>, int, int>? _embed;

    /// <summary>Kernels are compiled per format on first need (<see cref="Prepare"/> at upload), so a model pays only for its own formats.</summary>
    public QuantMatMulKernels(Accelerator accelerator)
    {
        _accelerator = accelerator;
    }

    /// <summary>Compiles the MatMul kernel of <paramref name="type"/> (and the Embed kernel when <paramref name="embed"/>) now, outside the token loop.</summary>
    public void Prepare(DType type, bool embed)
    {
        _ = Kernel(type);
        if (embed)
        {
            _ = EmbedLauncher();
        }
    }

    /// <summary>dst[r·Rows + o] = (accumulate ? dst : 0) + W[o]·x[r·Cols …] for r &lt; <paramref name="xRows"/>.</summary>
    public void MatMul(AcceleratorStream stream, ArrayView<float> dst, QuantWeight w, ArrayView<float> x, int xRows, bool accumulate)
    {
        int warp = _accelerator.WarpSize;
        var config = new KernelConfig(new Index2D((w.Rows + WarpsPerGroup - 1) / WarpsPerGroup, xRows), new Index2D(warp * WarpsPerGroup, 1));
        // 16-byte views: quants, Q6_K's qh chunks and activations move in vector loads (cols is a multiple of 32)
        Kernel(w.Type)(stream, config, dst, ((ArrayView<uint>)w.Quants.View).Cast<U4>(), w.High.View, ((ArrayView<uint>)w.High.View).Cast<U4>(), w.Scales.View, w.Aux.View,
            x.Cast<F4>(), w.Rows, w.Cols, accumulate ? 1 : 0);
    }

    /// <summary>dst[r·Cols + c] = dequant(W[tokens[r]])[c] for r &lt; <paramref name="count"/> (ids already checked).</summary>
    public void Embed(AcceleratorStream stream, ArrayView<float> dst, QuantWeight w, ArrayView<int> tokens, int count) =>
        EmbedLauncher()(stream, checked(count * w.Cols), dst, w.Quants.View, w.High.View, w.Scales.View, w.Aux.View, tokens, w.Cols, (int)w.Type);

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<U4>, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<uint>, ArrayView<F4>, int, int, int> Kernel(DType type)
    {
        if (!_kernels.TryGetValue(type, out var kernel))
        {
            Action<ArrayView<float>, ArrayView<U4>, ArrayView<uint>, ArrayView<U4>, ArrayView<float>, ArrayView<uint>, ArrayView<F4>, int, int, int> method = type switch
            {
                DType.Q8_0 => Q8_0Kernel,
                DType.Q4_0 => Q4_0Kernel,
                DType.Q4_1 => Q4_1Kernel,
                DType.Q5_0 => Q5_0Kernel,
                DType.Q5_1 => Q5_1Kernel,
                DType.Q4_K => Q4_KKernel,
                DType.Q5_K => Q5_KKernel,
                DType.Q6_K => Q6_KKernel,
                DType.IQ4_NL => IQ4_NLKernel,
                DType.IQ4_XS => IQ4_XSKernel,
                _ => throw new NotSupportedException($"no device kernel for {DTypeInfo.DisplayName(type)} weights"),
            };
            kernel = _accelerator.LoadKernel(method);
            _kernels[type] = kernel;
        }

        return kernel;
    }

    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<int>, int, int> EmbedLauncher() =>
        _embed ??= _accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<int>, int, int>(EmbedKernel);

    private static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2)
        {
            v += Warp.ShuffleXor(v, offset);
        }

        return v;
    }

    private static void Finish(ArrayView<float> dst, int rows, int o, int r, float sum, int accumulate)
    {
        sum = WarpSum(sum);
        if (Warp.IsFirstLane)
        {
            long at = (long)r * rows + o;
            dst[at] = accumulate != 0 ? dst[at] + sum : sum;
        }
    }

    /// <summary>Signed byte number <paramref name="k"/> (0..3) of a word.</summary>
    private static int I8(uint word, int k) => (int)(word << (24 - 8 * k)) >> 24;

    /// <summary>Unsigned byte number <paramref name="k"/> (0..3) of a word.</summary>
    private static int U8(uint word, int k) => (int)((word >> (8 * k)) & 0xFF);

    /// <summary>One 6-bit Q6_K value: a nibble of ql plus a 2-bit field of qh, minus 32.</summary>
    private static int Six(uint ql, int nibbleShift, uint qh, int pairShift) =>
        (int)(((ql >> nibbleShift) & 0xF) | (((qh >> pairShift) & 3) << 4)) - 32;

    /// <summary>Σ int8(q byte t) · x_t over the four bytes of a word.</summary>
    private static float DotI8(uint q, F4 x) => I8(q, 0) * x.X + I8(q, 1) * x.Y + I8(q, 2) * x.Z + I8(q, 3) * x.W;

    /// <summary>
    /// Σ (nibble t + 16·bit t of <paramref name="hi"/> − <paramref name="offset"/>) · x_t, the nibble of byte t at
    /// <paramref name="shift"/> (0: low nibbles, 4: high nibbles); Q4_0 passes hi = 0, offset 8; Q5_0 its qh bits, 16.
    /// </summary>
    private static float DotNibbles(uint q, int shift, uint hi, int offset, F4 x) =>
        ((int)(((q >> shift) & 0xF) | ((hi << 4) & 0x10)) - offset) * x.X
        + ((int)(((q >> (shift + 8)) & 0xF) | ((hi << 3) & 0x10)) - offset) * x.Y
        + ((int)(((q >> (shift + 16)) & 0xF) | ((hi << 2) & 0x10)) - offset) * x.Z
        + ((int)(((q >> (shift + 24)) & 0xF) | ((hi << 1) & 0x10)) - offset) * x.W;

    /// <summary>Σ nibble t · x_t (K-quants: the scale and min are applied per sub-block by the caller).</summary>
    private static float DotNibbles(uint q, int shift, F4 x) =>
        ((q >> shift) & 0xF) * x.X + ((q >> (shift + 8)) & 0xF) * x.Y + ((q >> (shift + 16)) & 0xF) * x.Z + ((q >> (shift + 24)) & 0xF) * x.W;

    private static float Sum(F4 x) => x.X + x.Y + x.Z + x.W;

    /// <summary>Σ six-bit Q6_K value t · x_t: nibbles of ql at <paramref name="nibbleShift"/>, 2-bit qh fields at <paramref name="pairShift"/>.</summary>
    private static float DotSix(uint ql, int nibbleShift, uint qh, int pairShift, F4 x) =>
        Six(ql, nibbleShift, qh, pairShift) * x.X + Six(ql, nibbleShift + 8, qh, pairShift + 8) * x.Y
        + Six(ql, nibbleShift + 16, qh, pairShift + 16) * x.Z + Six(ql, nibbleShift + 24, qh, pairShift + 24) * x.W;

    /// <summary>Half a Q8_0 block (16 int8 in one 16-byte chunk) · 16 activations from float4 index <paramref name="xi"/>.</summary>
    private static float Q8Chunk(U4 q, ArrayView<F4> x, long xi) =>
        DotI8(q.X, x[xi]) + DotI8(q.Y, x[xi + 1]) + DotI8(q.Z, x[xi + 2]) + DotI8(q.W, x[xi + 3]);

    private static void Q8_0Kernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // 16-byte chunk c of the row holds values 16c..16c+15 of block c/2; two chunks in flight per lane.
        int ws = Warp.WarpSize;
        int chunks = cols / 16;
        long qBase = (long)o * chunks;
        long sBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum0 = 0;
        float sum1 = 0;
        int c = Warp.LaneIdx;
        for (; c + ws < chunks; c += 2 * ws)
        {
            U4 q0 = q[qBase + c];
            U4 q1 = q[qBase + c + ws];
            sum0 += scales[sBase + c / 2] * Q8Chunk(q0, x4, xBase + 4L * c);
            sum1 += scales[sBase + (c + ws) / 2] * Q8Chunk(q1, x4, xBase + 4L * (c + ws));
        }

        for (; c < chunks; c += ws)
        {
            sum0 += scales[sBase + c / 2] * Q8Chunk(q[qBase + c], x4, xBase + 4L * c);
        }

        Finish(dst, rows, o, r, sum0 + sum1, accumulate);
    }

    /// <summary>
    /// Quant word <paramref name="w"/> of a Q4_0/Q5_0 row · its 8 activations: word w holds bytes 4j..4j+3 (j = w % 4)
    /// of block w / 4, whose low nibbles are values 4j..4j+3 and high nibbles 16+4j..16+4j+3 of the block.
    /// </summary>
    private static float Q4Word(uint q, uint qh, int offset, int w, ArrayView<F4> x, long xBase)
    {
        int j = w % 4;
        long xi = xBase + 8L * (w / 4) + j;
        return DotNibbles(q, 0, qh >> (4 * j), offset, x[xi]) + DotNibbles(q, 4, qh >> (16 + 4 * j), offset, x[xi + 4]);
    }

    private static void Q4_0Kernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // One quant word per lane per step, so a warp's quant loads are 128 consecutive bytes and its float4 activation
        // loads cover whole 64-byte runs (a block per lane would stride the activations 128 bytes apart across lanes,
        // which costs 8x the L1 wavefronts); four words in flight per lane.
        ArrayView<uint> words = q.Cast<uint>();
        int ws = Warp.WarpSize;
        int n = cols / 8;
        long qBase = (long)o * n;
        long sBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum0 = 0;
        float sum1 = 0;
        int w = Warp.LaneIdx;
        for (; w + 3 * ws < n; w += 4 * ws)
        {
            uint a = words[qBase + w];
            uint b = words[qBase + w + ws];
            uint c = words[qBase + w + 2 * ws];
            uint d = words[qBase + w + 3 * ws];
            sum0 += scales[sBase + w / 4] * Q4Word(a, 0, 8, w, x4, xBase);
            sum1 += scales[sBase + (w + ws) / 4] * Q4Word(b, 0, 8, w + ws, x4, xBase);
            sum0 += scales[sBase + (w + 2 * ws) / 4] * Q4Word(c, 0, 8, w + 2 * ws, x4, xBase);
            sum1 += scales[sBase + (w + 3 * ws) / 4] * Q4Word(d, 0, 8, w + 3 * ws, x4, xBase);
        }

        for (; w < n; w += ws)
        {
            sum0 += scales[sBase + w / 4] * Q4Word(words[qBase + w], 0, 8, w, x4, xBase);
        }

        Finish(dst, rows, o, r, sum0 + sum1, accumulate);
    }

    /// <summary>
    /// IQ4_NL's level of a nibble (ggml kvalues_iq4nl): the 16 int8 levels packed four to a word, the word picked by the
    /// nibble's top two bits and the byte by its low two (kernels take no lookup tables).
    /// </summary>
    private static float Level(uint q)
    {
        uint w = (q & 8) != 0 ? ((q & 4) != 0 ? 0x71594535u : 0x26190D01u) : ((q & 4) != 0 ? 0xF6EADDCFu : 0xBFAD9881u);
        return (int)(w << (24 - 8 * (int)(q & 3))) >> 24;
    }

    /// <summary>Σ level(nibble t of byte t at <paramref name="shift"/>) · x_t over a word's four bytes.</summary>
    private static float DotLevels(uint q, int shift, F4 x) =>
        Level((q >> shift) & 0xF) * x.X + Level((q >> (shift + 8)) & 0xF) * x.Y + Level((q >> (shift + 16)) & 0xF) * x.Z + Level((q >> (shift + 24)) & 0xF) * x.W;

    /// <summary>IQ4_NL: Q4_0Kernel's loop (a quant word per lane, four in flight) with the levels for q − 8.</summary>
    private static void IQ4_NLKernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate) =>
        IQ4Rows(dst, q, scales, x4, rows, cols, accumulate);

    /// <summary>IQ4_XS: repacked as eight IQ4_NL blocks a super-block (QuantRepack), so the same loop.</summary>
    private static void IQ4_XSKernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate) =>
        IQ4Rows(dst, q, scales, x4, rows, cols, accumulate);

    /// <summary>
    /// Q4_0Kernel's loop over IQ4 words (written apart rather than through a flag in Q4_0's loop, whose H100 timing would
    /// then need measuring again).
    /// </summary>
    private static void IQ4Rows(ArrayView<float> dst, ArrayView<U4> q, ArrayView<float> scales, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        ArrayView<uint> words = q.Cast<uint>();
        int ws = Warp.WarpSize;
        int n = cols / 8;
        long qBase = (long)o * n;
        long sBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum0 = 0;
        float sum1 = 0;
        int w = Warp.LaneIdx;
        for (; w + 3 * ws < n; w += 4 * ws)
        {
            uint a = words[qBase + w];
            uint b = words[qBase + w + ws];
            uint c = words[qBase + w + 2 * ws];
            uint d = words[qBase + w + 3 * ws];
            sum0 += scales[sBase + w / 4] * IQ4Word(a, w, x4, xBase);
            sum1 += scales[sBase + (w + ws) / 4] * IQ4Word(b, w + ws, x4, xBase);
            sum0 += scales[sBase + (w + 2 * ws) / 4] * IQ4Word(c, w + 2 * ws, x4, xBase);
            sum1 += scales[sBase + (w + 3 * ws) / 4] * IQ4Word(d, w + 3 * ws, x4, xBase);
        }

        for (; w < n; w += ws)
        {
            sum0 += scales[sBase + w / 4] * IQ4Word(words[qBase + w], w, x4, xBase);
        }

        Finish(dst, rows, o, r, sum0 + sum1, accumulate);
    }

    /// <summary>Quant word <paramref name="w"/> of an IQ4 row · its 8 activations (the layout of <see cref="Q4Word"/>).</summary>
    private static float IQ4Word(uint q, int w, ArrayView<F4> x, long xBase)
    {
        int j = w % 4;
        long xi = xBase + 8L * (w / 4) + j;
        return DotLevels(q, 0, x[xi]) + DotLevels(q, 4, x[xi + 4]);
    }

    private static void Q5_0Kernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q4_0, plus the 5th bit of value e of the block from bit e of qh; two words in flight per lane.
        ArrayView<uint> words = q.Cast<uint>();
        int ws = Warp.WarpSize;
        int n = cols / 8;
        long qBase = (long)o * n;
        long bBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum0 = 0;
        float sum1 = 0;
        int w = Warp.LaneIdx;
        for (; w + ws < n; w += 2 * ws)
        {
            uint a = words[qBase + w];
            uint b = words[qBase + w + ws];
            sum0 += scales[bBase + w / 4] * Q4Word(a, high[bBase + w / 4], 16, w, x4, xBase);
            sum1 += scales[bBase + (w + ws) / 4] * Q4Word(b, high[bBase + (w + ws) / 4], 16, w + ws, x4, xBase);
        }

        for (; w < n; w += ws)
        {
            sum0 += scales[bBase + w / 4] * Q4Word(words[qBase + w], high[bBase + w / 4], 16, w, x4, xBase);
        }

        Finish(dst, rows, o, r, sum0 + sum1, accumulate);
    }

    private static void Q4_KKernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Chunk m (0..7) of a super-block = qs bytes 16m..16m+15 = bytes l0..l0+15 (l0 = 16·(m%2)) of group g = m/2:
        // low nibbles are values 64g+l0+t of sub-block 2g, high nibbles 64g+32+l0+t of sub-block 2g+1. Aux bytes 2g,
        // 2g+1 are those sub-blocks' scales, bytes 8+2g, 9+2g their mins; d1 = d·sc and m1 = dmin·m as in ggml.
        int ws = Warp.WarpSize;
        int chunks = cols / 32;
        long qBase = (long)o * chunks;
        long sbBase = (long)o * (cols / 256);
        long xBase = (long)r * (cols / 4);
        float sum = 0;
        for (int c = Warp.LaneIdx; c < chunks; c += ws)
        {
            U4 v = q[qBase + c];
            long sb = sbBase + c / 8;
            int m = c % 8;
            int g = m / 2;
            float d = scales[2 * sb];
            float dmin = scales[2 * sb + 1];
            uint scWord = aux[4 * sb + g / 2];
            uint mWord = aux[4 * sb + 2 + g / 2];
            int k = 2 * (g % 2);
            long xi = xBase + 64L * (c / 8) + 16 * g + 4 * (m % 2);
            F4 a0 = x4[xi];
            F4 a1 = x4[xi + 1];
            F4 a2 = x4[xi + 2];
            F4 a3 = x4[xi + 3];
            F4 b0 = x4[xi + 8];
            F4 b1 = x4[xi + 9];
            F4 b2 = x4[xi + 10];
            F4 b3 = x4[xi + 11];
            float lo = DotNibbles(v.X, 0, a0) + DotNibbles(v.Y, 0, a1) + DotNibbles(v.Z, 0, a2) + DotNibbles(v.W, 0, a3);
            float hi = DotNibbles(v.X, 4, b0) + DotNibbles(v.Y, 4, b1) + DotNibbles(v.Z, 4, b2) + DotNibbles(v.W, 4, b3);
            float loSum = Sum(a0) + Sum(a1) + Sum(a2) + Sum(a3);
            float hiSum = Sum(b0) + Sum(b1) + Sum(b2) + Sum(b3);
            sum += d * U8(scWord, k) * lo - dmin * U8(mWord, k) * loSum
                + d * U8(scWord, k + 1) * hi - dmin * U8(mWord, k + 1) * hiSum;
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q6_KKernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // ql chunk n (0..7) of a super-block = ql bytes m0..m0+15 (m0 = 16·(n%4)) of half hf = n/4: quarter k = m0/32
        // (low nibbles) or k+2 (high nibbles), lanes l0 = m0%32 .. l0+15. The matching qh bytes 32hf+l0.. are one
        // 16-byte qh chunk, 2-bit field k (or k+2) of each byte. Value 128hf + 32k + l, scale 8hf + 2k + l0/16, times d.
        int ws = Warp.WarpSize;
        int chunks = cols / 32;
        long qBase = (long)o * chunks;
        long sbBase = (long)o * (cols / 256);
        long xBase = (long)r * (cols / 4);
        float sum = 0;
        for (int c = Warp.LaneIdx; c < chunks; c += ws)
        {
            long sb = sbBase + c / 8;
            int n = c % 8;
            int hf = n / 4;
            int m0 = 16 * (n % 4);
            int k = m0 / 32;
            int l0 = m0 % 32;
            U4 lo = q[qBase + c];
            U4 hb = high4[4 * sb + 2 * hf + l0 / 16];
            float d = scales[sb];
            int sLow = 8 * hf + 2 * k + l0 / 16;
            float dLow = d * I8(aux[4 * sb + sLow / 4], sLow % 4);
            float dHigh = d * I8(aux[4 * sb + (sLow + 4) / 4], (sLow + 4) % 4);
            long xi = xBase + 64L * (c / 8) + 32 * hf + 8 * k + l0 / 4;
            int pl = 2 * k;
            int ph = 2 * k + 4;
            sum += dLow * (DotSix(lo.X, 0, hb.X, pl, x4[xi]) + DotSix(lo.Y, 0, hb.Y, pl, x4[xi + 1])
                    + DotSix(lo.Z, 0, hb.Z, pl, x4[xi + 2]) + DotSix(lo.W, 0, hb.W, pl, x4[xi + 3]))
                + dHigh * (DotSix(lo.X, 4, hb.X, ph, x4[xi + 16]) + DotSix(lo.Y, 4, hb.Y, ph, x4[xi + 17])
                    + DotSix(lo.Z, 4, hb.Z, ph, x4[xi + 18]) + DotSix(lo.W, 4, hb.W, ph, x4[xi + 19]));
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    /// <summary>A Q4_1/Q5_1 value: level q as <c>q·d + m</c> (ggml's order: convert, multiply, add).</summary>
    private static float Affine(uint q, float d, float m) => q * d + m;

    /// <summary>A 5-bit level (Q5_1, Q5_K): the nibble at <paramref name="nibbleShift"/> of a quant word, with bit <paramref name="bit"/> of a qh word as its 5th bit.</summary>
    private static uint Five(uint q, int nibbleShift, uint qh, int bit) => ((q >> nibbleShift) & 0xF) | (((qh >> bit) & 1) << 4);

    /// <summary>Σ (q_t·d + m) · x_t over four nibbles at <paramref name="shift"/>, bit t of <paramref name="hi"/> the 5th bit (Q5_1).</summary>
    private static float Affine4(uint q, int shift, uint hi, float d, float m, F4 x) =>
        Affine(((q >> shift) & 0xF) | ((hi << 4) & 0x10), d, m) * x.X
        + Affine(((q >> (shift + 8)) & 0xF) | ((hi << 3) & 0x10), d, m) * x.Y
        + Affine(((q >> (shift + 16)) & 0xF) | ((hi << 2) & 0x10), d, m) * x.Z
        + Affine(((q >> (shift + 24)) & 0xF) | ((hi << 1) & 0x10), d, m) * x.W;

    /// <summary>Quant word <paramref name="w"/> of a Q4_1/Q5_1 row · its 8 activations (layout as <see cref="Q4Word"/>).</summary>
    private static float AffineWord(uint q, uint qh, int w, float d, float m, ArrayView<F4> x, long xBase)
    {
        int j = w % 4;
        long xi = xBase + 8L * (w / 4) + j;
        return Affine4(q, 0, qh >> (4 * j), d, m, x[xi]) + Affine4(q, 4, qh >> (16 + 4 * j), d, m, x[xi + 4]);
    }

    private static void Q4_1Kernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q4_0 (one quant word per lane step, two in flight), values q·d + m with d, m at scales 2·block, 2·block+1.
        ArrayView<uint> words = q.Cast<uint>();
        int ws = Warp.WarpSize;
        int n = cols / 8;
        long qBase = (long)o * n;
        long bBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum0 = 0;
        float sum1 = 0;
        int w = Warp.LaneIdx;
        for (; w + ws < n; w += 2 * ws)
        {
            uint a = words[qBase + w];
            uint b = words[qBase + w + ws];
            long ba = bBase + w / 4;
            long bb = bBase + (w + ws) / 4;
            sum0 += AffineWord(a, 0, w, scales[2 * ba], scales[2 * ba + 1], x4, xBase);
            sum1 += AffineWord(b, 0, w + ws, scales[2 * bb], scales[2 * bb + 1], x4, xBase);
        }

        for (; w < n; w += ws)
        {
            long ba = bBase + w / 4;
            sum0 += AffineWord(words[qBase + w], 0, w, scales[2 * ba], scales[2 * ba + 1], x4, xBase);
        }

        Finish(dst, rows, o, r, sum0 + sum1, accumulate);
    }

    private static void Q5_1Kernel(ArrayView<float> dst, ArrayView<U4> q, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q5_0 for the 5-bit values, as Q4_1 for q·d + m.
        ArrayView<uint> words = q.Cast<uint>();
        int ws = Warp.WarpSize;
        int n = cols / 8;
        long qBase = (long)o * n;
        long bBase = (long)o * (cols / 32);
        long xBase = (long)r * (cols / 4);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < n; w += ws)
        {
            long block = bBase + w / 4;
            sum += AffineWord(words[qBase + w], high[block], w, scales[2 * block], scales[2 * block + 1], x4, xBase);
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q5_KKernel(ArrayView<float> dst, ArrayView<U4> qv, ArrayView<uint> high, ArrayView<U4> high4, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<F4> x4, int rows, int cols, int accumulate)
    {
        ArrayView<uint> quants = qv.Cast<uint>(); // scalar loads (16-byte loads: see Q4_0/Q4_K)
        ArrayView<float> x = x4.Cast<float>();
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q4_K; the qh bytes l0..l0+3 of word w are qh word w%8 of the super-block, and in each byte bit 2g is the
        // 5th bit of the low-nibble value (sub-block 2g), bit 2g+1 that of the high-nibble value (sub-block 2g+1).
        int words = cols / 8;
        long qBase = (long)o * words;
        long sbBase = (long)o * (cols / 256);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            long sb = sbBase + w / 32;
            int g = (w % 32) / 8;
            uint qh = high[8 * sb + w % 8];
            float d = scales[2 * sb];
            float dmin = scales[2 * sb + 1];
            uint scWord = aux[4 * sb + g / 2];
            uint mWord = aux[4 * sb + 2 + g / 2];
            int k = 2 * (g % 2);
            float d1 = d * U8(scWord, k);
            float m1 = dmin * U8(mWord, k);
            float d2 = d * U8(scWord, k + 1);
            float m2 = dmin * U8(mWord, k + 1);
            int lo = 2 * g;
            int hi = 2 * g + 1;
            long xi = (long)r * cols + 256 * (w / 32) + 64 * g + 4 * (w % 8);
            sum += (d1 * Five(q, 0, qh, lo) - m1) * x[xi]
                + (d1 * Five(q, 8, qh, 8 + lo) - m1) * x[xi + 1]
                + (d1 * Five(q, 16, qh, 16 + lo) - m1) * x[xi + 2]
                + (d1 * Five(q, 24, qh, 24 + lo) - m1) * x[xi + 3]
                + (d2 * Five(q, 4, qh, hi) - m2) * x[xi + 32]
                + (d2 * Five(q, 12, qh, 8 + hi) - m2) * x[xi + 33]
                + (d2 * Five(q, 20, qh, 16 + hi) - m2) * x[xi + 34]
                + (d2 * Five(q, 28, qh, 24 + hi) - m2) * x[xi + 35];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    /// <summary>One dequantized element per thread: value e of row tokens[i / cols], by the formats' element formulas.</summary>
    private static void EmbedKernel(Index1D i, ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<int> tokens, int cols, int type) =>
        dst[i] = Dequant(tokens[i / cols], i % cols, quants, high, scales, aux, cols, type);

    /// <summary>
    /// Element <paramref name="e"/> of row <paramref name="o"/> of a repacked quantized weight, dequantized as ggml's
    /// dequantize_row_* computes it (the embedding lookup, and the shared-memory prompt GEMM's weight tiles).
    /// </summary>
    internal static float Dequant(long o, int e, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, int cols, int type)
    {
        float v;
        if (type == (int)DType.Q8_0)
        {
            v = I8(quants[o * (cols / 4) + e / 4], e % 4) * scales[o * (cols / 32) + e / 32];
        }
        else if (type == (int)DType.Q4_0 || type == (int)DType.Q5_0 || type == (int)DType.Q4_1 || type == (int)DType.Q5_1)
        {
            long block = o * (cols / 32) + e / 32;
            int j = e % 32;
            int q = (int)((quants[4 * block + (j % 16) / 4] >> (8 * (j % 4) + (j >= 16 ? 4 : 0))) & 0xF);
            if (type == (int)DType.Q5_0 || type == (int)DType.Q5_1)
            {
                q |= (int)(((high[block] >> j) & 1) << 4);
            }

            if (type == (int)DType.Q4_0)
            {
                v = (q - 8) * scales[block];
            }
            else if (type == (int)DType.Q5_0)
            {
                v = (q - 16) * scales[block];
            }
            else
            {
                v = Affine((uint)q, scales[2 * block], scales[2 * block + 1]);
            }
        }
        else if (type == (int)DType.IQ4_NL || type == (int)DType.IQ4_XS)
        {
            // both repacked as 32-value blocks of 4 quant words and one scale (IQ4_XS: the sub-block's dl)
            long block = o * (cols / 32) + e / 32;
            int j = e % 32;
            v = scales[block] * Level((quants[4 * block + (j % 16) / 4] >> (8 * (j % 4) + (j >= 16 ? 4 : 0))) & 0xF);
        }
        else if (type == (int)DType.Q4_K || type == (int)DType.Q5_K)
        {
            long sb = o * (cols / 256) + e / 256;
            int rr = e % 256;
            int s = rr / 32;
            int q = (int)((quants[32 * sb + 8 * (rr / 64) + (rr % 32) / 4] >> (8 * (rr % 4) + 4 * (s % 2))) & 0xF);
            if (type == (int)DType.Q5_K)
            {
                // Bit s of qh byte rr % 32.
                q |= (int)(((high[8 * sb + (rr % 32) / 4] >> (8 * (rr % 4) + s)) & 1) << 4);
            }

            v = scales[2 * sb] * U8(aux[4 * sb + s / 4], s % 4) * q - scales[2 * sb + 1] * U8(aux[4 * sb + 2 + s / 4], s % 4);
        }
        else
        {
            long sb = o * (cols / 256) + e / 256;
            int rr = e % 256;
            int c = rr / 128;
            int k = (rr % 128) / 32;
            int l = rr % 32;
            int qlByte = 64 * c + 32 * (k % 2) + l;
            int qhByte = 32 * c + l;
            int q = Six(quants[32 * sb + qlByte / 4], 8 * (qlByte % 4) + (k >= 2 ? 4 : 0), high[16 * sb + qhByte / 4], 8 * (qhByte % 4) + 2 * k);
            v = scales[sb] * I8(aux[4 * sb + (rr / 16) / 4], (rr / 16) % 4) * q;
        }

        return v;
    }
}
