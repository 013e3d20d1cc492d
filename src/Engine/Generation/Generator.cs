using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using GpuLlama.Model;

namespace GpuLlama.Generation;

/// <summary>Options of one generation call (llama.cpp's common_params subset that matters per request).</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate; -1 = until EOS (or until the context is full, without <see cref="ContextShift"/>) (llama.cpp -n).</summary>
    public int MaxTokens { get; init; } = -1;

    public SamplerSettings Sampling { get; init; } = new();

    /// <summary>Keep generating through end-of-sequence tokens (llama.cpp --ignore-eos); with a <see cref="Grammar"/>, one it allows still ends the text.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Keep a copy of the last prompt position's logits in <see cref="Generator.LastPromptLogits"/>.</summary>
    public bool KeepPromptLogits { get; init; }

    /// <summary>
    /// Stop strings: generation ends where the text produces one of them, and the text streamed ends just before it
    /// (llama.cpp server's <c>stop</c>, Ollama's <c>stop</c>). Text that may begin one is held back until it is
    /// decided, so a stop string never shows up in the stream, even when it spans several tokens.
    /// </summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>
    /// When the context fills before generation is done, drop the older half of the tokens after the first
    /// <see cref="KeepTokens"/> and go on (llama.cpp's context shift, on by default in llama-cli; --no-context-shift).
    /// As llama.cpp, the cached keys of the tokens kept are rotated to their new positions (no token is evaluated
    /// again). Off: stop with <see cref="StopReason.ContextFull"/>.
    /// </summary>
    public bool ContextShift { get; init; } = true;

    /// <summary>
    /// Tokens at the start of the context that a context shift keeps (llama.cpp --keep): 0 = only the BOS token where
    /// the context begins with one, -1 = the whole first prompt, N = the first N (and the BOS token).
    /// </summary>
    public int KeepTokens { get; init; }

    /// <summary>
    /// Constrains the text to a GBNF grammar (llama.cpp --grammar; <see cref="Generation.Grammar.Json"/> for any JSON
    /// value): every token drawn is one the grammar allows after the text so far, and end-of-sequence comes only once
    /// the text is a whole sentence of it. The grammar applies to the generated text, not to the prompt.
    /// </summary>
    public Grammar? Grammar { get; init; }
}

/// <summary>Why generation stopped.</summary>
public enum StopReason
{
    None,
    EndOfSequence,
    MaxTokens,
    ContextFull,
    Cancelled,

    /// <summary>The text produced one of <see cref="GenerationOptions.StopSequences"/>.</summary>
    StopSequence,
}

/// <summary>One generated token and the text it completes (empty while a multi-byte character is pending).</summary>
public readonly record struct GeneratedToken(int Id, string Text);

/// <summary>Prompt and generation timings, as llama.cpp's llama_perf_context prints them.</summary>
public sealed record GenerationTimings(int PromptTokens, double PromptSeconds, int GeneratedTokens, double GenerationSeconds)
{
    public double PromptTokensPerSecond => PromptSeconds > 0 ? PromptTokens / PromptSeconds : 0;

    /// <summary>Generation speed over the tokens decoded one at a time (the first token comes from the prompt pass).</summary>
    public double GenerationTokensPerSecond => GenerationSeconds > 0 && GeneratedTokens > 1 ? (GeneratedTokens - 1) / GenerationSeconds : 0;
}

/// <summary>
/// The prefill + decode loop over a model's transformer: the prompt is processed as a batch, then one token at a
/// time; stops on EOS, the token limit, a stop string or a full context (or shifts it: <see cref="GenerationOptions.ContextShift"/>). Keeps the position, so a chat continues where it left off.
/// Not thread-safe: one generation at a time per model.
/// </summary>
public sealed class Generator
{
    private readonly LlamaModel _model;

    // The last token a call gave out without running it (it stopped on the token limit): the next call runs it
    // first, so that the cache holds every token the caller has seen when a conversation continues. -1 = none.
    private int _pendingToken = -1;

    public Generator(LlamaModel model)
    {
        _model = model;
    }

    // The tokens in the KV cache, position by position (what a context shift keeps), and how many of them the first
    // prompt was (KeepTokens = -1).
    private readonly List<int> _cached = [];
    private int _firstPrompt;

    /// <summary>Next position in the KV cache (tokens already processed).</summary>
    public int Position => _cached.Count;

    /// <summary>Context shifts in the last call (<see cref="GenerationOptions.ContextShift"/>).</summary>
    public int LastContextShifts { get; private set; }

    public StopReason LastStopReason { get; private set; }

