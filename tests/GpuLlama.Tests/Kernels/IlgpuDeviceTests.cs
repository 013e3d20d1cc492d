using System.Runtime.InteropServices;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>One emulated accelerator (and a CPU device to compare with) for the whole class.</summary>
public sealed class EmulatedDeviceFixture : IDisposable
{
    public EmulatedDeviceFixture()
    {
        Provider = new IlgpuDeviceProvider();
        Device = Provider.Create("emulated:0");
        Cpu = new CpuDevice(2, exactQuantDots: true); // float32 activations throughout, as the GPU kernels compute
    }

    public IlgpuDeviceProvider Provider { get; }

    public IDevice Device { get; }

    public CpuDevice Cpu { get; }

    public void Dispose()
    {
        Device.Dispose();
        Cpu.Dispose();
    }
}

/// <summary>Host weight bytes in native memory, as a memory map would hold them.</summary>
internal sealed unsafe class HostWeight : IDisposable
{
    private readonly byte* _data;

    public HostWeight(string name, DType type, int rows, int cols, Func<int, float> value)
    {
        long count = (long)rows * cols;
        long bytes = type.RowBytes(cols) * rows;
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
        Values = new double[count];
        for (int i = 0; i < count; i++)
        {
            float v = value(i);
            switch (type)
            {
                case DType.F32:
                    ((float*)_data)[i] = v;
                    Values[i] = v;
                    break;
                case DType.F16:
                    ((Half*)_data)[i] = (Half)v;
                    Values[i] = (double)((Half*)_data)[i];
                    break;
                case DType.BF16:
                    ushort b = (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16);
                    ((ushort*)_data)[i] = b;
                    Values[i] = BitConverter.UInt32BitsToSingle((uint)b << 16);
                    break;
                default:
                    break;
            }
        }

        long[] shape = rows == 1 ? [cols] : [rows, cols];
        View = new WeightView(new TensorInfo(name, type, shape, 0, 0, bytes), _data);
    }

    /// <summary>A weight whose raw bytes are given (quantized types, bit patterns).</summary>
    public HostWeight(string name, DType type, int rows, int cols, byte[] raw)
    {
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(raw.Length, 1), 64);
        raw.CopyTo(new Span<byte>(_data, raw.Length));
        Values = [];
        long[] shape = rows == 1 ? [cols] : [rows, cols];
        View = new WeightView(new TensorInfo(name, type, shape, 0, 0, raw.Length), _data);
    }

    public WeightView View { get; }

    /// <summary>The stored values exactly, as double.</summary>
    public double[] Values { get; }

    public void Dispose() => NativeMemory.AlignedFree(_data);
}

public sealed class IlgpuDeviceTests : IClassFixture<EmulatedDeviceFixture>
{
    private readonly IDevice _d;
    private readonly CpuDevice _cpu;
    private readonly IlgpuDeviceProvider _provider;

    public IlgpuDeviceTests(EmulatedDeviceFixture fixture)
    {
        _d = fixture.Device;
        _cpu = fixture.Cpu;
        _provider = fixture.Provider;
    }

    private static float[] Random(int n, int seed, float scale = 1.0f) => KernelTestData.Uniform(n, seed, scale);

    private DeviceBuffer Buffer(float[] values)
    {
        DeviceBuffer b = _d.Allocate(values.Length);
        _d.Write(b, values);
        return b;
    }

    private float[] Get(DeviceBuffer b, int n)
    {
        var a = new float[n];
        _d.Read(b, a);
        return a;
    }

