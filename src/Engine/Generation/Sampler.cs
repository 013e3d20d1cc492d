namespace GpuLlama.Generation;

/// <summary>Sampling settings with llama.cpp's defaults (common/common.h).</summary>
public sealed record SamplerSettings
{
    /// <summary>0 or less: greedy (argmax).</summary>
    public float Temperature { get; init; } = 0.8f;

    /// <summary>Keep the K most likely tokens; 0 = off.</summary>
    public int TopK { get; init; } = 40;

    /// <summary>Keep the smallest set whose probability reaches P; 1 = off.</summary>
    public float TopP { get; init; } = 0.95f;

    /// <summary>Drop tokens less likely than MinP × the most likely one; 0 = off.</summary>
    public float MinP { get; init; } = 0.05f;

    /// <summary>Divides positive (multiplies negative) logits of recent tokens; 1 = off.</summary>
    public float RepeatPenalty { get; init; } = 1.0f;

    /// <summary>How many recent tokens the penalties look at (-1 = the whole history).</summary>
    public int RepeatLastN { get; init; } = 64;

    public float FrequencyPenalty { get; init; }

    public float PresencePenalty { get; init; }

    /// <summary>RNG seed; null = a random seed. The same seed gives the same tokens.</summary>
    public uint? Seed { get; init; }

    /// <summary>
    /// XTC, "exclude top choices" (llama.cpp --xtc-probability): with this probability per token, the candidates at
    /// least <see cref="XtcThreshold"/> likely are removed, all but the least likely of them; 0 = off.
    /// </summary>
    public float XtcProbability { get; init; }

    /// <summary>XTC's threshold (llama.cpp --xtc-threshold); above 0.5 XTC is off.</summary>
    public float XtcThreshold { get; init; } = 0.1f;

    /// <summary>Locally typical sampling's mass (llama.cpp --typical, Ollama's typical_p); 1 = off.</summary>
    public float TypicalP { get; init; } = 1.0f;

    /// <summary>
    /// Added to the logits of these tokens before anything else (llama.cpp --logit-bias, OpenAI's logit_bias);
    /// −∞ bans a token.
    /// </summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();

    /// <summary>
    /// Mirostat (llama.cpp --mirostat, Ollama's mirostat): 0 off; 1 or 2 replace the penalties, top-k, top-p and min-p
    /// with the algorithm of that version, which keeps each token's surprise near <see cref="MirostatTau"/> (after
    /// the temperature).
    /// </summary>
    public int Mirostat { get; init; }

    /// <summary>Mirostat's target surprise in bits (llama.cpp --mirostat-ent).</summary>
    public float MirostatTau { get; init; } = 5.0f;

    /// <summary>Mirostat's learning rate (llama.cpp --mirostat-lr).</summary>
    public float MirostatEta { get; init; } = 0.1f;
}

/// <summary>
/// Turns logits into the next token in llama.cpp's default order: logit bias → penalties → top-k → typical → top-p → min-p → XTC →
/// temperature → random draw (common_sampler_init), or temperature → mirostat v1/v2 when Mirostat is set. Uses its own xoshiro256** generator, not System.Random whose
/// algorithm may change between .NET versions, so a seed reproduces a run anywhere. Buffers are reused: no
/// allocation per token.
/// </summary>
public sealed class Sampler
{
    private readonly SamplerSettings _settings;
    private ulong _s0, _s1, _s2, _s3;
    private float[] _logits = [];
    private int[] _ids = [];
    private float[] _probs = [];
    private double[] _typicalScore = [];
    private int[] _typicalOrder = [];
    private readonly Dictionary<int, int> _counts = [];

