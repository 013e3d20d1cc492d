using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using GpuLlama.Devices;
using GpuLlama.Formats;

namespace GpuLlama.Bench;

/// <summary>
/// Fused dequantize-and-dot over a TinyLlama-sized FFN matrix (5632 × 2048), single-threaded: DotRow per row (token
/// generation) and DotRows against 16 activation rows (prompt processing). Bytes/s = weight bytes streamed.
/// </summary>
public unsafe class QuantDotBenchmarks
{
    private const int Rows = 5632;
    private const int Cols = 2048;
    private const int Batch = 16;

    private byte* _weights;
    private float* _x;
    private float* _y;
    private long _rowBytes;

    [Params(DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.Q5_0, DType.Q4_1, DType.Q5_1, DType.Q5_K)]
    public DType Type { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        _rowBytes = Type.RowBytes(Cols);
        _weights = (byte*)NativeMemory.AlignedAlloc((nuint)(_rowBytes * Rows), 64);
        float[] src = new float[Cols];
        for (int r = 0; r < 64; r++)
        {
            // 64 distinct rows vary the block scales enough; quantizing all 5632 would dominate setup.
            for (int i = 0; i < Cols; i++)
            {
                src[i] = (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.NextDouble() * 3));
            }

            BlockQuantizer.QuantizeRow(Type, src, new Span<byte>(_weights + r * _rowBytes, (int)_rowBytes));
        }

        for (int r = 64; r < Rows; r++)
        {
            new ReadOnlySpan<byte>(_weights + (r % 64) * _rowBytes, (int)_rowBytes).CopyTo(new Span<byte>(_weights + r * _rowBytes, (int)_rowBytes));
        }

        _x = (float*)NativeMemory.AlignedAlloc(Cols * Batch * sizeof(float), 64);
        _y = (float*)NativeMemory.AlignedAlloc(Rows * Batch * sizeof(float), 64);
        for (int i = 0; i < Cols * Batch; i++)
        {
            _x[i] = (float)(rng.NextDouble() - 0.5);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_weights);
        NativeMemory.AlignedFree(_x);
        NativeMemory.AlignedFree(_y);
    }

    [Benchmark]
    public void MatVec()
    {
        for (int r = 0; r < Rows; r++)
        {
            _y[r] = CpuQuantDot.DotRow(Type, _weights + r * _rowBytes, _x, Cols);
        }
    }

    [Benchmark]
    public void MatMulBatch16()
    {
        for (int r = 0; r < Rows; r++)
        {
            CpuQuantDot.DotRows(Type, _weights + r * _rowBytes, _x, Cols, Batch, Cols, _y + r * Batch);
        }
    }
}
