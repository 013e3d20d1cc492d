using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace GpuLlama.Devices;

/// <summary>
/// Measures a device's memory bandwidth, the roofline of token generation (every weight is read once per token).
/// The CPU is measured the way decoding uses memory — a multi-threaded streaming read, with the decode's software
/// prefetch (<see cref="CpuPrefetch"/>) — and a GPU by a large
/// device-to-device copy counting bytes read plus bytes written (the reference METHOD.md of the GPU lab asks for).
/// Results are cached per device name for the process.
/// </summary>
public static class MemoryProbe
{
    private static readonly Dictionary<string, double> s_cache = [];

    /// <summary>Bandwidth in bytes per second.</summary>
    public static double Measure(IDevice device, int threads = 0)
    {
        string key = device.Name + "/" + threads;
        lock (s_cache)
        {
            if (s_cache.TryGetValue(key, out double cached))
            {
                return cached;
            }
        }

        double result = device.Kind == DeviceKind.Cpu ? MeasureHostRead(threads) : MeasureDeviceCopy(device);
        lock (s_cache)
        {
            s_cache[key] = result;
        }

        return result;
    }

    /// <summary>Streaming read of a 1 GiB buffer (far beyond the caches), best of several passes.</summary>
    public static unsafe double MeasureHostRead(int threads = 0)
    {
        threads = threads <= 0 ? Environment.ProcessorCount : threads;
        RuntimeHelpers.RunClassConstructor(typeof(CpuPrefetch).TypeHandle); // its distance a constant in the loop below
        const long bytes = 1L << 30;
        byte* p = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        try
        {
            // touch every page so the measurement reads memory, not the zero page
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                long chunk = bytes / threads;
                new Span<byte>(p + t * chunk, (int)Math.Min(chunk, int.MaxValue)).Fill((byte)(t + 1));
            });
            double best = 0;
            for (int pass = 0; pass < 4; pass++)
            {
                var clock = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    long chunk = bytes / threads;
                    Vector256<byte>* v = (Vector256<byte>*)(p + t * chunk);
                    long n = chunk / 32;
                    Vector256<byte> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (long i = 0; i + 4 <= n; i += 4)
                    {
                        CpuPrefetch.Ahead(v + i, 128); // as the decode's loops do, where it pays (Intel)
                        a0 ^= v[i];
                        a1 ^= v[i + 1];
                        a2 ^= v[i + 2];
                        a3 ^= v[i + 3];
                    }

                    s_sink = (a0 ^ a1 ^ a2 ^ a3).GetElement(0);
                });
                best = Math.Max(best, bytes / clock.Elapsed.TotalSeconds);
            }

            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(p);
        }
    }

    private static byte s_sink;

    /// <summary>Device-to-device copy of a large buffer; bytes read + bytes written per second.</summary>
    public static double MeasureDeviceCopy(IDevice device)
    {
        // 1 GiB per buffer on a real GPU; the emulated accelerator gets a small one (it is host memory anyway)
        int floats = device.Kind == DeviceKind.Emulated ? 1 << 22 : 1 << 28;
        long free = device.FreeMemory;
        while (floats > 1 << 20 && free > 0 && 2L * floats * 4 > free / 2)
        {
            floats /= 2;
        }

        using DeviceBuffer a = device.Allocate(floats);
        using DeviceBuffer b = device.Allocate(floats);
        device.CopyFrom(b, 0, a, 0, floats);
        device.Synchronize();
        double best = 0;
        for (int pass = 0; pass < 3; pass++)
        {
            const int reps = 10;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++)
            {
                device.CopyFrom(b, 0, a, 0, floats);
            }

            device.Synchronize();
            best = Math.Max(best, 2.0 * floats * 4 * reps / clock.Elapsed.TotalSeconds);
        }

        return best;
    }
}
