using System.Globalization;
using System.Runtime.InteropServices;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Bench;

/// <summary>Shapes, devices and deterministic data shared by the benchmarks.</summary>
public static class BenchData
{
    /// <summary>
    /// Weights and KV caches are spread over copies totalling at least this many bytes, used in turn, so each
    /// operation reads them from memory as decoding does (every layer's weights are read once per token), not from
    /// a cache that a 16 MB matrix would fit in.
    /// </summary>
    public static long ColdBytes => Smoke ? 0 : 256L << 20;

    /// <summary>
    /// GPULLAMA_BENCH_SMOKE=1: every benchmark with its first parameter values only and no cold copies — a run of
    /// seconds that checks every benchmark still sets up and runs (CI: --job dry --inProcess), not a measurement.
    /// </summary>
    public static bool Smoke => Environment.GetEnvironmentVariable("GPULLAMA_BENCH_SMOKE") is "1" or "true";

    /// <summary>The values of a [ParamsSource]: all of them, or the first under <see cref="Smoke"/>.</summary>
    public static IEnumerable<T> Values<T>(params T[] all) => Smoke ? all[..1] : all;

    /// <summary>The CPU backend the engine runs on: all cores, or GPULLAMA_BENCH_THREADS (e.g. 1 for one core).</summary>
    public static CpuDevice Device()
    {
        string? text = Environment.GetEnvironmentVariable("GPULLAMA_BENCH_THREADS");
        int threads = 0;
        if (!string.IsNullOrEmpty(text) && (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out threads) || threads < 0))
        {
            throw new ArgumentException($"GPULLAMA_BENCH_THREADS '{text}' is not a non-negative integer");
        }

        return new CpuDevice(threads);
    }

    /// <summary>"5632x2048" → (5632, 2048): output rows × input columns, as the weight is stored.</summary>
    public static (int Rows, int Cols) Shape(string shape)
    {
        string[] parts = shape.Split('x');
        return parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int r)
               && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int c)
            ? (r, c)
            : throw new ArgumentException($"shape '{shape}': expected ROWSxCOLS");
    }

    /// <summary>The hyper-parameters of a synthetic preset ("tinyllama-1.1b", "llama3-8b", …): the real models' shapes.</summary>
    public static ModelConfig Model(string preset) =>
        (SyntheticPreset.All.FirstOrDefault(p => p.Name == preset) ?? throw new ArgumentException($"no synthetic preset '{preset}'")).ToConfig();

    /// <summary>Bytes of a [rows, cols] matrix of <paramref name="type"/>.</summary>
    public static long MatrixBytes(DType type, int rows, int cols) => rows * type.RowBytes(cols);

    /// <summary>Writes <paramref name="rows"/> rows of random values, stored as <paramref name="type"/>, at <paramref name="dst"/>.</summary>
    public static unsafe void FillRandom(DType type, byte* dst, int rows, int cols, Random rng)
    {
        long rowBytes = type.RowBytes(cols);
        var src = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < cols; i++)
            {
                // a spread of magnitudes, so block scales vary as in trained weights
                src[i] = (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.NextDouble() * 3) * 0.05);
            }

            byte* row = dst + r * rowBytes;
            switch (type)
            {
                case DType.F32:
                    src.CopyTo(new Span<float>(row, cols));
                    break;
                case DType.F16:
                    for (int i = 0; i < cols; i++)
                    {
                        ((ushort*)row)[i] = BitConverter.HalfToUInt16Bits((Half)src[i]);
                    }

                    break;
                case DType.BF16:
                    for (int i = 0; i < cols; i++)
                    {
                        ((ushort*)row)[i] = (ushort)(BitConverter.SingleToUInt32Bits(src[i]) >> 16);
                    }

                    break;
                default:
                    BlockQuantizer.QuantizeRow(type, src, new Span<byte>(row, (int)rowBytes));
                    break;
            }
        }
    }

    /// <summary>Random float32 values in [lo, hi).</summary>
    public static void FillRandom(Span<float> dst, Random rng, float lo = -1, float hi = 1)
    {
        for (int i = 0; i < dst.Length; i++)
        {
            dst[i] = lo + (float)rng.NextDouble() * (hi - lo);
        }
    }

    /// <summary>A device buffer of <paramref name="floats"/> random values.</summary>
    public static DeviceBuffer Buffer(IDevice device, int floats, Random rng, float lo = -1, float hi = 1)
    {
        var host = new float[floats];
        FillRandom(host, rng, lo, hi);
        DeviceBuffer b = device.Allocate(floats);
        device.Write(b, host);
        return b;
    }
}

/// <summary>
/// One or more copies of a random [rows, cols] weight in native memory, uploaded to the device the way a model's
/// memory-mapped tensors are (<see cref="IDevice.Upload"/>), handed out in turn by <see cref="Next"/>.
/// </summary>
public sealed unsafe class WeightSet : IDisposable
{
    private readonly byte*[] _memory;
    private readonly DeviceWeight[] _weights;
    private int _next;

    public WeightSet(IDevice device, DType type, int rows, int cols, long minTotalBytes, int seed)
    {
        long bytes = BenchData.MatrixBytes(type, rows, cols);
        int copies = (int)Math.Clamp((minTotalBytes + bytes - 1) / bytes, 1, 1024);
        var info = new TensorInfo("blk.0.bench.weight", type, rows == 1 ? [cols] : [rows, cols], 0, 0, bytes);
        _memory = new byte*[copies];
        _weights = new DeviceWeight[copies];

        // Quantizing is slow: 64 distinct random rows, repeated, vary the block scales enough.
        int distinct = Math.Min(rows, 64);
        long rowBytes = type.RowBytes(cols);
        var rng = new Random(seed);
        for (int c = 0; c < copies; c++)
        {
            byte* p = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _memory[c] = p;
            if (c == 0)
            {
                BenchData.FillRandom(type, p, distinct, cols, rng);
                for (int r = distinct; r < rows; r++)
                {
                    Buffer.MemoryCopy(p + (r % distinct) * rowBytes, p + r * rowBytes, rowBytes, rowBytes);
                }
            }
            else
            {
                Buffer.MemoryCopy(_memory[0], p, bytes, bytes);
            }

            _weights[c] = device.Upload(new WeightView(info, p));
        }
    }

    public int Copies => _weights.Length;

    /// <summary>The next copy, round-robin.</summary>
    public DeviceWeight Next()
    {
        DeviceWeight w = _weights[_next];
        _next = _next + 1 == _weights.Length ? 0 : _next + 1;
        return w;
    }

    public void Dispose()
    {
        for (int c = 0; c < _weights.Length; c++)
        {
            _weights[c]?.Dispose();
            NativeMemory.AlignedFree(_memory[c]);
            _memory[c] = null;
        }
    }
}
