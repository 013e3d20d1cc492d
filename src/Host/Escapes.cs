using System.Text;

namespace GpuLlama.Host;

/// <summary>
/// llama.cpp's escape processing of command-line text (on by default there; <c>--no-escape</c> turns it off):
/// \n \r \t \' \" \\ and \xHH (one byte, so \xc3\xa9 is "é"); any other backslash stays as written.
/// </summary>
public static class Escapes
{
    public static string Process(string text)
    {
        if (!text.Contains('\\'))
        {
            return text;
        }

        var bytes = new List<byte>(text.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\\' && i + 1 < text.Length)
            {
                char e = text[i + 1];
                int? b = e switch
                {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '\'' => '\'',
                    '"' => '"',
                    '\\' => '\\',
                    'x' when i + 3 < text.Length && Uri.IsHexDigit(text[i + 2]) && Uri.IsHexDigit(text[i + 3]) => Convert.ToByte(text.Substring(i + 2, 2), 16),
                    _ => null,
                };
                if (b is { } value)
                {
                    bytes.Add((byte)value);
                    i += e == 'x' ? 3 : 1;
                    continue;
                }
            }

            // a character as UTF-8 (a surrogate pair together)
            int length = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])
                ? Encoding.UTF8.GetBytes(text.AsSpan(i++, 2), utf8)
                : Encoding.UTF8.GetBytes(text.AsSpan(i, 1), utf8);
            for (int k = 0; k < length; k++)
            {
                bytes.Add(utf8[k]);
            }
        }

        return Encoding.UTF8.GetString([.. bytes]);
    }
}
