using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Devices;

public enum DeviceKind
{
    Cpu,
    Cuda,
    OpenCL,

    /// <summary>ILGPU's CPU accelerator: runs the GPU kernels on the host (how CI tests the GPU code).</summary>
    Emulated,
}

/// <summary>Shape of one attention block, passed to the ops that need it.</summary>
public readonly record struct AttentionShape(int Heads, int KvHeads, int HeadDim, RopeStyle Style)
{
    public int QDim => Heads * HeadDim;

    public int KvDim => KvHeads * HeadDim;

    public static AttentionShape Of(ModelConfig c) => new(c.Heads, c.KvHeads, c.HeadDim, c.RopeStyle);
}

/// <summary>
/// The compute seam. The forward pass (Model/Transformer.cs) is written once against this op set; the CPU
/// backend and the ILGPU backend implement it. The set is the size of the forward pass, not a tensor algebra.
/// All activations are float32, row-major: a buffer holding <c>rows</c> vectors of width <c>n</c> stores row r
/// at [r*n, (r+1)*n). Ops are enqueued in order on the device; only <see cref="Read"/>, <see cref="Argmax"/>
/// and <see cref="Synchronize"/> wait for the device.
/// </summary>
public interface IDevice : IDisposable
{
    /// <summary>"cpu", "cuda:0", "opencl:0", "emulated:0".</summary>
    string Name { get; }

    DeviceKind Kind { get; }

    /// <summary>Human-readable hardware name ("NVIDIA H100 80GB HBM3", "AMD EPYC …").</summary>
    string Description { get; }

    /// <summary>Total device memory in bytes (host RAM for the CPU).</summary>
    long TotalMemory { get; }

    /// <summary>Free device memory in bytes, as well as the driver can tell.</summary>
    long FreeMemory { get; }

    /// <summary>Bytes this device object has allocated so far (weights, caches, buffers): compared with the plan.</summary>
    long AllocatedBytes { get; }

    /// <summary>
    /// Makes a weight usable on this device straight from the memory map: the CPU keeps a pointer into the map
    /// (zero copy); a GPU allocates device memory and copies the bytes, keeping the stored dtype.
    /// </summary>
    DeviceWeight Upload(WeightView weight);

    /// <summary>
    /// Whether <see cref="Reload"/> works here: a GPU can refill a weight it holds, so a CPU-resident layer's weights can
    /// pass through it for one prompt batch (prompt offload, see Transformer). The CPU reads weights in place and cannot.
    /// </summary>
    bool StreamsWeights => false;

    /// <summary>
    /// Overwrites <paramref name="slot"/>, a weight <see cref="Upload"/>ed to this device, with <paramref name="weight"/>,
    /// which has the same dtype and shape (enqueued in order with the ops: ops before it read the old values).
    /// </summary>
    void Reload(DeviceWeight slot, WeightView weight) => throw new NotSupportedException($"{Name} reads weights in place; it does not stream them");

    /// <summary>A buffer of <paramref name="floats"/> float32 values.</summary>
    DeviceBuffer Allocate(int floats);

    /// <summary>
    /// K and V caches for one layer: <paramref name="capacity"/> positions of <paramref name="kvDim"/> values each, stored
    /// as <paramref name="kType"/> and <paramref name="vType"/> (values are rounded to the type when stored; attention
    /// reads them widened to float32).
    /// </summary>
    KvCacheLayer AllocateKv(int capacity, int kvDim, KvCacheType kType = KvCacheType.F32, KvCacheType vType = KvCacheType.F32);

    /// <summary>Copies host floats into <paramref name="dst"/> at <paramref name="dstOffset"/>.</summary>
    void Write(DeviceBuffer dst, ReadOnlySpan<float> src, int dstOffset = 0);

    /// <summary>Copies <c>dst.Length</c> floats from <paramref name="src"/> at <paramref name="srcOffset"/> to the host; waits for the device.</summary>
    void Read(DeviceBuffer src, Span<float> dst, int srcOffset = 0);

    /// <summary>
    /// Copies <paramref name="count"/> floats from <paramref name="src"/> (a buffer of any device) into
    /// <paramref name="dst"/> (a buffer of this device): the hop of the hidden state between devices.
    /// </summary>
    void CopyFrom(DeviceBuffer dst, int dstOffset, DeviceBuffer src, int srcOffset, int count);

    /// <summary>x[r] = table[tokens[r]] converted to float32 (table: [Vocab, Dim], any dtype).</summary>
    void Embed(DeviceBuffer x, DeviceWeight table, ReadOnlySpan<int> tokens);

    /// <summary>dst[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, for <paramref name="rows"/> rows of width weight.Cols.</summary>
    void RmsNorm(DeviceBuffer dst, DeviceBuffer x, DeviceWeight weight, int rows, float eps);

