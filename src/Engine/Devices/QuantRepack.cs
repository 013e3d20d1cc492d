using System.Buffers.Binary;
using System.Runtime.InteropServices;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// A block-quantized weight matrix repacked for a GPU (host side, at upload). GGUF blocks are 18/20/22/24/34/136/144/176/210 bytes,
/// so their fields are misaligned for word loads; here each field is its own word-aligned stream and binary16 block
/// scales are widened to float once. K-quant sub-block scales stay 6/8-bit (one byte each), so the repacked matrix is
/// at most ~11% larger than the file's. Kernels compute exactly ggml's dequantization from these streams.
/// </summary>
/// <remarks>
/// Streams per format (each row's data contiguous, rows back to back):
/// <list type="bullet">
/// <item>Q8_0: Quants = the 32 int8 of a block as 8 words; Scales = d.</item>
/// <item>Q4_0: Quants = the 16 nibble bytes as 4 words; Scales = d.</item>
/// <item>Q4_1: Quants = the 16 nibble bytes as 4 words; Scales = d, m.</item>
/// <item>Q5_0: Quants = 4 words; High = qh (1 word); Scales = d.</item>
/// <item>Q5_1: Quants = 4 words; High = qh (1 word); Scales = d, m.</item>
/// <item>Q4_K: Quants = qs as 32 words; Scales = d, dmin; Aux = the 8 six-bit scales then the 8 mins, one byte each (4 words).</item>
/// <item>Q5_K: as Q4_K, plus High = qh as 8 words (bit s of byte l is the 5th bit of value l of sub-block s).</item>
/// <item>Q6_K: Quants = ql as 32 words; High = qh as 16 words; Scales = d; Aux = the 16 int8 scales (4 words).</item>
/// <item>IQ4_NL: as Q4_0 (Quants = the 16 nibble bytes as 4 words; Scales = d); the nibbles index the 16 levels.</item>
/// <item>IQ4_XS: as eight IQ4_NL blocks: Quants = qs as 32 words; Scales = each sub-block's dl = d·(ls − 32), so one
/// kernel serves both.</item>
/// </list>
/// </remarks>
public sealed record QuantRepack(DType Type, int Rows, int Cols, uint[] Quants, uint[] High, float[] Scales, uint[] Aux)
{
    /// <summary>Types the device kernels compute in place.</summary>
    public static bool Supports(DType type) =>
        type is DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q4_K or DType.Q5_K or DType.Q6_K
            or DType.IQ4_NL or DType.IQ4_XS;

    /// <summary>Whether a GPU backend holds a weight of this type and row width: plain floats as stored, these formats repacked.</summary>
    public static bool Uploadable(DType type, long cols) =>
        type is DType.F32 or DType.F16 or DType.BF16 || Supports(type) && cols % type.BlockSize() == 0;

    /// <summary>Words per block of each stream: quants, high, scales, aux.</summary>
    public static (int Quants, int High, int Scales, int Aux) WordsPerBlock(DType type) => type switch
    {
        DType.Q8_0 => (8, 0, 1, 0),
        DType.Q4_0 => (4, 0, 1, 0),
        DType.Q4_1 => (4, 0, 2, 0),
        DType.Q5_0 => (4, 1, 1, 0),
        DType.Q5_1 => (4, 1, 2, 0),
        DType.Q4_K => (32, 0, 2, 4),
        DType.Q5_K => (32, 8, 2, 4),
        DType.Q6_K => (32, 16, 1, 4),
        DType.IQ4_NL => (4, 0, 1, 0),
        DType.IQ4_XS => (32, 0, 8, 0),
        _ => throw new NotSupportedException($"device kernels for {DTypeInfo.DisplayName(type)} weights are not implemented"),
    };

    /// <summary>Element counts of the four streams (each at least 1, so every buffer exists).</summary>
    public static (long Quants, long High, long Scales, long Aux) StreamLengths(DType type, long rows, long cols)
    {
        (int q, int h, int s, int a) = WordsPerBlock(type);
        long blocks = rows * (cols / type.BlockSize());
        return (Math.Max(1, blocks * q), Math.Max(1, blocks * h), Math.Max(1, blocks * s), Math.Max(1, blocks * a));
    }

    /// <summary>Device bytes of the repacked tensor: four allocations, each rounded up to 256 B (what <see cref="MemoryPlan"/> counts).</summary>
    public static long DeviceBytes(TensorInfo tensor)
    {
        (long q, long h, long s, long a) = StreamLengths(tensor.Type, tensor.Rows, tensor.Cols);
        return MemoryPlan.DeviceBytes(4 * q) + MemoryPlan.DeviceBytes(4 * h) + MemoryPlan.DeviceBytes(4 * s) + MemoryPlan.DeviceBytes(4 * a);
    }

    /// <summary>Repacks <paramref name="rows"/> rows of raw GGUF blocks (<paramref name="data"/>: rows × RowBytes(cols) bytes).</summary>
    public static unsafe QuantRepack Create(DType type, byte* data, int rows, int cols)
    {
        Check(type, cols);
        (long nq, long nh, long ns, long na) = StreamLengths(type, rows, cols);
        var r = new QuantRepack(type, rows, cols, new uint[nq], new uint[nh], new float[ns], new uint[na]);
        Fill(type, data, rows, cols, r.Quants, r.High, r.Scales, r.Aux);
        return r;
    }

