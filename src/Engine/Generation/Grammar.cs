using System.Globalization;
using System.Text;

namespace GpuLlama.Generation;

/// <summary>
/// A GBNF grammar (llama.cpp's grammar format, also LLamaSharp's): rules <c>name ::= alternatives</c>, string literals
/// with escapes, character classes <c>[a-z]</c> / <c>[^"]</c>, <c>.</c>, groups, <c>*</c> <c>+</c> <c>?</c>
/// <c>{m}</c> <c>{m,}</c> <c>{m,n}</c>, <c>#</c> comments; generation starts at <c>root</c>. Parsed into rules of
/// alternatives, each a sequence of character classes and rule references (repetitions become rules, as llama.cpp
/// rewrites them), which <see cref="GrammarMatcher"/> runs as a pushdown automaton over code points.
/// </summary>
public sealed class Grammar
{
    internal Grammar(List<Symbol[][]> rules, string[] names, int root)
    {
        Rules = rules;
        Names = names;
        Root = root;
    }

    /// <summary>Each rule's alternatives, each a sequence of symbols (an empty sequence matches the empty string).</summary>
    internal List<Symbol[][]> Rules { get; }

    internal string[] Names { get; }

    internal int Root { get; }

    /// <summary>Parses GBNF text; errors are one line naming the line and column (and <paramref name="source"/>, e.g. a file).</summary>
    public static Grammar Parse(string text, string source = "grammar") => new GbnfParser(text, source).Parse();

    /// <summary>Parses a GBNF file (llama.cpp --grammar-file).</summary>
    public static Grammar Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new GpuLlamaException($"--grammar-file {path}: file not found");
        }

        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Any JSON value, with whitespace between tokens as JSON allows (Ollama's format "json").</summary>
    public static Grammar Json { get; } = Parse("""
        root   ::= ws value ws
        value  ::= object | array | string | number | "true" | "false" | "null"
        object ::= "{" ws ( member ( ws "," ws member )* ws )? "}"
        member ::= string ws ":" ws value
        array  ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
        string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" hex hex hex hex ) )* "\""
        hex    ::= [0-9a-fA-F]
        number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
        ws     ::= [ \t\n\r]{0,20}
        """, "the JSON grammar");
}

/// <summary>A character class (code point ranges, maybe negated) or a reference to a rule.</summary>
internal readonly record struct Symbol(int Rule, (int Lo, int Hi)[]? Ranges, bool Negated)
{
    public bool IsRule => Ranges is null;

    public static Symbol Ref(int rule) => new(rule, null, false);

    public static Symbol Chars((int, int)[] ranges, bool negated) => new(-1, ranges, negated);

    public bool Matches(int c)
    {
        foreach ((int lo, int hi) in Ranges!)
        {
            if (c >= lo && c <= hi)
            {
                return !Negated;
            }
        }

        return Negated;
    }

    /// <summary>Whether some code point in [lo, hi] matches (a partial UTF-8 sequence narrows the next code point to such a span).</summary>
    public bool MatchesSome(int lo, int hi)
    {
        if (!Negated)
        {
            return Ranges!.Any(r => r.Lo <= hi && r.Hi >= lo);
        }

        // negated: some code point of [lo, hi] lies outside every range
        int c = lo;
        foreach ((int rlo, int rhi) in Ranges!.OrderBy(r => r.Lo))
        {
            if (rhi < c)
            {
                continue;
            }

            if (rlo > c)
            {
                return true;
            }

            c = rhi + 1;
            if (c > hi)
            {
                return false;
            }
        }

        return c <= hi;
    }
}

/// <summary>llama.cpp's GBNF grammar parser (grammar-parser.cpp's rules), written for this engine.</summary>
internal sealed class GbnfParser
{
    private readonly string _text;
    private readonly string _source;
    private readonly List<Symbol[][]?> _rules = [];
    private readonly List<string> _names = [];
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly HashSet<int> _defined = [];
    private readonly Dictionary<int, (int Line, int Column)> _firstUse = [];
    private int _pos;

