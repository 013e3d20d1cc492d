using System.Diagnostics;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.GpuProbe;

/// <summary>
/// gpuprobe forward MODEL [device]: where one decode step's time goes on a real model. Three views of the same
/// forward pass: (1) tokens back to back as generation runs them (asynchronous ops, one sync per token for the
/// argmax); (2) the host's time to enqueue a token's ops, which bounds decode speed when it exceeds the device time;
/// (3) each op synchronized on its own, summed per op kind (launch latency included, so the sum exceeds (1)).
/// </summary>
internal static class ForwardProfile
{
    public static void Run(string model, string device, int tokens)
    {
        var provider = new ProfilingProvider(DeviceProviders.Default!);
        using LlamaModel m = LlamaModel.Load(model, new LoadOptions
        {
            GpuLayers = 999, Devices = [device], DeviceProvider = provider, ContextLength = 2 * tokens + 8, Log = Console.WriteLine,
        });
        Transformer t = m.Transformer;
        int pos = 0;
        for (int i = 0; i < 4; i++)
        {
            t.Forward([1 + i], pos++);
            t.ArgmaxLast();
        }

        var enqueue = new List<double>();
        var total = Stopwatch.StartNew();
        for (int i = 0; i < tokens; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            t.Forward([7 + i], pos++);
            enqueue.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            t.ArgmaxLast();
        }

        double perToken = total.Elapsed.TotalMilliseconds / tokens;
        enqueue.Sort();
        Console.WriteLine($"decode: {perToken:F3} ms/token ({1000 / perToken:F1} tok/s); host enqueue median {enqueue[tokens / 2]:F3} ms/token");

        provider.SyncEachOp = true;
        provider.Times.Clear();
        var synced = Stopwatch.StartNew();
        for (int i = 0; i < tokens; i++)
        {
            t.Forward([7 + i], pos++);
            t.ArgmaxLast();
        }

        double syncedPerToken = synced.Elapsed.TotalMilliseconds / tokens;
        Console.WriteLine($"each op synchronized: {syncedPerToken:F3} ms/token");
        Console.WriteLine("op                 calls/token   us/call   ms/token");
        foreach (var (op, (calls, ms)) in provider.Times.OrderByDescending(kv => kv.Value.Ms))
        {
            Console.WriteLine($"{op,-18} {calls / (double)tokens,11:F1} {1000 * ms / calls,9:F1} {ms / tokens,10:F3}");
        }
    }
}

/// <summary>Wraps each device in a <see cref="ProfilingDevice"/>.</summary>
internal sealed class ProfilingProvider(IDeviceProvider inner) : IDeviceProvider
{
    public bool SyncEachOp { get; set; }

    public Dictionary<string, (long Calls, double Ms)> Times { get; } = [];

    public IReadOnlyList<DeviceInfo> Discover() => inner.Discover();

    public IDevice Create(string name) => new ProfilingDevice(inner.Create(name), this);
}

/// <summary>Passes every op through; with SyncEachOp, waits for each and adds its time to the op's total.</summary>
internal sealed class ProfilingDevice(IDevice d, ProfilingProvider p) : IDevice
{
    private void Time(string op, Action run)
    {
        if (!p.SyncEachOp)
        {
            run();
            return;
        }

        long t0 = Stopwatch.GetTimestamp();
        run();
        d.Synchronize();
        double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        p.Times.TryGetValue(op, out var v);
        p.Times[op] = (v.Calls + 1, v.Ms + ms);
    }

    private static string Shape(DeviceWeight w) => $"{DTypeInfo.DisplayName(w.Type)} {w.Rows}x{w.Cols}";