    /// <summary>
    /// dst[r] = W · x[r] for r &lt; rows (W: [w.Rows, w.Cols] in its stored dtype; x: [rows, w.Cols]; dst: [rows, w.Rows]),
    /// accumulated in float32. With <paramref name="accumulate"/> the product is added to dst (fused residual).
    /// For F32 and BF16 weights x stays float32 (16-bit weights are widened in registers): exact float math on the
    /// stored weights. For block-quantized weights a device may round x to 8 bits first, and for F16 weights to F16, as
    /// llama.cpp's CPU backend does (the CPU device by default, see <see cref="CpuDevice.ExactQuantDots"/>; GPUs compute
    /// exactly) — see
    /// docs/formats.md for what that changes and what the golden tests compare against.
    /// </summary>
    void MatMul(DeviceBuffer dst, DeviceWeight w, DeviceBuffer x, int rows, bool accumulate = false);

    /// <summary>
    /// Three projections of the same input, d_i = W_i · x (Q, K and V). A GPU runs them as one launch; the default
    /// is three <see cref="MatMul"/> calls.
    /// </summary>
    void MatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2, DeviceBuffer x, int rows)
    {
        MatMul(d0, w0, x, rows);
        MatMul(d1, w1, x, rows);
        MatMul(d2, w2, x, rows);
    }

    /// <summary>
    /// The FFN's SwiGLU input: dst = silu(gate · x) * (up · x), row by row. <paramref name="scratch"/> (as large as
    /// dst) holds the up product where the device computes the two separately, as the default does.
    /// </summary>
    void MatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, int rows, DeviceBuffer scratch)
    {
        MatMul(dst, gate, x, rows);
        MatMul(scratch, up, x, rows);
        SwiGlu(dst, scratch, rows * gate.Rows);
    }

    /// <summary>
    /// The attention block's input: xb = RmsNorm(x, norm), then <see cref="MatMul3"/> of xb. A GPU folds the norm into
    /// the projections' decode launch (and may leave <paramref name="xb"/> unwritten); the default runs the two ops.
    /// </summary>
    void NormMatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2,
        DeviceBuffer x, DeviceWeight norm, float eps, int rows, DeviceBuffer xb)
    {
        RmsNorm(xb, x, norm, rows, eps);
        MatMul3(d0, w0, d1, w1, d2, w2, xb, rows);
    }

    /// <summary>The FFN's input: xb = RmsNorm(x, norm), then <see cref="MatMulSwiGlu"/> of xb (fused as <see cref="NormMatMul3"/>).</summary>
    void NormMatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, DeviceWeight norm, float eps, int rows,
        DeviceBuffer xb, DeviceBuffer scratch)
    {
        RmsNorm(xb, x, norm, rows, eps);
        MatMulSwiGlu(dst, gate, up, xb, rows, scratch);
    }

    /// <summary>
    /// Rotary embedding of q ([rows, QDim]) and k ([rows, KvDim]) in place, row r at absolute position
    /// position + r. <paramref name="ropeTable"/> holds, for each position p and frequency i &lt; HeadDim/2,
    /// cos at [(p*HeadDim/2 + i)*2] and sin at [(p*HeadDim/2 + i)*2 + 1] (see <see cref="RopeTable"/>).
    /// </summary>
    void Rope(DeviceBuffer q, DeviceBuffer k, DeviceBuffer ropeTable, int position, int rows, AttentionShape shape);

    /// <summary>Writes k and v ([rows, KvDim]) into the cache at positions position..position+rows-1.</summary>
    void StoreKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows);

    /// <summary>
    /// <see cref="Rope"/> of q and k, then <see cref="StoreKv"/> of the rotated k and v: one launch on a GPU (for caches of
    /// a plain type), the two ops by default.
    /// </summary>
    void RopeStoreKv(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer ropeTable, KvCacheLayer kv, int position, int rows, AttentionShape shape)
    {
        Rope(q, k, ropeTable, position, rows, shape);
        StoreKv(kv, k, v, position, rows);
    }

    /// <summary>
    /// Reads positions position..position+rows-1 of the cache back into k and v ([rows, KvDim]) as float32 — the
    /// values attention reads (StoreKv's inverse up to its rounding): a context shift rotates the keys and stores them again.
    /// </summary>
    void ReadKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows);

    /// <summary>
    /// Causal grouped-query attention: for row r (absolute position p = position + r) and head h,
    /// dst[r, h] = softmax(q[r, h] · K[0..p, h / KvMul] / sqrt(HeadDim)) · V[0..p, h / KvMul].
    /// </summary>
    void Attention(DeviceBuffer dst, DeviceBuffer q, KvCacheLayer kv, int position, int rows, AttentionShape shape);

    /// <summary>gate[i] = silu(gate[i]) * up[i] for i &lt; count.</summary>
    void SwiGlu(DeviceBuffer gate, DeviceBuffer up, int count);

    /// <summary>dst[i] += src[i] for i &lt; count.</summary>
    void Add(DeviceBuffer dst, DeviceBuffer src, int count);

    /// <summary>Index of the largest of x[offset..offset+count) (ties → lowest index); only 4 bytes come back.</summary>
    int Argmax(DeviceBuffer x, int offset, int count);

    /// <summary>Waits until every enqueued op has finished.</summary>
    void Synchronize();
}