    /// <summary>The stop string that ended the last call (<see cref="StopReason.StopSequence"/>), else null.</summary>
    public string? LastStopSequence { get; private set; }

    public GenerationTimings LastTimings { get; private set; } = new(0, 0, 0, 0);

    /// <summary>Logits of the last prompt position of the last call, when <see cref="GenerationOptions.KeepPromptLogits"/> was set.</summary>
    public float[]? LastPromptLogits { get; private set; }

    /// <summary>Forgets the conversation: the next prompt starts at position 0.</summary>
    public void Reset()
    {
        _cached.Clear();
        _pendingToken = -1;
    }

    /// <summary>
    /// Processes <paramref name="prompt"/> at <see cref="Position"/> and yields generated tokens with their streamed
    /// text. When the previous call stopped on its token limit, its last token (given out, never run) is run first, so
    /// a continued conversation sees every token the caller saw.
    /// </summary>
    public IEnumerable<GeneratedToken> Generate(IReadOnlyList<int> prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        Transformer transformer = _model.Transformer;
        ModelTokenizer tokenizer = _model.Tokenizer;
        int context = _model.ContextLength;
        if (prompt.Count == 0)
        {
            throw new GpuLlamaException("the prompt is empty: give a prompt or tokens");
        }

        if (_pendingToken >= 0)
        {
            prompt = [_pendingToken, .. prompt];
        }

        if (Position + prompt.Count > context)
        {
            throw new GpuLlamaException(Position == 0
                ? $"the prompt has {prompt.Count} tokens but the context holds {context} (raise --ctx, at most the model's {_model.Config.ContextLength})"
                : $"the prompt has {prompt.Count} tokens but only {context - Position} of the context's {context} are left (raise --ctx or start over)");
        }

        foreach (int id in prompt)
        {
            if ((uint)id >= (uint)_model.Config.VocabSize)
            {
                throw new GpuLlamaException($"token id {id} is outside the vocabulary (0..{_model.Config.VocabSize - 1})");
            }
        }

        if (options.KeepTokens < -1)
        {
            throw new GpuLlamaException($"--keep {options.KeepTokens}: expected -1 (the whole prompt), 0 or more");
        }

        _pendingToken = -1;
        var sampler = new Sampler(options.Sampling);
        GrammarMatcher? grammar = options.Grammar is { } g ? new GrammarMatcher(g, tokenizer) : null;
        float[]? masked = null;
        StopSequences? stops = options.StopSequences.Count > 0 ? new StopSequences(options.StopSequences) : null;
        var history = new List<int>(prompt);
        StreamingDecoder decoder = tokenizer.CreateStreamingDecoder();
        LastStopReason = StopReason.None;
        LastStopSequence = null;

        // prefill: the whole prompt as a batch (the transformer splits it into chunks of its batch size)
        var clock = Stopwatch.StartNew();
        int[] promptArray = prompt as int[] ?? [.. prompt];
        transformer.Forward(promptArray, Position);
        _firstPrompt = Position == 0 ? prompt.Count : _firstPrompt;
        _cached.AddRange(promptArray);
        LastContextShifts = 0;
        int next = NextToken(transformer, sampler, grammar, history, ref masked);
        LastPromptLogits = options.KeepPromptLogits ? transformer.LogitsLast().ToArray() : null;
        double promptSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        int generated = 0;
        var single = new int[1];
        while (true)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                LastStopReason = StopReason.Cancelled;
                break;
            }

            // with a grammar, end-of-sequence comes only where the text is complete, and ends it even with IgnoreEos
            if ((!options.IgnoreEos || grammar is not null) && tokenizer.IsEos(next))
            {
                LastStopReason = StopReason.EndOfSequence;
                break;
            }

            generated++;
            history.Add(next);
            LastTimings = new GenerationTimings(prompt.Count, promptSeconds, generated, clock.Elapsed.TotalSeconds);
            string text = decoder.Push(next);
            bool stopped = false;
            if (stops is not null)
            {
                text = stops.Push(text, out stopped);
            }

            yield return new GeneratedToken(next, text);
            if (stopped)
            {
                LastStopReason = StopReason.StopSequence;
                break;
            }

            if (options.MaxTokens >= 0 && generated >= options.MaxTokens)
            {
                LastStopReason = StopReason.MaxTokens;
                _pendingToken = next;
                break;
            }

            if (Position >= context && !(options.ContextShift && ShiftContext(options.KeepTokens)))
            {
                LastStopReason = StopReason.ContextFull;
                break;
            }

