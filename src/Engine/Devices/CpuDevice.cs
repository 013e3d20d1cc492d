using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>A float buffer in 64-byte-aligned native memory; other devices copy from and to it directly.</summary>
public sealed unsafe class CpuBuffer : DeviceBuffer
{
    internal CpuBuffer(IDevice device, int length) : base(device, length)
    {
        Pointer = (float*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, length) * sizeof(float), 64);
        new Span<float>(Pointer, length).Clear();
    }

    public float* Pointer { get; private set; }

    public Span<float> Span => new(Pointer, Length);

    public override void Dispose()
    {
        if (Pointer != null)
        {
            NativeMemory.AlignedFree(Pointer);
            Pointer = null;
        }
    }
}

/// <summary>
/// A weight on the CPU: a pointer into the memory map (zero copy), or to a same-size copy in a faster layout — grouped
/// Q4_0 (<see cref="CpuQ8Dot.GroupQ4_0"/>) or row panels of F32/F16/BF16 (<see cref="CpuMatMul.InterleaveRowPanels"/>).
/// </summary>
public sealed unsafe class CpuWeight : DeviceWeight
{
    internal CpuWeight(IDevice device, WeightView view) : base(device, view.Info)
    {
        Pointer = view.Pointer;
        RowBytes = view.RowBytes;
    }

    /// <summary>A weight stored as <paramref name="copy"/> (same size, from <see cref="NativeMemory.AlignedAlloc"/>; freed with the weight).</summary>
    internal CpuWeight(IDevice device, WeightView view, byte* copy, bool groupedQ4_0, bool rowPanels) : base(device, view.Info)
    {
        _copy = copy;
        Pointer = copy;
        RowBytes = view.RowBytes;
        GroupedQ4_0 = groupedQ4_0;
        RowPanels = rowPanels;
    }

    private byte* _copy;

    /// <summary>The weight's rows: the memory map's bytes, or the copy.</summary>
    public byte* Pointer { get; }

    public long RowBytes { get; }

    /// <summary>Q4_0 rows in <see cref="CpuQ8Dot.GroupQ4_0"/>'s layout (same size and row offsets as the file's).</summary>
    public bool GroupedQ4_0 { get; }

    /// <summary>Rows interleaved four at a time (<see cref="CpuMatMul.InterleaveRowPanels"/>): a group of four rows starts at <see cref="Row"/>(4g).</summary>
    public bool RowPanels { get; }

    /// <summary>Where row <paramref name="row"/> starts — for row panels, only rows 4g (the group) and the rows past the last whole group.</summary>
    public byte* Row(int row) => Pointer + row * RowBytes;

    /// <summary>Whether row <paramref name="row"/> is part of a row panel (else it lies row-major at <see cref="Row"/>).</summary>
    public bool InPanel(int row) => RowPanels && row < Rows / 4 * 4;

    public override void Dispose()
    {
        if (_copy != null)
        {
            NativeMemory.AlignedFree(_copy);
            _copy = null;
        }
    }
}

/// <summary>
/// One layer's K and V on the CPU, in native memory as their cache types: V as [capacity, kvDim]; K the same, or on
/// AVX-512 hosts in blocks of 16 positions, element e of keys 16b..16b+15 side by side at [(b·kvDim + e)·16 + j], so
/// that attention scores 16 keys per vector load without transposing them first (see CpuDevice.Scores16). Q8_0 and
/// Q4_0 caches hold each row as ggml's blocks, as llama.cpp's do (keys row-major: a score is one block dot product).
/// </summary>
public sealed unsafe class CpuKvCache : KvCacheLayer
{
    internal CpuKvCache(IDevice device, int capacity, int kvDim, KvCacheType kType, KvCacheType vType, bool blockedKeys) : base(device, capacity, kvDim, kType, vType)
    {
        BlockedKeys = blockedKeys && !kType.IsQuantized();
        long keyPositions = BlockedKeys ? (capacity + 15L) / 16 * 16 : capacity;
        AllocatedBytes = kType.RowBytes(keyPositions * kvDim) + vType.RowBytes((long)capacity * kvDim);
        K = Allocate(kType.RowBytes(keyPositions * kvDim));
        V = Allocate(vType.RowBytes((long)capacity * kvDim));
    }

    public byte* K { get; private set; }

    public byte* V { get; private set; }

    /// <summary>Keys in blocks of 16 positions (see the class summary); else row-major like the values.</summary>
    public bool BlockedKeys { get; }

    /// <summary>K and V bytes, the key blocks' padding to a multiple of 16 positions included.</summary>
    public long AllocatedBytes { get; }

    /// <summary>Where element <paramref name="offset"/> of the 16 keys of block <paramref name="block"/> starts (blocked keys).</summary>
    public byte* KeyBlock(int block, int offset) => K + KType.RowBytes(((long)block * KvDim + offset) * 16);

    /// <summary>Where key <paramref name="t"/>'s values for the head at <paramref name="offset"/> start (row-major keys; quantized: a head starts on a block).</summary>
    public byte* Key(long t, int offset) => K + KType.RowBytes(t * KvDim + offset);

    public byte* Value(long t, int offset) => V + VType.RowBytes(t * KvDim + offset);

    /// <summary>Scatters a key row already rounded to <see cref="KvCacheLayer.KType"/> (<paramref name="rounded"/>) into position <paramref name="t"/>'s block.</summary>
    internal void StoreKeyBlockRow(byte* rounded, int t)
    {
        int j = t & 15;
        if (KType == KvCacheType.F32)
        {
            uint* src = (uint*)rounded, dst = (uint*)KeyBlock(t >> 4, 0) + j;
            for (int e = 0; e < KvDim; e++)
            {
                dst[e * 16] = src[e];
            }
        }
        else
        {
            ushort* src = (ushort*)rounded, dst = (ushort*)KeyBlock(t >> 4, 0) + j;
            for (int e = 0; e < KvDim; e++)
            {
                dst[e * 16] = src[e];
            }
        }
    }

    /// <summary>Key <paramref name="t"/>'s <paramref name="n"/> values from element <paramref name="offset"/>, widened to float32.</summary>
    internal void KeyToF32(int t, int offset, float* dst, int n)
    {
        if (!BlockedKeys)
        {
            ToF32(KType, Key(t, offset), dst, n);
            return;
        }

        int size = KType == KvCacheType.F32 ? 4 : 2;
        byte* first = KeyBlock(t >> 4, offset) + (t & 15) * size;
        for (int e = 0; e < n; e++)
        {
            byte* x = first + (long)e * 16 * size;
            dst[e] = KType switch
            {
                KvCacheType.F32 => *(float*)x,
                KvCacheType.F16 => (float)BitConverter.UInt16BitsToHalf(*(ushort*)x),
                _ => BitConverter.UInt32BitsToSingle((uint)*(ushort*)x << 16),
            };
        }
    }

    /// <summary>n values of <paramref name="type"/> at <paramref name="src"/> widened to float32.</summary>
    internal static void ToF32(KvCacheType type, byte* src, float* dst, int n) => CpuDevice.ConvertRow(type.DType(), src, dst, n);

    /// <summary>
    /// n float32 values rounded to <paramref name="type"/> (to nearest, ties to even, as ggml rounds them), or quantized
    /// into n/32 blocks as llama.cpp's CPU backend quantizes a cache row (Q8_0: quantize_row_q8_0; Q4_0: its reference).
    /// </summary>
    internal static void FromF32(KvCacheType type, float* src, byte* dst, int n)
    {
        switch (type)
        {
            case KvCacheType.Q8_0:
                for (int b = 0; b < n / 32; b++)
                {
                    Q8Activations.QuantizeQ8_0(src + 32 * b, dst + 34 * b);
                }

                break;
            case KvCacheType.Q4_0:
                Formats.BlockQuantizer.QuantizeRow(Formats.DType.Q4_0, new ReadOnlySpan<float>(src, n), new Span<byte>(dst, (int)type.RowBytes(n)));
                break;
            case KvCacheType.F32:
                Buffer.MemoryCopy(src, dst, (long)n * sizeof(float), (long)n * sizeof(float));
                break;
            case KvCacheType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(src, n), new Span<Half>(dst, n));
                break;
            default:
                CpuMatMul.F32ToBf16(new ReadOnlySpan<float>(src, n), new Span<ushort>(dst, n));
                break;
        }
    }

    private static byte* Allocate(long bytes)
    {
        byte* p = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), 64);
        new Span<byte>(p, checked((int)Math.Min(bytes, int.MaxValue))).Clear();
        for (long done = int.MaxValue; done < bytes; done += int.MaxValue)
        {
            new Span<byte>(p + done, (int)Math.Min(bytes - done, int.MaxValue)).Clear();
        }

        return p;
    }

    public override void Dispose()
    {
        NativeMemory.AlignedFree(K);
        NativeMemory.AlignedFree(V);
        K = null;
        V = null;
    }
}