/// <summary>A float32 activation buffer owned by one device. Passing it to another device's op is an error.</summary>
public abstract class DeviceBuffer : IDisposable
{
    protected DeviceBuffer(IDevice device, int length)
    {
        Device = device;
        Length = length;
    }

    public IDevice Device { get; }

    /// <summary>Length in floats.</summary>
    public int Length { get; }

    public abstract void Dispose();
}

/// <summary>A weight matrix (or vector) resident on one device, in its stored dtype.</summary>
public abstract class DeviceWeight : IDisposable
{
    protected DeviceWeight(IDevice device, TensorInfo info)
    {
        Device = device;
        Info = info;
    }

    public IDevice Device { get; }

    public TensorInfo Info { get; }

    public DType Type => Info.Type;

    public int Rows => checked((int)Info.Rows);

    public int Cols => checked((int)Info.Cols);

    public abstract void Dispose();
}

/// <summary>One layer's K and V caches on that layer's device.</summary>
public abstract class KvCacheLayer : IDisposable
{
    protected KvCacheLayer(IDevice device, int capacity, int kvDim, KvCacheType kType, KvCacheType vType)
    {
        Device = device;
        Capacity = capacity;
        KvDim = kvDim;
        KType = kType;
        VType = vType;
    }

    public IDevice Device { get; }

    public int Capacity { get; }

    public int KvDim { get; }

    public KvCacheType KType { get; }

    public KvCacheType VType { get; }

    /// <summary>The bytes of both caches: what the memory plan counts per layer.</summary>
    public long Bytes => BytesFor(Capacity, KvDim, KType, VType);

    public static long BytesFor(long capacity, int kvDim, KvCacheType kType, KvCacheType vType) =>
        capacity * (kType.RowBytes(kvDim) + vType.RowBytes(kvDim));

    public abstract void Dispose();
}

/// <summary>
/// How a KV cache stores its values (llama.cpp's --cache-type-k/--cache-type-v). F16 (llama.cpp's default) halves the
/// cache's memory and the bytes attention reads; F32 keeps every value as computed (llama.cpp's goldens use it); Q8_0
/// and Q4_0 keep each 32 values of a row as one of ggml's blocks (a scale and 8- or 4-bit quants: 34 or 18 bytes), a
/// quarter or an eighth of F32 (llama.cpp's and Ollama's quantized KV caches).
/// </summary>
public enum KvCacheType
{
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
}

public static class KvCacheTypes
{
    /// <summary>Bytes of <paramref name="values"/> values (a whole number of 32-blocks for the quantized types).</summary>
    public static long RowBytes(this KvCacheType type, long values) => type.DType().RowBytes(values);

    /// <summary>Q8_0 and Q4_0: values in blocks of 32 (a head must hold whole blocks).</summary>
    public static bool IsQuantized(this KvCacheType type) => type is KvCacheType.Q8_0 or KvCacheType.Q4_0;

    /// <summary>The weight dtype that stores values the same way.</summary>
    public static DType DType(this KvCacheType type) => type switch
    {
        KvCacheType.F16 => Formats.DType.F16,
        KvCacheType.BF16 => Formats.DType.BF16,
        KvCacheType.Q8_0 => Formats.DType.Q8_0,
        KvCacheType.Q4_0 => Formats.DType.Q4_0,
        _ => Formats.DType.F32,
    };

    /// <summary>llama.cpp's name: "f32", "f16", "bf16", "q8_0", "q4_0".</summary>
    public static string Name(this KvCacheType type) => type.ToString().ToLowerInvariant();

    /// <summary>Parses a llama.cpp cache type name; <paramref name="flag"/> names the option in the one-line error.</summary>
    public static KvCacheType Parse(string text, string flag) => text.Trim().ToLowerInvariant() switch
    {
        "f32" => KvCacheType.F32,
        "f16" => KvCacheType.F16,
        "bf16" => KvCacheType.BF16,
        "q8_0" => KvCacheType.Q8_0,
        "q4_0" => KvCacheType.Q4_0,
        "q4_1" or "q5_0" or "q5_1" or "iq4_nl" =>
            throw new GpuLlamaException($"{flag} {text}: this cache type is not supported; use f32, f16, bf16, q8_0 or q4_0"),
        _ => throw new GpuLlamaException($"{flag} {text}: not a cache type (f32, f16, bf16, q8_0, q4_0)"),
    };

    /// <summary>
    /// Checks that a model's heads of <paramref name="headDim"/> values hold whole 32-blocks where a cache type is
    /// quantized (llama.cpp refuses such a cache too); the one-line error names the option.
    /// </summary>
    public static void CheckHeadDim(KvCacheType kType, KvCacheType vType, int headDim)
    {
        foreach ((KvCacheType type, string flag) in new[] { (kType, "--cache-type-k"), (vType, "--cache-type-v") })
        {
            if (type.IsQuantized() && headDim % 32 != 0)
            {
                throw new GpuLlamaException($"{flag} {type.Name()}: quantized caches store blocks of 32 values, and this model's heads have {headDim}; use f16, bf16 or f32");
            }
        }
    }
}