    /// <summary>
    /// Repacks into arrays the caller owns (at least <see cref="StreamLengths"/> long): how a device refills the slot a
    /// streamed weight passes through (prompt offload) without allocating per batch. Blocks are independent, so the
    /// work is split across the thread pool in runs of blocks: at upload and when streaming, this host-side pass must
    /// not be slower than the copy to the device it feeds.
    /// </summary>
    public static unsafe void Fill(DType type, byte* data, int rows, int cols, uint[] quants, uint[] high, float[] scales, uint[] aux)
    {
        Check(type, cols);
        (long nq, long nh, long ns, long na) = StreamLengths(type, rows, cols);
        if (quants.Length < nq || high.Length < nh || scales.Length < ns || aux.Length < na)
        {
            throw new ArgumentException($"repack arrays too short for {rows} rows of {cols} {DTypeInfo.DisplayName(type)} columns");
        }

        long perRow = cols / type.BlockSize();
        long blocks = rows * perRow;
        const long Run = 1 << 14; // blocks per work item: 0.3-3.4 MB of input
        long runs = (blocks + Run - 1) / Run;
        if (runs <= 1)
        {
            FillBlocks(type, data, 0, blocks, quants, high, scales, aux);
            return;
        }

        nint source = (nint)data;
        Parallel.For(0, runs, k => FillBlocks(type, (byte*)source, k * Run, Math.Min(blocks, (k + 1) * Run), quants, high, scales, aux));
    }

    private static void Check(DType type, int cols)
    {
        if (!Supports(type) || cols % type.BlockSize() != 0)
        {
            throw new ArgumentException($"cannot repack {DTypeInfo.DisplayName(type)} rows of {cols} columns for the device", nameof(type));
        }
    }

    private static unsafe void FillBlocks(DType type, byte* data, long first, long end, uint[] quants, uint[] high, float[] scales, uint[] aux)
    {
        int bb = type.BlockBytes();
        Span<byte> unpacked = stackalloc byte[16];
        for (long i = first; i < end; i++)
        {
            ReadOnlySpan<byte> b = new(data + i * bb, bb);
            switch (type)
            {
                case DType.Q8_0:
                    scales[i] = H(b, 0);
                    CopyWords(b.Slice(2, 32), quants.AsSpan((int)(i * 8), 8));
                    break;
                case DType.Q4_0:
                    scales[i] = H(b, 0);
                    CopyWords(b.Slice(2, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q4_1:
                    scales[2 * i] = H(b, 0);
                    scales[2 * i + 1] = H(b, 2);
                    CopyWords(b.Slice(4, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q5_0:
                    scales[i] = H(b, 0);
                    high[i] = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(2));
                    CopyWords(b.Slice(6, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q5_1:
                    scales[2 * i] = H(b, 0);
                    scales[2 * i + 1] = H(b, 2);
                    high[i] = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(4));
                    CopyWords(b.Slice(8, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.Q4_K:
                case DType.Q5_K:
                {
                    scales[2 * i] = H(b, 0);
                    scales[2 * i + 1] = H(b, 2);
                    for (int s = 0; s < 8; s++)
                    {
                        QuantBlocks.ScaleMinK4(s, b.Slice(4, QuantBlocks.KScaleSize), out int sc, out int m);
                        unpacked[s] = (byte)sc;
                        unpacked[8 + s] = (byte)m;
                    }

                    CopyWords(unpacked, aux.AsSpan((int)(i * 4), 4));
                    if (type == DType.Q4_K)
                    {
                        CopyWords(b.Slice(16, 128), quants.AsSpan((int)(i * 32), 32));
                    }
                    else
                    {
                        CopyWords(b.Slice(16, 32), high.AsSpan((int)(i * 8), 8));
                        CopyWords(b.Slice(48, 128), quants.AsSpan((int)(i * 32), 32));
                    }

                    break;
                }

                case DType.IQ4_NL:
                    scales[i] = H(b, 0);
                    CopyWords(b.Slice(2, 16), quants.AsSpan((int)(i * 4), 4));
                    break;
                case DType.IQ4_XS:
                {
                    float d = H(b, 0);
                    int scalesH = BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(2));
                    for (int s = 0; s < 8; s++)
                    {
                        int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 0xF) | (((scalesH >> (2 * s)) & 3) << 4);
                        scales[8 * i + s] = d * (ls - 32);
                    }

                    CopyWords(b.Slice(8, 128), quants.AsSpan((int)(i * 32), 32));
                    break;
                }

                default:
                    scales[i] = H(b, 208);
                    CopyWords(b.Slice(192, 16), aux.AsSpan((int)(i * 4), 4));
                    CopyWords(b.Slice(0, 128), quants.AsSpan((int)(i * 32), 32));
                    CopyWords(b.Slice(128, 64), high.AsSpan((int)(i * 16), 16));
                    break;
            }
        }
    }

    /// <summary>A block's binary16 scale as a float, from the conversion table (the same values as the cast, faster).</summary>
    private static unsafe float H(ReadOnlySpan<byte> b, int offset) => CpuQuantDot.HalfTable[BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(offset))];

    /// <summary>Little-endian words from bytes: one block copy on little-endian hosts (all that .NET runs on here).</summary>
    private static void CopyWords(ReadOnlySpan<byte> src, Span<uint> dst)
    {
        if (BitConverter.IsLittleEndian)
        {
            src[..(4 * dst.Length)].CopyTo(MemoryMarshal.AsBytes(dst));
            return;
        }

        for (int w = 0; w < dst.Length; w++)
        {
            dst[w] = BinaryPrimitives.ReadUInt32LittleEndian(src.Slice(4 * w));
        }
    }
}