    public GbnfParser(string text, string source)
    {
        _text = text;
        _source = source;
    }

    public Grammar Parse()
    {
        Space(newlines: true);
        while (_pos < _text.Length)
        {
            ParseRule();
            Space(newlines: true);
        }

        if (!_ids.TryGetValue("root", out int root) || !_defined.Contains(root))
        {
            throw new GpuLlamaException($"{_source}: no 'root' rule (generation starts at root ::= ...)");
        }

        for (int i = 0; i < _rules.Count; i++)
        {
            if (_rules[i] is null)
            {
                (int line, int column) = _firstUse[i];
                throw new GpuLlamaException($"{_source}:{line}:{column}: rule '{_names[i]}' is used but not defined");
            }
        }

        var rules = _rules.Select(r => r!).ToList();
        CheckLeftRecursion(rules);
        return new Grammar(rules, [.. _names], root);
    }

    private void ParseRule()
    {
        int start = _pos;
        string name = Name();
        int id = Id(name);
        if (!_defined.Add(id))
        {
            throw Error(start, $"rule '{name}' is defined twice");
        }

        Space(newlines: false);
        if (!_text.AsSpan(_pos).StartsWith("::="))
        {
            throw Error(_pos, $"expected '::=' after the rule name '{name}'");
        }

        _pos += 3;
        Space(newlines: true);
        _rules[id] = [.. Alternatives(nested: false)];
        if (_pos < _text.Length && _text[_pos] is not ('\n' or '\r'))
        {
            throw Error(_pos, $"unexpected '{_text[_pos]}' in rule '{name}'");
        }
    }

    private List<Symbol[]> Alternatives(bool nested)
    {
        var alternatives = new List<Symbol[]> { Sequence(nested) };
        while (_pos < _text.Length && _text[_pos] == '|')
        {
            _pos++;
            Space(newlines: true);
            alternatives.Add(Sequence(nested));
        }

        return alternatives;
    }

    private Symbol[] Sequence(bool nested)
    {
        var sequence = new List<Symbol>();
        int lastItem = -1; // where the last item (a literal, class, reference or group) begins: what a repetition repeats
        while (_pos < _text.Length)
        {
            char c = _text[_pos];
            int itemStart = sequence.Count;
            if (c == '"')
            {
                _pos++;
                while (!Closes('"', "string literal"))
                {
                    int ch = Char();
                    sequence.Add(Symbol.Chars([(ch, ch)], false));
                }
            }
            else if (c == '[')
            {
                _pos++;
                bool negated = _pos < _text.Length && _text[_pos] == '^';
                _pos += negated ? 1 : 0;
                var ranges = new List<(int, int)>();
                while (!Closes(']', "character class"))
                {
                    int lo = Char(), hi = lo;
                    if (_pos + 1 < _text.Length && _text[_pos] == '-' && _text[_pos + 1] != ']')
                    {
                        _pos++;
                        hi = Char();
                        if (hi < lo)
                        {
                            throw Error(_pos, $"character range U+{lo:X4}-U+{hi:X4} is backwards");
                        }
                    }

                    ranges.Add((lo, hi));
                }

                sequence.Add(Symbol.Chars([.. ranges], negated));
            }
            else if (c == '.')
            {
                _pos++;
                sequence.Add(Symbol.Chars([(0, 0x10FFFF)], false));
            }
            else if (IsNameChar(c))
            {
                int at = _pos;
                string name = Name();
                int id = Id(name);
                _firstUse.TryAdd(id, LineColumn(at));
                sequence.Add(Symbol.Ref(id));
            }
            else if (c == '(')
            {
                _pos++;
                Space(newlines: true);
                List<Symbol[]> group = Alternatives(nested: true);
                if (_pos >= _text.Length || _text[_pos] != ')')
                {
                    throw Error(_pos, "expected ')'");
                }

                _pos++;
                sequence.Add(Symbol.Ref(NewRule([.. group])));
            }
            else if (c is '*' or '+' or '?' or '{')
            {
                if (lastItem < 0)
                {
                    throw Error(_pos, $"'{c}' with nothing before it to repeat");
                }

                (int min, int max) = Repetition();
                Symbol[] item = [.. sequence.Skip(lastItem)];
                sequence.RemoveRange(lastItem, sequence.Count - lastItem);
                sequence.AddRange(Repeat(item, min, max));
                Space(nested);
                continue; // a repetition is not itself repeated
            }
            else
            {
                break;
            }

            lastItem = itemStart;
            Space(nested);
        }

        return [.. sequence];
    }

