using GpuLlama.Devices;

namespace GpuLlama.Tests.Kernels;

/// <summary>Inputs shared by the kernel tests.</summary>
internal static class KernelTestData
{
    /// <summary>n values uniform in [-scale, scale) from a seeded generator.</summary>
    public static float[] Uniform(int n, int seed, float scale = 1.0f) => Uniform(n, new Random(seed), scale);

    /// <summary>n values uniform in [-scale, scale) drawn from <paramref name="r"/>.</summary>
    public static float[] Uniform(int n, Random r, float scale = 1.0f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            a[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        }

        return a;
    }

    /// <summary>
    /// <paramref name="x"/> rounded to a KV cache type, computed in float64 from the type's definition (mantissa bits,
    /// smallest normal exponent, largest finite value), independently of the engine's bit tricks: to nearest, ties to
    /// even; below the smallest normal at the subnormal spacing; past the largest finite value (or at the tie beyond it)
    /// to infinity.
    /// </summary>
    public static float Round(float x, KvCacheType type)
    {
        if (type == KvCacheType.F32 || !float.IsFinite(x) || x == 0)
        {
            return x;
        }

        (int mantissa, int minExponent, double max) = type == KvCacheType.F16 ? (10, -14, 65504.0) : (7, -126, 3.3895313892515355e38);
        double a = Math.Abs((double)x);
        int e = Math.Max(minExponent, (int)Math.Floor(Math.Log2(a)));
        if (Math.Pow(2, e) > a && e > minExponent)
        {
            e--; // Log2 rounded up just below a power of two
        }

        double ulp = Math.Pow(2, e - mantissa);
        double r = Math.Round(a / ulp, MidpointRounding.ToEven) * ulp;
        if (r > max)
        {
            r = double.PositiveInfinity;
        }

        return (float)(Math.Sign(x) * r);
    }

    public static float[] Round(float[] a, KvCacheType type) => [.. a.Select(x => Round(x, type))];

    /// <summary>
    /// Causal attention in float64: for each of <paramref name="rows"/> query rows at positions position.., every head
    /// against its KV head's keys 0..p, softmax of q·k/√d, the weighted sum of the values; [rows, QDim] row-major.
    /// <paramref name="weights"/>, when given, rounds each normalized softmax weight (as ggml rounds them for a 16-bit
    /// value cache); the caller rounds q, keys and values.
    /// </summary>
    public static double[] ReferenceAttention(float[] q, float[] keys, float[] values, int position, int rows, AttentionShape shape,
        KvCacheType weights = KvCacheType.F32)
    {
        int heads = shape.Heads, kvHeads = shape.KvHeads, headDim = shape.HeadDim, kvDim = shape.KvDim;
        var want = new double[rows * shape.QDim];
        for (int r = 0; r < rows; r++)
        {
            int p = position + r;
            for (int h = 0; h < heads; h++)
            {
                int kvh = h / (heads / kvHeads);
                var s = new double[p + 1];
                double max = double.NegativeInfinity;
                for (int t = 0; t <= p; t++)
                {
                    double dot = 0;
                    for (int d = 0; d < headDim; d++)
                    {
                        dot += (double)q[r * shape.QDim + h * headDim + d] * keys[t * kvDim + kvh * headDim + d];
                    }

                    s[t] = dot / Math.Sqrt(headDim);
                    max = Math.Max(max, s[t]);
                }

                double sum = 0;
                for (int t = 0; t <= p; t++)
                {
                    s[t] = Math.Exp(s[t] - max);
                    sum += s[t];
                }

                for (int d = 0; d < headDim; d++)
                {
                    double o = 0;
                    for (int t = 0; t <= p; t++)
                    {
                        o += (double)Round((float)(s[t] / sum), weights) * values[t * kvDim + kvh * headDim + d];
                    }

                    want[r * shape.QDim + h * headDim + d] = o;
                }
            }
        }

        return want;
    }
}
