using BenchmarkDotNet.Attributes;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Bench;

/// <summary>
/// RMSNorm of <see cref="Rows"/> rows of width <see cref="Dim"/> (TinyLlama 2048, Llama 7B/8B 4096) with an F32 norm
/// weight, through <see cref="CpuDevice.RmsNorm"/>: one row per decoded token, 64 for a prompt batch.
/// </summary>
public class RmsNormBenchmarks : IKernelWork
{
    private CpuDevice? _device;
    private WeightSet? _weight;
    private DeviceBuffer? _x;
    private DeviceBuffer? _y;

    [ParamsSource(nameof(Dims))]
    public int Dim { get; set; } = 2048;

    [ParamsSource(nameof(RowCounts))]
    public int Rows { get; set; } = 1;

    public static IEnumerable<int> Dims() => BenchData.Values(2048, 4096);

    public static IEnumerable<int> RowCounts() => BenchData.Values(1, 64);

    /// <summary>x read, y written, the weight read.</summary>
    public long Bytes => 2L * Rows * Dim * sizeof(float) + (long)Dim * sizeof(float);

    /// <summary>Square-and-add, then two multiplies per element.</summary>
    public long Flops => 4L * Rows * Dim;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(4);
        _device = BenchData.Device();
        _weight = new WeightSet(_device, DType.F32, 1, Dim, 0, seed: 5);
        _x = BenchData.Buffer(_device, Rows * Dim, rng);
        _y = _device.Allocate(Rows * Dim);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _x?.Dispose();
        _y?.Dispose();
        _weight?.Dispose();
        _device?.Dispose();
    }

    [Benchmark]
    public void RmsNorm() => _device!.RmsNorm(_y!, _x!, _weight!.Next(), Rows, 1e-5f);
}

/// <summary>
/// Rotary embedding of the query and key rows in place, through <see cref="CpuDevice.Rope"/>, with the head layouts
/// of TinyLlama-1.1B (32 + 4 heads of 64) and Llama-3-8B (32 + 8 heads of 128), at position 512.
/// </summary>
public class RopeBenchmarks : IKernelWork
{
    private const int Position = 512;

    private CpuDevice? _device;
    private DeviceBuffer? _q;
    private DeviceBuffer? _k;
    private DeviceBuffer? _table;
    private AttentionShape _shape;

    [ParamsSource(nameof(Models))]
    public string Model { get; set; } = "tinyllama-1.1b";

    [ParamsSource(nameof(RowCounts))]
    public int Rows { get; set; } = 1;

    public static IEnumerable<string> Models() => BenchData.Values("tinyllama-1.1b", "llama3-8b");

    public static IEnumerable<int> RowCounts() => BenchData.Values(1, 64);

    /// <summary>q and k read and written, one cos/sin pair per (row, frequency) read.</summary>
    public long Bytes
    {
        get
        {
            ModelConfig c = BenchData.Model(Model);
            return 2L * Rows * (c.QDim + c.KvDim) * sizeof(float) + (long)Rows * c.HeadDim * sizeof(float);
        }
    }

    /// <summary>Four multiplies and two adds per rotated pair.</summary>
    public long Flops
    {
        get
        {
            ModelConfig c = BenchData.Model(Model);
            return 3L * Rows * (c.QDim + c.KvDim);
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        ModelConfig c = BenchData.Model(Model);
        _shape = AttentionShape.Of(c);
        var rng = new Random(6);
        _device = BenchData.Device();
        float[] table = RopeTable.Build(c, Position + Rows);
        _table = _device.Allocate(table.Length);
        _device.Write(_table, table);
        _q = BenchData.Buffer(_device, Rows * c.QDim, rng);
        _k = BenchData.Buffer(_device, Rows * c.KvDim, rng);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _q?.Dispose();
        _k?.Dispose();
        _table?.Dispose();
        _device?.Dispose();
    }

    /// <summary>Rotates in place: a rotation keeps the values' size, so repeated calls stay in range.</summary>
    [Benchmark]
    public void Rope() => _device!.Rope(_q!, _k!, _table!, Position, Rows, _shape);
}

/// <summary>
/// The FFN's gate: gate = silu(gate) · up over <see cref="Rows"/> rows of <see cref="Hidden"/> (TinyLlama 5632,
/// Llama-3-8B 14336), in place, through <see cref="CpuDevice.SwiGlu"/>.
/// </summary>
public class SwiGluBenchmarks : IKernelWork
{
    private CpuDevice? _device;
    private DeviceBuffer? _gate;
    private DeviceBuffer? _up;

    [ParamsSource(nameof(Hiddens))]
    public int Hidden { get; set; } = 5632;

    [ParamsSource(nameof(RowCounts))]
    public int Rows { get; set; } = 1;

    public static IEnumerable<int> Hiddens() => BenchData.Values(5632, 14336);

    public static IEnumerable<int> RowCounts() => BenchData.Values(1, 64);

    /// <summary>gate and up read, gate written.</summary>
    public long Bytes => 3L * Rows * Hidden * sizeof(float);

    /// <summary>Not a multiply-add kernel (an exp per element): no GFLOP/s.</summary>
    public long Flops => 0;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(7);
        _device = BenchData.Device();
        // The op runs in place, so each call feeds on the last one's output. With gate < 0 and up in [2.5, 4),
        // g ← silu(g)·u converges to the fixed point -ln(u - 1) in [-1.1, -0.4]: values stay normal floats
        // (a shrinking gate would end in denormals, a growing one in infinities, both of which time differently).
        _gate = BenchData.Buffer(_device, Rows * Hidden, rng, -3f, -0.05f);
        _up = BenchData.Buffer(_device, Rows * Hidden, rng, 2.5f, 4f);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _gate?.Dispose();
        _up?.Dispose();
        _device?.Dispose();
    }

    [Benchmark]
    public void SwiGlu() => _device!.SwiGlu(_gate!, _up!, Rows * Hidden);
}
