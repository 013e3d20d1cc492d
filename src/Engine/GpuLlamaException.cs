using System.Diagnostics.CodeAnalysis;

namespace GpuLlama;

/// <summary>
/// The one user-facing error type. Its message is a single line that names the file, flag or tensor
/// and says what is wrong (expected vs got). Only the CLI's error boundary turns it into stderr + exit code.
/// </summary>
public sealed class GpuLlamaException : Exception
{
    public GpuLlamaException(string message) : base(message) { }

    public GpuLlamaException(string message, Exception inner) : base(message, inner) { }

    [DoesNotReturn]
    public static void Throw(string message) => throw new GpuLlamaException(message);

    /// <summary>"path: message" — the shape of every file error.</summary>
    [DoesNotReturn]
    public static void ThrowFile(string path, string message) => throw new GpuLlamaException($"{path}: {message}");
}
