namespace GpuLlama.Generation;

/// <summary>
/// Stop strings over streamed text (llama.cpp server's "stop", Ollama's stop option, LLamaSharp's AntiPrompts):
/// text that could still be the start of a stop string is held back, and generation ends where one appears —
/// the text before it is given out, the stop string itself is not.
/// </summary>
internal sealed class StopSequences
{
    private readonly string[] _stops;
    private string _pending = "";

    public StopSequences(IReadOnlyList<string> stops)
    {
        if (stops.Any(string.IsNullOrEmpty))
        {
            throw new GpuLlamaException("--stop: a stop string is empty");
        }

        _stops = [.. stops];
    }

    /// <summary>The stop string found by the last <see cref="Push"/> that returned <c>stopped</c>, else null.</summary>
    public string? Found { get; private set; }

    /// <summary>
    /// Adds newly decoded <paramref name="text"/>; returns the text that can be given out now. With
    /// <paramref name="stopped"/>, a stop string was completed and the result is everything before it.
    /// </summary>
    public string Push(string text, out bool stopped)
    {
        _pending += text;
        int at = -1;
        foreach (string s in _stops)
        {
            int i = _pending.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (at < 0 || i < at))
            {
                at = i;
                Found = s;
            }
        }

        if (at >= 0)
        {
            stopped = true;
            string before = _pending[..at];
            _pending = "";
            return before;
        }

        // hold back the longest end of the text that begins some stop string
        stopped = false;
        int hold = 0;
        foreach (string s in _stops)
        {
            for (int k = Math.Min(s.Length - 1, _pending.Length); k > hold; k--)
            {
                if (_pending.AsSpan(_pending.Length - k).SequenceEqual(s.AsSpan(0, k)))
                {
                    hold = k;
                    break;
                }
            }
        }

        string ready = _pending[..^hold];
        _pending = _pending[^hold..];
        return ready;
    }

    /// <summary>The text held back when generation ends for another reason: it was not a stop string after all.</summary>
    public string Flush()
    {
        string rest = _pending;
        _pending = "";
        return rest;
    }
}
