using GpuLlama.Formats;
namespace GpuLlama.Generation;
// LOCAL COMPILE STUB, never committed
public sealed class ModelTokenizer
{
    public static ModelTokenizer ForSource(IWeightSource s, string? p = null) => new();
    public static ModelTokenizer Load(string p) => new();
    public int[] Encode(string t, bool addBos = true, bool parseSpecial = true) => [1];
    public string Piece(int id) => "";
    public bool IsEos(int id) => id == 2;
    public string? ChatTemplate => null;
    public StreamingDecoder CreateStreamingDecoder() => new();
}
public sealed class StreamingDecoder { public string Push(int id) => ""; public string Flush() => ""; }
public sealed record ChatMessage(string Role, string Content);
public static class ChatFormatter { public static string Format(ModelTokenizer t, IReadOnlyList<ChatMessage> m, bool addGenerationPrompt) => ""; }
