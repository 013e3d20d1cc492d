using System.Runtime.CompilerServices;
using System.Text;
using GpuLlama.Model;

namespace GpuLlama.Generation;

/// <summary>
/// A conversation in the model's chat template over one KV cache (llama.cpp's llama-cli -cnv, LLamaSharp's
/// ChatSession). Each turn sends only what the rendered conversation adds after the text the cache already holds —
/// the previous reply's end-of-turn marker, the new user message, the assistant header — so earlier turns are not
/// processed again. When the rendering no longer starts with that text (a template that trims the reply, a reply
/// cut by a stop string or by the caller, a full context), the turn sends the whole conversation again from an empty
/// cache; when the conversation no longer fits the context, its oldest exchanges are left out. Not thread-safe: one
/// turn at a time.
/// </summary>
public sealed class ChatSession
{
    private readonly LlamaModel _model;
    private readonly Generator _generator;
    private readonly List<ChatMessage> _messages = [];

    // the conversation as text up to where the KV cache holds it; null when the cache holds text the conversation
    // does not show (or the turn is still running)
    private string? _cached = "";

    public ChatSession(LlamaModel model, string? systemMessage = null)
    {
        _model = model;
        _generator = model.CreateGenerator();
        if (systemMessage is not null)
        {
            _messages.Add(new ChatMessage("system", systemMessage));
        }
    }

    /// <summary>The conversation so far (the system message, then user and assistant turns).</summary>
    public IReadOnlyList<ChatMessage> Messages => _messages;

    public StopReason LastStopReason => _generator.LastStopReason;

    public GenerationTimings LastTimings => _generator.LastTimings;

    /// <summary>Prompt tokens the last turn sent, and the cache position they started at (0: the whole conversation).</summary>
    public (int Tokens, int Position) LastPrompt { get; private set; }

    /// <summary>Starts over: the conversation keeps only its system message, the cache is empty.</summary>
    public void Reset()
    {
        _messages.RemoveAll(m => m.Role != "system");
        _generator.Reset();
        _cached = "";
    }

    /// <summary>Sends <paramref name="userMessage"/> and yields the reply's tokens as they are generated.</summary>
    public IEnumerable<GeneratedToken> Send(string userMessage, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options = NoShift(options);
        (int[] tokens, string rendered, string sent, List<ChatMessage> history) = Begin(userMessage, options);
        var reply = new StringBuilder();
        bool started = false, complete = false;
        try
        {
            foreach (GeneratedToken t in _generator.Generate(tokens, options, cancellationToken))
            {
                started = true;
                reply.Append(t.Text);
                yield return t;
            }

            complete = true;
        }
        finally
        {
            End(userMessage, rendered, sent, history, reply.ToString(), started || complete, complete);
        }
    }

    /// <summary>Sends <paramref name="userMessage"/> and streams the reply's text (see <see cref="Generator.GenerateAsync(string, GenerationOptions?, CancellationToken)"/>).</summary>
    public async IAsyncEnumerable<string> SendAsync(string userMessage, GenerationOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options = NoShift(options);
        (int[] tokens, string rendered, string sent, List<ChatMessage> history) = Begin(userMessage, options);
        var reply = new StringBuilder();
        bool started = false, complete = false;
        try
        {
            await foreach (string piece in _generator.GenerateAsync(tokens, options, cancellationToken).ConfigureAwait(false))
            {
                started = true;
                reply.Append(piece);
                yield return piece;
            }

            complete = true;
        }
        finally
        {
            End(userMessage, rendered, sent, history, reply.ToString(), started || complete, complete);
        }
    }

    /// <summary>
    /// A reply stops at a full context (<see cref="StopReason.ContextFull"/>) rather than shifting it: the session
    /// keeps the cache in step with the rendered conversation, and leaves out whole old exchanges itself (Begin).
    /// </summary>
    private static GenerationOptions NoShift(GenerationOptions? options) => (options ?? new GenerationOptions()) with { ContextShift = false };

    /// <summary>
    /// The turn's prompt tokens, the rendered conversation, the text the cache held before it, and the history the
    /// turn continues: when the conversation and room for the reply (the token limit, else a quarter of the context)
    /// do not fit the context, the oldest exchanges are left out (the system message stays), as Ollama truncates
    /// old messages, and the cache starts over. The history is the session's only once the turn generates.
    /// </summary>
    private (int[] Tokens, string Rendered, string Cached, List<ChatMessage> History) Begin(string userMessage, GenerationOptions? options)
    {
        ArgumentNullException.ThrowIfNull(userMessage);
        int context = _model.ContextLength;
        int reserve = options is { MaxTokens: >= 0 } o ? Math.Min(o.MaxTokens, context / 2) : context / 4;
        var history = new List<ChatMessage>(_messages);
        string? cached = _cached;
        while (true)
        {
            string full = ChatFormatter.Format(_model.Tokenizer, [.. history, new ChatMessage("user", userMessage)], addGenerationPrompt: true);
            bool continues = cached is not null && full.StartsWith(cached, StringComparison.Ordinal);
            int position = continues ? _generator.Position : 0;
            int[] tokens = _model.Tokenizer.Encode(continues ? full[cached!.Length..] : full, addBos: position == 0);
            if (position + tokens.Length + reserve > context && DropOldestExchange(history))
            {
                cached = null; // the rendering changed at its start: everything is sent again
                continue;
            }

            if (position + tokens.Length > context)
            {
                // before anything is reset, so that the session stays as it was
                throw new GpuLlamaException($"the message needs {tokens.Length} prompt tokens but the context holds {context - position} more (raise --ctx)");
            }

            if (!continues)
            {
                _generator.Reset();
                cached = "";
            }

            LastPrompt = (tokens.Length, _generator.Position);
            _cached = null;
            return (tokens, full, cached!, history);
        }
    }

    /// <summary>Removes the first user message after the system message and the replies up to the next one; false when there is none to drop.</summary>
    private static bool DropOldestExchange(List<ChatMessage> history)
    {
        int first = history.FindIndex(m => m.Role == "user");
        if (first < 0)
        {
            return false;
        }

        int next = history.FindIndex(first + 1, m => m.Role == "user");
        history.RemoveRange(first, (next < 0 ? history.Count : next) - first);
        return true;
    }

    private void End(string userMessage, string rendered, string cachedBefore, List<ChatMessage> history, string reply, bool generated, bool complete)
    {
        if (!generated)
        {
            // the turn failed before generating (a prompt the context cannot hold): the conversation and the cache
            // are as they were
            _cached = cachedBefore;
            return;
        }

        _messages.Clear();
        _messages.AddRange(history);
        _messages.Add(new ChatMessage("user", userMessage));
        _messages.Add(new ChatMessage("assistant", reply));

        // After an end of sequence (a token that is not run: the template writes the marker next turn) or the token
        // limit (the last token runs with the next prompt), the cache holds the prompt and the reply as shown. After a
        // stop string it also holds part of that string, and a turn the caller left early may have generated past what
        // it received; a full context cannot take another turn. Those start over.
        _cached = complete && LastStopReason is StopReason.EndOfSequence or StopReason.MaxTokens ? rendered + reply : null;
    }
}
