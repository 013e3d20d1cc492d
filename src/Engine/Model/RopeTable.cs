namespace GpuLlama.Model;

/// <summary>
/// cos/sin of every (position, frequency) pair, computed on the host in double precision (sin.approx on a GPU
/// is poor for large angles) and uploaded once per device. Layout: [(p*HeadDim/2 + i)*2] = cos, [+1] = sin.
/// </summary>
public static class RopeTable
{
    public static float[] Build(ModelConfig config, int positions)
    {
        double[] inv = config.RopeInverseFrequencies();
        int half = inv.Length;
        var table = new float[(long)positions * half * 2 > int.MaxValue ? throw new GpuLlamaException($"context {positions} is too long for the RoPE table") : positions * half * 2];
        for (int p = 0; p < positions; p++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = p * inv[i];
                table[(p * half + i) * 2] = (float)Math.Cos(angle);
                table[(p * half + i) * 2 + 1] = (float)Math.Sin(angle);
            }
        }

        return table;
    }
}
