using System.Runtime.InteropServices;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IDevice = GpuLlama.Devices.IDevice;

namespace GpuLlama.Kernels;

/// <summary>A float32 activation buffer in device memory.</summary>
public sealed class IlgpuBuffer : DeviceBuffer
{
    internal IlgpuBuffer(IDevice device, MemoryBuffer1D<float, Stride1D.Dense> memory, int length) : base(device, length)
    {
        Memory = memory;
    }

    internal MemoryBuffer1D<float, Stride1D.Dense> Memory { get; }

    internal ArrayView<float> View => Memory.View;

    public override void Dispose() => Memory.Dispose();
}

/// <summary>A weight in device memory in its stored dtype, padded to a multiple of 256 bytes.</summary>
public sealed class IlgpuWeight : DeviceWeight
{
    internal IlgpuWeight(IDevice device, TensorInfo info, MemoryBuffer1D<byte, Stride1D.Dense> memory) : base(device, info)
    {
        Memory = memory;
        ArrayView<byte> bytes = memory.View;
        Words = bytes.Cast<uint>();
        Vectors = bytes.Cast<U4>();
    }

    /// <summary>A block-quantized weight, repacked into aligned streams (Words/Vectors are empty).</summary>
    internal IlgpuWeight(IDevice device, TensorInfo info, QuantWeight quant) : base(device, info)
    {
        Quant = quant;
    }

    internal MemoryBuffer1D<byte, Stride1D.Dense>? Memory { get; }

    /// <summary>The repacked blocks of a quantized weight (see <see cref="QuantRepack"/>), else null.</summary>
    internal QuantWeight? Quant { get; }

    /// <summary>The bytes as 32-bit words (scalar kernels).</summary>
    internal ArrayView<uint> Words { get; }

    /// <summary>The bytes as 16-byte vectors (GEMV and tiled kernels).</summary>
    internal ArrayView<U4> Vectors { get; }

    public override void Dispose()
    {
        Memory?.Dispose();
        Quant?.Dispose();
    }
}

/// <summary>
/// One layer's K and V caches: [capacity, kvDim] each as 32-bit words (one float32, or two 16-bit values). A quantized
/// cache holds the bytes of ggml's blocks split in two planes, so that every load is aligned: first the quants of
/// every block in order (Q8_0: 32 bytes a block; Q4_0: 16 bytes, byte j holding values j and j + 16 in its low and
/// high nibble), then the blocks' F16 scales from 16-bit index <see cref="ScaleBase"/> — a block's 34 or 18 bytes,
/// as many as the memory plan counts.
/// </summary>
public sealed class IlgpuKvCache : KvCacheLayer
{
    internal IlgpuKvCache(IDevice device, int capacity, int kvDim, KvCacheType kType, KvCacheType vType, MemoryBuffer1D<uint, Stride1D.Dense> k, MemoryBuffer1D<uint, Stride1D.Dense> v)
        : base(device, capacity, kvDim, kType, vType)
    {
        K = k;
        V = v;
    }

    internal MemoryBuffer1D<uint, Stride1D.Dense> K { get; }

    internal MemoryBuffer1D<uint, Stride1D.Dense> V { get; }

    /// <summary>The kernels' code for a cache type.</summary>
    internal static int Code(KvCacheType type) => type switch
    {
        KvCacheType.F16 => WeightCode.F16,
        KvCacheType.BF16 => WeightCode.BF16,
        KvCacheType.Q8_0 => WeightCode.Q8_0,
        KvCacheType.Q4_0 => WeightCode.Q4_0,
        _ => WeightCode.F32,
    };

    /// <summary>32-bit words for <paramref name="values"/> values of <paramref name="type"/>, a whole number of 16-byte loads.</summary>
    internal static long Words(long values, KvCacheType type) => Math.Max(4, ((type.RowBytes(values) + 15) / 16) * 4);

    /// <summary>A quantized cache's first scale, as an index of 16-bit words: after the quants of <paramref name="values"/> values.</summary>
    internal static long ScaleBase(long values, KvCacheType type) => type switch
    {
        KvCacheType.Q8_0 => values / 2,
        KvCacheType.Q4_0 => values / 4,
        _ => 0,
    };

    internal long KScales => ScaleBase((long)Capacity * KvDim, KType);

    internal long VScales => ScaleBase((long)Capacity * KvDim, VType);

    public override void Dispose()
    {
        K.Dispose();
        V.Dispose();
    }
}

/// <summary>
/// The ILGPU backend: every op of <see cref="IDevice"/> as an ILGPU kernel on one accelerator (CUDA, OpenCL, or
/// ILGPU's CPU accelerator for CI). Kernels are compiled and their launch delegates cached at construction; ops only
/// enqueue launches on the accelerator's default stream, so nothing allocates or waits per op except
/// <see cref="Read"/>, <see cref="Argmax"/> (4 bytes back) and <see cref="Synchronize"/>.
/// </summary>
public sealed unsafe class IlgpuDevice : IDevice
{
    /// <summary>The emulated accelerator has no memory of its own; report a small budget so plans stay modest.</summary>
    internal const long EmulatedMemory = 4L << 30;

    private const int UploadChunk = 64 << 20;

    private readonly Accelerator _accelerator;
    private readonly int _warp;
    private readonly int _group;
    private readonly int _attentionGroup;
    private readonly int _argmaxGroup;
    private readonly int _normGroup;
    private long _allocated;

