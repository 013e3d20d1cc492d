using BenchmarkDotNet.Attributes;
using GpuLlama.Devices;
using GpuLlama.Model;

namespace GpuLlama.Bench;

/// <summary>
/// Decode attention of one new token over a KV cache of <see cref="Context"/> positions, through
/// <see cref="CpuDevice.Attention"/>, with the grouped-query shapes of TinyLlama-1.1B (32 query heads on 4 KV heads,
/// head 64) and Llama-3-8B (32 on 8, head 128), over F16 caches (the default), F32 ones and the quantized Q8_0 and Q4_0. Every layer has its own
/// cache, so caches are read cold (see <see cref="BenchData.ColdBytes"/>); Bytes/op counts K and V once (the query
/// heads of a group share them).
/// </summary>
public class AttentionBenchmarks : IKernelWork
{
    private CpuDevice? _device;
    private KvCacheLayer[] _caches = [];
    private int _next;
    private DeviceBuffer? _q;
    private DeviceBuffer? _out;
    private AttentionShape _shape;

    [ParamsSource(nameof(Models))]
    public string Model { get; set; } = "tinyllama-1.1b";

    [ParamsSource(nameof(Contexts))]
    public int Context { get; set; } = 128;

    [ParamsSource(nameof(CacheTypes))]
    public KvCacheType Cache { get; set; } = KvCacheType.F16;

    public static IEnumerable<KvCacheType> CacheTypes() => BenchData.Values(KvCacheType.F16, KvCacheType.F32, KvCacheType.Q8_0, KvCacheType.Q4_0);

    public static IEnumerable<string> Models() => BenchData.Values("tinyllama-1.1b", "llama3-8b");

    public static IEnumerable<int> Contexts() => BenchData.Values(128, 512, 2048);

    public long Bytes
    {
        get
        {
            ModelConfig c = BenchData.Model(Model);
            return 2L * Context * Cache.RowBytes(c.KvDim) + 2L * c.QDim * sizeof(float);
        }
    }

    public long Flops
    {
        get
        {
            ModelConfig c = BenchData.Model(Model);
            return 4L * c.Heads * Context * c.HeadDim; // q·k and p·v, a multiply-add each
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        ModelConfig c = BenchData.Model(Model);
        _shape = AttentionShape.Of(c);
        var rng = new Random(3);
        _device = BenchData.Device();
        long cacheBytes = 2L * Context * Cache.RowBytes(c.KvDim);
        int copies = (int)Math.Clamp((BenchData.ColdBytes + cacheBytes - 1) / cacheBytes, 1, 1024);
        using DeviceBuffer k = BenchData.Buffer(_device, Context * c.KvDim, rng);
        using DeviceBuffer v = BenchData.Buffer(_device, Context * c.KvDim, rng);
        _caches = new KvCacheLayer[copies];
        for (int i = 0; i < copies; i++)
        {
            _caches[i] = _device.AllocateKv(Context, c.KvDim, Cache, Cache);
            _device.StoreKv(_caches[i], k, v, 0, Context);
        }

        _q = BenchData.Buffer(_device, c.QDim, rng);
        _out = _device.Allocate(c.QDim);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (KvCacheLayer kv in _caches)
        {
            kv.Dispose();
        }

        _q?.Dispose();
        _out?.Dispose();
        _device?.Dispose();
    }

    /// <summary>The token at position Context - 1 attends to all Context positions.</summary>
    [Benchmark]
    public void AttentionDecode()
    {
        KvCacheLayer kv = _caches[_next];
        _next = _next + 1 == _caches.Length ? 0 : _next + 1;
        _device!.Attention(_out!, _q!, kv, Context - 1, 1, _shape);
    }
}
