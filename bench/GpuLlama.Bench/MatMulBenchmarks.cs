using BenchmarkDotNet.Attributes;
using GpuLlama.Devices;
using GpuLlama.Formats;

namespace GpuLlama.Bench;

/// <summary>
/// Token generation's matrix-vector product, y = W·x, through <see cref="CpuDevice.MatMul"/> with one activation row —
/// what every Q/K/V/O, FFN and output-head projection costs per token. W is random data in each stored dtype at the
/// shapes of TinyLlama-1.1B (2048×2048 attention, 5632×2048 gate/up, 2048×5632 down) and Llama 7B/8B (4096×4096),
/// read cold (see <see cref="BenchData.ColdBytes"/>). Memory-bound: GB/s is the number to compare with
/// `gpullama bench --memory`.
/// </summary>
public class MatVecBenchmarks : IKernelWork
{
    private CpuDevice? _device;
    private WeightSet? _weights;
    private DeviceBuffer? _x;
    private DeviceBuffer? _y;

    [ParamsSource(nameof(Types))]
    public DType Type { get; set; } = DType.F32;

    [ParamsSource(nameof(Shapes))]
    public string Shape { get; set; } = "2048x2048";

    public static IEnumerable<DType> Types() => BenchData.Values(DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.IQ4_XS);

    public static IEnumerable<string> Shapes() => BenchData.Values("2048x2048", "5632x2048", "2048x5632", "4096x4096");

    public long Bytes
    {
        get
        {
            (int rows, int cols) = BenchData.Shape(Shape);
            return BenchData.MatrixBytes(Type, rows, cols) + 4L * (cols + rows);
        }
    }

    public long Flops
    {
        get
        {
            (int rows, int cols) = BenchData.Shape(Shape);
            return 2L * rows * cols;
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        (int rows, int cols) = BenchData.Shape(Shape);
        var rng = new Random(1);
        _device = BenchData.Device();
        _weights = new WeightSet(_device, Type, rows, cols, BenchData.ColdBytes, seed: 2);
        _x = BenchData.Buffer(_device, cols, rng);
        _y = _device.Allocate(rows);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _x?.Dispose();
        _y?.Dispose();
        _weights?.Dispose();
        _device?.Dispose();
    }

    [Benchmark]
    public void MatVec() => _device!.MatMul(_y!, _weights!.Next(), _x!, 1);
}

/// <summary>
/// Prompt processing's matrix product, Y = X·Wᵀ for a batch of 64 activation rows, through
/// <see cref="CpuDevice.MatMul"/> (each weight row is widened to float32 once and dotted with the rows four at a time).
/// Compute-bound: GFLOP/s is the number to read.
/// </summary>
public class PromptMatMulBenchmarks : IKernelWork
{
    private CpuDevice? _device;
    private WeightSet? _weights;
    private DeviceBuffer? _x;
    private DeviceBuffer? _y;

    [ParamsSource(nameof(Types))]
    public DType Type { get; set; } = DType.F32;

    [ParamsSource(nameof(Shapes))]
    public string Shape { get; set; } = "2048x2048";

    public static IEnumerable<DType> Types() => BenchData.Values(DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.IQ4_XS);

    public static IEnumerable<string> Shapes() => BenchData.Values("2048x2048", "4096x4096");

    [Params(64)]
    public int Batch { get; set; } = 64;

    public long Bytes
    {
        get
        {
            (int rows, int cols) = BenchData.Shape(Shape);
            return BenchData.MatrixBytes(Type, rows, cols) + 4L * Batch * (cols + rows);
        }
    }

    public long Flops
    {
        get
        {
            (int rows, int cols) = BenchData.Shape(Shape);
            return 2L * rows * cols * Batch;
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        (int rows, int cols) = BenchData.Shape(Shape);
        var rng = new Random(1);
        _device = BenchData.Device();
        _weights = new WeightSet(_device, Type, rows, cols, BenchData.ColdBytes, seed: 2);
        _x = BenchData.Buffer(_device, Batch * cols, rng);
        _y = _device.Allocate(Batch * rows);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _x?.Dispose();
        _y?.Dispose();
        _weights?.Dispose();
        _device?.Dispose();
    }

    [Benchmark]
    public void MatMul() => _device!.MatMul(_y!, _weights!.Next(), _x!, Batch);
}