/// <summary>
/// The CPU backend: weights are read in place from the memory map (Q4_0 on AVX-512 machines: from a same-size
/// grouped copy, see <see cref="CpuQ8Dot.GroupQ4_0"/>), activations live in native memory, and every
/// op is split over a fixed pool of threads. Numerics follow ggml's CPU backend (float32 accumulation, RMSNorm and
/// softmax sums in double); activations stay float32 for F32 and BF16 weights and, by default, are rounded as ggml
/// rounds them for the others: to 8 bits for block-quantized weights, to F16 for F16 weights (<see cref="ExactQuantDots"/>).
/// </summary>
public sealed unsafe partial class CpuDevice : IDevice
{
    private readonly WorkerPool _pool;
    private long _allocated;

    // scratch per thread: a weight row converted to float, attention scores
    private readonly float*[] _rowScratch;
    private readonly int[] _rowScratchLength;
    private readonly float*[] _scoreScratch;
    private readonly int[] _scoreScratchLength;

    /// <param name="threads">worker threads (0: one per core)</param>
    /// <param name="exactQuantDots">
    /// multiply block-quantized and F16 weights with float32 activations (exact float math on the stored weights, as
    /// the GPU backend does) instead of llama.cpp's way: activations rounded to 8 bits and integer dot products for
    /// block-quantized weights (<see cref="CpuQ8Dot"/>: several times faster, and the logits of llama.cpp's own runs of
    /// quantized files), rounded to F16 for F16 weights (<see cref="CpuMatMul.RoundToF16Codes"/>: half the activation
    /// bytes, ~10% faster decode)
    /// </param>
    public CpuDevice(int threads = 0, bool exactQuantDots = false)
    {
        // The kernels are compiled fully optimized on first call (the CLI's TieredCompilationQuickJitForLoops=false)
        // and never again: CpuPrefetch must be initialized before, or its distance is a memory load and a class-init
        // check inside every loop (measured: the F16 matvec's accumulators spilled to the stack), not a constant.
        RuntimeHelpers.RunClassConstructor(typeof(CpuPrefetch).TypeHandle);
        ExactQuantDots = exactQuantDots || !CpuQ8Dot.IsSupported;
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        _pool = new WorkerPool(Threads);
        _rowScratch = new float*[Threads];
        _rowScratchLength = new int[Threads];
        _scoreScratch = new float*[Threads];
        _scoreScratchLength = new int[Threads];
        _matMulBody = MatMulRows;
        _packBody = PackRows;
        _packQuantsBody = PackQuantRows;
        _matVecBody = MatVecGroups;
        _attentionBody = AttentionRange;
        _groupedAttentionBody = GroupedAttentionRange;
        _normBody = RmsNormRows;
    }

    public int Threads { get; }

    /// <summary>Whether new KV caches keep keys in blocks of 16 positions (AVX-512 hosts; tests turn it off to run the row-major path there).</summary>
    internal bool BlockedKeys { get; set; } = Vector512.IsHardwareAccelerated;

    /// <summary>Whether quantized weights meet float32 activations (exact) rather than 8-bit ones (llama.cpp's numerics).</summary>
    public bool ExactQuantDots { get; }

    public string Name => "cpu";

    public DeviceKind Kind => DeviceKind.Cpu;

