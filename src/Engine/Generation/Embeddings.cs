using GpuLlama.Model;

namespace GpuLlama.Generation;

/// <summary>How a text's token states become one embedding (llama.cpp --pooling).</summary>
public enum Pooling
{
    /// <summary>The mean over every token, BOS included.</summary>
    Mean,

    /// <summary>The last token's state (what a causal model has read the whole text by).</summary>
    Last,

    /// <summary>The first token's state.</summary>
    Cls,

    /// <summary>One embedding per token.</summary>
    None,
}

/// <summary>
/// Embeddings as llama.cpp's llama-embedding computes them for a causal model: the text's tokens through every
/// layer from an empty cache (causal attention), the final rmsnorm's output per token — the hidden state the
/// classifier would read — pooled, then normalized (--embd-normalize: -1 none, 0 max-abs to int16 range, 1 taxicab,
/// 2 Euclidean, p &gt; 2 the p-norm). Uses the model's KV cache, like a <see cref="Generator"/>: one at a time.
/// </summary>
public static class Embeddings
{
    public static float[][] Compute(LlamaModel model, IReadOnlyList<int> tokens, Pooling pooling = Pooling.Mean, int normalize = 2, CancellationToken cancellationToken = default)
    {
        Transformer t = model.Transformer;
        int dim = model.Config.Dim;
        if (tokens.Count == 0)
        {
            throw new GpuLlamaException("the text to embed is empty");
        }

        if (tokens.Count > model.ContextLength)
        {
            throw new GpuLlamaException($"the text has {tokens.Count} tokens but the context holds {model.ContextLength} (raise --ctx, at most the model's {model.Config.ContextLength})");
        }

        int[] ids = tokens as int[] ?? [.. tokens];
        var perToken = pooling == Pooling.None ? new float[ids.Length][] : null;
        var sum = new double[dim];
        float[]? first = null, last = null;
        for (int start = 0; start < ids.Length; start += t.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = Math.Min(t.BatchSize, ids.Length - start);
            t.ForwardHidden(ids.AsSpan(start, n), start);
            for (int k = 0; k < n; k++)
            {
                ReadOnlySpan<float> h = t.Hidden(k);
                int position = start + k;
                if (perToken is not null)
                {
                    perToken[position] = h.ToArray();
                }
                else if (pooling == Pooling.Mean)
                {
                    for (int i = 0; i < dim; i++)
                    {
                        sum[i] += h[i];
                    }
                }

                first ??= position == 0 && pooling == Pooling.Cls ? h.ToArray() : null;
                last = position == ids.Length - 1 && pooling == Pooling.Last ? h.ToArray() : last;
            }
        }

        float[][] result = pooling switch
        {
            Pooling.None => perToken!,
            Pooling.Mean => [[.. sum.Select(v => (float)(v / ids.Length))]],
            Pooling.Cls => [first!],
            _ => [last!],
        };
        foreach (float[] e in result)
        {
            Normalize(e, normalize);
        }

        return result;
    }

    /// <summary>llama.cpp's common_embd_normalize, in place.</summary>
    public static void Normalize(float[] e, int norm)
    {
        CheckNormalize(norm);
        double sum = norm switch
        {
            -1 => 1,
            0 => e.Aggregate(0.0, (m, v) => Math.Max(m, Math.Abs(v))) / 32760.0, // int16 range
            2 => Math.Sqrt(e.Sum(v => (double)v * v)),
            _ => Math.Pow(e.Sum(v => Math.Pow(Math.Abs(v), norm)), 1.0 / norm),
        };

        float scale = sum > 0 ? (float)(1.0 / sum) : 0f;
        for (int i = 0; i < e.Length; i++)
        {
            e[i] *= scale;
        }
    }

    /// <summary>Throws the one-line error for a normalization llama.cpp does not have (below −1).</summary>
    public static void CheckNormalize(int norm)
    {
        if (norm < -1)
        {
            throw new GpuLlamaException($"--embd-normalize {norm}: expected -1 (none), 0 (max-abs), 1 (taxicab), 2 (Euclidean) or a larger p");
        }
    }
}
