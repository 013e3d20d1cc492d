using System.Diagnostics;
using GpuLlama.Model;

namespace GpuLlama.Generation;

/// <summary>The perplexity of a text and its standard error (llama-perplexity's "Final estimate: PPL = x +/- y").</summary>
public sealed record PerplexityResult(double Value, double Uncertainty, int Chunks, int ScoredTokens, double Seconds);

/// <summary>
/// llama-perplexity's measure, so that numbers compare with llama.cpp's on the same file: the tokens (BOS first)
/// in chunks of the context size, each evaluated from an empty cache with its first token replaced by BOS, and the
/// negative log-likelihood of each token from the middle of the chunk on, given the ones before it; the perplexity
/// is e^(mean NLL), the uncertainty e^(mean)·sd/√(n−1). The model must be loaded with
/// <see cref="LoadOptions.LogitRows"/> = its batch size, so that a batch gives the logits of every position.
/// </summary>
public static class Perplexity
{
    public static PerplexityResult Compute(LlamaModel model, IReadOnlyList<int> tokens, int maxChunks = -1,
        Action<int, double>? onChunk = null, CancellationToken cancellationToken = default)
    {
        Transformer t = model.Transformer;
        ModelTokenizer tokenizer = model.Tokenizer;
        int context = model.ContextLength;
        if (t.LogitRows < t.BatchSize)
        {
            throw new GpuLlamaException($"perplexity needs the logits of every position of a batch: load the model with LogitRows = {t.BatchSize}");
        }

        if (tokens.Count < 2 * context)
        {
            throw new GpuLlamaException($"the text is {tokens.Count} tokens; perplexity with a context of {context} needs at least {2 * context} (more text, or a smaller --ctx)");
        }

        int chunks = tokens.Count / context;
        chunks = maxChunks >= 0 ? Math.Min(maxChunks, chunks) : chunks;
        int first = context / 2;
        var clock = Stopwatch.StartNew();
        var chunk = new int[context];
        double nll = 0, nll2 = 0;
        int count = 0;
        for (int i = 0; i < chunks; i++)
        {
            for (int k = 0; k < context; k++)
            {
                chunk[k] = tokens[i * context + k];
            }

            if (tokenizer.AddBos)
            {
                chunk[0] = tokenizer.BosId;
            }

            for (int start = 0; start < context; start += t.BatchSize)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int n = Math.Min(t.BatchSize, context - start);
                t.Forward(chunk.AsSpan(start, n), start, allLogits: true);
                for (int k = 0; k < n; k++)
                {
                    int position = start + k;
                    if (position < first || position >= context - 1)
                    {
                        continue;
                    }

                    double v = -LogSoftmax(t.Logits(k), tokens[i * context + position + 1]);
                    nll += v;
                    nll2 += v * v;
                    count++;
                }
            }

            onChunk?.Invoke(i + 1, Math.Exp(nll / count));
        }

        double mean = nll / count, variance = nll2 / count - mean * mean;
        double ppl = Math.Exp(mean);
        double uncertainty = variance > 0 ? Math.Sqrt(variance / (count - 1)) * ppl : 0;
        return new PerplexityResult(ppl, uncertainty, chunks, count, clock.Elapsed.TotalSeconds);
    }

    /// <summary>log softmax(logits)[token] as llama-perplexity computes it: float differences and exps, summed in double.</summary>
    internal static double LogSoftmax(ReadOnlySpan<float> logits, int token)
    {
        float max = logits[0];
        for (int i = 1; i < logits.Length; i++)
        {
            max = Math.Max(max, logits[i]);
        }

        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            sum += MathF.Exp(logits[i] - max);
        }

        return logits[token] - max - Math.Log(sum);
    }
}