    private readonly MemoryBuffer1D<int, Stride1D.Dense> _argmaxResult;
    private MemoryBuffer1D<int, Stride1D.Dense> _tokens;
    private float[] _staging = [];
    private uint[] _reloadQuants = [], _reloadHigh = [], _reloadAux = [];
    private float[] _reloadScales = [];

    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<uint>, int, int, float> _rmsNorm;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, int, int, int, int> _gemv;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> _gemv3;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, int, int, int> _gemvSwiGlu;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormGemvArgs> _gemv3Norm;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, NormGemvArgs> _gemvSwiGluNorm;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatMulArgs> _matMulTiled;
    private readonly Action<KernelConfig, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MatMulArgs> _matMulScalar;
    private readonly Action<KernelConfig, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatMulArgs, int, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>> _matMulShared;
    private readonly int _sharedSide;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs> _rope;
    private readonly Action<Index1D, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, long, int, int> _storeKv;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, RopeArgs, long, int, int> _ropeStoreKv;
    private readonly Action<Index1D, ArrayView<uint>, ArrayView<float>, long, int, long> _storeCache;
    private readonly Action<Index1D, ArrayView<uint>, ArrayView<float>, long, int, long> _loadCache;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, AttentionArgs> _attention;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, AttentionArgs> _attentionDecode;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, AttentionArgs> _attentionCombine;
    private MemoryBuffer1D<float, Stride1D.Dense> _attentionPartial;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _swiGlu;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _add;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<int>, int, int> _embed;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<int>, int, int> _argmax;
    private QuantMatMulKernels? _quantKernels;

