using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuLlama;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using GpuLlama.Model;

namespace GpuLlama.GpuProbe;

/// <summary>
/// gpuprobe [device]: correctness of every op against float64 references (max relative error per op), then timings.
/// Bandwidth numbers count bytes of weights read once per call; the roofline is a device-to-device copy counting
/// read + write bytes (MemoryProbe.MeasureDeviceCopy), so GEMV efficiency = GEMV GB/s / copy GB/s.
/// </summary>
public static unsafe class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "forward")
        {
            // gpuprobe forward MODEL [device] [tokens]
            ForwardProfile.Run(args[1], args.Length > 2 ? args[2] : "cuda:0", args.Length > 3 ? int.Parse(args[3]) : 32);
            return 0;
        }

        string name = args.Length > 0 ? args[0] : "cuda:0";
        try
        {
            var provider = new IlgpuDeviceProvider();
            foreach (DeviceInfo info in provider.Discover())
            {
                Console.WriteLine($"found {info.Name,-12} {info.Kind,-9} {info.TotalMemory >> 20,8} MiB total, {(info.FreeMemoryKnown ? $"{info.FreeMemory >> 20} MiB free" : "free unknown")}  {info.Description}");
            }

            using IDevice d = provider.Create(name);
            Console.WriteLine($"device {d.Name}: {d.Description}");
            bool small = d.Kind == DeviceKind.Emulated;
            new Probe(d, small).Run();
            return 0;
        }
        catch (GpuLlamaException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}

internal sealed unsafe class Probe(IDevice d, bool small)
{
    private readonly Random _random = new(42);

    public void Run()
    {
        Console.WriteLine();
        Console.WriteLine("op                                   max rel error");
        Check("embed F16", CheckEmbed(DType.F16));
        Check("embed BF16", CheckEmbed(DType.BF16));
        Check("rmsnorm F32", CheckRmsNorm());
        foreach (DType t in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            int cols = small ? 72 : 4096;
            int outRows = small ? 5 : 1027;
            Check($"matmul {t} gemv", CheckMatMul(t, outRows, cols, 1, true));
            Check($"matmul {t} batched x{(small ? 3 : 13)}", CheckMatMul(t, outRows, cols, small ? 3 : 13, false));
            Check($"matmul {t} scalar fallback", CheckMatMul(t, outRows, cols - (t == DType.F32 ? 1 : 4), 2, true));
        }

        Check("rope interleaved", CheckRope(RopeStyle.Interleaved));
        Check("rope halves", CheckRope(RopeStyle.Halves));
        Check($"attention ctx {(small ? 20 : 600)}", CheckAttention(small ? 20 : 600));
        Check("swiglu", CheckSwiGlu());
        Check("argmax (0 = exact)", CheckArgmax());

        if (small)
        {
            Console.WriteLine("(emulated device: timings skipped, they measure the host)");
            return;
        }

        Console.WriteLine();
        double copy = MemoryProbe.MeasureDeviceCopy(d);
        Console.WriteLine($"device copy (read+write)             {copy / 1e9,8:F0} GB/s   <- roofline");
        Console.WriteLine($"launch overhead (Add, 1 float)        {LaunchOverhead(),8:F2} us");
        Console.WriteLine();
        Console.WriteLine("GEMV (decode)          type     median us      GB/s   % of copy");
        foreach ((int rows, int cols) in new[] { (4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096) })
        {
            foreach (DType t in new[] { DType.BF16, DType.F16, DType.F32 })
            {
                double s = TimeMatMul(t, rows, cols, 1);
                double gbs = t.RowBytes(cols) * rows / s / 1e9;
                Console.WriteLine($"  {rows,6} x {cols,-6}       {t,-5} {s * 1e6,10:F1} {gbs,9:F0} {100 * gbs * 1e9 / copy,9:F0}%");
            }
        }

        double sb = TimeMatMul(DType.BF16, 4096, 4096, 512);
        Console.WriteLine($"batched matmul 512x4096x4096 BF16    {sb * 1e6,8:F0} us   {2.0 * 512 * 4096 * 4096 / sb / 1e12:F2} TFLOP/s");
        double sa = TimeAttention(4096);
        Console.WriteLine($"attention decode ctx 4096 (32q/8kv x 128)  {sa * 1e6,8:F1} us   {2.0 * 4096 * 1024 * 4 / sa / 1e9:F0} GB/s of KV");
    }

