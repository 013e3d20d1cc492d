using System.Diagnostics;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>One measured test: the time of every repetition (after one warm-up), as llama-bench records them.</summary>
public sealed record BenchMeasurement(string Test, int Prompt, int Generate, IReadOnlyList<long> SamplesNs, int Depth = 0)
{
    public int Tokens => Prompt + Generate;
}

/// <summary>
/// Times prompt processing and token generation the way llama-bench does: pp = one forward pass over n_prompt
/// tokens; tg = n_gen single-token passes, each waiting for the result (llama-bench synchronizes after every decode);
/// both after <c>depth</c> tokens already in the context (llama-bench -d; 0 = an empty context). Token ids are
/// deterministic pseudo-random.
/// </summary>
public static class BenchRunner
{
    public static BenchMeasurement Prompt(LlamaModel model, int tokens, int repetitions, CancellationToken cancel, int depth = 0)
    {
        if (depth + tokens > model.ContextLength)
        {
            throw new GpuLlamaException($"-p {tokens}{DepthText(depth)}: more prompt tokens than the model's context holds ({model.ContextLength})");
        }

        int[] ids = Tokens(model, tokens, 1);
        Transformer t = model.Transformer;
        FillDepth(model, depth);
        t.Forward(ids, depth);
        t.ArgmaxLast();
        var samples = new List<long>();
        for (int r = 0; r < repetitions && !cancel.IsCancellationRequested; r++)
        {
            long start = Stopwatch.GetTimestamp();
            t.Forward(ids, depth);
            t.ArgmaxLast();
            samples.Add(ElapsedNs(start));
        }

        return new BenchMeasurement($"pp{tokens}", tokens, 0, samples, depth);
    }

    public static BenchMeasurement Generate(LlamaModel model, int tokens, int repetitions, CancellationToken cancel, int depth = 0)
    {
        if (depth + tokens > model.ContextLength)
        {
            throw new GpuLlamaException($"-n {tokens}{DepthText(depth)}: more tokens than the model's context holds ({model.ContextLength})");
        }

        int[] ids = Tokens(model, tokens, 2);
        Transformer t = model.Transformer;
        var one = new int[1];
        FillDepth(model, depth);
        Run(1);
        var samples = new List<long>();
        for (int r = 0; r < repetitions && !cancel.IsCancellationRequested; r++)
        {
            long start = Stopwatch.GetTimestamp();
            Run(tokens);
            samples.Add(ElapsedNs(start));
        }

        return new BenchMeasurement($"tg{tokens}", 0, tokens, samples, depth);

        void Run(int n)
        {
            for (int i = 0; i < n; i++)
            {
                one[0] = ids[i];
                t.Forward(one, depth + i);
                t.ArgmaxLast();
            }
        }
    }

    /// <summary>
    /// The first <paramref name="depth"/> positions of the KV cache, filled by an untimed prompt. Once per test, not
    /// per repetition as llama-bench does: a test writes only the positions after them, so they stay as they are.
    /// </summary>
    private static void FillDepth(LlamaModel model, int depth)
    {
        if (depth > 0)
        {
            model.Transformer.Forward(Tokens(model, depth, 3), 0);
            model.Transformer.ArgmaxLast();
        }
    }

    private static string DepthText(int depth) => depth > 0 ? $" at depth {depth}" : "";

    /// <summary>
    /// llama-bench's pg test: <paramref name="prompt"/> tokens in one pass from an empty context, then
    /// <paramref name="generate"/> single-token passes after them; t/s counts both.
    /// </summary>
    public static BenchMeasurement PromptThenGenerate(LlamaModel model, int prompt, int generate, int repetitions, CancellationToken cancel, int depth = 0)
    {
        if (depth + prompt + generate > model.ContextLength)
        {
            throw new GpuLlamaException($"-pg {prompt},{generate}{DepthText(depth)}: more tokens than the model's context holds ({model.ContextLength})");
        }

        int[] ids = Tokens(model, prompt, 1);
        int[] gen = Tokens(model, generate, 2);
        Transformer t = model.Transformer;
        var one = new int[1];
        FillDepth(model, depth);
        Run();
        var samples = new List<long>();
        for (int r = 0; r < repetitions && !cancel.IsCancellationRequested; r++)
        {
            long start = Stopwatch.GetTimestamp();
            Run();
            samples.Add(ElapsedNs(start));
        }

        return new BenchMeasurement($"pp{prompt}+tg{generate}", prompt, generate, samples, depth);

        void Run()
        {
            t.Forward(ids, depth);
            t.ArgmaxLast();
            for (int i = 0; i < generate; i++)
            {
                one[0] = gen[i];
                t.Forward(one, depth + prompt + i);
                t.ArgmaxLast();
            }
        }
    }

    /// <summary>
    /// Bytes streamed per generated token on each device: every layer's weights and the output norm + head, where
    /// they run (the embedding row is negligible, as gpt-fast counts it), and each layer's K and V cache over the
    /// positions attended to — <paramref name="positions"/>, their mean over the test (what a long context adds).
    /// </summary>
    public static Dictionary<string, long> BytesPerToken(LlamaModel model, double positions = 0)
    {
        var bytes = new Dictionary<string, long>();
        ModelConfig c = model.Config;
        IReadOnlyDictionary<string, TensorInfo> tensors = model.Source.Tensors;
        long kvPerPosition = model.Transformer.CacheTypeK.RowBytes(c.KvDim) + model.Transformer.CacheTypeV.RowBytes(c.KvDim);
        for (int l = 0; l < c.Layers; l++)
        {
            string device = model.Plan.Layers[l];
            foreach (TensorInfo t in tensors.Values.Where(t => t.Name.StartsWith($"blk.{l}.", StringComparison.Ordinal)))
            {
                bytes[device] = bytes.GetValueOrDefault(device) + t.ByteLength;
            }

            bytes[device] += (long)(positions * kvPerPosition);
        }

        long output = tensors[TensorNames.OutputNorm].ByteLength
            + (tensors.TryGetValue(TensorNames.Output, out TensorInfo? head) ? head.ByteLength : tensors[TensorNames.TokenEmbedding].ByteLength);
        bytes[model.Plan.Output] = bytes.GetValueOrDefault(model.Plan.Output) + output;
        return bytes;
    }

    /// <summary>
    /// The bandwidth roofline of generation: the fastest a token can be if every device streams its bytes at its
    /// measured bandwidth, one device after another (layers run in sequence).
    /// </summary>
    public static (double TokensPerSecond, double BytesPerSecond) Roofline(LlamaModel model, Dictionary<string, long> bytesPerToken, int threads)
    {
        double seconds = 0;
        foreach ((string name, long b) in bytesPerToken)
        {
            IDevice device = model.Devices.First(d => d.Name == name);
            seconds += b / MemoryProbe.Measure(device, threads);
        }

        long total = bytesPerToken.Values.Sum();
        return (1 / seconds, total / seconds);
    }

    private static int[] Tokens(LlamaModel model, int n, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[n];
        for (int i = 0; i < n; i++)
        {
            ids[i] = rng.Next(3, model.Config.VocabSize);
        }

        return ids;
    }

    private static long ElapsedNs(long start) => (long)((Stopwatch.GetTimestamp() - start) * (1e9 / Stopwatch.Frequency));
}