    public string Description => $"{Environment.ProcessorCount} cores, {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2" : "scalar")}, {Threads} threads" +
                                 (CpuPrefetch.Distance > 0 ? $", prefetch {CpuPrefetch.Distance} B" : "");

    /// <summary>A one-line error when GPULLAMA_PREFETCH is set but is not a distance; null when it is unset or valid.</summary>
    public static string? CheckPrefetchSetting() => CpuPrefetch.Validate(Environment.GetEnvironmentVariable(CpuPrefetch.EnvironmentVariable));

    public long TotalMemory => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    public long FreeMemory => ReadMemAvailable() ?? TotalMemory;

    /// <summary>
    /// Buffers and caches. Weights count zero: pages of the memory map, or, for grouped Q4_0 and row panels, a copy of
    /// the same size standing in for them (the memory plan counts a model's CPU weights as its file).
    /// </summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocated);

    public DeviceWeight Upload(WeightView weight)
    {
        bool group = !ExactQuantDots && CpuQ8Dot.GroupsQ4_0(weight.Info.Type, weight.Info.Cols);
        // row panels: always for a file's pages (released for the copy); a weight in host memory (synthetic models,
        // tests) only while the copy takes at most a quarter of the free memory, so that a synthetic model as large as
        // the RAM is still read in place rather than doubled (results differ only in float summation order)
        bool panels = CpuMatMul.UsesRowPanels(weight.Type, weight.Rows, weight.RowBytes) &&
                      (weight.FileMapped || weight.ByteLength <= FreeMemory / 4);
        if (!group && !panels)
        {
            return new CpuWeight(this, weight);
        }

        // a same-size copy, made by all threads (the first touch of its pages costs as much as the copying); the
        // map's pages are not read again, so they leave the resident set (the page cache keeps or drops them)
        // instead of counting twice
        long rows = weight.Rows, rowBytes = weight.RowBytes;
        byte* src = weight.Pointer;
        // small pages: a matrix is MiBs, not a multiple of 2 MiB, and transparent huge pages made the load slower here
        // (2.7 vs 2.1 s for TinyLlama F16: compaction at fault time)
        byte* copy = (byte*)NativeMemory.AlignedAlloc((nuint)(rows * rowBytes), 64);
        int cols = (int)weight.Cols;
        const int rowsPerTask = 64; // a multiple of the panels' four rows
        _pool.For((int)((rows + rowsPerTask - 1) / rowsPerTask), (start, end, _) =>
        {
            long r0 = start * (long)rowsPerTask, n = Math.Min(rows, end * (long)rowsPerTask) - r0;
            if (group)
            {
                CpuQ8Dot.GroupQ4_0(src + r0 * rowBytes, copy + r0 * rowBytes, n, cols);
            }
            else
            {
                CpuMatMul.InterleaveRowPanels(src + r0 * rowBytes, copy + r0 * rowBytes, n, rowBytes);
            }
        });
        if (weight.FileMapped)
        {
            MappedFile.Release(src, rows * rowBytes);
        }

        return new CpuWeight(this, weight, copy, group, panels);
    }

    public DeviceBuffer Allocate(int floats)
    {
        Interlocked.Add(ref _allocated, (long)floats * sizeof(float));
        return new CpuBuffer(this, floats);
    }

    public KvCacheLayer AllocateKv(int capacity, int kvDim, KvCacheType kType = KvCacheType.F32, KvCacheType vType = KvCacheType.F32)
    {
        var cache = new CpuKvCache(this, capacity, kvDim, kType, vType, BlockedKeys);
        Interlocked.Add(ref _allocated, cache.AllocatedBytes);
        return cache;
    }

    public void Write(DeviceBuffer dst, ReadOnlySpan<float> src, int dstOffset = 0) => src.CopyTo(Own(dst).Span[dstOffset..]);

    public void Read(DeviceBuffer src, Span<float> dst, int srcOffset = 0) => Own(src).Span.Slice(srcOffset, dst.Length).CopyTo(dst);

    public void CopyFrom(DeviceBuffer dst, int dstOffset, DeviceBuffer src, int srcOffset, int count)
    {
        Span<float> target = Own(dst).Span.Slice(dstOffset, count);
        if (src is CpuBuffer host)
        {
            host.Span.Slice(srcOffset, count).CopyTo(target);
        }
        else
        {
            src.Device.Read(src, target, srcOffset);
        }
    }

    public void Embed(DeviceBuffer x, DeviceWeight table, ReadOnlySpan<int> tokens)
    {
        CpuBuffer dst = Own(x);
        CpuWeight t = Own(table);
        int dim = t.Cols;
        for (int r = 0; r < tokens.Length; r++)
        {
            if ((uint)tokens[r] >= (uint)t.Rows)
            {
                throw new GpuLlamaException($"token id {tokens[r]} is outside the vocabulary (0..{t.Rows - 1})");
            }

            ConvertRow(t, tokens[r], dst.Pointer + (long)r * dim);
        }
    }

    public void RmsNorm(DeviceBuffer dst, DeviceBuffer x, DeviceWeight weight, int rows, float eps)
    {
        _normDst = Own(dst);
        _normX = Own(x);
        _normW = Own(weight);
        _normEps = eps;
        _pool.For(rows, _normBody);
    }

    public void MatMul(DeviceBuffer dst, DeviceWeight w, DeviceBuffer x, int rows, bool accumulate = false)
    {
        CpuWeight weight = Own(w);
        float* xp = Own(x).Pointer;
        float* dp = Own(dst).Pointer;
        if (rows == 1)
        {
            _mvCount = 0;
            AddMatVec(weight, dp, accumulate);
            RunMatVecs(xp, weight.Cols);
            return;
        }

        MultiplyBatch(dp, weight, xp, rows, accumulate);
    }

    /// <summary>Decode runs the three projections as one dispatch over all their rows; prompts run three matrix products.</summary>
    public void MatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2, DeviceBuffer x, int rows)
    {
        if (rows != 1)
        {
            MatMul(d0, w0, x, rows);
            MatMul(d1, w1, x, rows);
            MatMul(d2, w2, x, rows);
            return;
        }

        _mvCount = 0;
        AddMatVec(Own(w0), Own(d0).Pointer, false);
        AddMatVec(Own(w1), Own(d1).Pointer, false);
        AddMatVec(Own(w2), Own(d2).Pointer, false);
        RunMatVecs(Own(x).Pointer, w0.Cols);
    }

    /// <summary>Decode runs gate and up as one dispatch; then SwiGLU.</summary>
    public void MatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, int rows, DeviceBuffer scratch)
    {
        if (rows != 1)
        {
            MatMul(dst, gate, x, rows);
            MatMul(scratch, up, x, rows);
        }
        else
        {
            _mvCount = 0;
            AddMatVec(Own(gate), Own(dst).Pointer, false);
            AddMatVec(Own(up), Own(scratch).Pointer, false);
            RunMatVecs(Own(x).Pointer, gate.Cols);
        }

        SwiGlu(dst, scratch, rows * gate.Rows);
    }

    public void Rope(DeviceBuffer q, DeviceBuffer k, DeviceBuffer ropeTable, int position, int rows, AttentionShape shape)
    {
        float* table = Own(ropeTable).Pointer;
        int half = shape.HeadDim / 2;
        for (int r = 0; r < rows; r++)
        {
            float* cs = table + (long)(position + r) * half * 2;
            RotateHeads(Own(q).Pointer + (long)r * shape.QDim, shape.Heads, shape.HeadDim, cs, shape.Style);
            RotateHeads(Own(k).Pointer + (long)r * shape.KvDim, shape.KvHeads, shape.HeadDim, cs, shape.Style);
        }
    }

    public void StoreKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows)
    {
        CpuKvCache cache = Own(kv);
        if (position + rows > cache.Capacity)
        {
            throw new GpuLlamaException($"KV cache overflow: positions {position}..{position + rows - 1} exceed the context of {cache.Capacity}");
        }

        int n = rows * cache.KvDim;
        float* keys = Own(k).Pointer;
        if (cache.BlockedKeys)
        {
            // each row rounded, then scattered into its block
            byte* rounded = (byte*)GrowBuffer(ref _keyRow, cache.KvDim);
            for (int r = 0; r < rows; r++)
            {
                CpuKvCache.FromF32(cache.KType, keys + (long)r * cache.KvDim, rounded, cache.KvDim);
                cache.StoreKeyBlockRow(rounded, position + r);
            }
        }
        else
        {
            CpuKvCache.FromF32(cache.KType, keys, cache.Key(position, 0), n);
        }

        CpuKvCache.FromF32(cache.VType, Own(v).Pointer, cache.Value(position, 0), n);
    }

    public void ReadKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows)
    {
        CpuKvCache cache = Own(kv);
        if (position < 0 || position + rows > cache.Capacity)
        {
            throw new GpuLlamaException($"KV cache overflow: positions {position}..{position + rows - 1} exceed the context of {cache.Capacity}");
        }

        float* keys = Own(k).Pointer, values = Own(v).Pointer;
        for (int r = 0; r < rows; r++)
        {
            cache.KeyToF32(position + r, 0, keys + (long)r * cache.KvDim, cache.KvDim);
            CpuKvCache.ToF32(cache.VType, cache.Value(position + r, 0), values + (long)r * cache.KvDim, cache.KvDim);
        }
    }

    private CpuBuffer? _keyRow;

    public void Attention(DeviceBuffer dst, DeviceBuffer q, KvCacheLayer kv, int position, int rows, AttentionShape shape)
    {
        _attDst = Own(dst).Pointer;
        _attQ = Own(q).Pointer;
        _attKv = Own(kv);
        _attPosition = position;
        _attRows = rows;
        _attShape = shape;
        // quantized keys meet q quantized to Q8_0 per 32-block, as ggml's dot products take them (once for all heads)
        _attQ8Keys = QuantizedScores(_attKv);
        if (_attQ8Keys)
        {
            _attQ8.Quantize(_attQ, rows * shape.Heads, shape.HeadDim, blocks32: true, blocks256: false);
        }

        // a KV head's query heads together where there are jobs enough for every thread: each 16-bit key block and
        // value row is then widened once, not once per query head (same numbers: the widening is exact, the sums
        // are the same in the same order)
        if (Grouped(_attKv, shape, _attQ8Keys) && rows * shape.KvHeads >= 2 * Threads)
        {
            _pool.For(rows * shape.KvHeads, _groupedAttentionBody);
            return;
        }

        _pool.For(rows * shape.Heads, _attentionBody);
    }

    /// <summary>Scores over a quantized key cache as llama.cpp computes them: integer dots with q in Q8_0 (not in exact mode).</summary>
    private bool QuantizedScores(CpuKvCache cache) => cache.KType.IsQuantized() && !ExactQuantDots && CpuQ8Dot.IsSupported;

    private readonly Q8Activations _attQ8 = new();
    private bool _attQ8Keys;

    /// <summary>Whether the grouped path takes the cache: 16-bit key blocks or integer scores over quantized keys, heads of 64k.</summary>
    private static bool Grouped(CpuKvCache cache, AttentionShape shape, bool q8Keys) =>
        (q8Keys || ScoresBlocks(cache, shape.HeadDim)) && shape.HeadDim % 64 == 0;

    private readonly Action<int, int, int> _groupedAttentionBody;

    // value rows widened at a time by the grouped attention (its scratch: this many rows of the head)
    private const int ValueChunk = 64;

    /// <summary>
    /// (row, KV head) pairs [start, end): <see cref="AttentionRange"/>'s arithmetic for all the query heads of the KV
    /// head at once — the scores of every head from each key block, then per head the softmax, then the value sums
    /// chunk by chunk of widened rows.
    /// </summary>
    private void GroupedAttentionRange(int start, int end, int slice)
    {
        AttentionShape s = _attShape;
        int hd = s.HeadDim;
        int kvMul = s.Heads / s.KvHeads;
        float scale = 1.0f / MathF.Sqrt(hd);
        CpuKvCache cache = _attKv!;
        int stride = cache.Capacity + 16;
        float* scores = ScoreScratch(slice, kvMul * stride + Math.Max(stride, kvMul * hd));
        ushort* bits = (ushort*)(scores + kvMul * stride);
        float* widened = RowScratch(slice, hd * 16 + kvMul * hd + ValueChunk * hd);
        float* queries = widened + hd * 16, values = queries + kvMul * hd;
        bool roundQ = !ExactQuantDots && cache.KType is KvCacheType.F16 or KvCacheType.BF16;
        bool roundP = !ExactQuantDots && cache.VType is KvCacheType.F16 or KvCacheType.BF16;
        for (int job = start; job < end; job++)
        {
            int r = job / s.KvHeads, g = job % s.KvHeads;
            int p = _attPosition + r;
            int kvOffset = g * hd;
            // the group's query heads, consecutive in q (rounded to the key type into scratch under llama.cpp's numerics)
            float* groupQ = _attQ + (long)r * s.QDim + g * kvMul * hd;
            if (roundQ)
            {
                RoundTo(cache.KType, groupQ, queries, kvMul * hd, bits);
                groupQ = queries;
            }

            if (_attQ8Keys)
            {
                CpuQ8Dot.KeyScores(cache.KType.DType(), cache.Key(0, kvOffset), cache.KType.RowBytes(cache.KvDim), p + 1, _attQ8,
                    r * s.Heads + g * kvMul, kvMul, scores, stride);
            }
            else
            {
                for (int b = 0; b <= p >> 4; b++)
                {
                    float* kt = KeyBlockF32(cache, b, kvOffset, hd, widened);
                    for (int i = 0; i < kvMul; i++)
                    {
                        Scores16(groupQ + i * hd, kt, hd, scores + i * stride + 16 * b);
                    }
                }
            }

            for (int i = 0; i < kvMul; i++)
            {
                var window = new Span<float>(scores + i * stride, p + 1);
                System.Numerics.Tensors.TensorPrimitives.Multiply(window, scale, window);
                SoftmaxWeights(scores + i * stride, p + 1, System.Numerics.Tensors.TensorPrimitives.Max(window), roundP ? cache.VType : KvCacheType.F32, bits);

                new Span<float>(_attDst + (long)r * s.QDim + (g * kvMul + i) * hd, hd).Clear();
            }

            for (int t0 = 0; t0 <= p; t0 += ValueChunk)
            {
                int n = Math.Min(ValueChunk, p + 1 - t0);
                byte* v = cache.Value(t0, kvOffset);
                int rowStride = cache.KvDim;
                if (cache.VType != KvCacheType.F32)
                {
                    WidenValues(cache, t0, kvOffset, values, n, hd);
                    v = (byte*)values;
                    rowStride = hd;
                }

                for (int i = 0; i < kvMul; i++)
                {
                    float* o = _attDst + (long)r * s.QDim + (g * kvMul + i) * hd;
                    for (int c = 0; c < hd; c += 64)
                    {
                        Accumulate64<F32Values>(o + c, v + c * sizeof(float), rowStride, scores + i * stride + t0, n);
                    }
                }
            }
        }
    }

    /// <summary>Scores come 16 keys at a time from the cache's key blocks (AVX-512, heads of 32k); else key by key.</summary>
    private static bool ScoresBlocks(CpuKvCache cache, int headDim) => cache.BlockedKeys && headDim % 32 == 0;

    public void SwiGlu(DeviceBuffer gate, DeviceBuffer up, int count)
    {
        float* g = Own(gate).Pointer;
        float* u = Own(up).Pointer;
        // silu(x)·u = x / (1 + e^-x) · u, vectorized 256 values at a time (a scalar exp per value cost ~1 ms a token)
        float* e = stackalloc float[256];
        for (int i0 = 0; i0 < count; i0 += 256)
        {
            int n = Math.Min(256, count - i0);
            var gs = new Span<float>(g + i0, n);
            var es = new Span<float>(e, n);
            System.Numerics.Tensors.TensorPrimitives.Negate(gs, es);
            System.Numerics.Tensors.TensorPrimitives.Exp(es, es);
            System.Numerics.Tensors.TensorPrimitives.Add(es, 1.0f, es);
            System.Numerics.Tensors.TensorPrimitives.Divide(gs, es, gs);
            System.Numerics.Tensors.TensorPrimitives.Multiply(gs, new ReadOnlySpan<float>(u + i0, n), gs);
        }
    }

    public void Add(DeviceBuffer dst, DeviceBuffer src, int count)
    {
        System.Numerics.Tensors.TensorPrimitives.Add(Own(dst).Span[..count], Own(src).Span[..count], Own(dst).Span[..count]);
    }

    public int Argmax(DeviceBuffer x, int offset, int count)
    {
        ReadOnlySpan<float> v = Own(x).Span.Slice(offset, count);
        int best = 0;
        for (int i = 1; i < v.Length; i++)
        {
            if (v[i] > v[best])
            {
                best = i;
            }
        }

        return best;
    }

    public void Synchronize()
    {
    }

    public void Dispose()
    {
        _pool.Dispose();
        _xF16?.Dispose();
        _keyRow?.Dispose();
        _attQ8.Dispose();
        _xBf16?.Dispose();
        _xRounded?.Dispose();
        _xPacked?.Dispose();
        _xPackedScales?.Dispose();
        _xCodes?.Dispose();
        _xF16Rounded?.Dispose();
        _q8.Dispose();
        for (int t = 0; t < Threads; t++)
        {
            NativeMemory.AlignedFree(_rowScratch[t]);
            NativeMemory.AlignedFree(_scoreScratch[t]);
            _rowScratch[t] = null;
            _scoreScratch[t] = null;
        }
    }

    // ---- op bodies: arguments are passed through fields so the pool's delegates are allocated once ----

    // decode: up to three matrix-vector products of one input, split over the pool by groups of four rows
    private readonly Action<int, int, int> _matVecBody;
    private readonly CpuWeight?[] _mvW = new CpuWeight?[3];
    private readonly long[] _mvDst = new long[3];
    private readonly bool[] _mvAccumulate = new bool[3];
    private readonly int[] _mvGroups = new int[3];
    private int _mvCount;
    private float* _mvX;
    private float* _mvXF16;
    private float* _mvXBf16;
    private CpuBuffer? _xF16;
    private CpuBuffer? _xBf16;
    private CpuBuffer? _xRounded;
    private CpuBuffer? _xCodes;
    private CpuBuffer? _xF16Rounded;
    private bool _mvF16Codes;
    private float _mvUnscale;

    private void AddMatVec(CpuWeight w, float* dst, bool accumulate)
    {
        int j = _mvCount++;
        _mvW[j] = w;
        _mvDst[j] = (long)dst;
        _mvAccumulate[j] = accumulate;
        _mvGroups[j] = (w.Rows + 3) / 4;
    }

    /// <summary>
    /// Runs the queued matrix-vector products of x: 16-bit weights first get x in their lane order
    /// (<see cref="CpuMatMul.PrepareHalfActivations"/>), once for all of them.
    /// </summary>
    private void RunMatVecs(float* x, int cols)
    {
        bool f16 = false, bf16 = false, q32 = false, q256 = false, quads = false, kOrder = false;
        int groups = 0;
        for (int j = 0; j < _mvCount; j++)
        {
            DType t = _mvW[j]!.Type;
            f16 |= t == DType.F16;
            bf16 |= t == DType.BF16;
            if (UsesQ8(t))
            {
                q32 |= !CpuQ8Dot.UsesBlocks256(t);
                q256 |= CpuQ8Dot.UsesBlocks256(t);
                quads |= _mvW[j]!.GroupedQ4_0;
                kOrder |= t is DType.Q4_K or DType.Q5_K;
            }

            groups += _mvGroups[j];
        }

        _mvX = x;
        if (q32 || q256)
        {
            _q8.Quantize(x, 1, cols, q32, q256, quads, kOrder); // prompts use neither 512-bit layout
        }

        if (f16)
        {
            // llama.cpp's numerics: x rounded to F16 (exact mode, or an x the codes cannot hold: float32 x)
            _mvF16Codes = !ExactQuantDots &&
                          CpuMatMul.RoundToF16Codes(x, cols, (ushort*)GrowBuffer(ref _xCodes, cols), GrowBuffer(ref _xF16Rounded, cols), out _mvUnscale);
            if (!_mvF16Codes)
            {
                _mvXF16 = GrowBuffer(ref _xF16, cols);
                CpuMatMul.PrepareHalfActivations(x, _mvXF16, cols, f16: true);
            }
        }

        if (bf16)
        {
            _mvXBf16 = GrowBuffer(ref _xBf16, cols);
            CpuMatMul.PrepareHalfActivations(x, _mvXBf16, cols, f16: false);
        }

        _pool.For(groups, _matVecBody);
    }

    private float* GrowBuffer(ref CpuBuffer? buffer, int cols)
    {
        if (buffer is null || buffer.Length < cols)
        {
            buffer?.Dispose();
            buffer = new CpuBuffer(this, cols);
        }

        return buffer.Pointer;
    }

    // Up to this many columns a float row streams fastest alone (its x stays in L1; see CpuMatMul.DotF16); longer
    // rows go four at a time so that each x load feeds four rows.
    private const int SingleRowColumns = 4096;

    /// <summary>Groups [start, end) of four output rows, counted across the queued products.</summary>
    private void MatVecGroups(int start, int end, int slice)
    {
        float* o = stackalloc float[4];
        int first = 0;
        for (int j = 0; j < _mvCount && start < end; j++)
        {
            int g0 = Math.Max(start, first) - first;
            int g1 = Math.Min(end, first + _mvGroups[j]) - first;
            first += _mvGroups[j];
            if (g0 >= g1)
            {
                continue;
            }

            CpuWeight w = _mvW[j]!;
            float* dst = (float*)_mvDst[j];
            bool acc = _mvAccumulate[j];
            int cols = w.Cols;
            // 16 floats or 32 halves per 64-byte chunk: a panel's rows are one chunk apart, its chunks four
            long rowStep = w.RowPanels ? CpuMatMul.PanelChunkBytes : w.RowBytes;
            long chunkStep = w.RowPanels ? 4 * CpuMatMul.PanelChunkBytes : CpuMatMul.PanelChunkBytes;
            for (int g = g0; g < g1; g++)
            {
                int r0 = g * 4;
                int n = Math.Min(4, w.Rows - r0);
                byte* row = w.Row(r0);
                if (n == 4 && (w.RowPanels || cols > SingleRowColumns || w.Type.IsQuantized()))
                {
                    switch (w.Type)
                    {
                        case DType.F32:
                            CpuMatMul.DotF32x4((float*)row, rowStep / 4, chunkStep / 4, _mvX, cols, o);
                            break;
                        case DType.F16 when _mvF16Codes:
                            CpuMatMul.DotF16Codesx4((ushort*)row, rowStep / 2, chunkStep / 2, (ushort*)_xCodes!.Pointer, _xF16Rounded!.Pointer, cols, _mvUnscale, o);
                            break;
                        case DType.F16:
                            CpuMatMul.DotF16x4((ushort*)row, rowStep / 2, chunkStep / 2, _mvXF16, _mvX, cols, o);
                            break;
                        case DType.BF16:
                            CpuMatMul.DotBf16x4((ushort*)row, rowStep / 2, chunkStep / 2, _mvXBf16, _mvX, cols, o);
                            break;
                        default:
                            for (int k = 0; k < 4; k++)
                            {
                                o[k] = QuantDot(w, row + k * w.RowBytes, _mvX, 0);
                            }

                            break;
                    }
                }
                else
                {
                    for (int k = 0; k < n; k++)
                    {
                        byte* rk = row + k * w.RowBytes;
                        o[k] = w.Type switch
                        {
                            DType.F32 => CpuMatMul.Dot((float*)rk, _mvX, cols),
                            DType.F16 when _mvF16Codes => CpuMatMul.DotF16Codes((ushort*)rk, (ushort*)_xCodes!.Pointer, _xF16Rounded!.Pointer, cols, _mvUnscale),
                            DType.F16 => CpuMatMul.DotF16((ushort*)rk, _mvXF16, _mvX, cols),
                            DType.BF16 => CpuMatMul.DotBf16((ushort*)rk, _mvXBf16, _mvX, cols),
                            _ => QuantDot(w, rk, _mvX, 0),
                        };
                    }
                }

                for (int k = 0; k < n; k++)
                {
                    dst[r0 + k] = acc ? dst[r0 + k] + o[k] : o[k];
                }
            }
        }
    }

    private readonly Q8Activations _q8 = new();

    /// <summary>Whether products with <paramref name="type"/> weights round the activations to 8 bits first.</summary>
    private bool UsesQ8(DType type) => !ExactQuantDots && CpuQ8Dot.Handles(type);

    /// <summary>One quantized weight row against activation row <paramref name="r"/> (in _q8 when the type uses it, else x).</summary>
    private float QuantDot(CpuWeight w, byte* row, float* x, int r) =>
        w.GroupedQ4_0 ? CpuQ8Dot.DotQ4_0Grouped(row, _q8, r)
        : UsesQ8(w.Type) ? CpuQ8Dot.Dot(w.Type, row, _q8, r)
        : CpuQuantDot.DotRow(w.Type, row, x + (long)r * w.Cols, w.Cols);

    // prompt: a blocked matrix product (CpuGemm), split over the pool by panels of four weight rows; with 8-bit
    // activations, every weight row against every quantized activation row
    private readonly Action<int, int, int> _matMulBody;
    private float* _mmDst;
    private CpuWeight? _mmW;
    private float* _mmX;
    private int _mmRows;
    private bool _mmAccumulate;
    private bool _mmIntegerRows;

    private void MultiplyBatch(float* dst, CpuWeight w, float* x, int rows, bool accumulate)
    {
        _mmDst = dst;
        _mmW = w;
        _mmX = x;
        _mmRows = rows;
        _mmAccumulate = accumulate;
        _mmPacked = null;
        _mmPackedScales = null;
        if (UsesQ8(w.Type) && (w.Type is DType.Q4_1 or DType.Q5_1 || rows < CpuGemm.MinIntegerRows(w.Type)))
        {
            // The decode kernels for every pair of rows, each weight row against all activation rows while it is in
            // L1: for Q4_1/Q5_1 always (Q8_1's s, the minimums' factor, is rounded to F16 on its own, which no float
            // product of expanded operands reproduces), for the other formats below the integer tiles' fewest rows,
            // where the dot tiles' dequantized weight panels cost more than the products (TinyLlama Q4_K_M on Zen 4:
            // pp4 18.7 t/s on the dot tiles, tg 38).
            bool k256 = CpuQ8Dot.UsesBlocks256(w.Type);
            _q8.Quantize(x, rows, w.Cols, !k256, k256, w.GroupedQ4_0, w.Type is DType.Q4_K or DType.Q5_K);
            _mmIntegerRows = true;
            _pool.For(w.Rows, _matMulBody);
            _mmIntegerRows = false;
            return;
        }

        if (w.Type == DType.F16 && !ExactQuantDots)
        {
            // as decode: x rounded to F16 (llama.cpp's numerics), then the float GEMM
            float* xr = GrowBuffer(ref _xRounded, rows * w.Cols);
            ushort* codes = (ushort*)GrowBuffer(ref _xCodes, w.Cols);
            for (int r = 0; r < rows; r++)
            {
                float* from = x + (long)r * w.Cols, to = xr + (long)r * w.Cols;
                if (!CpuMatMul.RoundToF16Codes(from, w.Cols, codes, to, out _))
                {
                    new ReadOnlySpan<float>(from, w.Cols).CopyTo(new Span<float>(to, w.Cols));
                }
            }

            _mmX = xr;
        }

        bool blocks = UsesQ8(w.Type) && CpuGemm.UsesIntegerTiles(w.Type, rows); // exact mode keeps x float32: not these
        if (UsesQ8(w.Type))
        {
            // llama.cpp's numerics: x rounded to 8 bits as for the integer decode kernels. The integer groups
            // multiply those quants (CpuGemm); the dot tiles (other formats, short prompts, the rows past the last
            // whole 12-row group) multiply them expanded back (d·q) by the dequantized weight panels — products of
            // the same rounded operands, equal to the integer decode path up to float rounding.
            bool k256 = CpuQ8Dot.UsesBlocks256(w.Type);
            _q8.Quantize(x, rows, w.Cols, !k256, k256);
            if (!blocks || w.Rows % CpuGemm.OuterRows != 0)
            {
                float* xq = GrowBuffer(ref _xRounded, rows * w.Cols);
                _q8.Dequantize(k256, xq);
                _mmX = xq;
            }
        }

        if (!CpuGemm.IsAccelerated)
        {
            _pool.For(w.Rows, _matMulBody);
            return;
        }

        int panels = (w.Rows + CpuGemm.PanelRows - 1) / CpuGemm.PanelRows;
        if (blocks || CpuGemm.UsesOuterTiles(w.Type, rows))
        {
            // X (or its 8-bit quants, with their scales) transposed into token tiles once, for all threads; the work
            // then splits by 12-row groups
            _mmPacked = GrowBuffer(ref _xPacked, checked((int)CpuGemm.PackedFloats(rows, w.Cols)));
            if (blocks)
            {
                _mmPackedScales = GrowBuffer(ref _xPackedScales, checked((int)CpuGemm.PackedScaleFloats(rows, w.Cols)));
            }

            _pool.For(CpuGemm.OuterTiles(rows), blocks ? _packQuantsBody : _packBody);
            _pool.For((panels + 2) / 3, _matMulBody);
            return;
        }

        _pool.For(panels, _matMulBody);
    }

    private readonly Action<int, int, int> _packBody;
    private CpuBuffer? _xPacked;
    private float* _mmPacked;

    private void PackRows(int start, int end, int slice) => CpuGemm.PackTokens(_mmX, _mmRows, _mmW!.Cols, _mmPacked, start, end);

    private readonly Action<int, int, int> _packQuantsBody;
    private CpuBuffer? _xPackedScales;
    private float* _mmPackedScales;

    private void PackQuantRows(int start, int end, int slice)
    {
        CpuWeight w = _mmW!;
        bool k256 = CpuQ8Dot.UsesBlocks256(w.Type); // K-quants: Q8_K activations
        CpuGemm.PackQuantBytes(w.Type, k256 ? _q8.Qs : _q8.Qs32, k256 ? _q8.D256 : _q8.D32, _q8.BSums, _mmRows, w.Cols, (byte*)_mmPacked,
                               _mmPackedScales, start, end);
    }

    /// <summary>Panels [start, end) of the current product (output rows, without AVX2 or AVX-512), for every activation row.</summary>
    private void MatMulRows(int start, int end, int slice)
    {
        CpuWeight w = _mmW!;
        int cols = w.Cols;
        int outRows = w.Rows;
        int rows = _mmRows;
        float* x = _mmX;
        float* dst = _mmDst;
        bool acc = _mmAccumulate;
        if (_mmIntegerRows)
        {
            // the 8-bit activations in _q8 (only products that use them come here)
            float* o = stackalloc float[CpuQ8Dot.MaxRows];
            for (int i = start; i < end; i++)
            {
                byte* row = w.Row(i);
                for (int r0 = 0; r0 < rows; r0 += CpuQ8Dot.MaxRows)
                {
                    int n = Math.Min(CpuQ8Dot.MaxRows, rows - r0);
                    CpuQ8Dot.DotRows(w.Type, w.GroupedQ4_0, row, _q8, r0, n, o);
                    for (int j = 0; j < n; j++)
                    {
                        Store(dst + (long)(r0 + j) * outRows + i, o[j], acc);
                    }
                }
            }

            return;
        }

        if (CpuGemm.IsAccelerated)
        {
            int panels = (outRows + CpuGemm.PanelRows - 1) / CpuGemm.PanelRows;
            if (_mmPacked != null)
            {
                // [start, end) are groups of three panels
                start *= 3;
                end = Math.Min(end * 3, panels);
            }

            CpuGemm.Multiply(w.Type, w.GroupedQ4_0, w.RowPanels, w.Pointer, w.RowBytes, outRows, cols, x, rows, dst, acc, start, end,
                             RowScratch(slice, CpuGemm.ScratchFloats(cols)), _mmPacked, _mmPackedScales);
            return;
        }

        // without AVX2 or AVX-512: convert a weight row to float once, then dot it with activation rows four at a time
        float* buffer = RowScratch(slice, cols);
        for (int i = start; i < end; i++)
        {
            bool inPlace = w.Type == DType.F32 && !w.InPanel(i);
            float* wr = inPlace ? (float*)w.Row(i) : buffer;
            if (!inPlace)
            {
                ConvertRow(w, i, buffer);
            }

            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                CpuMatMul.Dot4(wr, x + (long)r * cols, cols, out float a, out float b, out float c, out float d);
                Store(dst + (long)r * outRows + i, a, acc);
                Store(dst + (long)(r + 1) * outRows + i, b, acc);
                Store(dst + (long)(r + 2) * outRows + i, c, acc);
                Store(dst + (long)(r + 3) * outRows + i, d, acc);
            }

            for (; r < rows; r++)
            {
                Store(dst + (long)r * outRows + i, CpuMatMul.Dot(wr, x + (long)r * cols, cols), acc);
            }
        }
    }

    private static void Store(float* p, float v, bool accumulate) => *p = accumulate ? *p + v : v;

    private readonly Action<int, int, int> _normBody;
    private CpuBuffer? _normDst;
    private CpuBuffer? _normX;
    private CpuWeight? _normW;
    private float _normEps;

    private void RmsNormRows(int start, int end, int slice)
    {
        CpuWeight w = _normW!;
        int dim = w.Cols;
        float* weight = RowScratch(slice, dim);
        ConvertRow(w, 0, weight);
        for (int r = start; r < end; r++)
        {
            float* x = _normX!.Pointer + (long)r * dim;
            float* y = _normDst!.Pointer + (long)r * dim;
            // ggml_compute_forward_rms_norm_f32: squares in float, summed in ggml_float (double)
            double sum = 0;
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var acc = Vector256<double>.Zero;
                for (; i + 8 <= dim; i += 8)
                {
                    var v = Vector256.Load(x + i);
                    var sq = v * v;
                    acc += Vector256.WidenLower(sq) + Vector256.WidenUpper(sq);
                }

                sum = Vector256.Sum(acc);
            }

            for (; i < dim; i++)
            {
                sum += x[i] * x[i];
            }

            float scale = 1.0f / MathF.Sqrt((float)(sum / dim) + _normEps);
            var ys = new Span<float>(y, dim);
            System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<float>(x, dim), scale, ys);
            System.Numerics.Tensors.TensorPrimitives.Multiply(ys, new ReadOnlySpan<float>(weight, dim), ys);
        }
    }

    private readonly Action<int, int, int> _attentionBody;
    private float* _attDst;
    private float* _attQ;
    private CpuKvCache? _attKv;
    private int _attPosition;
    private int _attRows;
    private AttentionShape _attShape;

    /// <summary>(row, head) pairs [start, end): scores over the causal window, softmax, weighted sum of V.</summary>
    private void AttentionRange(int start, int end, int slice)
    {
        AttentionShape s = _attShape;
        int hd = s.HeadDim;
        int kvMul = s.Heads / s.KvHeads;
        float scale = 1.0f / MathF.Sqrt(hd);
        CpuKvCache cache = _attKv!;
        // scores, then room for the 16-bit words of the rounded weights or q (RoundTo)
        float* scores = ScoreScratch(slice, cache.Capacity + 16 + Math.Max(cache.Capacity + 16, hd));
        float* widened = RowScratch(slice, hd * 17);
        float* qRounded = widened + hd * 16;
        // llama.cpp's numerics (unless ExactQuantDots): ggml multiplies a 16-bit cache in its type, so q meets F16
        // keys rounded to F16 and the softmax weights meet F16 values rounded to F16 (BF16 alike)
        bool roundQ = !ExactQuantDots && cache.KType is KvCacheType.F16 or KvCacheType.BF16;
        bool roundP = !ExactQuantDots && cache.VType is KvCacheType.F16 or KvCacheType.BF16;
        for (int job = start; job < end; job++)
        {
            int r = job / s.Heads;
            int h = job % s.Heads;
            int p = _attPosition + r;
            float* q = _attQ + (long)r * s.QDim + h * hd;
            if (roundQ)
            {
                RoundTo(cache.KType, q, qRounded, hd, (ushort*)(scores + cache.Capacity + 16));
                q = qRounded;
            }

            int kvOffset = h / kvMul * hd;
            float max = float.NegativeInfinity;
            if (ScoresBlocks(cache, hd))
            {
                // 16 keys at a time from the key blocks, each score bit-identical to CpuMatMul.Dot's (the scaling
                // and the maximum vectorized: each element's product and the maximum are the same); scores past p
                // (the rest of the last block) are computed and ignored
                Vector512<float> scale16 = Vector512.Create(scale), max16 = Vector512.Create(float.NegativeInfinity);
                int t = 0;
                for (; t + 16 <= p + 1; t += 16)
                {
                    Scores16(q, KeyBlockF32(cache, t >> 4, kvOffset, hd, widened), hd, scores + t);
                    Vector512<float> v = Vector512.Load(scores + t) * scale16;
                    v.Store(scores + t);
                    max16 = Vector512.Max(max16, v);
                }

                for (int l = 0; l < 16; l++)
                {
                    max = MathF.Max(max, max16[l]);
                }

                if (t <= p)
                {
                    Scores16(q, KeyBlockF32(cache, t >> 4, kvOffset, hd, widened), hd, scores + t);
                    for (; t <= p; t++)
                    {
                        float v = scores[t] * scale;
                        scores[t] = v;
                        max = MathF.Max(max, v);
                    }
                }
            }
            else
            {
                if (_attQ8Keys)
                {
                    CpuQ8Dot.KeyScores(cache.KType.DType(), cache.Key(0, kvOffset), cache.KType.RowBytes(cache.KvDim), p + 1, _attQ8, job, 1, scores, 0);
                }

                for (int t = 0; t <= p; t++)
                {
                    float v = (_attQ8Keys ? scores[t] : CpuMatMul.Dot(q, KeyRow(cache, t, kvOffset, hd, widened), hd)) * scale;
                    scores[t] = v;
                    max = MathF.Max(max, v);
                }
            }

            SoftmaxWeights(scores, p + 1, max, roundP ? cache.VType : KvCacheType.F32, (ushort*)(scores + cache.Capacity + 16));
            float* o = _attDst + (long)r * s.QDim + h * hd;
            new Span<float>(o, hd).Clear();
            AccumulateValues(o, cache, kvOffset, scores, p + 1, hd, widened);
        }
    }

    /// <summary>
    /// Scaled scores (maximum <paramref name="max"/>) → the softmax weights in place: e^(s − max) vectorized, summed in
    /// double (ggml_float), normalized as ggml's soft_max, then rounded to <paramref name="round"/> (a 16-bit value
    /// type under llama.cpp's numerics; F32: as they are). <paramref name="bits"/>: n 16-bit words of scratch.
    /// </summary>
    private static void SoftmaxWeights(float* scores, int n, float max, KvCacheType round, ushort* bits)
    {
        var window = new Span<float>(scores, n);
        System.Numerics.Tensors.TensorPrimitives.Subtract(window, max, window);
        System.Numerics.Tensors.TensorPrimitives.Exp(window, window);
        float inv = (float)(1.0 / SumAsDouble(scores, n));
        System.Numerics.Tensors.TensorPrimitives.Multiply(window, inv, window);
        if (round != KvCacheType.F32)
        {
            RoundTo(round, scores, scores, n, bits);
        }
    }

    /// <summary>dst = src rounded to a 16-bit cache type and back (through <paramref name="bits"/>, n values of scratch).</summary>
    private static void RoundTo(KvCacheType type, float* src, float* dst, int n, ushort* bits)
    {
        CpuKvCache.FromF32(type, src, (byte*)bits, n);
        CpuKvCache.ToF32(type, (byte*)bits, dst, n);
    }

    /// <summary>Σ x[i] in double, sixteen floats widened at a time (the same order for every caller).</summary>
    private static double SumAsDouble(float* x, int n)
    {
        int i = 0;
        double sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<double> a0 = Vector512<double>.Zero, a1 = Vector512<double>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                Vector512<float> v = Vector512.Load(x + i);
                a0 += Vector512.WidenLower(v);
                a1 += Vector512.WidenUpper(v);
            }

            sum = Vector512.Sum(a0 + a1);
        }

        for (; i < n; i++)
        {
            sum += x[i];
        }

        return sum;
    }

    /// <summary>
    /// Key block <paramref name="block"/> of the head at <paramref name="offset"/> as float32: in place, or widened into
    /// <paramref name="widened"/> (hd·16 floats) in one vectorized pass (converting in <see cref="Scores16"/>'s lane
    /// loads, 16 inlined lanes, outgrew the JIT's inlining budget and called the converter).
    /// </summary>
    private static float* KeyBlockF32(CpuKvCache cache, int block, int offset, int hd, float* widened)
    {
        byte* kt = cache.KeyBlock(block, offset);
        if (cache.KType == KvCacheType.F32)
        {
            return (float*)kt;
        }

        CpuKvCache.ToF32(cache.KType, kt, widened, hd * 16);
        return widened;
    }

    /// <summary>
    /// dst[j] = CpuMatMul.Dot(q, key j) for the 16 keys of a float32 key block (element d of key j at kt[d·16 + j]),
    /// with the same arithmetic: Dot's two FMA chains over q's 16-value chunks (even chunks, odd chunks) for every lane
    /// l, their sum, then Vector512.Sum's tree over the 16 lanes (pairs of adjacent lanes, balanced) — here with keys in
    /// the lanes and one vector per Dot lane, so that 16 scores cost hd FMAs and 31 adds instead of 16 reductions.
    /// </summary>
    private static void Scores16(float* q, float* kt, int hd, float* dst)
    {
        Vector512<float> left = ((Lane(q, kt, hd, 0) + Lane(q, kt, hd, 1)) + (Lane(q, kt, hd, 2) + Lane(q, kt, hd, 3))) +
                                ((Lane(q, kt, hd, 4) + Lane(q, kt, hd, 5)) + (Lane(q, kt, hd, 6) + Lane(q, kt, hd, 7)));
        Vector512<float> right = ((Lane(q, kt, hd, 8) + Lane(q, kt, hd, 9)) + (Lane(q, kt, hd, 10) + Lane(q, kt, hd, 11))) +
                                 ((Lane(q, kt, hd, 12) + Lane(q, kt, hd, 13)) + (Lane(q, kt, hd, 14) + Lane(q, kt, hd, 15)));
        (left + right).Store(dst);
    }

    /// <summary>Lane l of CpuMatMul.Dot's a0 + a1 for 16 keys: q[16c + l]·k[16c + l] summed over even c, over odd c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Lane(float* q, float* kt, int hd, int l)
    {
        Vector512<float> a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[l]), Vector512.Load(kt + l * 16), Vector512<float>.Zero);
        Vector512<float> a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[16 + l]), Vector512.Load(kt + (16 + l) * 16), Vector512<float>.Zero);
        for (int c = 2; c < hd / 16; c += 2)
        {
            int i = 16 * c + l;
            a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[i]), Vector512.Load(kt + i * 16), a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[i + 16]), Vector512.Load(kt + (i + 16) * 16), a1);
        }

        return a0 + a1;
    }

    /// <summary>
    /// o += Σ_t weights[t]·V[t] for one head. Heads that are a multiple of 64 go 64 values at a time, their four
    /// accumulators in registers across all positions (a library call per position and 64 values cost more than the
    /// arithmetic).
    /// </summary>
    private static void AccumulateValues(float* o, CpuKvCache cache, int offset, float* weights, int positions, int hd, float* widened)
    {
        if (Vector512.IsHardwareAccelerated && hd % 64 == 0 && cache.VType.IsQuantized())
        {
            // 16 rows at a time dequantized into widened (hd·16 floats), then summed in registers
            for (int t0 = 0; t0 < positions; t0 += 16)
            {
                int n = Math.Min(16, positions - t0);
                WidenValues(cache, t0, offset, widened, n, hd);
                for (int c = 0; c < hd; c += 64)
                {
                    Accumulate64<F32Values>(o + c, (byte*)(widened + c), hd, weights + t0, n);
                }
            }

            return;
        }

        if (Vector512.IsHardwareAccelerated && hd % 64 == 0)
        {
            for (int c = 0; c < hd; c += 64)
            {
                switch (cache.VType)
                {
                    case KvCacheType.F32:
                        Accumulate64<F32Values>(o + c, cache.Value(0, offset + c), cache.KvDim, weights, positions);
                        break;
                    case KvCacheType.F16:
                        Accumulate64<F16Values>(o + c, cache.Value(0, offset + c), cache.KvDim, weights, positions);
                        break;
                    default:
                        Accumulate64<Bf16Values>(o + c, cache.Value(0, offset + c), cache.KvDim, weights, positions);
                        break;
                }
            }

            return;
        }

        for (int t = 0; t < positions; t++)
        {
            float* v = (float*)cache.Value(t, offset);
            if (cache.VType != KvCacheType.F32)
            {
                CpuKvCache.ToF32(cache.VType, (byte*)v, widened, hd);
                v = widened;
            }

            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(
                new ReadOnlySpan<float>(v, hd), weights[t], new ReadOnlySpan<float>(o, hd), new Span<float>(o, hd));
        }
    }

    /// <summary>Key <paramref name="t"/>'s values for one head as float32: in place, or gathered and widened into <paramref name="widened"/>.</summary>
    private static float* KeyRow(CpuKvCache cache, int t, int offset, int hd, float* widened)
    {
        if (cache.KType == KvCacheType.F32 && !cache.BlockedKeys)
        {
            return (float*)cache.Key(t, offset);
        }

        cache.KeyToF32(t, offset, widened, hd);
        return widened;
    }

    /// <summary>Sixteen cached values from element <c>i</c> of a row, widened to float32 in registers.</summary>
    private interface IValueLoad
    {
        static abstract Vector512<float> Load16(byte* row, int i);
    }

    private readonly struct F32Values : IValueLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, int i) => Vector512.Load((float*)row + i);
    }

    private readonly struct F16Values : IValueLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, int i) =>
            CpuMatMul.HalfToSingle(System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + i)));
    }

    private readonly struct Bf16Values : IValueLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, int i) =>
            (System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + i)) << 16).AsSingle();
    }

    /// <summary>Values t0..t0+n−1 of the head at <paramref name="offset"/> (16-bit or quantized) as float32 rows, hd floats apart.</summary>
    private static void WidenValues(CpuKvCache cache, int t0, int offset, float* dst, int n, int hd)
    {
        switch (cache.VType)
        {
            case KvCacheType.F16:
                WidenRows<F16Values>(cache.Value(t0, offset), cache.KvDim, dst, n, hd);
                break;
            case KvCacheType.BF16:
                WidenRows<Bf16Values>(cache.Value(t0, offset), cache.KvDim, dst, n, hd);
                break;
            default:
                for (int t = 0; t < n; t++)
                {
                    CpuKvCache.ToF32(cache.VType, cache.Value(t0 + t, offset), dst + (long)t * hd, hd);
                }

                break;
        }
    }

    /// <summary>n rows of hd 16-bit values (<paramref name="stride"/> elements apart) widened into dst, hd floats apart (a call per row cost more than the widening).</summary>
    private static void WidenRows<TLoad>(byte* v, int stride, float* dst, int n, int hd)
        where TLoad : struct, IValueLoad
    {
        for (int t = 0; t < n; t++)
        {
            byte* row = v + (long)t * stride * sizeof(ushort);
            float* d = dst + (long)t * hd;
            for (int c = 0; c < hd; c += 16)
            {
                TLoad.Load16(row, c).Store(d + c);
            }
        }
    }

    /// <param name="v">the head's 64 values at position 0; position t is <paramref name="stride"/> elements further</param>
    private static void Accumulate64<TLoad>(float* o, byte* v, int stride, float* weights, int positions)
        where TLoad : struct, IValueLoad
    {
        Vector512<float> a0 = Vector512.Load(o), a1 = Vector512.Load(o + 16), a2 = Vector512.Load(o + 32), a3 = Vector512.Load(o + 48);
        long rowBytes = (long)stride * (typeof(TLoad) == typeof(F32Values) ? sizeof(float) : sizeof(ushort));
        for (int t = 0; t < positions; t++)
        {
            Vector512<float> w = Vector512.Create(weights[t]);
            byte* vt = v + t * rowBytes;
            a0 = Vector512.FusedMultiplyAdd(TLoad.Load16(vt, 0), w, a0);
            a1 = Vector512.FusedMultiplyAdd(TLoad.Load16(vt, 16), w, a1);
            a2 = Vector512.FusedMultiplyAdd(TLoad.Load16(vt, 32), w, a2);
            a3 = Vector512.FusedMultiplyAdd(TLoad.Load16(vt, 48), w, a3);
        }

        a0.Store(o);
        a1.Store(o + 16);
        a2.Store(o + 32);
        a3.Store(o + 48);
    }

    private static void RotateHeads(float* v, int heads, int headDim, float* cs, Model.RopeStyle style)
    {
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            float* x = v + h * headDim;
            for (int i = 0; i < half; i++)
            {
                float c = cs[2 * i];
                float s = cs[2 * i + 1];
                // Interleaved rotates (x[2i], x[2i+1]) — ggml's normal mode; Halves rotates (x[i], x[i+d/2]) — neox mode
                int a = style == Model.RopeStyle.Interleaved ? 2 * i : i;
                int b = style == Model.RopeStyle.Interleaved ? 2 * i + 1 : i + half;
                float x0 = x[a];
                float x1 = x[b];
                x[a] = x0 * c - x1 * s;
                x[b] = x0 * s + x1 * c;
            }
        }
    }

    /// <summary>Row <paramref name="row"/> of <paramref name="w"/> to float32, in whatever layout it is stored.</summary>
    internal static void ConvertRow(CpuWeight w, int row, float* dst)
    {
        int cols = w.Cols;
        if (w.GroupedQ4_0)
        {
            CpuQ8Dot.DequantizeGroupedQ4_0(w.Row(row), dst, cols);
        }
        else if (w.InPanel(row))
        {
            CpuMatMul.PanelRowToF32(w.Type, w.Row(row & ~3), row & 3, 0, dst, cols);
        }
        else
        {
            ConvertRow(w.Type, w.Row(row), dst, cols);
        }
    }

    /// <summary>One row of any supported type to float32.</summary>
    internal static void ConvertRow(DType type, byte* row, float* dst, int cols)
    {
        switch (type)
        {
            case DType.F32:
                new ReadOnlySpan<float>(row, cols).CopyTo(new Span<float>(dst, cols));
                break;
            case DType.F16:
                CpuMatMul.F16ToF32((ushort*)row, dst, cols);
                break;
            case DType.BF16:
                CpuMatMul.Bf16ToF32((ushort*)row, dst, cols);
                break;
            default:
                // Vectorized, bit-identical to QuantBlocks.DequantizeRow.
                CpuQuantDot.Dequantize(type, row, dst, cols);
                break;
        }
    }

    private float* RowScratch(int slice, int floats) => Scratch(_rowScratch, _rowScratchLength, slice, floats);

    private float* ScoreScratch(int slice, int floats) => Scratch(_scoreScratch, _scoreScratchLength, slice, floats);

    private static float* Scratch(float*[] buffers, int[] lengths, int slice, int floats)
    {
        if (lengths[slice] < floats)
        {
            NativeMemory.AlignedFree(buffers[slice]);
            buffers[slice] = (float*)NativeMemory.AlignedAlloc((nuint)floats * sizeof(float), 64);
            lengths[slice] = floats;
        }

        return buffers[slice];
    }

    private CpuBuffer Own(DeviceBuffer b) => b is CpuBuffer c && ReferenceEquals(b.Device, this) ? c : throw Foreign(b.Device, "buffer");

    private CpuWeight Own(DeviceWeight w) => w is CpuWeight c && ReferenceEquals(w.Device, this) ? c : throw Foreign(w.Device, $"weight {w.Info.Name}");

    private CpuKvCache Own(KvCacheLayer kv) => kv is CpuKvCache c && ReferenceEquals(kv.Device, this) ? c : throw Foreign(kv.Device, "KV cache");

    private InvalidOperationException Foreign(IDevice other, string what) => new($"{what} on {other.Name} passed to {Name}");

    private static long? ReadMemAvailable()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                {
                    return long.Parse(line.AsSpan(13).Trim().TrimEnd("kB").Trim()) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }

        return null;
    }
}