    private static void Check(string op, double err) => Console.WriteLine($"  {op,-34} {err,10:E2}");

    private float[] Rand(int n, float scale = 1)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            a[i] = (float)(_random.NextDouble() * 2 - 1) * scale;
        }

        return a;
    }

    private DeviceBuffer Buf(float[] v)
    {
        DeviceBuffer b = d.Allocate(v.Length);
        d.Write(b, v);
        return b;
    }

    private float[] Get(DeviceBuffer b, int n)
    {
        var a = new float[n];
        d.Read(b, a);
        return a;
    }

    /// <summary>max |got - want| / max(|want|, floor).</summary>
    private static double Err(double[] want, float[] got, double floor)
    {
        double e = 0;
        for (int i = 0; i < want.Length; i++)
        {
            e = Math.Max(e, Math.Abs(got[i] - want[i]) / Math.Max(Math.Abs(want[i]), floor));
        }

        return e;
    }

    /// <summary>Host tensor bytes in native memory standing in for the memory map.</summary>
    private sealed class HostTensor : IDisposable
    {
        public HostTensor(DType type, int rows, int cols, Func<long, float>? value)
        {
            long bytes = type.RowBytes(cols) * rows;
            Pointer = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            Values = value is null ? [] : new double[(long)rows * cols];
            long count = (long)rows * cols;
            if (value is null)
            {
                // timing only: a 1 MiB block of random finite values, repeated (filling GBs value by value is slow)
                var r = new Random(7);
                long block = Math.Min(bytes, 1 << 20);
                for (long i = 0; i < block / 4; i++)
                {
                    ((uint*)Pointer)[i] = type == DType.F32 ? BitConverter.SingleToUInt32Bits((float)r.NextDouble() - 0.5f) : (uint)r.Next() & 0x3BFF3BFFu;
                }

                for (long off = block; off < bytes; off += block)
                {
                    Buffer.MemoryCopy(Pointer, Pointer + off, bytes - off, Math.Min(block, bytes - off));
                }
            }
            else
            {
                for (long i = 0; i < count; i++)
                {
                    float v = value(i);
                    switch (type)
                    {
                        case DType.F32:
                            ((float*)Pointer)[i] = v;
                            Values[i] = v;
                            break;
                        case DType.F16:
                            ((Half*)Pointer)[i] = (Half)v;
                            Values[i] = (double)((Half*)Pointer)[i];
                            break;
                        default:
                            ushort b = (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16);
                            ((ushort*)Pointer)[i] = b;
                            Values[i] = BitConverter.UInt32BitsToSingle((uint)b << 16);
                            break;
                    }
                }
            }

            View = new WeightView(new TensorInfo("probe", type, rows == 1 ? [cols] : [rows, cols], 0, 0, bytes), Pointer);
        }

        public byte* Pointer { get; }

        public double[] Values { get; }

        public WeightView View { get; }

        public void Dispose() => NativeMemory.AlignedFree(Pointer);
    }

    private double CheckEmbed(DType t)
    {
        int vocab = 50, dim = small ? 40 : 4096;
        float[] v = Rand(vocab * dim);
        using var host = new HostTensor(t, vocab, dim, i => v[i]);
        using DeviceWeight table = d.Upload(host.View);
        int[] tokens = [7, 49, 0];
        using DeviceBuffer x = d.Allocate(tokens.Length * dim);
        d.Embed(x, table, tokens);
        var want = new double[tokens.Length * dim];
        for (int r = 0; r < tokens.Length; r++)
        {
            Array.Copy(host.Values, (long)tokens[r] * dim, want, (long)r * dim, dim);
        }

        return Err(want, Get(x, want.Length), 1e-30);
    }

    private double CheckRmsNorm()
    {
        int rows = 3, dim = small ? 45 : 4096;
        float[] x = Rand(rows * dim, 3);
        using var host = new HostTensor(DType.F32, 1, dim, i => 0.5f + i % 7 * 0.1f);
        using DeviceWeight w = d.Upload(host.View);
        using DeviceBuffer xb = Buf(x);
        using DeviceBuffer y = d.Allocate(rows * dim);
        d.RmsNorm(y, xb, w, rows, 1e-5f);
        var want = new double[rows * dim];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++)
            {
                ss += (double)x[r * dim + i] * x[r * dim + i];
            }

            double s = 1 / Math.Sqrt(ss / dim + 1e-5);
            for (int i = 0; i < dim; i++)
            {
                want[r * dim + i] = x[r * dim + i] * s * host.Values[i];
            }
        }

        return Err(want, Get(y, want.Length), 1e-30);
    }

    private double CheckMatMul(DType t, int outRows, int cols, int rows, bool accumulate)
    {
        float[] wv = Rand(outRows * cols);
        float[] x = Rand(rows * cols, 2);
        float[] y0 = Rand(rows * outRows);
        using var host = new HostTensor(t, outRows, cols, i => wv[i]);
        using DeviceWeight w = d.Upload(host.View);
        using DeviceBuffer xb = Buf(x);
        using DeviceBuffer y = Buf(y0);
        d.MatMul(y, w, xb, rows, accumulate);
        var want = new double[rows * outRows];
        double max = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < outRows; o++)
            {
                double sum = accumulate ? y0[r * outRows + o] : 0;
                for (int c = 0; c < cols; c++)
                {
                    float xv = x[r * cols + c];
                    double xr = t == DType.F16 ? (double)(Half)xv : t == DType.BF16 ? RoundBf16(xv) : xv;
                    sum += host.Values[(long)o * cols + c] * xr;
                }

                want[r * outRows + o] = sum;
                max = Math.Max(max, Math.Abs(sum));
            }
        }

        // relative to the largest output: single dot products can cancel to near zero
        return Err(want, Get(y, want.Length), max);
    }

    private static float RoundBf16(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        u += 0x7fff + ((u >> 16) & 1);
        return BitConverter.UInt32BitsToSingle(u & 0xffff0000);
    }

    private static float[] RopeTableFor(int positions, int headDim)
    {
        var table = new float[positions * headDim];
        for (int p = 0; p < positions; p++)
        {
            for (int i = 0; i < headDim / 2; i++)
            {
                double angle = p * Math.Pow(500000, -2.0 * i / headDim);
                table[(p * headDim / 2 + i) * 2] = (float)Math.Cos(angle);
                table[(p * headDim / 2 + i) * 2 + 1] = (float)Math.Sin(angle);
            }
        }

        return table;
    }

    private double CheckRope(RopeStyle style)
    {
        var shape = small ? new AttentionShape(4, 2, 8, style) : new AttentionShape(32, 8, 128, style);
        int rows = 3, position = small ? 5 : 1000;
        float[] table = RopeTableFor(position + rows, shape.HeadDim);
        float[] q = Rand(rows * shape.QDim);
        float[] k = Rand(rows * shape.KvDim);
        using DeviceBuffer qb = Buf(q), kb = Buf(k), tb = Buf(table);
        d.Rope(qb, kb, tb, position, rows, shape);
        double[] Ref(float[] v, int heads)
        {
            var o = new double[v.Length];
            int half = shape.HeadDim / 2;
            for (int r = 0; r < rows; r++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int b = (r * heads + h) * shape.HeadDim;
                    for (int i = 0; i < half; i++)
                    {
                        double c = table[((position + r) * half + i) * 2], s = table[((position + r) * half + i) * 2 + 1];
                        int ia = style == RopeStyle.Interleaved ? 2 * i : i, ib = style == RopeStyle.Interleaved ? 2 * i + 1 : i + half;
                        o[b + ia] = v[b + ia] * c - v[b + ib] * s;
                        o[b + ib] = v[b + ia] * s + v[b + ib] * c;
                    }
                }
            }

            return o;
        }

        return Math.Max(Err(Ref(q, shape.Heads), Get(qb, q.Length), 1), Err(Ref(k, shape.KvHeads), Get(kb, k.Length), 1));
    }

    private double CheckAttention(int context)
    {
        var shape = small ? new AttentionShape(4, 2, 8, RopeStyle.Interleaved) : new AttentionShape(32, 8, 128, RopeStyle.Interleaved);
        int rows = 2, position = context - rows, kvDim = shape.KvDim, hd = shape.HeadDim;
        float[] keys = Rand(context * kvDim, 2), values = Rand(context * kvDim), q = Rand(rows * shape.QDim, 2);
        using KvCacheLayer kv = d.AllocateKv(context, kvDim);
        using DeviceBuffer kb = Buf(keys), vb = Buf(values), qb = Buf(q), dst = d.Allocate(rows * shape.QDim);
        d.StoreKv(kv, kb, vb, 0, context);
        d.Attention(dst, qb, kv, position, rows, shape);
        var want = new double[rows * shape.QDim];
        for (int r = 0; r < rows; r++)
        {
            int p = position + r;
            for (int h = 0; h < shape.Heads; h++)
            {
                int kvh = h / (shape.Heads / shape.KvHeads);
                var s = new double[p + 1];
                double max = double.NegativeInfinity, sum = 0;
                for (int t = 0; t <= p; t++)
                {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                    {
                        dot += (double)q[r * shape.QDim + h * hd + i] * keys[t * kvDim + kvh * hd + i];
                    }

                    s[t] = dot / Math.Sqrt(hd);
                    max = Math.Max(max, s[t]);
                }

                for (int t = 0; t <= p; t++)
                {
                    s[t] = Math.Exp(s[t] - max);
                    sum += s[t];
                }

                for (int i = 0; i < hd; i++)
                {
                    double o = 0;
                    for (int t = 0; t <= p; t++)
                    {
                        o += s[t] / sum * values[t * kvDim + kvh * hd + i];
                    }

                    want[r * shape.QDim + h * hd + i] = o;
                }
            }
        }

        return Err(want, Get(dst, want.Length), 0.05);
    }

    private double CheckSwiGlu()
    {
        int n = small ? 77 : 14336;
        float[] g = Rand(n, 6), u = Rand(n);
        using DeviceBuffer gb = Buf(g), ub = Buf(u);
        d.SwiGlu(gb, ub, n);
        double[] want = g.Select((v, i) => v / (1 + Math.Exp(-(double)v)) * u[i]).ToArray();
        return Err(want, Get(gb, n), 1e-3);
    }

    private double CheckArgmax()
    {
        int n = small ? 300 : 128256;
        float[] x = Rand(n);
        x[n / 3] = 5;
        x[n / 2] = 5;
        using DeviceBuffer b = Buf(x);
        return Math.Abs(d.Argmax(b, 0, n) - n / 3);
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v[v.Count / 2];
    }

    private double LaunchOverhead()
    {
        using DeviceBuffer a = d.Allocate(1), b = d.Allocate(1);
        d.Add(a, b, 1);
        d.Synchronize();
        const int n = 10000;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < n; i++)
        {
            d.Add(a, b, 1);
        }

        d.Synchronize();
        return clock.Elapsed.TotalMilliseconds * 1000 / n;
    }

    /// <summary>Median seconds per MatMul call, rotating among 4 weight copies so L2 cannot hold the weights.</summary>
    private double TimeMatMul(DType t, int outRows, int cols, int rows)
    {
        using var host = new HostTensor(t, outRows, cols, null);
        var copies = new DeviceWeight[4];
        for (int i = 0; i < copies.Length; i++)
        {
            copies[i] = d.Upload(host.View);
        }

        try
        {
            using DeviceBuffer x = Buf(Rand(rows * cols)), y = d.Allocate(rows * outRows);
            for (int i = 0; i < 8; i++)
            {
                d.MatMul(y, copies[i % 4], x, rows);
            }

            d.Synchronize();
            int reps = rows > 1 ? 8 : 100;
            var samples = new List<double>();
            for (int s = 0; s < 7; s++)
            {
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < reps; i++)
                {
                    d.MatMul(y, copies[i % 4], x, rows);
                }

                d.Synchronize();
                samples.Add(clock.Elapsed.TotalSeconds / reps);
            }

            return Median(samples);
        }
        finally
        {
            foreach (DeviceWeight w in copies)
            {
                w.Dispose();
            }
        }
    }

    private double TimeAttention(int context)
    {
        var shape = new AttentionShape(32, 8, 128, RopeStyle.Interleaved);
        using KvCacheLayer kv = d.AllocateKv(context, shape.KvDim);
        using DeviceBuffer k = Buf(Rand(context * shape.KvDim)), v = Buf(Rand(context * shape.KvDim)), q = Buf(Rand(shape.QDim)), dst = d.Allocate(shape.QDim);
        d.StoreKv(kv, k, v, 0, context);
        d.Attention(dst, q, kv, context - 1, 1, shape);
        d.Synchronize();
        var samples = new List<double>();
        for (int s = 0; s < 7; s++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < 20; i++)
            {
                d.Attention(dst, q, kv, context - 1, 1, shape);
            }

            d.Synchronize();
            samples.Add(clock.Elapsed.TotalSeconds / 20);
        }

        return Median(samples);
    }
}
