using GpuLlama.Host;
using Xunit;

namespace GpuLlama.Tests.Cli;

/// <summary>llama.cpp's escape processing of -p/--stop text (common.cpp string_process_escapes).</summary>
public sealed class EscapesTests
{
    [Theory]
    [InlineData(@"Q: hi\nA:", "Q: hi\nA:")]
    [InlineData(@"a\tb\rc", "a\tb\rc")]
    [InlineData("quote \\\"x\\\" and \\'y\\'", "quote \"x\" and 'y'")]
    [InlineData(@"back\\slash\\n", "back\\slash\\n")]     // \\ is one backslash, so the n stays a letter
    [InlineData(@"caf\xc3\xa9", "café")]                   // \xHH are bytes of UTF-8
    [InlineData(@"\q and \x4 and \xZZ", @"\q and \x4 and \xZZ")] // unknown or incomplete escapes stay as written
    [InlineData("trailing \\", "trailing \\")]
    [InlineData("no escapes, emoji 🦙", "no escapes, emoji 🦙")]
    public void EscapesAreProcessedAsLlamaCppDoes(string input, string expected) => Assert.Equal(expected, Escapes.Process(input));
}