    public string Name => d.Name;
    public DeviceKind Kind => d.Kind;
    public string Description => d.Description;
    public long TotalMemory => d.TotalMemory;
    public long FreeMemory => d.FreeMemory;
    public long AllocatedBytes => d.AllocatedBytes;
    public DeviceWeight Upload(WeightView weight) => d.Upload(weight);
    public bool StreamsWeights => d.StreamsWeights;
    public void Reload(DeviceWeight slot, WeightView weight) => Time("reload", () => d.Reload(slot, weight));
    public DeviceBuffer Allocate(int floats) => d.Allocate(floats);
    public KvCacheLayer AllocateKv(int capacity, int kvDim, KvCacheType kType = KvCacheType.F32, KvCacheType vType = KvCacheType.F32) => d.AllocateKv(capacity, kvDim, kType, vType);
    public void Write(DeviceBuffer dst, ReadOnlySpan<float> src, int dstOffset = 0) => d.Write(dst, src, dstOffset);
    public void Read(DeviceBuffer src, Span<float> dst, int srcOffset = 0) => d.Read(src, dst, srcOffset);
    public void CopyFrom(DeviceBuffer dst, int dstOffset, DeviceBuffer src, int srcOffset, int count) => Time("copy", () => d.CopyFrom(dst, dstOffset, src, srcOffset, count));
    public void Embed(DeviceBuffer x, DeviceWeight table, ReadOnlySpan<int> tokens) => d.Embed(x, table, tokens);
    public void RmsNorm(DeviceBuffer dst, DeviceBuffer x, DeviceWeight weight, int rows, float eps) => Time("rmsnorm", () => d.RmsNorm(dst, x, weight, rows, eps));
    public void MatMul(DeviceBuffer dst, DeviceWeight w, DeviceBuffer x, int rows, bool accumulate = false) => Time("matmul " + Shape(w), () => d.MatMul(dst, w, x, rows, accumulate));
    public void MatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2, DeviceBuffer x, int rows) =>
        Time("qkv " + Shape(w0), () => d.MatMul3(d0, w0, d1, w1, d2, w2, x, rows));
    public void MatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, int rows, DeviceBuffer scratch) =>
        Time("gate+up " + Shape(gate), () => d.MatMulSwiGlu(dst, gate, up, x, rows, scratch));
    public void NormMatMul3(DeviceBuffer d0, DeviceWeight w0, DeviceBuffer d1, DeviceWeight w1, DeviceBuffer d2, DeviceWeight w2, DeviceBuffer x, DeviceWeight norm, float eps, int rows, DeviceBuffer xb) =>
        Time("norm+qkv " + Shape(w0), () => d.NormMatMul3(d0, w0, d1, w1, d2, w2, x, norm, eps, rows, xb));
    public void NormMatMulSwiGlu(DeviceBuffer dst, DeviceWeight gate, DeviceWeight up, DeviceBuffer x, DeviceWeight norm, float eps, int rows, DeviceBuffer xb, DeviceBuffer scratch) =>
        Time("norm+gate+up " + Shape(gate), () => d.NormMatMulSwiGlu(dst, gate, up, x, norm, eps, rows, xb, scratch));
    public void RopeStoreKv(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer ropeTable, KvCacheLayer kv, int position, int rows, AttentionShape shape) =>
        Time("rope+storekv", () => d.RopeStoreKv(q, k, v, ropeTable, kv, position, rows, shape));
    public void Rope(DeviceBuffer q, DeviceBuffer k, DeviceBuffer ropeTable, int position, int rows, AttentionShape shape) => Time("rope", () => d.Rope(q, k, ropeTable, position, rows, shape));
    public void StoreKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows) => Time("storekv", () => d.StoreKv(kv, k, v, position, rows));
    public void ReadKv(KvCacheLayer kv, DeviceBuffer k, DeviceBuffer v, int position, int rows) => Time("readkv", () => d.ReadKv(kv, k, v, position, rows));
    public void Attention(DeviceBuffer dst, DeviceBuffer q, KvCacheLayer kv, int position, int rows, AttentionShape shape) => Time("attention", () => d.Attention(dst, q, kv, position, rows, shape));
    public void SwiGlu(DeviceBuffer gate, DeviceBuffer up, int count) => Time("swiglu", () => d.SwiGlu(gate, up, count));
    public void Add(DeviceBuffer dst, DeviceBuffer src, int count) => Time("add", () => d.Add(dst, src, count));
    public int Argmax(DeviceBuffer x, int offset, int count) => d.Argmax(x, offset, count);
    public void Synchronize() => d.Synchronize();
    public void Dispose() => d.Dispose();
}
