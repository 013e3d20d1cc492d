using System.Runtime.Intrinsics;
using GpuLlama.Devices;
using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>
/// F32/F16/BF16 matrices that the CPU backend stores as row panels (AVX2/AVX-512 machines, rows of a multiple of 64
/// bytes): the copy keeps every row, and embedding, decode and prompt products through it equal the float64 values
/// (CpuMatMulTests hold the products to their reference at more shapes).
/// </summary>
public sealed unsafe class RowPanelTests : IDisposable
{
    private readonly CpuDevice _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(DType.F32, 9, 48)]   // two panels and a row-major leftover row, three chunks per row
    [InlineData(DType.F16, 7, 96)]   // one panel and three leftover rows
    [InlineData(DType.BF16, 8, 160)] // two panels, five chunks per row
    public void Interleaving_keeps_every_row(DType type, int rows, int cols)
    {
        using var host = new HostWeight("w", type, rows, cols, i => (float)Math.Sin(i * 0.37) * (i % 5 + 1));
        long rowBytes = type.RowBytes(cols);
        byte[] panels = new byte[rows * rowBytes];
        fixed (byte* p = panels)
        {
            CpuMatMul.InterleaveRowPanels(host.View.Pointer, p, rows, rowBytes);
            float[] got = new float[cols];
            fixed (float* g = got)
            {
                for (int r = 0; r < rows; r++)
                {
                    if (r < rows / 4 * 4)
                    {
                        CpuMatMul.PanelRowToF32(type, p + (r & ~3) * rowBytes, r & 3, 0, g, cols);
                    }
                    else
                    {
                        CpuDevice.ConvertRow(type, p + r * rowBytes, g, cols);
                    }

                    for (int c = 0; c < cols; c++)
                    {
                        Assert.Equal(host.Values[r * cols + c], got[c]);
                    }
                }

                // a row's later chunks alone (the prompt product's K blocks start inside rows)
                int perChunk = CpuMatMul.PanelChunkBytes / type.BlockBytes();
                CpuMatMul.PanelRowToF32(type, p + 4 * rowBytes * (rows / 4 - 1), 2, perChunk, g, cols - perChunk);
                int row = 4 * (rows / 4 - 1) + 2;
                for (int c = 0; c < cols - perChunk; c++)
                {
                    Assert.Equal(host.Values[row * cols + perChunk + c], got[c]);
                }
            }
        }
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void Uploaded_matrices_are_panels_and_embed_decode_and_prompt_read_them(DType type)
    {
        const int rows = 10, cols = 256, batch = 4;
        using var host = new HostWeight("w", type, rows, cols, i => (float)Math.Cos(i * 0.11) * 0.5f);
        using var w = (CpuWeight)_cpu.Upload(host.View);
        Assert.Equal(Vector256.IsHardwareAccelerated, w.RowPanels);

        // embedding: every row, panel rows and the two row-major ones
        int[] tokens = Enumerable.Range(0, rows).Reverse().ToArray();
        using DeviceBuffer e = _cpu.Allocate(rows * cols);
        _cpu.Embed(e, w, tokens);
        float[] embedded = new float[rows * cols];
        _cpu.Read(e, embedded);
        for (int t = 0; t < rows; t++)
        {
            for (int c = 0; c < cols; c++)
            {
                Assert.Equal(host.Values[tokens[t] * cols + c], embedded[t * cols + c]);
            }
        }

        // products: one activation row (decode) and a batch (prompt), against float64 sums
        var rng = new Random(3);
        float[] x = Enumerable.Range(0, batch * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        foreach (int m in new[] { 1, batch })
        {
            using DeviceBuffer xb = _cpu.Allocate(m * cols);
            using DeviceBuffer y = _cpu.Allocate(m * rows);
            _cpu.Write(xb, x.AsSpan(0, m * cols));
            _cpu.MatMul(y, w, xb, m);
            float[] got = new float[m * rows];
            _cpu.Read(y, got);
            for (int r = 0; r < m; r++)
            {
                double[] xr = type == DType.F16 && !_cpu.ExactQuantDots
                    ? CpuMatMulTests.RoundLikeF16Activations(x.AsSpan(r * cols, cols))
                    : x.AsSpan(r * cols, cols).ToArray().Select(v => (double)v).ToArray();
                for (int o = 0; o < rows; o++)
                {
                    double sum = 0, mag = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        sum += host.Values[o * cols + c] * xr[c];
                        mag += Math.Abs(host.Values[o * cols + c] * xr[c]);
                    }

                    Assert.True(Math.Abs(got[r * rows + o] - sum) <= 1e-5 * mag, $"{type} batch {m} row {r} output {o}: got {got[r * rows + o]}, want {sum}");
                }
            }
        }
    }
}