    /// <summary>|got - want| &lt;= tol * max(|want|, scale) element by element, with the index on failure.</summary>
    private static void Near(double[] want, float[] got, double tol, double[]? scale = null)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
        {
            double s = Math.Max(Math.Abs(want[i]), scale is null ? 1e-30 : scale[i]);
            double err = Math.Abs(got[i] - want[i]);
            Assert.True(err <= tol * s, $"element {i}: got {got[i]:R}, want {want[i]:R} (error {err / s:E2} relative)");
        }
    }

    [Fact]
    public void Provider_lists_the_emulated_device_and_names_the_others_on_a_bad_name()
    {
        IReadOnlyList<DeviceInfo> devices = _provider.Discover();
        DeviceInfo emu = Assert.Single(devices, d => d.Name == "emulated:0");
        Assert.Equal(DeviceKind.Emulated, emu.Kind);
        Assert.False(emu.FreeMemoryKnown);
        Assert.Equal(IlgpuDevice.EmulatedMemory, emu.TotalMemory);
        var e = Assert.Throws<GpuLlamaException>(() => _provider.Create("cuda:97"));
        Assert.Contains("cuda:97", e.Message);
        Assert.Contains("emulated:0", e.Message);
        Assert.Throws<GpuLlamaException>(() => _provider.Create($"emulated:{IlgpuDeviceProvider.EmulatedDevices}"));
        Assert.Equal("emulated:0", _d.Name);
        Assert.Equal(DeviceKind.Emulated, _d.Kind);
        Assert.Equal(_d.TotalMemory, _d.FreeMemory);
    }

    [Fact]
    public void Every_F16_bit_pattern_converts_like_System_Half()
    {
        var raw = new byte[65536 * 2];
        for (int i = 0; i < 65536; i++)
        {
            raw[2 * i] = (byte)i;
            raw[2 * i + 1] = (byte)(i >> 8);
        }

        using var host = new HostWeight("table", DType.F16, 1, 65536, raw);
        using DeviceWeight table = _d.Upload(host.View);
        using DeviceBuffer x = _d.Allocate(65536);
        _d.Embed(x, table, [0]);
        float[] got = Get(x, 65536);
        for (int i = 0; i < 65536; i++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            Assert.True(float.IsNaN(want) ? float.IsNaN(got[i]) : BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got[i]),
                $"half 0x{i:X4}: got {got[i]:R}, want {want:R}");
        }
    }

    [Fact]
    public void Upload_pads_to_256_bytes_and_counts_allocations()
    {
        long before = _d.AllocatedBytes;
        using var host = new HostWeight("w", DType.BF16, 3, 17, i => i);
        using DeviceWeight w = _d.Upload(host.View);
        Assert.Equal(256, _d.AllocatedBytes - before);
        Assert.Equal(256, IlgpuDevice.PaddedBytes(102));
        Assert.Equal(512, IlgpuDevice.PaddedBytes(257));
        using DeviceBuffer b = _d.Allocate(10);
        Assert.Equal(256 + 40, _d.AllocatedBytes - before);
    }

    [Fact]
    public void Write_Read_and_CopyFrom_move_the_right_floats()
    {
        float[] a = Random(29, 1);
        using DeviceBuffer b = Buffer(a);
        var part = new float[7];
        _d.Read(b, part, 5);
        Assert.Equal(a.AsSpan(5, 7).ToArray(), part);

        using DeviceBuffer c = _d.Allocate(29);
        _d.Write(c, a.AsSpan(0, 4), 20);
        _d.CopyFrom(c, 3, b, 10, 9);
        float[] got = Get(c, 29);
        Assert.Equal(a.AsSpan(10, 9).ToArray(), got.AsSpan(3, 9).ToArray());
        Assert.Equal(a.AsSpan(0, 4).ToArray(), got.AsSpan(20, 4).ToArray());
        Assert.Equal(0f, got[0]);

        // from the CPU backend's buffer, and from another accelerator
        using DeviceBuffer host = _cpu.Allocate(29);
        _cpu.Write(host, a);
        using DeviceBuffer d = _d.Allocate(29);
        _d.CopyFrom(d, 1, host, 2, 26);
        Assert.Equal(a.AsSpan(2, 26).ToArray(), Get(d, 29).AsSpan(1, 26).ToArray());

        using IDevice other = _provider.Create("emulated:0");
        using DeviceBuffer o = other.Allocate(29);
        other.Write(o, a);
        using DeviceBuffer e = _d.Allocate(29);
        _d.CopyFrom(e, 0, o, 4, 25);
        Assert.Equal(a.AsSpan(4, 25).ToArray(), Get(e, 29).AsSpan(0, 25).ToArray());

        // and the CPU backend reads ours
        using DeviceBuffer back = _cpu.Allocate(29);
        _cpu.CopyFrom(back, 0, b, 0, 29);
        var hostBack = new float[29];
        _cpu.Read(back, hostBack);
        Assert.Equal(a, hostBack);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void Embed_converts_table_rows(DType type)
    {
        const int dim = 37;
        float[] t = Random(5 * dim, 2);
        using var host = new HostWeight("token_embd.weight", type, 5, dim, i => t[i]);
        using DeviceWeight table = _d.Upload(host.View);
        using DeviceBuffer x = _d.Allocate(3 * dim);
        int[] tokens = [4, 0, 4];
        _d.Embed(x, table, tokens);
        float[] got = Get(x, 3 * dim);
        var want = new double[3 * dim];
        for (int r = 0; r < 3; r++)
        {
            for (int c = 0; c < dim; c++)
            {
                want[r * dim + c] = host.Values[tokens[r] * dim + c];
            }
        }

        Near(want, got, 0);
        var e = Assert.Throws<GpuLlamaException>(() => _d.Embed(x, table, [5]));
        Assert.Contains("token id 5", e.Message);
    }

    [Theory]
    [InlineData(DType.F32, 37)]
    [InlineData(DType.BF16, 64)]
    [InlineData(DType.F16, 5)]
    public void RmsNorm_matches_the_float64_reference(DType type, int dim)
    {
        const int rows = 3;
        float[] x = Random(rows * dim, 3, 4);
        using var host = new HostWeight("attn_norm.weight", type, 1, dim, i => 0.5f + i * 0.01f);
        using DeviceWeight w = _d.Upload(host.View);
        using DeviceBuffer xb = Buffer(x);
        using DeviceBuffer y = _d.Allocate(rows * dim);
        _d.RmsNorm(y, xb, w, rows, 1e-5f);
        var want = new double[rows * dim];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++)
            {
                ss += (double)x[r * dim + i] * x[r * dim + i];
            }

            double scale = 1 / Math.Sqrt(ss / dim + 1e-5);
            for (int i = 0; i < dim; i++)
            {
                want[r * dim + i] = x[r * dim + i] * scale * host.Values[i];
            }
        }

        Near(want, Get(y, rows * dim), 1e-5);

        // in place, as the forward pass may call it
        _d.RmsNorm(xb, xb, w, rows, 1e-5f);
        Near(want, Get(xb, rows * dim), 1e-5);
    }

    public static TheoryData<DType, int, int, int, bool> MatMulCases()
    {
        var data = new TheoryData<DType, int, int, int, bool>();
        foreach (DType t in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            data.Add(t, 5, 168, 1, false);  // GEMV: unrolled body and tail, a partial group of rows
            data.Add(t, 3, 64, 1, true);    // GEMV, fused residual add
            data.Add(t, 7, 40, 3, false);   // batched, one partial tile of activation rows
            data.Add(t, 2, 24, 9, true);    // batched, two tiles, accumulate
            data.Add(t, 3, 36, 2, false);   // row bytes not a multiple of 16 for 16-bit types: scalar fallback
            data.Add(t, 4, 13, 1, true);    // odd length: scalar fallback for every type
            data.Add(t, 21, 48, 37, false); // shared-memory GEMM (16-row tiles here): partial tiles of both kinds of rows, 3 steps
            data.Add(t, 16, 32, 16, true);  // shared-memory GEMM, one whole tile, accumulate
            data.Add(t, 5, 40, 17, false);  // 16+ rows but columns not a multiple of 16: the warp-per-row kernel
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMul_matches_the_float64_reference(DType type, int outRows, int cols, int rows, bool accumulate)
    {
        float[] wv = Random(outRows * cols, 4);
        float[] x = Random(rows * cols, 5, 3);
        float[] y0 = Random(rows * outRows, 6);
        using var host = new HostWeight("w", type, outRows, cols, i => wv[i]);
        using DeviceWeight w = _d.Upload(host.View);
        using DeviceBuffer xb = Buffer(x);
        using DeviceBuffer y = Buffer(y0);
        _d.MatMul(y, w, xb, rows, accumulate);
        var want = new double[rows * outRows];
        var scale = new double[rows * outRows];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < outRows; o++)
            {
                double sum = accumulate ? y0[r * outRows + o] : 0;
                double mag = Math.Abs(sum);
                for (int c = 0; c < cols; c++)
                {
                    double xv = x[r * cols + c]; // activations stay float32 for every weight type
                    double p = host.Values[o * cols + c] * xv;
                    sum += p;
                    mag += Math.Abs(p);
                }

                want[r * outRows + o] = sum;
                scale[r * outRows + o] = mag;
            }
        }

        Near(want, Get(y, rows * outRows), 1e-5, scale);
    }

    /// <summary>W · x for one activation row in float64, with the sum of |products| as the error scale.</summary>
    private static (double[] Want, double[] Scale) Reference(HostWeight w, int outRows, int cols, float[] x)
    {
        var want = new double[outRows];
        var scale = new double[outRows];
        for (int o = 0; o < outRows; o++)
        {
            for (int c = 0; c < cols; c++)
            {
                double p = w.Values[o * cols + c] * x[c];
                want[o] += p;
                scale[o] += Math.Abs(p);
            }
        }

        return (want, scale);
    }

    [Theory]
    [InlineData(DType.F32, 168, 1)]   // fused: one launch over 7 + 3 + 3 rows, unrolled body and tail
    [InlineData(DType.BF16, 168, 1)]
    [InlineData(DType.F16, 64, 1)]
    [InlineData(DType.BF16, 40, 3)]   // a batch: three separate matmuls
    [InlineData(DType.F16, 36, 1)]    // rows not a multiple of 16 bytes: separate scalar matmuls
    public void MatMul3_gives_three_projections_of_one_input(DType type, int cols, int rows)
    {
        int[] outs = [7, 3, 3];
        float[] x = Random(rows * cols, 11, 3);
        var hosts = new HostWeight[3];
        var weights = new DeviceWeight[3];
        var ys = new DeviceBuffer[3];
        for (int i = 0; i < 3; i++)
        {
            float[] wv = Random(outs[i] * cols, 12 + i);
            hosts[i] = new HostWeight("w" + i, type, outs[i], cols, j => wv[j]);
            weights[i] = _d.Upload(hosts[i].View);
            ys[i] = Buffer(Random(rows * outs[i], 20 + i)); // overwritten, not accumulated
        }

        using DeviceBuffer xb = Buffer(x);
        _d.MatMul3(ys[0], weights[0], ys[1], weights[1], ys[2], weights[2], xb, rows);
        for (int i = 0; i < 3; i++)
        {
            float[] got = Get(ys[i], rows * outs[i]);
            for (int r = 0; r < rows; r++)
            {
                var (want, scale) = Reference(hosts[i], outs[i], cols, x[(r * cols)..((r + 1) * cols)]);
                Near(want, got[(r * outs[i])..((r + 1) * outs[i])], 1e-5, scale);
            }

            ys[i].Dispose();
            weights[i].Dispose();
            hosts[i].Dispose();
        }
    }

    [Theory]
    [InlineData(DType.F32, 168, 1)]   // fused gate·x, up·x and SwiGLU in one launch
    [InlineData(DType.BF16, 168, 1)]
    [InlineData(DType.F16, 64, 1)]
    [InlineData(DType.F16, 40, 2)]    // a batch: matmuls then SwiGLU
    [InlineData(DType.BF16, 12, 1)]   // rows not a multiple of 16 bytes
    public void MatMulSwiGlu_is_silu_of_gate_times_up(DType type, int cols, int rows)
    {
        const int hidden = 9;
        float[] gv = Random(hidden * cols, 31);
        float[] uv = Random(hidden * cols, 32);
        float[] x = Random(rows * cols, 33, 2);
        using var gh = new HostWeight("gate", type, hidden, cols, i => gv[i]);
        using var uh = new HostWeight("up", type, hidden, cols, i => uv[i]);
        using DeviceWeight g = _d.Upload(gh.View);
        using DeviceWeight u = _d.Upload(uh.View);
        using DeviceBuffer xb = Buffer(x);
        using DeviceBuffer y = _d.Allocate(rows * hidden);
        using DeviceBuffer scratch = _d.Allocate(rows * hidden);
        _d.MatMulSwiGlu(y, g, u, xb, rows, scratch);
        float[] got = Get(y, rows * hidden);
        for (int r = 0; r < rows; r++)
        {
            var (want, scale) = SwiGluReference(gh, uh, hidden, cols, x[(r * cols)..((r + 1) * cols)]);
            Near(want, got[(r * hidden)..((r + 1) * hidden)], 1e-5, scale);
        }
    }

    /// <summary>silu(G · x) * (U · x) in float64, with its error scale: d(silu·u) = silu'·u·dg + silu·du, |silu'| &lt;= 1.1.</summary>
    private static (double[] Want, double[] Scale) SwiGluReference(HostWeight gh, HostWeight uh, int hidden, int cols, float[] x)
    {
        var (gw, gs) = Reference(gh, hidden, cols, x);
        var (uw, us) = Reference(uh, hidden, cols, x);
        var want = new double[hidden];
        var scale = new double[hidden];
        for (int i = 0; i < hidden; i++)
        {
            double silu = gw[i] / (1 + Math.Exp(-gw[i]));
            want[i] = silu * uw[i];
            scale[i] = 1.1 * Math.Abs(uw[i]) * gs[i] + Math.Abs(silu) * us[i];
        }

        return (want, scale);
    }

    /// <summary>RmsNorm(x) ⊙ g in float64, as NormKernels.RmsNorm defines it.</summary>
    private static float[] NormReference(float[] x, HostWeight g, float eps)
    {
        double ss = x.Sum(v => (double)v * v);
        double inv = 1 / Math.Sqrt(ss / x.Length + eps);
        return [.. x.Select((v, i) => (float)(v * inv * g.Values[i]))];
    }

    [Theory]
    [InlineData(DType.BF16, DType.F32, 168)]   // fused: norm, Q, K and V in one launch (unrolled body and tail)
    [InlineData(DType.F16, DType.BF16, 64)]    // a 16-bit norm weight (Hugging Face checkpoints)
    [InlineData(DType.F16, DType.F16, 168)]
    [InlineData(DType.F32, DType.F32, 64)]     // F32 weights: the norm, then the fused projections
    public void NormMatMul3_is_the_projections_of_the_normalized_input(DType type, DType normType, int cols)
    {
        int[] outs = [7, 3, 3];
        const float eps = 1e-5f;
        float[] x = Random(cols, 41, 3);
        float[] gv = Random(cols, 42, 2);
        using var gh = new HostWeight("norm", normType, 1, cols, i => gv[i]);
        using DeviceWeight g = _d.Upload(gh.View);
        float[] xn = NormReference(x, gh, eps);
        var hosts = new HostWeight[3];
        var weights = new DeviceWeight[3];
        var ys = new DeviceBuffer[3];
        for (int i = 0; i < 3; i++)
        {
            float[] wv = Random(outs[i] * cols, 43 + i);
            hosts[i] = new HostWeight("w" + i, type, outs[i], cols, j => wv[j]);
            weights[i] = _d.Upload(hosts[i].View);
            ys[i] = _d.Allocate(outs[i]);
        }

        using DeviceBuffer xb = Buffer(x);
        using DeviceBuffer normed = Buffer(Enumerable.Repeat(float.NaN, cols).ToArray());
        _d.NormMatMul3(ys[0], weights[0], ys[1], weights[1], ys[2], weights[2], xb, g, eps, 1, normed);
        for (int i = 0; i < 3; i++)
        {
            var (want, scale) = Reference(hosts[i], outs[i], cols, xn);
            Near(want, Get(ys[i], outs[i]), 1e-5, scale);
            ys[i].Dispose();
            weights[i].Dispose();
            hosts[i].Dispose();
        }

        // the fused kernel never writes the normalized row; the unfused path does
        Assert.Equal(type != DType.F32, float.IsNaN(Get(normed, cols)[0]));
    }

    [Theory]
    [InlineData(DType.BF16, DType.F32, 168, 1)]   // fused: norm, gate, up and SwiGLU in one launch
    [InlineData(DType.F16, DType.BF16, 64, 1)]
    [InlineData(DType.BF16, DType.F32, 64, 2)]    // a batch: the norm, then the batched products
    public void NormMatMulSwiGlu_is_silu_of_gate_times_up_of_the_normalized_input(DType type, DType normType, int cols, int rows)
    {
        const int hidden = 9;
        const float eps = 1e-6f;
        float[] gv = Random(hidden * cols, 51);
        float[] uv = Random(hidden * cols, 52);
        float[] x = Random(rows * cols, 53, 2);
        float[] nv = Random(cols, 54, 2);
        using var gh = new HostWeight("gate", type, hidden, cols, i => gv[i]);
        using var uh = new HostWeight("up", type, hidden, cols, i => uv[i]);
        using var nh = new HostWeight("norm", normType, 1, cols, i => nv[i]);
        using DeviceWeight g = _d.Upload(gh.View);
        using DeviceWeight u = _d.Upload(uh.View);
        using DeviceWeight norm = _d.Upload(nh.View);
        using DeviceBuffer xb = Buffer(x);
        using DeviceBuffer normed = _d.Allocate(rows * cols);
        using DeviceBuffer y = _d.Allocate(rows * hidden);
        using DeviceBuffer scratch = _d.Allocate(rows * hidden);
        _d.NormMatMulSwiGlu(y, g, u, xb, norm, eps, rows, normed, scratch);
        float[] got = Get(y, rows * hidden);
        for (int r = 0; r < rows; r++)
        {
            var (want, scale) = SwiGluReference(gh, uh, hidden, cols, NormReference(x[(r * cols)..((r + 1) * cols)], nh, eps));
            Near(want, got[(r * hidden)..((r + 1) * hidden)], 1e-5, scale);
        }
    }

    [Theory]
    [InlineData(KvCacheType.F32, KvCacheType.F16, RopeStyle.Interleaved, 1)]   // fused: one launch rotates q and k and stores k and v
    [InlineData(KvCacheType.BF16, KvCacheType.F32, RopeStyle.Halves, 3)]
    [InlineData(KvCacheType.F16, KvCacheType.F16, RopeStyle.Halves, 2)]
    [InlineData(KvCacheType.Q8_0, KvCacheType.F16, RopeStyle.Interleaved, 1)] // a quantized cache: Rope, then StoreKv
    public void RopeStoreKv_stores_what_Rope_then_StoreKv_store(KvCacheType kType, KvCacheType vType, RopeStyle style, int rows)
    {
        var shape = new AttentionShape(4, 2, 32, style);
        const int position = 3, capacity = 8;
        float[] table = RopeTable.Build(new ModelConfig { Dim = 128, HiddenDim = 8, Layers = 1, Heads = 4, KvHeads = 2, HeadDim = 32, VocabSize = 4, ContextLength = capacity, RopeStyle = style }, capacity);
        float[] q = Random(rows * shape.QDim, 61);
        float[] k = Random(rows * shape.KvDim, 62);
        float[] v = Random(rows * shape.KvDim, 63);
        (float[] Q, float[] K, float[] V) Run(IDevice d)
        {
            using DeviceBuffer qb = d.Allocate(q.Length), kb = d.Allocate(k.Length), vb = d.Allocate(v.Length), tb = d.Allocate(table.Length);
            d.Write(qb, q);
            d.Write(kb, k);
            d.Write(vb, v);
            d.Write(tb, table);
            using KvCacheLayer kv = d.AllocateKv(capacity, shape.KvDim, kType, vType);
            if (ReferenceEquals(d, _cpu))
            {
                d.Rope(qb, kb, tb, position, rows, shape);
                d.StoreKv(kv, kb, vb, position, rows);
            }
            else
            {
                d.RopeStoreKv(qb, kb, vb, tb, kv, position, rows, shape);
            }

            using DeviceBuffer rk = d.Allocate(k.Length), rv = d.Allocate(v.Length);
            d.ReadKv(kv, rk, rv, position, rows);
            var result = (new float[q.Length], new float[k.Length], new float[v.Length]);
            d.Read(qb, result.Item1);
            d.Read(rk, result.Item2);
            d.Read(rv, result.Item3);
            return result;
        }

        var want = Run(_cpu);
        var got = Run(_d);
        Near([.. want.Q.Select(x => (double)x)], got.Q, 1e-6);
        // the caches hold the same rounded values (a rotated key may differ by an ulp before rounding: one step of its type)
        double step = kType switch { KvCacheType.F32 => 1e-6, KvCacheType.BF16 => 8e-3, KvCacheType.F16 => 1e-3, _ => 2e-2 };
        Near([.. want.K.Select(x => (double)x)], got.K, step, [.. want.K.Select(_ => 1.0)]);
        Near([.. want.V.Select(x => (double)x)], got.V, 0);
    }

    [Theory]
    [InlineData(RopeStyle.Interleaved)]
    [InlineData(RopeStyle.Halves)]
    public void Rope_rotates_q_and_k_with_the_table(RopeStyle style)
    {
        var shape = new AttentionShape(4, 2, 6, style);
        const int rows = 2, position = 3, positions = 9;
        int half = shape.HeadDim / 2;
        var table = new float[positions * half * 2];
        for (int p = 0; p < positions; p++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = p * Math.Pow(10000, -2.0 * i / shape.HeadDim);
                table[(p * half + i) * 2] = (float)Math.Cos(angle);
                table[(p * half + i) * 2 + 1] = (float)Math.Sin(angle);
            }
        }

        float[] q = Random(rows * shape.QDim, 7);
        float[] k = Random(rows * shape.KvDim, 8);
        using DeviceBuffer qb = Buffer(q);
        using DeviceBuffer kb = Buffer(k);
        using DeviceBuffer tb = Buffer(table);
        _d.Rope(qb, kb, tb, position, rows, shape);

        double[] Expect(float[] v, int heads)
        {
            var o = new double[v.Length];
            int width = heads * shape.HeadDim;
            for (int r = 0; r < rows; r++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int b = r * width + h * shape.HeadDim;
                    for (int i = 0; i < half; i++)
                    {
                        double c = table[((position + r) * half + i) * 2];
                        double s = table[((position + r) * half + i) * 2 + 1];
                        int ia = style == RopeStyle.Interleaved ? 2 * i : i;
                        int ib = style == RopeStyle.Interleaved ? 2 * i + 1 : i + half;
                        o[b + ia] = v[b + ia] * c - v[b + ib] * s;
                        o[b + ib] = v[b + ia] * s + v[b + ib] * c;
                    }
                }
            }

            return o;
        }

        Near(Expect(q, shape.Heads), Get(qb, q.Length), 1e-6, Enumerable.Repeat(1.0, q.Length).ToArray());
        Near(Expect(k, shape.KvHeads), Get(kb, k.Length), 1e-6, Enumerable.Repeat(1.0, k.Length).ToArray());
    }

    [Theory]
    [InlineData(4, 2, 6, 9, 5, 3, false)]   // GQA 2:1, one chunk of keys, scalar key loads
    [InlineData(3, 3, 8, 9, 0, 2, false)]   // plain MHA from position 0
    [InlineData(2, 1, 4, 37, 30, 2, false)] // context longer than a group: several online-softmax chunks
    [InlineData(4, 2, 8, 70, 62, 3, true)]  // split keys (flash-decoding) with an empty last split for row 0
    [InlineData(2, 2, 6, 40, 39, 1, true)]  // decode, split, scalar key loads
    [InlineData(4, 2, 16, 37, 30, 2, false, KvCacheType.F16, KvCacheType.F16)]  // 16-bit caches: 16-byte key loads of 8 values
    [InlineData(4, 2, 8, 70, 62, 3, true, KvCacheType.BF16, KvCacheType.F16)]  // split, one 8-value load per key
    [InlineData(2, 2, 6, 9, 5, 3, false, KvCacheType.F16, KvCacheType.BF16)]   // scalar 16-bit key loads
    [InlineData(3, 3, 8, 9, 0, 2, false, KvCacheType.F32, KvCacheType.F16)]
    [InlineData(4, 2, 32, 37, 30, 2, false, KvCacheType.Q8_0, KvCacheType.Q8_0)]  // quantized: a block per key load pair
    [InlineData(4, 2, 64, 70, 62, 3, true, KvCacheType.Q4_0, KvCacheType.Q8_0)]   // split, two blocks a head
    [InlineData(2, 2, 32, 9, 5, 3, false, KvCacheType.Q8_0, KvCacheType.F16)]
    [InlineData(3, 3, 96, 9, 0, 2, false, KvCacheType.F16, KvCacheType.Q4_0)]     // three blocks a head, quantized values
    [InlineData(2, 1, 32, 40, 39, 1, true, KvCacheType.Q4_0, KvCacheType.Q4_0)]   // decode, split
    // decode rows on the one-row kernel (the emulator's 4-lane warps: 16 values a lane group, 32 at most)
    [InlineData(4, 2, 8, 9, 5, 1, false)]                                         // a head narrower than the warp's 16 values
    [InlineData(2, 1, 16, 37, 36, 1, false, KvCacheType.F16, KvCacheType.BF16)]  // several chunks of keys, GQA
    [InlineData(4, 1, 32, 70, 69, 1, true, KvCacheType.BF16, KvCacheType.F32)]   // two 4-value groups a lane, split keys
    [InlineData(2, 2, 32, 70, 63, 1, true, KvCacheType.Q8_0, KvCacheType.Q4_0)]  // quantized caches, split
    [InlineData(2, 1, 32, 37, 20, 1, false, KvCacheType.Q4_0, KvCacheType.Q8_0)]
    [InlineData(3, 3, 12, 9, 0, 1, false)]                                        // position 0: one key
    public void Attention_matches_the_float64_reference(int heads, int kvHeads, int headDim, int capacity, int position, int rows, bool split,
        KvCacheType kType = KvCacheType.F32, KvCacheType vType = KvCacheType.F32)
    {
        var device = (IlgpuDevice)_d;
        int parallelism = device.AttentionParallelism;
        device.AttentionParallelism = split ? 1000 : 1;
        try
        {
            CheckAttention(heads, kvHeads, headDim, capacity, position, rows, kType, vType);
        }
        finally
        {
            device.AttentionParallelism = parallelism;
        }
    }

    private void CheckAttention(int heads, int kvHeads, int headDim, int capacity, int position, int rows, KvCacheType kType, KvCacheType vType)
    {
        var shape = new AttentionShape(heads, kvHeads, headDim, RopeStyle.Interleaved);
        int kvDim = shape.KvDim;
        float[] keys = Random(capacity * kvDim, 9, 2);
        float[] values = Random(capacity * kvDim, 10);
        float[] q = Random(rows * shape.QDim, 11, 2);
        using KvCacheLayer kv = _d.AllocateKv(capacity, kvDim, kType, vType);

        // fill 0..position-1 in one call and the new rows in another, as prompt then decode would
        using DeviceBuffer k0 = Buffer(keys.AsSpan(0, position * kvDim).ToArray());
        using DeviceBuffer v0 = Buffer(values.AsSpan(0, position * kvDim).ToArray());
        _d.StoreKv(kv, k0, v0, 0, position);
        using DeviceBuffer k1 = Buffer(keys.AsSpan(position * kvDim, rows * kvDim).ToArray());
        using DeviceBuffer v1 = Buffer(values.AsSpan(position * kvDim, rows * kvDim).ToArray());
        _d.StoreKv(kv, k1, v1, position, rows);

        using DeviceBuffer qb = Buffer(q);
        using DeviceBuffer dst = _d.Allocate(rows * shape.QDim);
        _d.Attention(dst, qb, kv, position, rows, shape);

        double[] want = KernelTestData.ReferenceAttention(q, KernelTestData.Round(keys, kType), KernelTestData.Round(values, vType), position, rows, shape);
        Near(want, Get(dst, want.Length), 1e-5, Enumerable.Repeat(1.0, want.Length).ToArray());
        var e = Assert.Throws<GpuLlamaException>(() => _d.StoreKv(kv, k1, v1, capacity - 1, 2));
        Assert.Contains("KV cache overflow", e.Message);
    }

    /// <summary>
    /// The cache's rounding, read back through attention over one position (whose output is that position's values,
    /// weight exactly 1): the emulated kernels round as the CPU device and the float64 definition do — ties to even,
    /// subnormals, the largest finite value, overflow to infinity (not -0: the sum that reads it back makes it +0).
    /// </summary>
    [Theory]
    [InlineData(KvCacheType.F16)]
    [InlineData(KvCacheType.BF16)]
    public void Cached_values_are_rounded_to_nearest_even_on_every_device(KvCacheType type)
    {
        float[] edge =
        [
            1f + MathF.Pow(2, -11), 1f + 3 * MathF.Pow(2, -11), 1f + MathF.Pow(2, -8), 1f + 3 * MathF.Pow(2, -8), -1f - MathF.Pow(2, -9),
            65504f, 65519f, 65520f, -1e6f, 1e-5f, -3e-7f, MathF.Pow(2, -25), 3 * MathF.Pow(2, -25), 6e-8f, 0f, 0.1f,
            3.4e38f, 1e-40f, 12345.678f, -0.33333334f,
        ];
        foreach (IDevice d in new IDevice[] { _d, _cpu })
        {
            float[] got = ReadBack(d, edge, type);
            for (int i = 0; i < edge.Length; i++)
            {
                float want = KernelTestData.Round(edge[i], type);
                Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[i]), $"{d.Name} {type}: {edge[i]:R} stored as {got[i]:R}, want {want:R}");
            }
        }
    }

    /// <summary>
    /// Q8_0 and Q4_0 caches, read back as above: each block stores as llama.cpp's CPU backend stores a cache row
    /// (<see cref="KernelTestData.Round(float[], KvCacheType)"/>), bit for bit on both devices — a block of zeros (scale
    /// 0), rounding ties (Q8_0: to even; Q4_0: up), the first of two opposite maxima setting Q4_0's sign, a largest
    /// value that is negative or positive, and a scale that is an F16 subnormal.
    /// </summary>
    [Theory]
    [InlineData(KvCacheType.Q8_0)]
    [InlineData(KvCacheType.Q4_0)]
    public void Quantized_caches_store_blocks_as_llama_cpp_does_on_every_device(KvCacheType type)
    {
        float[] edge = new float[6 * 32];
        float[] ties = [127f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 126.5f, -8f, 7.5f, -7.5f, 1.5f];
        float[] q4 = [-8f, -0.5f, 0.5f, 7.5f, 8f, -7.5f, 3.25f, 1.5f, -1.5f, 6.5f];
        float[] opposite = [-5f, 5f, 4.9f, -2.6f, 0.3125f, 1.25f];
        float[] positive = [8f, -8f, 0.75f, -3f, 4.5f];
        ties.CopyTo(edge, 32);
        q4.CopyTo(edge, 64);
        opposite.CopyTo(edge, 96);
        positive.CopyTo(edge, 128);
        for (int j = 0; j < 21; j++)
        {
            edge[43 + j] = (j - 10) * 0.37f;
        }

        for (int j = 0; j < 32; j++)
        {
            edge[160 + j] = (j - 15) * 6e-6f; // max |x| 9.6e-5: a scale (7.6e-7, 1.2e-5) below F16's smallest normal 6.1e-5
        }

        float[] want = KernelTestData.Round(edge, type);
        // the reference's own edges: Q8_0's scale 1 rounds 2.5 and 3.5 to even; Q4_0's scale -8/-8 = 1 rounds -0.5 and
        // 0.5 up and clamps 8 to 7, and a positive maximum 8 gives the scale -1 (8 stays 8, -8 clamps to -7)
        if (type == KvCacheType.Q8_0)
        {
            Assert.Equal(new[] { 2f, 4f, -2f }, new[] { want[33], want[34], want[35] });
        }
        else
        {
            Assert.Equal(new[] { 0f, 1f, 7f, 8f, -7f }, new[] { want[65] + 0f, want[66], want[67], want[128], want[129] });
        }

        Assert.Contains(want.AsSpan(160).ToArray(), x => x != 0); // the subnormal scale is there, not flushed to 0
        Assert.Equal(6 * (type == KvCacheType.Q8_0 ? 34 : 18), type.RowBytes(edge.Length)); // ggml's block sizes
        foreach (IDevice d in new IDevice[] { _d, _cpu })
        {
            float[] got = ReadBack(d, edge, type);
            for (int i = 0; i < edge.Length; i++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(want[i] + 0f) == BitConverter.SingleToInt32Bits(got[i] + 0f),
                    $"{d.Name} {type}: value {i} ({edge[i]:R}) stored as {got[i]:R}, want {want[i]:R}");
            }
        }
    }

    /// <summary>
    /// <paramref name="values"/> stored as the values of a one-position cache of <paramref name="type"/> on
    /// <paramref name="d"/> (keys and q zero) and read back through attention, whose one weight is exactly 1; ReadKv
    /// (a context shift's read) gives the same values and the zero keys.
    /// </summary>
    private static float[] ReadBack(IDevice d, float[] values, KvCacheType type)
    {
        var shape = new AttentionShape(1, 1, values.Length, RopeStyle.Halves);
        using KvCacheLayer kv = d.AllocateKv(1, values.Length, type, type);
        Assert.Equal(2 * type.RowBytes(values.Length), kv.Bytes);
        using DeviceBuffer k = d.Allocate(values.Length), v = d.Allocate(values.Length), q = d.Allocate(values.Length), o = d.Allocate(values.Length);
        d.Write(k, new float[values.Length]);
        d.Write(q, new float[values.Length]);
        d.Write(v, values);
        d.StoreKv(kv, k, v, 0, 1);
        d.Attention(o, q, kv, 0, 1, shape);
        float[] got = new float[values.Length];
        d.Read(o, got);
        using DeviceBuffer rk = d.Allocate(values.Length), rv = d.Allocate(values.Length);
        d.ReadKv(kv, rk, rv, 0, 1);
        float[] keys = new float[values.Length], read = new float[values.Length];
        d.Read(rk, keys);
        d.Read(rv, read);
        Assert.All(keys, x => Assert.Equal(0f, x + 0f));
        Assert.Equal(got.Select(x => x + 0f), read.Select(x => x + 0f));
        return got;
    }

    [Fact]
    public void SwiGlu_and_Add_match_the_reference()
    {
        float[] g = Random(37, 12, 6);
        float[] u = Random(37, 13);
        using DeviceBuffer gb = Buffer(g);
        using DeviceBuffer ub = Buffer(u);
        _d.SwiGlu(gb, ub, 33);
        var want = new double[37];
        for (int i = 0; i < 37; i++)
        {
            want[i] = i < 33 ? g[i] / (1 + Math.Exp(-(double)g[i])) * u[i] : g[i];
        }

        Near(want, Get(gb, 37), 1e-5, Enumerable.Repeat(1e-3, 37).ToArray());

        using DeviceBuffer a = Buffer(g);
        _d.Add(a, ub, 35);
        Near(g.Select((v, i) => i < 35 ? (double)(v + u[i]) : v).ToArray(), Get(a, 37), 0);
    }

    [Fact]
    public void Shape_mistakes_throw_before_a_kernel_can_read_out_of_bounds()
    {
        using var host = new HostWeight("w", DType.BF16, 4, 16, i => i);
        using DeviceWeight w = _d.Upload(host.View);
        using DeviceBuffer x = _d.Allocate(32);
        using DeviceBuffer small = _d.Allocate(7);
        Assert.Throws<ArgumentException>(() => _d.MatMul(small, w, x, 2));
        Assert.Throws<ArgumentException>(() => _d.MatMul(x, w, small, 1));
        Assert.Throws<ArgumentException>(() => _d.Argmax(small, 3, 5));
        Assert.Throws<ArgumentException>(() => _d.Add(small, x, 8));
        Assert.Throws<ArgumentException>(() => _d.Write(small, new float[5], 3));
        Assert.Throws<ArgumentException>(() => _d.Read(small, new float[8]));
        Assert.Throws<ArgumentException>(() => _d.CopyFrom(small, 0, x, 30, 3));
        var shape = new AttentionShape(2, 1, 4, RopeStyle.Interleaved);
        Assert.Throws<ArgumentException>(() => _d.Rope(x, x, small, 1, 1, shape)); // 7 floats: one position of head dim 4
        using KvCacheLayer kv = _d.AllocateKv(4, 8);
        Assert.Throws<ArgumentException>(() => _d.Attention(x, x, kv, 0, 1, shape)); // cache rows of 8, shape says 4
    }

    [Fact]
    public void Argmax_finds_the_first_of_equal_maxima()
    {
        float[] x = Random(53, 14);
        x[20] = 7;
        x[41] = 7;
        x[50] = 9; // outside the searched range
        using DeviceBuffer b = Buffer(x);
        Assert.Equal(17, _d.Argmax(b, 3, 45));
        Assert.Equal(47, _d.Argmax(b, 3, 48));
        Assert.Equal(0, _d.Argmax(b, 41, 5));
        using DeviceBuffer flat = Buffer(new float[40]);
        Assert.Equal(0, _d.Argmax(flat, 0, 40));
        float[] neg = Enumerable.Repeat(float.NegativeInfinity, 30).ToArray();
        neg[29] = -1e30f;
        using DeviceBuffer nb = Buffer(neg);
        Assert.Equal(29, _d.Argmax(nb, 0, 30));
    }

    [Theory]
    [InlineData(DType.BF16, RopeStyle.Interleaved)]
    [InlineData(DType.F16, RopeStyle.Halves)]
    [InlineData(DType.F32, RopeStyle.Interleaved)]
    public void A_tiny_layer_matches_the_CPU_backend(DType type, RopeStyle style)
    {
        const int dim = 32, ff = 48, vocab = 11, capacity = 9;
        var shape = new AttentionShape(4, 2, 8, style);
        var hosts = new List<HostWeight>();
        HostWeight Make(string name, int rows, int cols, int seed, float scale)
        {
            float[] v = Random(rows * cols, seed, scale);
            var h = new HostWeight(name, type, rows, cols, i => v[i]);
            hosts.Add(h);
            return h;
        }

        HostWeight embd = Make("token_embd.weight", vocab, dim, 20, 1);
        HostWeight norm = Make("attn_norm.weight", 1, dim, 21, 1);
        HostWeight wq = Make("attn_q.weight", shape.QDim, dim, 22, 0.3f);
        HostWeight wk = Make("attn_k.weight", shape.KvDim, dim, 23, 0.3f);
        HostWeight wv = Make("attn_v.weight", shape.KvDim, dim, 24, 0.3f);
        HostWeight wo = Make("attn_output.weight", dim, shape.QDim, 25, 0.3f);
        HostWeight wg = Make("ffn_gate.weight", ff, dim, 26, 0.3f);
        HostWeight wu = Make("ffn_up.weight", ff, dim, 27, 0.3f);
        HostWeight wd = Make("ffn_down.weight", dim, ff, 28, 0.3f);
        HostWeight outw = Make("output.weight", vocab, dim, 29, 1);
        var table = new float[capacity * shape.HeadDim];
        for (int p = 0; p < capacity; p++)
        {
            for (int i = 0; i < shape.HeadDim / 2; i++)
            {
                double angle = p * Math.Pow(10000, -2.0 * i / shape.HeadDim);
                table[(p * shape.HeadDim / 2 + i) * 2] = (float)Math.Cos(angle);
                table[(p * shape.HeadDim / 2 + i) * 2 + 1] = (float)Math.Sin(angle);
            }
        }

        try
        {
            int[] prompt = [3, 7, 1, 9, 2];
            (float[] Logits, int Next) Run(IDevice d)
            {
                var weights = new[] { embd, norm, wq, wk, wv, wo, wg, wu, wd, outw }.Select(h => d.Upload(h.View)).ToArray();
                var buffers = new List<DeviceBuffer>();
                DeviceBuffer A(int n)
                {
                    DeviceBuffer b = d.Allocate(n);
                    buffers.Add(b);
                    return b;
                }

                int rows = prompt.Length;
                DeviceBuffer x = A(rows * dim), xn = A(rows * dim), q = A(rows * shape.QDim), k = A(rows * shape.KvDim),
                    v = A(rows * shape.KvDim), att = A(rows * shape.QDim), g = A(rows * ff), u = A(rows * ff),
                    logits = A(rows * vocab), ropeTable = A(table.Length);
                d.Write(ropeTable, table);
                using KvCacheLayer kv = d.AllocateKv(capacity, shape.KvDim);
                d.Embed(x, weights[0], prompt);
                d.RmsNorm(xn, x, weights[1], rows, 1e-5f);
                d.MatMul(q, weights[2], xn, rows);
                d.MatMul(k, weights[3], xn, rows);
                d.MatMul(v, weights[4], xn, rows);
                d.Rope(q, k, ropeTable, 0, rows, shape);
                d.StoreKv(kv, k, v, 0, rows);
                d.Attention(att, q, kv, 0, rows, shape);
                d.MatMul(x, weights[5], att, rows, accumulate: true);
                d.RmsNorm(xn, x, weights[1], rows, 1e-5f);
                d.MatMul(g, weights[6], xn, rows);
                d.MatMul(u, weights[7], xn, rows);
                d.SwiGlu(g, u, rows * ff);
                d.MatMul(x, weights[8], g, rows, accumulate: true);
                d.Add(x, xn, rows * dim);
                d.MatMul(logits, weights[9], x, rows);
                var result = new float[rows * vocab];
                d.Read(logits, result);
                int next = d.Argmax(logits, (rows - 1) * vocab, vocab);
                foreach (DeviceBuffer b in buffers)
                {
                    b.Dispose();
                }

                foreach (DeviceWeight w in weights)
                {
                    w.Dispose();
                }

                return (result, next);
            }

            (float[] want, int wantNext) = Run(_cpu);
            (float[] got, int gotNext) = Run(_d);
            double max = want.Max(Math.Abs);
            for (int i = 0; i < want.Length; i++)
            {
                Assert.True(Math.Abs(got[i] - want[i]) <= 1e-4 * max, $"logit {i}: {got[i]} vs CPU {want[i]}");
            }

            Assert.Equal(wantNext, gotNext);
        }
        finally
        {
            foreach (HostWeight h in hosts)
            {
                h.Dispose();
            }
        }
    }
}
