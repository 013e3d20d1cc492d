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
/// per output row; each lane takes one quant word (4 or 8 weights) at a time, so a warp's loads of quants and of x
/// are consecutive words; partial sums meet in a shuffle reduction and lane 0 writes; the grid's Y dimension runs
/// over the x rows. Kernels are warp-size agnostic (ILGPU's CPU accelerator uses small warps).
/// </summary>
public sealed class QuantMatMulKernels
{
    /// <summary>Warps per thread group.</summary>
    public const int WarpsPerGroup = 4;

    private readonly Accelerator _accelerator;
    private readonly Dictionary<DType, Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, int, int, int>> _kernels = [];
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
        Kernel(w.Type)(stream, config, dst, w.Quants.View, w.High.View, w.Scales.View, w.Aux.View, x, w.Rows, w.Cols, accumulate ? 1 : 0);
    }

    /// <summary>dst[r·Cols + c] = dequant(W[tokens[r]])[c] for r &lt; <paramref name="count"/> (ids already checked).</summary>
    public void Embed(AcceleratorStream stream, ArrayView<float> dst, QuantWeight w, ArrayView<int> tokens, int count) =>
        EmbedLauncher()(stream, checked(count * w.Cols), dst, w.Quants.View, w.High.View, w.Scales.View, w.Aux.View, tokens, w.Cols, (int)w.Type);

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, int, int, int> Kernel(DType type)
    {
        if (!_kernels.TryGetValue(type, out var kernel))
        {
            Action<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, int, int, int> method = type switch
            {
                DType.Q8_0 => Q8_0Kernel,
                DType.Q4_0 => Q4_0Kernel,
                DType.Q4_1 => Q4_1Kernel,
                DType.Q5_0 => Q5_0Kernel,
                DType.Q5_1 => Q5_1Kernel,
                DType.Q4_K => Q4_KKernel,
                DType.Q5_K => Q5_KKernel,
                DType.Q6_K => Q6_KKernel,
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

    private static void Q8_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Word w of the row holds values 4w..4w+3 of block w/8.
        int words = cols / 4;
        long qBase = (long)o * words;
        long sBase = (long)o * (cols / 32);
        long xBase = (long)r * cols;
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            float d = scales[sBase + w / 8];
            long xi = xBase + 4 * w;
            sum += I8(q, 0) * d * x[xi] + I8(q, 1) * d * x[xi + 1] + I8(q, 2) * d * x[xi + 2] + I8(q, 3) * d * x[xi + 3];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q4_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Word w holds bytes 4j..4j+3 (j = w % 4) of block w/4: low nibbles are values 4j.., high nibbles 16+4j...
        int words = cols / 8;
        long qBase = (long)o * words;
        long sBase = (long)o * (cols / 32);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            float d = scales[sBase + w / 4];
            long xi = (long)r * cols + 32 * (w / 4) + 4 * (w % 4);
            sum += (((int)(q & 0xF) - 8) * d) * x[xi]
                + (((int)((q >> 8) & 0xF) - 8) * d) * x[xi + 1]
                + (((int)((q >> 16) & 0xF) - 8) * d) * x[xi + 2]
                + (((int)((q >> 24) & 0xF) - 8) * d) * x[xi + 3]
                + (((int)((q >> 4) & 0xF) - 8) * d) * x[xi + 16]
                + (((int)((q >> 12) & 0xF) - 8) * d) * x[xi + 17]
                + (((int)((q >> 20) & 0xF) - 8) * d) * x[xi + 18]
                + (((int)((q >> 28) & 0xF) - 8) * d) * x[xi + 19];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    /// <summary>A Q4_1/Q5_1 value: level q as <c>q·d + m</c> (ggml's order: convert, multiply, add).</summary>
    private static float Affine(uint q, float d, float m) => q * d + m;

    /// <summary>A 5-bit level (Q5_1, Q5_K): the nibble at <paramref name="nibbleShift"/> of a quant word, with bit <paramref name="bit"/> of a qh word as its 5th bit.</summary>
    private static uint Five(uint q, int nibbleShift, uint qh, int bit) => ((q >> nibbleShift) & 0xF) | (((qh >> bit) & 1) << 4);

    private static void Q4_1Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q4_0 (word w: bytes 4j..4j+3 of block w/4), values q·d + m with d, m at scales 2·block, 2·block+1.
        int words = cols / 8;
        long qBase = (long)o * words;
        long bBase = (long)o * (cols / 32);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            long block = bBase + w / 4;
            float d = scales[2 * block];
            float m = scales[2 * block + 1];
            long xi = (long)r * cols + 32 * (w / 4) + 4 * (w % 4);
            sum += Affine(q & 0xF, d, m) * x[xi]
                + Affine((q >> 8) & 0xF, d, m) * x[xi + 1]
                + Affine((q >> 16) & 0xF, d, m) * x[xi + 2]
                + Affine((q >> 24) & 0xF, d, m) * x[xi + 3]
                + Affine((q >> 4) & 0xF, d, m) * x[xi + 16]
                + Affine((q >> 12) & 0xF, d, m) * x[xi + 17]
                + Affine((q >> 20) & 0xF, d, m) * x[xi + 18]
                + Affine((q >> 28) & 0xF, d, m) * x[xi + 19];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q5_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q4_0, plus the 5th bit of value e of the block from bit e of qh.
        int words = cols / 8;
        long qBase = (long)o * words;
        long bBase = (long)o * (cols / 32);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            long block = bBase + w / 4;
            float d = scales[block];
            int e = 4 * (w % 4);
            uint hl = high[block] >> e;
            uint hh = high[block] >> (e + 16);
            long xi = (long)r * cols + 32 * (w / 4) + e;
            sum += (((int)((q & 0xF) | ((hl << 4) & 0x10)) - 16) * d) * x[xi]
                + (((int)(((q >> 8) & 0xF) | ((hl << 3) & 0x10)) - 16) * d) * x[xi + 1]
                + (((int)(((q >> 16) & 0xF) | ((hl << 2) & 0x10)) - 16) * d) * x[xi + 2]
                + (((int)(((q >> 24) & 0xF) | ((hl << 1) & 0x10)) - 16) * d) * x[xi + 3]
                + (((int)(((q >> 4) & 0xF) | ((hh << 4) & 0x10)) - 16) * d) * x[xi + 16]
                + (((int)(((q >> 12) & 0xF) | ((hh << 3) & 0x10)) - 16) * d) * x[xi + 17]
                + (((int)(((q >> 20) & 0xF) | ((hh << 2) & 0x10)) - 16) * d) * x[xi + 18]
                + (((int)(((q >> 28) & 0xF) | ((hh << 1) & 0x10)) - 16) * d) * x[xi + 19];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q5_1Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // As Q5_0 for the 5-bit values, as Q4_1 for q·d + m.
        int words = cols / 8;
        long qBase = (long)o * words;
        long bBase = (long)o * (cols / 32);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            long block = bBase + w / 4;
            float d = scales[2 * block];
            float m = scales[2 * block + 1];
            uint qh = high[block];
            int e = 4 * (w % 4);
            long xi = (long)r * cols + 32 * (w / 4) + e;
            sum += Affine(Five(q, 0, qh, e), d, m) * x[xi]
                + Affine(Five(q, 8, qh, e + 1), d, m) * x[xi + 1]
                + Affine(Five(q, 16, qh, e + 2), d, m) * x[xi + 2]
                + Affine(Five(q, 24, qh, e + 3), d, m) * x[xi + 3]
                + Affine(Five(q, 4, qh, e + 16), d, m) * x[xi + 16]
                + Affine(Five(q, 12, qh, e + 17), d, m) * x[xi + 17]
                + Affine(Five(q, 20, qh, e + 18), d, m) * x[xi + 18]
                + Affine(Five(q, 28, qh, e + 19), d, m) * x[xi + 19];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q4_KKernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Super-block word w (0..31): group g = w/8 covers values 64g..64g+63; bytes l0..l0+3 (l0 = 4·(w%8)) give
        // values 64g+l0+t (low nibble, sub-block 2g) and 64g+32+l0+t (high nibble, sub-block 2g+1). Aux bytes 2g, 2g+1
        // are those sub-blocks' scales, bytes 8+2g, 9+2g their mins; d1 = d·sc and m1 = dmin·m as in ggml.
        int words = cols / 8;
        long qBase = (long)o * words;
        long sbBase = (long)o * (cols / 256);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            long sb = sbBase + w / 32;
            int g = (w % 32) / 8;
            float d = scales[2 * sb];
            float dmin = scales[2 * sb + 1];
            uint scWord = aux[4 * sb + g / 2];
            uint mWord = aux[4 * sb + 2 + g / 2];
            int k = 2 * (g % 2);
            float d1 = d * U8(scWord, k);
            float m1 = dmin * U8(mWord, k);
            float d2 = d * U8(scWord, k + 1);
            float m2 = dmin * U8(mWord, k + 1);
            long xi = (long)r * cols + 256 * (w / 32) + 64 * g + 4 * (w % 8);
            sum += (d1 * (q & 0xF) - m1) * x[xi]
                + (d1 * ((q >> 8) & 0xF) - m1) * x[xi + 1]
                + (d1 * ((q >> 16) & 0xF) - m1) * x[xi + 2]
                + (d1 * ((q >> 24) & 0xF) - m1) * x[xi + 3]
                + (d2 * ((q >> 4) & 0xF) - m2) * x[xi + 32]
                + (d2 * ((q >> 12) & 0xF) - m2) * x[xi + 33]
                + (d2 * ((q >> 20) & 0xF) - m2) * x[xi + 34]
                + (d2 * ((q >> 28) & 0xF) - m2) * x[xi + 35];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q5_KKernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
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

    private static void Q6_KKernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Super-block ql word w (0..31): half c = w/16, byte m0 = 4·(w%16) of the half's 64 ql bytes; quarter
        // k = m0/32 (low nibbles) or k+2 (high nibbles), lane l0 = m0%32. The matching qh bytes 32c+l0.. are qh word
        // 8c + l0/4, 2-bit field k of each byte. Value 128c + 32k + l, scale 8c + 2k + l0/16 (aux byte), times d.
        int words = cols / 8;
        long qBase = (long)o * words;
        long sbBase = (long)o * (cols / 256);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint ql = quants[qBase + w];
            long sb = sbBase + w / 32;
            int c = (w % 32) / 16;
            int m0 = 4 * (w % 16);
            int k = m0 / 32;
            int l0 = m0 % 32;
            uint qh = high[16 * sb + 8 * c + l0 / 4];
            float d = scales[sb];
            int sLow = 8 * c + 2 * k + l0 / 16;
            float dLow = d * I8(aux[4 * sb + sLow / 4], sLow % 4);
            float dHigh = d * I8(aux[4 * sb + (sLow + 4) / 4], (sLow + 4) % 4);
            long xi = (long)r * cols + 256 * (w / 32) + 128 * c + 32 * k + l0;
            int pl = 2 * k;
            int ph = 2 * k + 4;
            sum += (dLow * Six(ql, 0, qh, pl)) * x[xi]
                + (dLow * Six(ql, 8, qh, 8 + pl)) * x[xi + 1]
                + (dLow * Six(ql, 16, qh, 16 + pl)) * x[xi + 2]
                + (dLow * Six(ql, 24, qh, 24 + pl)) * x[xi + 3]
                + (dHigh * Six(ql, 4, qh, ph)) * x[xi + 64]
                + (dHigh * Six(ql, 12, qh, 8 + ph)) * x[xi + 65]
                + (dHigh * Six(ql, 20, qh, 16 + ph)) * x[xi + 66]
                + (dHigh * Six(ql, 28, qh, 24 + ph)) * x[xi + 67];
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    /// <summary>One dequantized element per thread: value e of row tokens[i / cols], by the formats' element formulas.</summary>
    private static void EmbedKernel(Index1D i, ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux, ArrayView<int> tokens, int cols, int type)
    {
        int e = i % cols;
        long o = tokens[i / cols];
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

        dst[i] = v;
    }
}
