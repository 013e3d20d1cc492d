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
}