            single[0] = next;
            transformer.Forward(single, Position);
            _cached.Add(next);
            next = NextToken(transformer, sampler, grammar, history, ref masked);
        }

        LastTimings = new GenerationTimings(prompt.Count, promptSeconds, generated, clock.Elapsed.TotalSeconds);
        string tail = "";
        if (LastStopReason != StopReason.StopSequence)
        {
            // bytes of an unfinished character, and text held back for a stop string that did not come
            tail = decoder.Flush();
            if (stops is not null)
            {
                tail = stops.Push(tail, out bool stopped);
                tail += stopped ? "" : stops.Flush();
                LastStopReason = stopped ? StopReason.StopSequence : LastStopReason;
            }
        }

        LastStopSequence = LastStopReason == StopReason.StopSequence ? stops!.Found : null;
        if (tail.Length > 0)
        {
            yield return new GeneratedToken(-1, tail);
        }
    }

    /// <summary>
    /// The next token from the last logits: an argmax on the device when greedy and unconstrained; with a grammar,
    /// llama.cpp's order — the token drawn from all the logits if the grammar allows it, else a draw again from the
    /// logits of the tokens it allows (<paramref name="masked"/>: reused scratch).
    /// </summary>
    private static int NextToken(Transformer transformer, Sampler sampler, GrammarMatcher? grammar, List<int> history, ref float[]? masked)
    {
        if (grammar is null)
        {
            return sampler.IsGreedy ? transformer.ArgmaxLast() : sampler.Sample(transformer.LogitsLast(), history);
        }

        ReadOnlySpan<float> logits = transformer.LogitsLast();
        int token = sampler.Sample(logits, history);
        if (!grammar.Allows(token))
        {
            masked ??= new float[logits.Length];
            bool any = false;
            for (int id = 0; id < logits.Length; id++)
            {
                bool allowed = grammar.Allows(id);
                masked[id] = allowed ? logits[id] : float.NegativeInfinity;
                any |= allowed;
            }

            if (!any)
            {
                throw new GpuLlamaException("the grammar allows no token of the vocabulary after the text so far");
            }

            token = sampler.Sample(masked, history);
        }

        grammar.Accept(token);
        return token;
    }

    /// <summary>
    /// llama-cli's context shift: keeps the first n_keep tokens (<paramref name="keep"/>, plus the BOS token the context
    /// starts with), drops half of the rest — the oldest — and moves the newer half down in the cache, its keys
    /// rotated to their new positions (<see cref="Transformer.ShiftCache"/>). False when nothing could be dropped.
    /// </summary>
    private bool ShiftContext(int keep)
    {
        int bos = _model.Tokenizer.BosId;
        int nKeep = keep < 0 ? _firstPrompt : keep + (_cached.Count > 0 && bos >= 0 && _cached[0] == bos ? 1 : 0);
        nKeep = Math.Min(nKeep, _cached.Count);
        int discard = (_cached.Count - nKeep) / 2;
        if (discard == 0)
        {
            return false;
        }

        _model.Transformer.ShiftCache(nKeep + discard, nKeep, _cached.Count - nKeep - discard);
        _cached.RemoveRange(nKeep, discard);
        _firstPrompt = Math.Min(_firstPrompt, nKeep);
        LastContextShifts++;
        return true;
    }

    /// <summary>
    /// Streams the text generated for <paramref name="prompt"/>. The compute runs on one dedicated thread (a GPU
    /// context stays bound to it); cancellation stops generation after the current token.
    /// </summary>
    public IAsyncEnumerable<string> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(_model.Tokenizer.Encode(prompt, addBos: Position == 0), options, cancellationToken);

    /// <summary><see cref="GenerateAsync(string, GenerationOptions?, CancellationToken)"/> for a prompt of token ids.</summary>
    public async IAsyncEnumerable<string> GenerateAsync(IReadOnlyList<int> tokens, GenerationOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateBounded<string>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
        var worker = new Thread(() =>
        {
            try
            {
                foreach (GeneratedToken t in Generate(tokens, options, stop.Token))
                {
                    if (t.Text.Length > 0)
                    {
                        // wait for a slow reader rather than buffer without bound; a reader that left cancels `stop`
                        channel.Writer.WriteAsync(t.Text, stop.Token).AsTask().GetAwaiter().GetResult();
                    }
                }

                channel.Writer.TryComplete();
            }
            catch (OperationCanceledException)
            {
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        })
        {
            IsBackground = true,
            Name = "gpullama-generate",
        };
        worker.Start();
        try
        {
            await foreach (string text in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            {
                yield return text;
            }
        }
        finally
        {
            // the consumer may stop early: end the worker before the model is used again
            stop.Cancel();
            worker.Join();
        }

        cancellationToken.ThrowIfCancellationRequested();
    }
}
