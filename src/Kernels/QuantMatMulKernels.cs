using System.Buffers.Binary;
using GpuLlama.Formats;
using ILGPU;
using ILGPU.Runtime;

namespace GpuLlama.Kernels;

/// <summary>
/// A block-quantized weight matrix repacked for the device (host side, at upload): GGUF blocks are 18/22/34/144/210
/// bytes, so their fields are misaligned for word loads; here each field is its own aligned stream, binary16 scales
/// are widened to float once, and K-quant sub-block scales are pre-multiplied by the super-block scale exactly as
/// ggml's dequantization does (<c>d1 = d·sc</c>, <c>m1 = dmin·m</c>, Q6_K's <c>d·sc</c>), so kernels only read words.
/// </summary>
/// <remarks>
/// Streams per format (each row's data contiguous, rows back to back):
/// <list type="bullet">
/// <item>Q8_0: Quants = 8 words (32 int8) per block; Scales = d per block.</item>
/// <item>Q4_0: Quants = 4 words (the 16 nibble bytes) per block; Scales = d per block.</item>
/// <item>Q5_0: Quants = 4 words per block; High = qh per block; Scales = d per block.</item>
/// <item>Q4_K: Quants = 32 words per super-block; Scales/Mins = d·sc and dmin·m per 32-value sub-block.</item>
/// <item>Q6_K: Quants = 32 words of ql per super-block; High = 16 words of qh; Scales = d·sc per 16 values.</item>
/// </list>
/// </remarks>
public sealed record QuantRepack(DType Type, int Rows, int Cols, uint[] Quants, uint[] High, float[] Scales, float[] Mins)
{
    /// <summary>Types the device kernels compute in place.</summary>
    public static bool Supports(DType type) => type is DType.Q8_0 or DType.Q4_0 or DType.Q5_0 or DType.Q4_K or DType.Q6_K;