    internal IlgpuDevice(Accelerator accelerator, string name, DeviceKind kind)
    {
        _accelerator = accelerator;
        Name = name;
        Kind = kind;
        Description = accelerator.Name;
        TotalMemory = kind == DeviceKind.Emulated ? EmulatedMemory : accelerator.MemorySize;
        _warp = accelerator.WarpSize;
        int maxGroup = accelerator.MaxNumThreadsPerGroup;
        _group = GroupSize(256, maxGroup);
        _attentionGroup = GroupSize(128, maxGroup);
        _argmaxGroup = GroupSize(1024, maxGroup);
        _normGroup = GroupSize(1024, maxGroup); // a 4096-wide row in 4 steps per thread: the norm is latency-bound, not bandwidth-bound
        // the shared-memory GEMM's group: side² threads of 4 × 4 outputs, side a power of two up to 16 (a 64 × 64 tile)
        for (_sharedSide = 1; _sharedSide * 2 <= MatMulKernels.MaxSharedTile / 4 && 4 * _sharedSide * _sharedSide <= maxGroup; _sharedSide *= 2)
        {
        }
        Bind();

        _rmsNorm = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<uint>, int, int, float>(NormKernels.RmsNorm);
        _gemv = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<F4>, ArrayView<float>, int, int, int, int>(MatMulKernels.Gemv);
        _gemv3 = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(MatMulKernels.Gemv3);
        _gemvSwiGlu = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<float>, int, int, int>(MatMulKernels.GemvSwiGlu);
        _gemv3Norm = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormGemvArgs>(MatMulKernels.Gemv3Norm);
        _gemvSwiGluNorm = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<U4>, ArrayView<F4>, ArrayView<U4>, ArrayView<float>, NormGemvArgs>(MatMulKernels.GemvSwiGluNorm);
        _matMulTiled = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatMulArgs>(MatMulKernels.MatMulTiled);
        _matMulScalar = accelerator.LoadStreamKernel<ArrayView<uint>, ArrayView<float>, ArrayView<float>, MatMulArgs>(MatMulKernels.MatMulScalar);
        _matMulShared = accelerator.LoadStreamKernel<ArrayView<U4>, ArrayView<F4>, ArrayView<float>, MatMulArgs, int, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<uint>>(MatMulKernels.MatMulShared);
        _rope = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs>(AttentionKernels.Rope);
        _storeKv = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<uint>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, long, int, int>(AttentionKernels.StoreKv);
        _ropeStoreKv = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, RopeArgs, long, int, int>(AttentionKernels.RopeStoreKv);
        _storeCache = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<uint>, ArrayView<float>, long, int, long>(AttentionKernels.StoreCache);
        _loadCache = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<uint>, ArrayView<float>, long, int, long>(AttentionKernels.LoadCache);
        _attention = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, AttentionArgs>(AttentionKernels.Attention);
        _attentionDecode = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<uint>, AttentionArgs>(AttentionKernels.AttentionDecode);
        _attentionCombine = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, AttentionArgs>(AttentionKernels.AttentionCombine);
        _swiGlu = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.SwiGlu);
        _add = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.Add);
        _embed = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<uint>, ArrayView<int>, int, int>(ElementwiseKernels.Embed);
        _argmax = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<int>, int, int>(ElementwiseKernels.Argmax);

        _argmaxResult = accelerator.Allocate1D<int>(1);
        _tokens = accelerator.Allocate1D<int>(64);
        _attentionPartial = accelerator.Allocate1D<float>(1);
        _allocated = _argmaxResult.LengthInBytes + _tokens.LengthInBytes + _attentionPartial.LengthInBytes;
        AttentionParallelism = 4 * accelerator.NumMultiprocessors;
    }

    public string Name { get; }

    public DeviceKind Kind { get; }

    public string Description { get; }

    public long TotalMemory { get; }

    public long FreeMemory
    {
        get
        {
            if (Kind != DeviceKind.Cuda)
            {
                return TotalMemory;
            }

            Bind();
            return CudaMemoryInfo.TryGetFree(out long free) ? free : TotalMemory;
        }
    }

    /// <summary>True when <see cref="FreeMemory"/> comes from the driver (CUDA), not the total.</summary>
    public bool FreeMemoryKnown => Kind == DeviceKind.Cuda && CudaMemoryInfo.Available;

    public long AllocatedBytes => Interlocked.Read(ref _allocated);

    /// <summary>Warp width of the accelerator (32 on NVIDIA; small on the emulator).</summary>
    public int WarpSize => _warp;

    internal Accelerator Accelerator => _accelerator;

    /// <summary>Device bytes a weight of <paramref name="bytes"/> takes: rounded up to 256, as the memory planner counts.</summary>
    public static long PaddedBytes(long bytes) => (bytes + 255) / 256 * 256;

    public DeviceWeight Upload(WeightView weight)
    {
        // the one dispatch point on weight type: plain types upload as stored; block-quantized types need kernels
        if (!QuantRepack.Uploadable(weight.Type, weight.Cols))
        {
            throw new GpuLlamaException($"{DTypeInfo.DisplayName(weight.Type)} weights are not supported on {Name} yet (tensor {weight.Info.Name})");
        }

        return weight.Type is DType.F32 or DType.F16 or DType.BF16 ? UploadRaw(weight) : UploadQuant(weight);
    }

    private IlgpuWeight UploadRaw(WeightView weight)
    {
        Bind();
        long bytes = weight.ByteLength;
        long padded = PaddedBytes(Math.Max(bytes, 1));
        MemoryBuffer1D<byte, Stride1D.Dense> memory = AllocateChecked<byte>(padded, $"weight {weight.Info.Name}");
        ArrayView<byte> view = memory.View;
        CopyIn(view, weight.Pointer, bytes);
        if (padded > bytes)
        {
            view.SubView(bytes, padded - bytes).MemSetToZero();
        }

        return new IlgpuWeight(this, weight.Info, memory);
    }

    public bool StreamsWeights => true;

    public void Reload(DeviceWeight slot, WeightView weight)
    {
        IlgpuWeight w = Own(slot);
        Need(weight.Type == w.Type && weight.Rows == w.Info.Rows && weight.Cols == w.Info.Cols,
            $"reload of {weight.Info.Name} ({DTypeInfo.DisplayName(weight.Type)} [{weight.Rows}, {weight.Cols}]) into {w.Info.Name} ({DTypeInfo.DisplayName(w.Type)} [{w.Info.Rows}, {w.Info.Cols}])");
        Bind();
        if (w.Quant is not { } q)
        {
            CopyIn(w.Memory!.View, weight.Pointer, weight.ByteLength);
            return;
        }

        // repacked on the host into arrays kept for the next reload: nothing is allocated per batch
        (long nq, long nh, long ns, long na) = QuantRepack.StreamLengths(weight.Type, weight.Rows, weight.Cols);
        Grow(ref _reloadQuants, nq);
        Grow(ref _reloadHigh, nh);
        Grow(ref _reloadScales, ns);
        Grow(ref _reloadAux, na);
        QuantRepack.Fill(weight.Type, weight.Pointer, checked((int)weight.Rows), checked((int)weight.Cols), _reloadQuants, _reloadHigh, _reloadScales, _reloadAux);
        q.Quants.View.SubView(0, nq).CopyFromCPU(ref _reloadQuants[0], nq);
        q.High.View.SubView(0, nh).CopyFromCPU(ref _reloadHigh[0], nh);
        q.Scales.View.SubView(0, ns).CopyFromCPU(ref _reloadScales[0], ns);
        q.Aux.View.SubView(0, na).CopyFromCPU(ref _reloadAux[0], na);
    }

    private static void Grow<T>(ref T[] array, long length)
        where T : unmanaged
    {
        if (array.Length < length)
        {
            array = GC.AllocateUninitializedArray<T>(checked((int)length));
        }
    }

    /// <summary>Copies <paramref name="bytes"/> host bytes to the start of <paramref name="view"/> in chunks of <see cref="UploadChunk"/>.</summary>
    private static void CopyIn(ArrayView<byte> view, byte* source, long bytes)
    {
        for (long offset = 0; offset < bytes; offset += UploadChunk)
        {
            long n = Math.Min(UploadChunk, bytes - offset);
            view.SubView(offset, n).CopyFromCPU(ref source[offset], n);
        }
    }

    /// <summary>Repacks a quantized weight into four aligned streams, each padded to 256 B as <see cref="QuantRepack.DeviceBytes"/> counts.</summary>
    private unsafe IlgpuWeight UploadQuant(WeightView weight)
    {
        Bind();
        QuantRepack r = QuantRepack.Create(weight.Type, weight.Pointer, checked((int)weight.Rows), checked((int)weight.Cols));

        // Compile this format's kernels at load, not on the first token (a model compiles only the formats it holds).
        QuantKernels.Prepare(r.Type, embed: weight.Info.Name == TensorNames.TokenEmbedding);
        string what = $"weight {weight.Info.Name}";
        var streams = new List<MemoryBuffer>();
        try
        {
            MemoryBuffer1D<uint, Stride1D.Dense> quants = Stream(r.Quants, what, streams);
            MemoryBuffer1D<uint, Stride1D.Dense> high = Stream(r.High, what, streams);
            MemoryBuffer1D<float, Stride1D.Dense> scales = Stream(r.Scales, what, streams);
            MemoryBuffer1D<uint, Stride1D.Dense> aux = Stream(r.Aux, what, streams);
            return new IlgpuWeight(this, weight.Info, new QuantWeight(r.Type, r.Rows, r.Cols, quants, high, scales, aux));
        }
        catch
        {
            streams.ForEach(b => b.Dispose());
            throw;
        }
    }

    private MemoryBuffer1D<T, Stride1D.Dense> Stream<T>(T[] data, string what, List<MemoryBuffer> allocated)
        where T : unmanaged
    {
        long padded = MemoryPlan.DeviceBytes((long)data.Length * sizeof(T)) / sizeof(T);
        MemoryBuffer1D<T, Stride1D.Dense> buffer = AllocateChecked<T>(padded, what);
        allocated.Add(buffer);
        buffer.View.SubView(0, data.Length).CopyFromCPU(data);
        if (padded > data.Length)
        {
            buffer.View.SubView(data.Length, padded - data.Length).MemSetToZero();
        }

        return buffer;
    }

    /// <summary>Quantized matmul and embedding kernels, compiled on first use (only quantized models need them).</summary>
    private QuantMatMulKernels QuantKernels => _quantKernels ??= new QuantMatMulKernels(_accelerator);

    public DeviceBuffer Allocate(int floats)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(floats);
        Bind();
        MemoryBuffer1D<float, Stride1D.Dense> memory = AllocateChecked<float>(Math.Max(floats, 1), "activation buffer");
        memory.MemSetToZero();
        return new IlgpuBuffer(this, memory, floats);
    }

    public KvCacheLayer AllocateKv(int capacity, int kvDim, KvCacheType kType = KvCacheType.F32, KvCacheType vType = KvCacheType.F32)
    {
        Bind();
        long n = checked((long)capacity * kvDim);
        long kWords = IlgpuKvCache.Words(n, kType);
        MemoryBuffer1D<uint, Stride1D.Dense> k = AllocateChecked<uint>(kWords, "KV cache");
        MemoryBuffer1D<uint, Stride1D.Dense> v;
        try
        {
            v = AllocateChecked<uint>(IlgpuKvCache.Words(n, vType), "KV cache");
        }
        catch
        {
            k.Dispose();
            Interlocked.Add(ref _allocated, -kWords * sizeof(uint));
            throw;
        }

        k.MemSetToZero();
        v.MemSetToZero();
        return new IlgpuKvCache(this, capacity, kvDim, kType, vType, k, v);
    }

    private MemoryBuffer1D<T, Stride1D.Dense> AllocateChecked<T>(long length, string what)
        where T : unmanaged
    {
        long bytes = length * sizeof(T);
        long free = FreeMemory;
        if (Kind == DeviceKind.Cuda && FreeMemoryKnown && bytes > free)
        {
            throw OutOfMemory(bytes, free, what, null);
        }

        try
        {
            MemoryBuffer1D<T, Stride1D.Dense> memory = _accelerator.Allocate1D<T>(length);
            Interlocked.Add(ref _allocated, bytes);
            return memory;
        }
        catch (Exception e) when (e is AcceleratorException or OutOfMemoryException or InvalidOperationException)
        {
            throw OutOfMemory(bytes, FreeMemory, what, e);
        }
    }

    private GpuLlamaException OutOfMemory(long bytes, long free, string what, Exception? inner)
    {
        string message = $"out of memory on {Name} ({Description}) allocating {what}: {bytes / (1024.0 * 1024):F0} MiB needed, "
            + $"{free / (1024.0 * 1024):F0} MiB free; try a lower --gpu-layers";
        return inner is null ? new GpuLlamaException(message) : new GpuLlamaException(message, inner);
    }

    public void Write(DeviceBuffer dst, ReadOnlySpan<float> src, int dstOffset = 0)
    {
        if (src.IsEmpty)
        {
            return;
        }

        IlgpuBuffer b = Own(dst);
        Need(dstOffset >= 0 && (long)dstOffset + src.Length <= b.Length, $"write of {src.Length} floats at {dstOffset} into a buffer of {b.Length}");
        Bind();
        ArrayView<float> target = b.View.SubView(dstOffset, src.Length);
        target.CopyFromCPU(ref MemoryMarshal.GetReference(src), src.Length);
    }

    public void Read(DeviceBuffer src, Span<float> dst, int srcOffset = 0)
    {
        if (dst.IsEmpty)
        {
            return;
        }

        IlgpuBuffer b = Own(src);
        Need(srcOffset >= 0 && (long)srcOffset + dst.Length <= b.Length, $"read of {dst.Length} floats at {srcOffset} from a buffer of {b.Length}");
        Bind();
        b.View.SubView(srcOffset, dst.Length).CopyToCPU(ref MemoryMarshal.GetReference(dst), dst.Length);
        _accelerator.Synchronize();
    }

    public void CopyFrom(DeviceBuffer dst, int dstOffset, DeviceBuffer src, int srcOffset, int count)
    {
        if (count == 0)
        {
            return;
        }

        IlgpuBuffer d = Own(dst);
        Need(count >= 0 && dstOffset >= 0 && (long)dstOffset + count <= d.Length, $"copy of {count} floats at {dstOffset} into a buffer of {d.Length}");
        Need(srcOffset >= 0 && (long)srcOffset + count <= src.Length, $"copy of {count} floats at {srcOffset} from a buffer of {src.Length}");
        ArrayView<float> target = d.View.SubView(dstOffset, count);
        Bind();
        switch (src)
        {
            case IlgpuBuffer same when ReferenceEquals(src.Device, this):
                target.CopyFrom(same.View.SubView(srcOffset, count));
                break;
            case CpuBuffer host:
                target.CopyFromCPU(ref host.Pointer[srcOffset], count);
                break;
            default:
                // another accelerator (or any other device): through host memory; the hidden state is small
                if (_staging.Length < count)
                {
                    _staging = GC.AllocateArray<float>(count, pinned: true);
                }

                src.Device.Read(src, _staging.AsSpan(0, count), srcOffset);
                Bind();
                target.CopyFromCPU(ref _staging[0], count);
                break;
        }
    }

    public void Embed(DeviceBuffer x, DeviceWeight table, ReadOnlySpan<int> tokens)
    {
        IlgpuWeight t = Own(table);
        foreach (int token in tokens)
        {
            if ((uint)token >= (uint)t.Rows)
            {
                throw new GpuLlamaException($"token id {token} is outside the vocabulary (0..{t.Rows - 1})");
            }
        }

        if (tokens.IsEmpty)
        {
            return;
        }

        Need(Own(x).Length >= (long)tokens.Length * t.Cols, $"x holds {Own(x).Length} floats, {tokens.Length} rows of {t.Cols} need more");
        Bind();
        if (_tokens.Length < tokens.Length)
        {
            _tokens.Dispose();
            _tokens = _accelerator.Allocate1D<int>(Math.Max(tokens.Length, (int)_tokens.Length * 2));
            Interlocked.Add(ref _allocated, _tokens.LengthInBytes);
        }

        _tokens.View.SubView(0, tokens.Length).CopyFromCPU(ref MemoryMarshal.GetReference(tokens), tokens.Length);
        if (t.Quant is { } quantTable)
        {
            QuantKernels.Embed(_accelerator.DefaultStream, Own(x).View, quantTable, _tokens.View, tokens.Length);
            return;
        }

        int dim = t.Cols;
        _embed(tokens.Length * dim, Own(x).View, t.Words, _tokens.View, Code(t.Type), dim);
    }

    public void RmsNorm(DeviceBuffer dst, DeviceBuffer x, DeviceWeight weight, int rows, float eps)
    {
        if (rows == 0)
        {
            return;
        }

        IlgpuWeight w = Own(weight);
        long n = (long)rows * w.Cols;
        Need(Own(x).Length >= n && Own(dst).Length >= n, $"rmsnorm of {rows} rows of {w.Cols} needs {n} floats in x and dst");
        Bind();
        _rmsNorm(new KernelConfig(rows, _normGroup), Own(dst).View, Own(x).View, w.Words, Code(w.Type), w.Cols, eps);
    }

    public void MatMul(DeviceBuffer dst, DeviceWeight w, DeviceBuffer x, int rows, bool accumulate = false)
    {
        if (rows == 0)
        {
            return;
        }

        IlgpuWeight weight = Own(w);
        IlgpuBuffer output = Own(dst);
        IlgpuBuffer activations = Own(x);
        int outRows = weight.Rows;
        int cols = weight.Cols;
        Need(activations.Length >= (long)rows * cols, $"x holds {activations.Length} floats, {rows} rows of {cols} need {(long)rows * cols}");
        Need(output.Length >= (long)rows * outRows, $"dst holds {output.Length} floats, {rows} rows of {outRows} need {(long)rows * outRows}");
        ArrayView<float> y = output.View;
        ArrayView<float> input = activations.View;
        int acc = accumulate ? 1 : 0;
        Bind();
        int code = weight.Quant is not null ? (int)weight.Type : Code(weight.Type); // quantized: the ggml type id
        var args = new MatMulArgs { OutRows = outRows, Cols = cols, Rows = rows, Type = code, Accumulate = acc };
        if (SharedGemm && rows >= SharedTile && cols % MatMulKernels.SharedDepth == 0)
        {
            // a prompt batch: the shared-memory GEMM, for plain and block-quantized weights alike
            int tile = SharedTile;
            long groups = (long)((rows + tile - 1) / tile) * ((outRows + tile - 1) / tile);
            var shared = new KernelConfig(checked((int)groups), _sharedSide * _sharedSide);
            if (weight.Quant is { } q)
            {
                _matMulShared(shared, ArrayView<U4>.Empty, input.Cast<F4>(), y, args, _sharedSide, q.Quants.View, q.High.View, q.Scales.View, q.Aux.View);
            }
            else
            {
                _matMulShared(shared, weight.Vectors, input.Cast<F4>(), y, args, _sharedSide, ArrayView<uint>.Empty, ArrayView<uint>.Empty, ArrayView<float>.Empty, ArrayView<uint>.Empty);
            }

            return;
        }

        if (weight.Quant is { } quant)
        {
            QuantKernels.MatMul(_accelerator.DefaultStream, y, quant, input, rows, accumulate);
            return;
        }

        var config = new KernelConfig(checked((int)(((long)outRows * _warp + _group - 1) / _group)), _group);
        if (cols % 8 != 0)
        {
            // no 16-byte loads possible for every type: scalar fallback
            _matMulScalar(config, weight.Words, input, y, args);
            return;
        }

        if (rows > 1)
        {
            _matMulTiled(config, weight.Vectors, input.Cast<F4>(), y, args);
            return;
        }

        _gemv(config, weight.Vectors, input.Cast<F4>(), y, outRows, Chunks(weight), code, acc);
    }

    /// <summary>
    /// Whether prompt batches of at least <see cref="SharedTile"/> rows take the shared-memory GEMM
    /// (MatMulKernels.MatMulShared) rather than the warp-per-row kernels (plain weights) or the quant kernels. On by default; GPULLAMA_NO_SHARED_GEMM=1
    /// turns it off, to measure the two against each other.
    /// </summary>
    internal bool SharedGemm { get; set; } = Environment.GetEnvironmentVariable("GPULLAMA_NO_SHARED_GEMM") is not "1";

    /// <summary>Activation rows (and weight rows) of one shared-memory GEMM tile: 64 on a GPU, 16 on the emulator.</summary>
    internal int SharedTile => _sharedSide * 4;

    /// <summary>16-byte chunks per row of a plain weight.</summary>
    private static int Chunks(IlgpuWeight w) => w.Type == DType.F32 ? w.Cols / 4 : w.Cols / 8;

    /// <summary>Whether the fused decode GEMVs apply: one activation row, plain weights of one type, 16-byte rows.</summary>
    private static bool FusableDecode(int rows, IlgpuWeight a, IlgpuWeight b) =>
        rows == 1 && a.Quant is null && b.Quant is null && a.Type == b.Type && a.Cols == b.Cols && a.Cols % 8 == 0;

    public void MatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2, DeviceBuffer x, int rows)
    {
        IlgpuWeight a = Own(w0), b = Own(w1), c = Own(w2);
        if (!FusableDecode(rows, a, b) || !FusableDecode(rows, a, c))
        {
            MatMul(d0, w0, x, rows);
            MatMul(d1, w1, x, rows);
            MatMul(d2, w2, x, rows);
            return;
        }

        KernelConfig config = Gemv3Launch(d0, d1, d2, x, a, b, c);
        _gemv3(config, a.Vectors, b.Vectors, c.Vectors, Own(x).View.Cast<F4>(), Own(d0).View, Own(d1).View, Own(d2).View,
            a.Rows, b.Rows, c.Rows, Chunks(a), Code(a.Type));
    }

    /// <summary>The fused Q/K/V launch's checks (one row of x, outputs large enough), then Bind; a warp per output row.</summary>
    private KernelConfig Gemv3Launch(DeviceBuffer d0, DeviceBuffer d1, DeviceBuffer d2, DeviceBuffer x, IlgpuWeight a, IlgpuWeight b, IlgpuWeight c)
    {
        Need(Own(x).Length >= a.Cols, $"x holds {Own(x).Length} floats, a row of {a.Cols} is needed");
        Need(Own(d0).Length >= a.Rows && Own(d1).Length >= b.Rows && Own(d2).Length >= c.Rows,
            $"outputs of {a.Rows}, {b.Rows} and {c.Rows} floats are needed");
        Bind();
        long total = (long)a.Rows + b.Rows + c.Rows;
        return new KernelConfig(checked((int)((total * _warp + _group - 1) / _group)), _group);
    }

    public void MatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, int rows, DeviceBuffer scratch)
    {
        IlgpuWeight g = Own(gate), u = Own(up);
        if (!FusableDecode(rows, g, u) || g.Rows != u.Rows)
        {
            MatMul(dst, gate, x, rows);
            MatMul(scratch, up, x, rows);
            SwiGlu(dst, scratch, rows * g.Rows);
            return;
        }

        KernelConfig config = SwiGluLaunch(dst, x, g);
        _gemvSwiGlu(config, g.Vectors, u.Vectors, Own(x).View.Cast<F4>(), Own(dst).View, g.Rows, Chunks(g), Code(g.Type));
    }

    /// <summary>The fused gate/up launch's checks, then Bind; a warp per output row.</summary>
    private KernelConfig SwiGluLaunch(DeviceBuffer dst, DeviceBuffer x, IlgpuWeight g)
    {
        Need(Own(x).Length >= g.Cols, $"x holds {Own(x).Length} floats, a row of {g.Cols} is needed");
        Need(Own(dst).Length >= g.Rows, $"dst holds {Own(dst).Length} floats, {g.Rows} are needed");
        Bind();
        return new KernelConfig(checked((int)(((long)g.Rows * _warp + _group - 1) / _group)), _group);
    }

    /// <summary>
    /// Whether decode folds RMSNorm into the projections and RoPE into the KV store (fewer launches per layer: 7
    /// instead of 9). On by default; GPULLAMA_UNFUSED=1 turns it off, to measure the two against each other.
    /// </summary>
    internal bool FuseDecode { get; set; } = Environment.GetEnvironmentVariable("GPULLAMA_UNFUSED") is not "1";

    /// <summary>Whether the norm-fused GEMVs apply: one row of 16-bit weights and a plain norm weight as wide as x.</summary>
    private bool NormFusable(int rows, IlgpuWeight w, IlgpuWeight norm) =>
        FuseDecode && rows == 1 && w.Quant is null && w.Type is DType.F16 or DType.BF16 && w.Cols % 8 == 0
        && norm.Quant is null && norm.Type is DType.F32 or DType.F16 or DType.BF16 && norm.Cols == w.Cols && norm.Rows == 1;

    public void NormMatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2,
        DeviceBuffer x, DeviceWeight norm, float eps, int rows, DeviceBuffer xb)
    {
        IlgpuWeight a = Own(w0), b = Own(w1), c = Own(w2), n = Own(norm);
        if (!NormFusable(rows, a, n) || !FusableDecode(rows, a, b) || !FusableDecode(rows, a, c))
        {
            RmsNorm(xb, x, norm, rows, eps);
            MatMul3(d0, w0, d1, w1, d2, w2, xb, rows);
            return;
        }

        KernelConfig config = Gemv3Launch(d0, d1, d2, x, a, b, c);
        var args = new NormGemvArgs { Rows0 = a.Rows, Rows1 = b.Rows, Rows2 = c.Rows, Chunks = Chunks(a), Type = Code(a.Type), NormType = Code(n.Type), Eps = eps };
        _gemv3Norm(config, a.Vectors, b.Vectors, c.Vectors, Own(x).View.Cast<F4>(), n.Vectors, Own(d0).View, Own(d1).View, Own(d2).View, args);
    }

    public void NormMatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, DeviceWeight norm, float eps, int rows,
        DeviceBuffer xb, DeviceBuffer scratch)
    {
        IlgpuWeight g = Own(gate), u = Own(up), n = Own(norm);
        if (!NormFusable(rows, g, n) || !FusableDecode(rows, g, u) || g.Rows != u.Rows)
        {
            RmsNorm(xb, x, norm, rows, eps);
            MatMulSwiGlu(dst, gate, up, xb, rows, scratch);
            return;
        }

        KernelConfig config = SwiGluLaunch(dst, x, g);
        var args = new NormGemvArgs { Rows0 = g.Rows, Chunks = Chunks(g), Type = Code(g.Type), NormType = Code(n.Type), Eps = eps };
        _gemvSwiGluNorm(config, g.Vectors, u.Vectors, Own(x).View.Cast<F4>(), n.Vectors, Own(dst).View, args);
    }

    public void RopeStoreKv(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer ropeTable, KvCacheLayer kv, int position, int rows, AttentionShape shape)
    {
        IlgpuKvCache cache = Own(kv);
        if (!FuseDecode || cache.KType.IsQuantized() || cache.VType.IsQuantized() || cache.KvDim != shape.KvDim)
        {
            Rope(q, k, ropeTable, position, rows, shape);
            StoreKv(kv, k, v, position, rows);
            return;
        }

        if (!KvRows(cache, k, v, position, rows, "storing"))
        {
            return;
        }

        RopeArgs args = RopeChecks(q, k, ropeTable, position, rows, shape);
        _ropeStoreKv(rows * (shape.Heads + shape.KvHeads) * (shape.HeadDim / 2), Own(q).View, Own(k).View, Own(v).View, Own(ropeTable).View,
            cache.K.View, cache.V.View, args, (long)position * cache.KvDim, IlgpuKvCache.Code(cache.KType), IlgpuKvCache.Code(cache.VType));
    }

    public void Rope(DeviceBuffer q, DeviceBuffer k, DeviceBuffer ropeTable, int position, int rows, AttentionShape shape)
    {
        if (rows == 0)
        {
            return;
        }

        RopeArgs args = RopeChecks(q, k, ropeTable, position, rows, shape);
        _rope(rows * (shape.Heads + shape.KvHeads) * (shape.HeadDim / 2), Own(q).View, Own(k).View, Own(ropeTable).View, args);
    }

    /// <summary>Rope's checks (q, k and the table large enough), then Bind; the kernel's arguments.</summary>
    private RopeArgs RopeChecks(DeviceBuffer q, DeviceBuffer k, DeviceBuffer ropeTable, int position, int rows, AttentionShape shape)
    {
        Need(Own(q).Length >= (long)rows * shape.QDim && Own(k).Length >= (long)rows * shape.KvDim, $"rope of {rows} rows needs {rows}x{shape.QDim} q and {rows}x{shape.KvDim} k floats");
        Need(Own(ropeTable).Length >= (long)(position + rows) * shape.HeadDim, $"the RoPE table holds {Own(ropeTable).Length / Math.Max(1, shape.HeadDim)} positions, position {position + rows - 1} was asked for");
        Bind();
        return new RopeArgs
        {
            Position = position,
            Heads = shape.Heads,
            KvHeads = shape.KvHeads,
            HeadDim = shape.HeadDim,
            Interleaved = shape.Style == RopeStyle.Interleaved ? 1 : 0,
        };
    }

    public void StoreKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows)
    {
        IlgpuKvCache cache = Own(kv);
        if (!KvRows(cache, k, v, position, rows, "storing"))
        {
            return;
        }

        long offset = (long)position * cache.KvDim;
        if (!cache.KType.IsQuantized() && !cache.VType.IsQuantized())
        {
            _storeKv(rows * cache.KvDim, cache.K.View, cache.V.View, Own(k).View, Own(v).View, offset,
                IlgpuKvCache.Code(cache.KType), IlgpuKvCache.Code(cache.VType));
            return;
        }

        // a quantized cache takes a thread per block of 32 values (each thread writes its block's quants and scale)
        StoreRows(cache.K, cache.KType, cache.KScales, Own(k), offset, rows * cache.KvDim);
        StoreRows(cache.V, cache.VType, cache.VScales, Own(v), offset, rows * cache.KvDim);
    }

    public void ReadKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows)
    {
        IlgpuKvCache cache = Own(kv);
        if (!KvRows(cache, k, v, position, rows, "reading"))
        {
            return;
        }

        long offset = (long)position * cache.KvDim;
        _loadCache(rows * cache.KvDim, cache.K.View, Own(k).View, offset, IlgpuKvCache.Code(cache.KType), cache.KScales);
        _loadCache(rows * cache.KvDim, cache.V.View, Own(v).View, offset, IlgpuKvCache.Code(cache.VType), cache.VScales);
    }

    /// <summary>StoreKv's and ReadKv's checks (positions inside the cache, k and v large enough), then Bind; false when there are no rows.</summary>
    private bool KvRows(IlgpuKvCache cache, DeviceBuffer k, DeviceBuffer v, int position, int rows, string verb)
    {
        if (position < 0 || position + rows > cache.Capacity)
        {
            throw new GpuLlamaException($"KV cache overflow: positions {position}..{position + rows - 1} exceed the context of {cache.Capacity}");
        }

        if (rows == 0)
        {
            return false;
        }

        Need(Own(k).Length >= (long)rows * cache.KvDim && Own(v).Length >= (long)rows * cache.KvDim, $"{verb} {rows} rows of {cache.KvDim} needs that many floats in k and v");
        Bind();
        return true;
    }

    private void StoreRows(MemoryBuffer1D<uint, Stride1D.Dense> cache, KvCacheType type, long scales, IlgpuBuffer src, long offset, int values) =>
        _storeCache(type.IsQuantized() ? values / 32 : values, cache.View, src.View, offset, IlgpuKvCache.Code(type), scales);

    public void Attention(DeviceBuffer dst, DeviceBuffer q, KvCacheLayer kv, int position, int rows, AttentionShape shape)
    {
        IlgpuKvCache cache = Own(kv);
        if (shape.HeadDim > AttentionKernels.MaxHeadDim)
        {
            throw new GpuLlamaException($"head dimension {shape.HeadDim} is larger than {Name}'s attention kernel supports ({AttentionKernels.MaxHeadDim})");
        }

        if (position + rows > cache.Capacity)
        {
            throw new GpuLlamaException($"attention over positions {position}..{position + rows - 1} exceeds the KV cache of {cache.Capacity}");
        }

        if (rows == 0)
        {
            return;
        }

        Need(cache.KvDim == shape.KvDim, $"the KV cache rows hold {cache.KvDim} floats, the shape says {shape.KvDim}");
        Need(shape.KvHeads > 0 && shape.Heads % shape.KvHeads == 0, $"{shape.Heads} heads are not a multiple of {shape.KvHeads} KV heads");
        Need(Own(q).Length >= (long)rows * shape.QDim && Own(dst).Length >= (long)rows * shape.QDim, $"attention of {rows} rows needs {rows}x{shape.QDim} floats in q and dst");
        Bind();
        var args = new AttentionArgs
        {
            Position = position,
            Heads = shape.Heads,
            KvHeads = shape.KvHeads,
            HeadDim = shape.HeadDim,
            Scale = 1.0f / MathF.Sqrt(shape.HeadDim),
            Splits = 1,
            SplitLength = position + rows,
            KType = IlgpuKvCache.Code(cache.KType),
            VType = IlgpuKvCache.Code(cache.VType),
            KScales = cache.KScales,
            VScales = cache.VScales,
        };

        // decode: rows × heads groups leave most multiprocessors idle, so split the keys (flash-decoding)
        int jobs = rows * shape.Heads;
        int keys = position + rows;
        if (jobs < AttentionParallelism && keys > 2 * _attentionGroup)
        {
            int wanted = (AttentionParallelism + jobs - 1) / jobs;
            int length = (keys + wanted - 1) / wanted;
            args.SplitLength = Math.Max(2 * _attentionGroup, (length + _attentionGroup - 1) / _attentionGroup * _attentionGroup);
            args.Splits = (keys + args.SplitLength - 1) / args.SplitLength;
        }

        ArrayView<float> output = Own(dst).View;
        var attention = rows == 1 && DecodeAttentionFits(shape.HeadDim) ? _attentionDecode : _attention;
        if (args.Splits == 1)
        {
            attention(new KernelConfig(jobs, _attentionGroup), output, _attentionPartial.View, Own(q).View, cache.K.View, cache.V.View, args);
            return;
        }

        long need = (long)jobs * args.Splits * (shape.HeadDim + 2);
        if (_attentionPartial.Length < need)
        {
            // grows to the longest context seen, then stays: no allocation in steady-state decoding
            Interlocked.Add(ref _allocated, (need - _attentionPartial.Length) * sizeof(float));
            _attentionPartial.Dispose();
            _attentionPartial = _accelerator.Allocate1D<float>(need);
        }

        attention(new KernelConfig(jobs * args.Splits, _attentionGroup), output, _attentionPartial.View, Own(q).View, cache.K.View, cache.V.View, args);
        _attentionCombine(new KernelConfig(jobs, _attentionGroup), output, _attentionPartial.View, args);
    }

    /// <summary>
    /// Groups attention should launch to fill the device (4 per multiprocessor); below it decode splits the keys.
    /// Tests lower it to exercise the split path on the emulator.
    /// </summary>
    internal int AttentionParallelism { get; set; }

    /// <summary>
    /// Whether one-row attention takes AttentionKernels.AttentionDecode (a head of whole 4-value groups, at most 8 per
    /// lane, whose per-warp outputs fit its shared memory). On by default; GPULLAMA_NO_DECODE_ATTENTION=1 keeps every
    /// row on the general kernel, to measure the two against each other.
    /// </summary>
    internal bool DecodeAttention { get; set; } = Environment.GetEnvironmentVariable("GPULLAMA_NO_DECODE_ATTENTION") is not "1";

    private bool DecodeAttentionFits(int headDim) =>
        DecodeAttention && headDim % 4 == 0 && headDim <= 8 * _warp && _attentionGroup / _warp * headDim <= AttentionKernels.DecodeOutputs;

    public void SwiGlu(DeviceBuffer gate, DeviceBuffer up, int count)
    {
        if (count == 0)
        {
            return;
        }

        Need(Own(gate).Length >= count && Own(up).Length >= count, $"swiglu of {count} values on buffers of {Own(gate).Length} and {Own(up).Length}");
        Bind();
        _swiGlu(count, Own(gate).View, Own(up).View);
    }

    public void Add(DeviceBuffer dst, DeviceBuffer src, int count)
    {
        if (count == 0)
        {
            return;
        }

        Need(Own(dst).Length >= count && Own(src).Length >= count, $"add of {count} values on buffers of {Own(dst).Length} and {Own(src).Length}");
        Bind();
        _add(count, Own(dst).View, Own(src).View);
    }

    public int Argmax(DeviceBuffer x, int offset, int count)
    {
        if (count <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(count), "argmax needs at least one value");
        }

        Need(offset >= 0 && (long)offset + count <= Own(x).Length, $"argmax of {count} values at {offset} in a buffer of {Own(x).Length}");
        Bind();
        _argmax(new KernelConfig(1, _argmaxGroup), Own(x).View, _argmaxResult.View, offset, count);
        int result = 0;
        _argmaxResult.View.CopyToCPU(ref result, 1);
        _accelerator.Synchronize();
        return result;
    }

    public void Synchronize()
    {
        Bind();
        _accelerator.Synchronize();
    }

    public void Dispose()
    {
        _argmaxResult.Dispose();
        _tokens.Dispose();
        _attentionPartial.Dispose();
        _accelerator.Dispose();
    }

    /// <summary>
    /// CUDA contexts are per thread: make this accelerator current on the calling thread when it is not (a cheap
    /// thread-static check), so a device can be driven from any thread and several devices from one.
    /// </summary>
    private void Bind()
    {
        if (!ReferenceEquals(Accelerator.Current, _accelerator))
        {
            _accelerator.Bind();
        }
    }

    private int GroupSize(int wanted, int maxGroup)
    {
        int size = Math.Min(wanted, maxGroup);
        return Math.Max(_warp, size / _warp * _warp);
    }

    /// <summary>
    /// Shape checks before a launch: a kernel reading past a buffer faults the GPU context (or aborts the process on
    /// the emulator), so a caller's shape mistake must surface here as an exception instead.
    /// </summary>
    private void Need(bool ok, string what)
    {
        if (!ok)
        {
            throw new ArgumentException($"{Name}: {what}");
        }
    }

    private static int Code(DType t) => t switch
    {
        DType.F32 => WeightCode.F32,
        DType.F16 => WeightCode.F16,
        DType.BF16 => WeightCode.BF16,
        _ => throw new GpuLlamaException($"{DTypeInfo.DisplayName(t)} weights have no kernel on this device"),
    };

    private IlgpuBuffer Own(DeviceBuffer b) => b is IlgpuBuffer c && ReferenceEquals(b.Device, this) ? c : throw Foreign(b.Device, "buffer");

    private IlgpuWeight Own(DeviceWeight w) => w is IlgpuWeight c && ReferenceEquals(w.Device, this) ? c : throw Foreign(w.Device, $"weight {w.Info.Name}");

    private IlgpuKvCache Own(KvCacheLayer kv) => kv is IlgpuKvCache c && ReferenceEquals(kv.Device, this) ? c : throw Foreign(kv.Device, "KV cache");

    private InvalidOperationException Foreign(IDevice other, string what) => new($"{what} on {other.Name} passed to {Name}");
}

/// <summary>cuMemGetInfo_v2 through the driver library ILGPU already loaded (ILGPU 1.5.3 has no free-memory API).</summary>
internal static unsafe class CudaMemoryInfo
{
    private static readonly delegate* unmanaged<nuint*, nuint*, int> s_memGetInfo = Load();

    public static bool Available => s_memGetInfo != null;

    /// <summary>Free bytes of the current context's device.</summary>
    public static bool TryGetFree(out long free)
    {
        free = 0;
        if (s_memGetInfo == null)
        {
            return false;
        }

        nuint f;
        nuint total;
        if (s_memGetInfo(&f, &total) != 0)
        {
            return false;
        }

        free = (long)f;
        return true;
    }

    private static delegate* unmanaged<nuint*, nuint*, int> Load()
    {
        foreach (string name in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
        {
            if (NativeLibrary.TryLoad(name, out IntPtr lib) && NativeLibrary.TryGetExport(lib, "cuMemGetInfo_v2", out IntPtr f))
            {
                return (delegate* unmanaged<nuint*, nuint*, int>)f;
            }
        }

        return null;
    }
}