    /// <summary>Whether the literal or class being read ends here (the closing character is consumed); a line end first is an error.</summary>
    private bool Closes(char close, string what)
    {
        if (_pos >= _text.Length || _text[_pos] is '\n' or '\r')
        {
            throw Error(_pos, $"unterminated {what}");
        }

        if (_text[_pos] != close)
        {
            return false;
        }

        _pos++;
        return true;
    }

    /// <summary>item{min,max} (max −1: unbounded) as symbols: item min times, then a chain of optional rules.</summary>
    private List<Symbol> Repeat(Symbol[] item, int min, int max)
    {
        var result = new List<Symbol>();
        for (int i = 0; i < min; i++)
        {
            result.AddRange(item);
        }

        if (max < 0)
        {
            // rest ::= item rest | ε  (right-recursive: the matcher's stack does not grow with it)
            int rest = NewRule([]);
            _rules[rest] = [[.. item, Symbol.Ref(rest)], []];
            result.Add(Symbol.Ref(rest));
        }
        else if (max > min)
        {
            // opt_1 ::= item opt_2 | ε ... opt_k ::= item | ε
            int next = -1;
            for (int i = max - min; i >= 1; i--)
            {
                Symbol[] body = next < 0 ? item : [.. item, Symbol.Ref(next)];
                next = NewRule([body, []]);
            }

            result.Add(Symbol.Ref(next));
        }

        return result;
    }

    private (int Min, int Max) Repetition()
    {
        char c = _text[_pos++];
        if (c != '{')
        {
            return c switch { '*' => (0, -1), '+' => (1, -1), _ => (0, 1) };
        }

        Space(newlines: false);
        int min = Number(), max = min;
        Space(newlines: false);
        if (_pos < _text.Length && _text[_pos] == ',')
        {
            _pos++;
            Space(newlines: false);
            max = _pos < _text.Length && char.IsAsciiDigit(_text[_pos]) ? Number() : -1;
            Space(newlines: false);
        }

        if (_pos >= _text.Length || _text[_pos] != '}')
        {
            throw Error(_pos, "expected '}' to close the repetition");
        }

        _pos++;
        if (max >= 0 && max < min)
        {
            throw Error(_pos, $"repetition {{{min},{max}}}: the maximum is below the minimum");
        }

        return (min, max);
    }

