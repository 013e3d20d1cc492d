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

    /// <summary>
    /// <paramref name="a"/> rounded to a cache type: value by value (<see cref="Round(float, KvCacheType)"/>), or for
    /// Q8_0/Q4_0 block by block of 32 and dequantized, from the definitions llama.cpp's CPU backend stores a cache row
    /// with — Q8_0 (quantize_row_q8_0): d = F16(max|x|/127), q = round-to-even(x·(127/max|x|)); Q4_0
    /// (quantize_row_q4_0_ref): d = m/−8 for m the first value of largest magnitude, q = min(15, trunc(x/d + 8.5)),
    /// value F16(d)·(q − 8).
    /// </summary>
    public static float[] Round(float[] a, KvCacheType type)
    {
        if (type is not (KvCacheType.Q8_0 or KvCacheType.Q4_0))
        {
            return [.. a.Select(x => Round(x, type))];
        }

        var r = new float[a.Length];
        for (int b = 0; b < a.Length; b += 32)
        {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                if (amax < Math.Abs(a[b + j]))
                {
                    amax = Math.Abs(a[b + j]);
                    max = a[b + j];
                }
            }

            if (type == KvCacheType.Q8_0)
            {
                float d = (float)(Half)(amax / 127f);
                float id = amax != 0 ? 127f / amax : 0f;
                for (int j = 0; j < 32; j++)
                {
                    r[b + j] = d * (float)Math.Round(a[b + j] * id, MidpointRounding.ToEven);
                }
            }
            else
            {
                float d = max / -8f;
                float id = d != 0 ? 1f / d : 0f;
                for (int j = 0; j < 32; j++)
                {
                    r[b + j] = (float)(Half)d * (Math.Min(15, (int)(a[b + j] * id + 8.5f)) - 8);
                }
            }
        }

        return r;
    }

    /// <summary>
    /// q as llama.cpp's CPU backend multiplies it with a cache of <paramref name="keys"/>: rounded to a 16-bit key type,
    /// quantized to Q8_0 for a quantized one (its dot products' activation type), as it is for F32.
    /// </summary>
    public static float[] QueryFor(float[] q, KvCacheType keys) => Round(q, keys is KvCacheType.Q8_0 or KvCacheType.Q4_0 ? KvCacheType.Q8_0 : keys);

    /// <summary>How llama.cpp rounds the softmax weights against a cache of <paramref name="values"/>: to a 16-bit type; not for F32 or quantized values (dequantized to float32 first).</summary>
    public static KvCacheType WeightsFor(KvCacheType values) => values is KvCacheType.F16 or KvCacheType.BF16 ? values : KvCacheType.F32;

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