    public Sampler(SamplerSettings settings)
    {
        if (settings.Mirostat is < 0 or > 2)
        {
            throw new GpuLlamaException($"--mirostat {settings.Mirostat}: expected 0 (off), 1 or 2");
        }

        _settings = settings;
        _mu = 2 * settings.MirostatTau;
        ulong seed = settings.Seed ?? (ulong)Random.Shared.NextInt64();
        // splitmix64 expands the seed into the generator's state
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    /// <summary>True when the choice is a plain argmax of the logits (so a device can compute it).</summary>
    public bool IsGreedy => _settings.Temperature <= 0 && _settings.LogitBias.Count == 0 && (_settings.Mirostat != 0 || !HasPenalties);

    /// <summary>Mirostat's running maximum surprise μ (starts at 2τ).</summary>
    public float MirostatMu => _mu;

    /// <summary>The surprise (bits, −log₂ of its renormalized probability) of the last token mirostat drew: what it steers to τ.</summary>
    public float MirostatSurprise { get; private set; }

    private float _mu;

    private bool HasPenalties => _settings.RepeatPenalty != 1.0f || _settings.FrequencyPenalty != 0 || _settings.PresencePenalty != 0;

    public int Sample(ReadOnlySpan<float> logits, IReadOnlyList<int> history)
    {
        int n = logits.Length;
        if (_logits.Length < n)
        {
            _logits = new float[n];
            _ids = new int[n];
            _probs = new float[n];
        }

        Span<float> l = _logits.AsSpan(0, n);
        logits.CopyTo(l);
        foreach ((int id, float bias) in _settings.LogitBias)
        {
            if ((uint)id < (uint)n)
            {
                l[id] += bias;
            }
        }

        if (_settings.Mirostat != 0)
        {
            return _settings.Temperature <= 0 ? Argmax(l) : SampleMirostat(l, _ids.AsSpan(0, n));
        }

        ApplyPenalties(l, history);

        if (_settings.Temperature <= 0)
        {
            return Argmax(l);
        }

        // candidates sorted by logit (descending), cut to top-k
        Span<int> ids = _ids.AsSpan(0, n);
        int count = TopK(l, ids, _settings.TopK > 0 ? Math.Min(_settings.TopK, n) : n);
        if (_settings.TypicalP < 1.0f)
        {
            count = Typical(l, ids, count, _settings.TypicalP);
        }

        // probabilities at temperature 1 for top-p and min-p (temperature comes last in llama.cpp's chain)
        float max = l[ids[0]];
        double sum = 0;
        for (int i = 0; i < count; i++)
        {
            sum += Math.Exp(l[ids[i]] - max);
        }

        if (_settings.TopP < 1.0f)
        {
            double cumulative = 0;
            for (int i = 0; i < count; i++)
            {
                cumulative += Math.Exp(l[ids[i]] - max) / sum;
                if (cumulative >= _settings.TopP)
                {
                    count = i + 1;
                    break;
                }
            }
        }

        if (_settings.MinP > 0)
        {
            // keep logits ≥ max + ln(min_p), i.e. p ≥ min_p · p_max
            float threshold = max + MathF.Log(_settings.MinP);
            int kept = 1;
            while (kept < count && l[ids[kept]] >= threshold)
            {
                kept++;
            }

            count = kept;
        }

        // XTC: with its probability, every candidate at least as likely as the threshold but the last of them goes
        if (_settings.XtcProbability > 0 && _settings.XtcThreshold <= 0.5f && count >= 2 && NextDouble() <= _settings.XtcProbability)
        {
            double z = 0;
            for (int i = 0; i < count; i++)
            {
                z += Math.Exp(l[ids[i]] - max);
            }

            int top = 0; // the last candidate at or above the threshold
            while (top + 1 < count && Math.Exp(l[ids[top + 1]] - max) / z >= _settings.XtcThreshold)
            {
                top++;
            }

            if (top > 0)
            {
                ids.Slice(top, count - top).CopyTo(ids);
                count -= top;
                max = l[ids[0]];
            }
        }

        // temperature, softmax, draw
        float inv = 1.0f / _settings.Temperature;
        double total = 0;
        for (int i = 0; i < count; i++)
        {
            total += Math.Exp((l[ids[i]] - max) * inv);
        }

        double r = NextDouble() * total;
        double acc = 0;
        int last = ids[0];
        for (int i = 0; i < count; i++)
        {
            double w = Math.Exp((l[ids[i]] - max) * inv);
            acc += w;
            last = w > 0 ? ids[i] : last;
            if (r < acc)
            {
                return ids[i];
            }
        }

        return last; // r rounded up to the total: the last candidate that has a weight (never a masked −∞ one)
    }

    /// <summary>
    /// llama.cpp's mirostat samplers after its temperature: the candidates sorted and their softmax; v1 estimates the
    /// Zipf exponent ŝ from the top 100 and keeps the top k = (ε̂·2^μ / (1 − N^−ε̂))^(1/ŝ), v2 keeps the tokens whose
    /// surprise −log₂ p is at most μ; then a draw from the renormalized rest, and μ −= η·(surprise − τ).
    /// </summary>
    private int SampleMirostat(Span<float> l, Span<int> ids)
    {
        float inv = 1.0f / _settings.Temperature;
        for (int i = 0; i < l.Length; i++)
        {
            l[i] *= inv;
        }

        int count = TopK(l, ids, l.Length);
        Span<float> p = _probs.AsSpan(0, count);
        Softmax(l, ids, p, count);
        float tau = _settings.MirostatTau, eta = _settings.MirostatEta;
        if (_settings.Mirostat == 1)
        {
            float sumTiBi = 0, sumTiSq = 0;
            for (int i = 0; i < 99 && i < count - 1; i++)
            {
                float t = MathF.Log((float)(i + 2) / (i + 1));
                float b = MathF.Log(p[i] / p[i + 1]);
                sumTiBi += t * b;
                sumTiSq += t * t;
            }

            float sHat = sumTiBi / sumTiSq, epsilonHat = sHat - 1;
            float k = MathF.Pow(epsilonHat * MathF.Pow(2, _mu) / (1 - MathF.Pow(l.Length, -epsilonHat)), 1 / sHat);
            count = Math.Clamp(float.IsFinite(k) ? (int)k : count, 1, count);
        }
        else
        {
            int kept = 0;
            while (kept < count && -MathF.Log2(p[kept]) <= _mu)
            {
                kept++;
            }

            count = Math.Max(kept, 1);
        }

        Softmax(l, ids, p, count);
        double r = NextDouble(), acc = 0;
        int chosen = count - 1;
        for (int i = 0; i < count; i++)
        {
            acc += p[i];
            if (r < acc)
            {
                chosen = i;
                break;
            }
        }

        float surprise = -MathF.Log2(p[chosen]);
        MirostatSurprise = surprise;
        _mu -= eta * (surprise - tau);
        return ids[chosen];
    }

    /// <summary>
    /// Locally typical sampling (llama_sampler_typical_apply): the candidates whose surprise −ln p is closest to the
    /// entropy, taken in that order until their probability passes <paramref name="typical"/>; left sorted by logit
    /// again for the samplers after it. Returns how many stay (the first <paramref name="count"/> ids are sorted).
    /// </summary>
    private int Typical(ReadOnlySpan<float> l, Span<int> ids, int count, float typical)
    {
        Span<float> p = _probs.AsSpan(0, count);
        Softmax(l, ids, p, count);
        double entropy = 0;
        for (int i = 0; i < count; i++)
        {
            entropy -= p[i] > 0 ? p[i] * Math.Log(p[i]) : 0;
        }

        // candidate positions by |−ln p − H| (scratch reused: no allocation per token)
        if (_typicalScore.Length < count)
        {
            _typicalScore = new double[ids.Length];
            _typicalOrder = new int[ids.Length];
        }

        for (int i = 0; i < count; i++)
        {
            _typicalScore[i] = Math.Abs(-Math.Log(p[i]) - entropy);
            _typicalOrder[i] = i;
        }

        Array.Sort(_typicalScore, _typicalOrder, 0, count);
        double cumulative = 0;
        int kept = count;
        for (int i = 0; i < count; i++)
        {
            cumulative += p[_typicalOrder[i]];
            if (cumulative > typical)
            {
                kept = i + 1;
                break;
            }
        }

        // the kept candidates back in logit order (positions ascending), their ids first in ids
        Array.Sort(_typicalOrder, 0, kept);
        for (int i = 0; i < kept; i++)
        {
            ids[i] = ids[_typicalOrder[i]];
        }

        return kept;
    }

    /// <summary>p[i] = softmax over the first <paramref name="count"/> sorted candidates (llama_sampler_softmax_impl).</summary>
    private static void Softmax(ReadOnlySpan<float> l, ReadOnlySpan<int> ids, Span<float> p, int count)
    {
        float max = l[ids[0]];
        float sum = 0;
        for (int i = 0; i < count; i++)
        {
            p[i] = MathF.Exp(l[ids[i]] - max);
            sum += p[i];
        }

        for (int i = 0; i < count; i++)
        {
            p[i] /= sum;
        }
    }

    private void ApplyPenalties(Span<float> l, IReadOnlyList<int> history)
    {
        if (!HasPenalties || history.Count == 0)
        {
            return;
        }

        int window = _settings.RepeatLastN < 0 ? history.Count : Math.Min(_settings.RepeatLastN, history.Count);
        _counts.Clear();
        for (int i = history.Count - window; i < history.Count; i++)
        {
            _counts[history[i]] = _counts.GetValueOrDefault(history[i]) + 1;
        }

        foreach ((int id, int c) in _counts)
        {
            if ((uint)id >= (uint)l.Length)
            {
                continue;
            }

            // llama_sampler_penalties_apply
            l[id] = l[id] > 0 ? l[id] / _settings.RepeatPenalty : l[id] * _settings.RepeatPenalty;
            l[id] -= c * _settings.FrequencyPenalty + (c > 0 ? 1 : 0) * _settings.PresencePenalty;
        }
    }

    /// <summary>Argmax, ties → lowest id.</summary>
    public static int Argmax(ReadOnlySpan<float> l)
    {
        int best = 0;
        for (int i = 1; i < l.Length; i++)
        {
            if (l[i] > l[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Puts the ids of the k largest logits first in <paramref name="ids"/>, sorted descending (ties → lower id).</summary>
    private static int TopK(ReadOnlySpan<float> l, Span<int> ids, int k)
    {
        // a size-k min-heap over (logit, -id): O(n log k)
        int size = 0;
        for (int id = 0; id < l.Length; id++)
        {
            if (size < k)
            {
                ids[size++] = id;
                SiftUp(ids, size - 1, l);
            }
            else if (Less(ids[0], id, l))
            {
                ids[0] = id;
                SiftDown(ids, 0, size, l);
            }
        }

        // heap-sort: each step moves the smallest remaining candidate to the end, leaving the array descending
        for (int end = size - 1; end > 0; end--)
        {
            (ids[0], ids[end]) = (ids[end], ids[0]);
            SiftDown(ids, 0, end, l);
        }

        return size;
    }

    // a < b in the heap order: smaller logit, or equal logit and larger id (so lower ids win ties)
    private static bool Less(int a, int b, ReadOnlySpan<float> l) => l[a] < l[b] || (l[a] == l[b] && a > b);

    private static void SiftUp(Span<int> h, int i, ReadOnlySpan<float> l)
    {
        while (i > 0)
        {
            int p = (i - 1) / 2;
            if (!Less(h[i], h[p], l))
            {
                break;
            }

            (h[i], h[p]) = (h[p], h[i]);
            i = p;
        }
    }

    private static void SiftDown(Span<int> h, int i, int n, ReadOnlySpan<float> l)
    {
        while (true)
        {
            int a = 2 * i + 1, b = a + 1, m = i;
            if (a < n && Less(h[a], h[m], l))
            {
                m = a;
            }

            if (b < n && Less(h[b], h[m], l))
            {
                m = b;
            }

            if (m == i)
            {
                return;
            }

            (h[i], h[m]) = (h[m], h[i]);
            i = m;
        }
    }

    private double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    // xoshiro256** (Blackman & Vigna)
    private ulong Next()
    {
        ulong result = RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = RotateLeft(_s3, 45);
        return result;
    }

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }
}