    private int Number()
    {
        int start = _pos;
        while (_pos < _text.Length && char.IsAsciiDigit(_text[_pos]))
        {
            _pos++;
        }

        if (_pos == start || !int.TryParse(_text.AsSpan(start, _pos - start), NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n > 10000)
        {
            throw Error(start, "expected a repetition count (0..10000)");
        }

        return n;
    }

    /// <summary>One character of a literal or class: itself, or an escape (\n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH).</summary>
    private int Char()
    {
        int start = _pos;
        if (_text[_pos] != '\\')
        {
            int cp = char.ConvertToUtf32(_text, _pos);
            _pos += char.IsSurrogatePair(_text, _pos) ? 2 : 1;
            return cp;
        }

        if (_pos + 1 >= _text.Length)
        {
            throw Error(start, "an escape at the end of the text");
        }

        char e = _text[_pos + 1];
        _pos += 2;
        switch (e)
        {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case '\\' or '"' or '[' or ']' or '-' or '^' or '/': return e;
            case 'x': return Hex(2, start);
            case 'u': return Hex(4, start);
            case 'U': return Hex(8, start);
            default: throw Error(start, $"unknown escape '\\{e}'");
        }
    }

    private int Hex(int digits, int start)
    {
        if (_pos + digits > _text.Length || !int.TryParse(_text.AsSpan(_pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v) || v > 0x10FFFF)
        {
            throw Error(start, $"expected {digits} hex digits in the escape");
        }

        _pos += digits;
        return v;
    }

    private string Name()
    {
        int start = _pos;
        while (_pos < _text.Length && IsNameChar(_text[_pos]))
        {
            _pos++;
        }

        if (_pos == start)
        {
            throw Error(_pos, _pos < _text.Length ? $"expected a rule name, found '{_text[_pos]}'" : "expected a rule name");
        }

        return _text[start.._pos];
    }

    private static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';

    /// <summary>Skips spaces, tabs and comments, and line ends where <paramref name="newlines"/> (inside groups, after '|' and '::=').</summary>
    private void Space(bool newlines)
    {
        while (_pos < _text.Length)
        {
            char c = _text[_pos];
            if (c is ' ' or '\t' || (newlines && c is '\n' or '\r'))
            {
                _pos++;
            }
            else if (c == '#')
            {
                while (_pos < _text.Length && _text[_pos] is not ('\n' or '\r'))
                {
                    _pos++;
                }
            }
            else
            {
                break;
            }
        }
    }

    private int Id(string name)
    {
        if (!_ids.TryGetValue(name, out int id))
        {
            id = _rules.Count;
            _ids[name] = id;
            _names.Add(name);
            _rules.Add(null);
        }

        return id;
    }

    private int NewRule(Symbol[][] alternatives)
    {
        int id = _rules.Count;
        _names.Add($"_{id}");
        _rules.Add(alternatives);
        return id;
    }

    /// <summary>
    /// Rejects a rule that can reach itself without consuming a character (a ::= a "x", or through rules that can be
    /// empty): the matcher would expand it forever; llama.cpp refuses such grammars too.
    /// </summary>
    private void CheckLeftRecursion(List<Symbol[][]> rules)
    {
        // which rules can match the empty string (fixpoint)
        var nullable = new bool[rules.Count];
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int r = 0; r < rules.Count; r++)
            {
                if (!nullable[r] && rules[r].Any(alt => alt.All(s => s.IsRule && nullable[s.Rule])))
                {
                    nullable[r] = changed = true;
                }
            }
        }

        var state = new byte[rules.Count]; // 0 unvisited, 1 on the path, 2 done
        for (int r = 0; r < rules.Count; r++)
        {
            Visit(r);
        }

        void Visit(int r)
        {
            if (state[r] == 2)
            {
                return;
            }

            if (state[r] == 1)
            {
                throw new GpuLlamaException($"{_source}: rule '{DisplayName(r)}' is left-recursive (it can reach itself before matching a character)");
            }

            state[r] = 1;
            foreach (Symbol[] alt in rules[r])
            {
                foreach (Symbol s in alt)
                {
                    if (!s.IsRule)
                    {
                        break;
                    }

                    Visit(s.Rule);
                    if (!nullable[s.Rule])
                    {
                        break;
                    }
                }
            }

            state[r] = 2;
        }
    }

    private string DisplayName(int r) => _names[r].StartsWith('_') ? "(a group or repetition)" : _names[r];

    private (int Line, int Column) LineColumn(int at)
    {
        int line = 1, column = 1;
        for (int i = 0; i < at && i < _text.Length; i++)
        {
            (line, column) = _text[i] == '\n' ? (line + 1, 1) : (line, column + 1);
        }

        return (line, column);
    }

    private GpuLlamaException Error(int at, string message)
    {
        (int line, int column) = LineColumn(at);
        return new GpuLlamaException($"{_source}:{line}:{column}: {message}");
    }
}