    /// <summary>Repacks <paramref name="rows"/> rows of raw GGUF blocks (<paramref name="data"/>: rows × RowBytes(cols) bytes).</summary>
    public static unsafe QuantRepack Create(DType type, byte* data, int rows, int cols)
    {
        if (!Supports(type))
        {
            throw new NotSupportedException($"device kernels for {DTypeInfo.DisplayName(type)} weights are not implemented");
        }

        int bs = type.BlockSize();
        if (cols % bs != 0)
        {
            throw new ArgumentException($"{type} rows hold whole blocks of {bs}; got {cols} columns", nameof(cols));
        }

        long blocks = (long)rows * (cols / bs);
        int bb = type.BlockBytes();
        int quantWords = type switch { DType.Q8_0 => 8, DType.Q4_0 or DType.Q5_0 => 4, _ => 32 };
        int highWords = type switch { DType.Q5_0 => 1, DType.Q6_K => 16, _ => 0 };
        int scalesPer = type switch { DType.Q4_K => 8, DType.Q6_K => 16, _ => 1 };
        uint[] quants = new uint[checked(blocks * quantWords)];
        uint[] high = new uint[Math.Max(1, checked(blocks * highWords))];
        float[] scales = new float[checked(blocks * scalesPer)];
        float[] mins = new float[type == DType.Q4_K ? checked(blocks * 8) : 1];
        for (long i = 0; i < blocks; i++)
        {
            ReadOnlySpan<byte> b = new(data + i * bb, bb);
            switch (type)
            {
                case DType.Q8_0:
                    scales[i] = QuantBlocks.Half(b, 0);
                    CopyWords(b.Slice(2, 32), quants.AsSpan((int)(i * 8), 8));
                    break;
                case DType.Q4_0:
                    scales[i] = QuantBlocks.Half(b, 0);
                    CopyWords(b.Slice(2, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q5_0:
                    scales[i] = QuantBlocks.Half(b, 0);
                    high[i] = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(2));
                    CopyWords(b.Slice(6, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q4_K:
                {
                    float d = QuantBlocks.Half(b, 0);
                    float dmin = QuantBlocks.Half(b, 2);
                    for (int s = 0; s < 8; s++)
                    {
                        QuantBlocks.ScaleMinK4(s, b.Slice(4, QuantBlocks.KScaleSize), out int sc, out int m);
                        scales[i * 8 + s] = d * sc;
                        mins[i * 8 + s] = dmin * m;
                    }

                    CopyWords(b.Slice(16, 128), quants.AsSpan((int)(i * 32), 32));
                    break;
                }

                default:
                {
                    float d = QuantBlocks.Half(b, 208);
                    for (int s = 0; s < 16; s++)
                    {
                        scales[i * 16 + s] = d * (sbyte)b[192 + s];
                    }

                    CopyWords(b.Slice(0, 128), quants.AsSpan((int)(i * 32), 32));
                    CopyWords(b.Slice(128, 64), high.AsSpan((int)(i * 16), 16));
                    break;
                }
            }
        }

        return new QuantRepack(type, rows, cols, quants, high, scales, mins);
    }

    private static void CopyWords(ReadOnlySpan<byte> src, Span<uint> dst)
    {
        for (int w = 0; w < dst.Length; w++)
        {
            dst[w] = BinaryPrimitives.ReadUInt32LittleEndian(src.Slice(4 * w));
        }
    }
}

/// <summary>A <see cref="QuantRepack"/> in device memory.</summary>
public sealed class QuantWeight : IDisposable
{
    private QuantWeight(QuantRepack r, Accelerator accelerator)
    {
        Type = r.Type;
        Rows = r.Rows;
        Cols = r.Cols;
        Quants = accelerator.Allocate1D(r.Quants);
        High = accelerator.Allocate1D(r.High);
        Scales = accelerator.Allocate1D(r.Scales);
        Mins = accelerator.Allocate1D(r.Mins);
    }

    public DType Type { get; }

    public int Rows { get; }

    public int Cols { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> Quants { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> High { get; }

    public MemoryBuffer1D<float, Stride1D.Dense> Scales { get; }

    public MemoryBuffer1D<float, Stride1D.Dense> Mins { get; }

    /// <summary>Repacks and uploads raw GGUF rows.</summary>
    public static unsafe QuantWeight Upload(Accelerator accelerator, DType type, byte* data, int rows, int cols) =>
        new(QuantRepack.Create(type, data, rows, cols), accelerator);

    public static QuantWeight Upload(Accelerator accelerator, QuantRepack repack) => new(repack, accelerator);

    public void Dispose()
    {
        Quants.Dispose();
        High.Dispose();
        Scales.Dispose();
        Mins.Dispose();
    }
}

/// <summary>
/// Quantized GEMV/GEMM on the device: dst[r, o] (+)= Σ dequant(W[o])·x[r] with weights read in their blocks. One warp
/// per output row: each lane takes one quant word (4 or 8 weights) at a time, so a warp's loads of quants and of x
/// are consecutive words; partial sums meet in a shuffle reduction and lane 0 writes. The grid's Y dimension runs
/// over the x rows. Kernels are written warp-size agnostic (ILGPU's CPU accelerator uses small warps).
/// </summary>
public sealed class QuantMatMulKernels
{
    /// <summary>Warps per thread group.</summary>
    public const int WarpsPerGroup = 4;

    private readonly Accelerator _accelerator;
    private readonly Dictionary<DType, Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>> _kernels = [];

    public QuantMatMulKernels(Accelerator accelerator)
    {
        _accelerator = accelerator;
        _kernels[DType.Q8_0] = accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(Q8_0Kernel);
        _kernels[DType.Q4_0] = accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(Q4_0Kernel);
        _kernels[DType.Q5_0] = accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(Q5_0Kernel);
        _kernels[DType.Q4_K] = accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(Q4_KKernel);
        _kernels[DType.Q6_K] = accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(Q6_KKernel);
    }

    /// <summary>
    /// dst[r·Rows + o] = (accumulate ? dst : 0) + W[o]·x[r·Cols …] for r &lt; <paramref name="xRows"/>.
    /// </summary>
    public void MatMul(AcceleratorStream stream, ArrayView<float> dst, QuantWeight w, ArrayView<float> x, int xRows, bool accumulate)
    {
        int warp = _accelerator.WarpSize;
        var config = new KernelConfig(new Index2D((w.Rows + WarpsPerGroup - 1) / WarpsPerGroup, xRows), new Index2D(warp * WarpsPerGroup, 1));
        _kernels[w.Type](stream, config, dst, w.Quants.View, w.High.View, w.Scales.View, w.Mins.View, x, w.Rows, w.Cols, accumulate ? 1 : 0);
    }

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

    /// <summary>Sign-extended int8 number <paramref name="k"/> (0..3) of a word, as float.</summary>
    private static float I8(uint word, int k) => (int)(word << (24 - 8 * k)) >> 24;

    private static void Q8_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<float> mins, ArrayView<float> x, int rows, int cols, int accumulate)
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

    /// <summary>Σ over the four bytes of <paramref name="q"/> of table(nibble)·x, low nibbles at x[lo..], high nibbles at x[hi..].</summary>
    private static void Q4_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<float> mins, ArrayView<float> x, int rows, int cols, int accumulate)
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
            float s = (((int)(q & 0xF) - 8) * d) * x[xi]
                + (((int)((q >> 8) & 0xF) - 8) * d) * x[xi + 1]
                + (((int)((q >> 16) & 0xF) - 8) * d) * x[xi + 2]
                + (((int)((q >> 24) & 0xF) - 8) * d) * x[xi + 3]
                + (((int)((q >> 4) & 0xF) - 8) * d) * x[xi + 16]
                + (((int)((q >> 12) & 0xF) - 8) * d) * x[xi + 17]
                + (((int)((q >> 20) & 0xF) - 8) * d) * x[xi + 18]
                + (((int)((q >> 28) & 0xF) - 8) * d) * x[xi + 19];
            sum += s;
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q5_0Kernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<float> mins, ArrayView<float> x, int rows, int cols, int accumulate)
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
            float s = (((int)((q & 0xF) | ((hl << 4) & 0x10)) - 16) * d) * x[xi]
                + (((int)(((q >> 8) & 0xF) | ((hl << 3) & 0x10)) - 16) * d) * x[xi + 1]
                + (((int)(((q >> 16) & 0xF) | ((hl << 2) & 0x10)) - 16) * d) * x[xi + 2]
                + (((int)(((q >> 24) & 0xF) | ((hl << 1) & 0x10)) - 16) * d) * x[xi + 3]
                + (((int)(((q >> 4) & 0xF) | ((hh << 4) & 0x10)) - 16) * d) * x[xi + 16]
                + (((int)(((q >> 12) & 0xF) | ((hh << 3) & 0x10)) - 16) * d) * x[xi + 17]
                + (((int)(((q >> 20) & 0xF) | ((hh << 2) & 0x10)) - 16) * d) * x[xi + 18]
                + (((int)(((q >> 28) & 0xF) | ((hh << 1) & 0x10)) - 16) * d) * x[xi + 19];
            sum += s;
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    private static void Q4_KKernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<float> mins, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Super-block word w (0..31): group g = w/8 covers values 64g..64g+63; bytes l0..l0+3 (l0 = 4·(w%8)) give
        // values 64g+l0+t (low nibble, sub-block 2g) and 64g+32+l0+t (high nibble, sub-block 2g+1).
        int words = cols / 8;
        long qBase = (long)o * words;
        long sBase = (long)o * (cols / 32);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint q = quants[qBase + w];
            int sb = w / 32;
            int g = (w % 32) / 8;
            long sub = sBase + 8 * sb + 2 * g;
            float d1 = scales[sub];
            float m1 = mins[sub];
            float d2 = scales[sub + 1];
            float m2 = mins[sub + 1];
            long xi = (long)r * cols + 256 * sb + 64 * g + 4 * (w % 8);
            float s = (d1 * (q & 0xF) - m1) * x[xi]
                + (d1 * ((q >> 8) & 0xF) - m1) * x[xi + 1]
                + (d1 * ((q >> 16) & 0xF) - m1) * x[xi + 2]
                + (d1 * ((q >> 24) & 0xF) - m1) * x[xi + 3]
                + (d2 * ((q >> 4) & 0xF) - m2) * x[xi + 32]
                + (d2 * ((q >> 12) & 0xF) - m2) * x[xi + 33]
                + (d2 * ((q >> 20) & 0xF) - m2) * x[xi + 34]
                + (d2 * ((q >> 28) & 0xF) - m2) * x[xi + 35];
            sum += s;
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }

    /// <summary>One 6-bit Q6_K value: a nibble of ql plus a 2-bit field of qh, minus 32.</summary>
    private static float Six(uint ql, int nibbleShift, uint qh, int pairShift) =>
        (int)(((ql >> nibbleShift) & 0xF) | (((qh >> pairShift) & 3) << 4)) - 32;

    private static void Q6_KKernel(ArrayView<float> dst, ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<float> mins, ArrayView<float> x, int rows, int cols, int accumulate)
    {
        int o = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int r = Grid.IdxY;
        if (o >= rows)
        {
            return;
        }

        // Super-block ql word w (0..31): half c = w/16, byte m0 = 4·(w%16) of the half's 64 ql bytes; quarter
        // k = m0/32 (low nibbles) or k+2 (high nibbles), lane l0 = m0%32. The matching qh bytes 32c+l0.. are qh word
        // 8c + l0/4, 2-bit field k of each byte. Value 128c + 32k + l, scale index 8c + 2k + l/16.
        int words = cols / 8;
        long qBase = (long)o * words;
        long hBase = (long)o * (cols / 16);
        long sBase = (long)o * (cols / 16);
        float sum = 0;
        for (int w = Warp.LaneIdx; w < words; w += Warp.WarpSize)
        {
            uint ql = quants[qBase + w];
            int sb = w / 32;
            int c = (w % 32) / 16;
            int m0 = 4 * (w % 16);
            int k = m0 / 32;
            int l0 = m0 % 32;
            uint qh = high[hBase + 16 * sb + 8 * c + l0 / 4];
            long scaleAt = sBase + 16 * sb + 8 * c + 2 * k + l0 / 16;
            float dLow = scales[scaleAt];
            float dHigh = scales[scaleAt + 4];
            long xi = (long)r * cols + 256 * sb + 128 * c + 32 * k + l0;
            int pl = 2 * k;
            int ph = 2 * k + 4;
            float s = (dLow * Six(ql, 0, qh, pl)) * x[xi]
                + (dLow * Six(ql, 8, qh, 8 + pl)) * x[xi + 1]
                + (dLow * Six(ql, 16, qh, 16 + pl)) * x[xi + 2]
                + (dLow * Six(ql, 24, qh, 24 + pl)) * x[xi + 3]
                + (dHigh * Six(ql, 4, qh, ph)) * x[xi + 64]
                + (dHigh * Six(ql, 12, qh, 8 + ph)) * x[xi + 65]
                + (dHigh * Six(ql, 20, qh, 16 + ph)) * x[xi + 66]
                + (dHigh * Six(ql, 28, qh, 24 + ph)) * x[xi + 67];
            sum += s;
        }

        Finish(dst, rows, o, r, sum, accumulate);
    }
}
