using System.Text;
using System.Text.Json;

namespace GpuLlama.Generation;

/// <summary>
/// A JSON Schema as a GBNF grammar (llama.cpp's --json-schema, Ollama's structured outputs): the output is then a
/// JSON value of that schema. Covered: <c>type</c> (one or a list), <c>properties</c> in their order with
/// <c>required</c> ones always there and the others optional, <c>additionalProperties</c> (false unless given when
/// there are properties), <c>items</c> with <c>minItems</c>/<c>maxItems</c>, <c>prefixItems</c>, strings with
/// <c>minLength</c>/<c>maxLength</c>, <c>enum</c>, <c>const</c>, <c>anyOf</c>/<c>oneOf</c>, <c>$ref</c> to
/// <c>#/$defs/…</c> or <c>#/definitions/…</c> (recursive schemas too), and <c>{}</c>/<c>true</c> for any value.
/// Annotations are ignored; keywords that constrain in ways a grammar here cannot (<c>pattern</c>, <c>allOf</c>,
/// <c>not</c>, numeric bounds, <c>format</c>…) are refused in one line rather than silently left out.
/// </summary>
public sealed class JsonSchemaGrammar
{
    // JSON text as a model writes it: only what JSON must escape is escaped (not non-ASCII, not < > & ')
    private static readonly JsonSerializerOptions s_json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly JsonElement _root;
    private readonly StringBuilder _rules = new();
    private readonly Dictionary<string, string> _refs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly string _source;

    private JsonSchemaGrammar(JsonElement root, string source)
    {
        _root = root;
        _source = source;
    }

    /// <summary>The grammar of <paramref name="schemaJson"/>; <paramref name="source"/> names it in one-line errors (a flag, a file).</summary>
    public static Grammar FromSchema(string schemaJson, string source = "--json-schema") => Grammar.Parse(ToGbnf(schemaJson, source), source);

    /// <summary>The GBNF text for <paramref name="schemaJson"/> (what <see cref="FromSchema"/> parses).</summary>
    public static string ToGbnf(string schemaJson, string source = "--json-schema")
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(schemaJson);
        }
        catch (JsonException e)
        {
            throw new GpuLlamaException($"{source}: not valid JSON ({e.Message.Split('\n')[0]})");
        }

        using (doc)
        {
            var g = new JsonSchemaGrammar(doc.RootElement, source);
            foreach (string reserved in new[] { "root", "value", "object", "array", "string", "char", "number", "integer", "boolean", "null", "space" })
            {
                g._names.Add(reserved);
            }

            g.Define("root", g.Value(doc.RootElement, "", "root"));
            g.Primitives();
            return g._rules.ToString();
        }
    }

    /// <summary>A rule for <paramref name="schema"/> (its name); <paramref name="path"/> names the place in errors.</summary>
    private string Rule(string hint, JsonElement schema, string path)
    {
        string name = Unique(hint);
        Define(name, Value(schema, path, name));
        return name;
    }

    /// <summary>A GBNF expression for a value of <paramref name="schema"/> (followed by optional space).</summary>
    private string Value(JsonElement schema, string path, string hint)
    {
        string at = path.Length == 0 ? "the schema" : path;
        if (schema.ValueKind == JsonValueKind.True)
        {
            return "value";
        }

        if (schema.ValueKind != JsonValueKind.Object)
        {
            throw new GpuLlamaException($"{_source}: {at} must be a schema object (or true)");
        }

        foreach (JsonProperty p in schema.EnumerateObject())
        {
            if (p.Name is "pattern" or "allOf" or "not" or "if" or "then" or "else" or "minimum" or "maximum" or "exclusiveMinimum"
                or "exclusiveMaximum" or "multipleOf" or "format" or "patternProperties" or "propertyNames" or "minProperties"
                or "maxProperties" or "uniqueItems" or "contains" or "dependentRequired" or "dependentSchemas")
            {
                throw new GpuLlamaException($"{_source}: {at}: '{p.Name}' is not supported (supported: type, properties, required, additionalProperties, items, prefixItems, minItems, maxItems, minLength, maxLength, enum, const, anyOf, oneOf, $ref)");
            }
        }

        if (schema.TryGetProperty("$ref", out JsonElement r))
        {
            return Ref(r.GetString() ?? "", at);
        }

        if (schema.TryGetProperty("const", out JsonElement c))
        {
            return $"{Literal(Compact(c))} space";
        }

        if (schema.TryGetProperty("enum", out JsonElement e))
        {
            if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
            {
                throw new GpuLlamaException($"{_source}: {at}: enum must be a non-empty array");
            }

            return $"({string.Join(" | ", e.EnumerateArray().Select(x => Literal(Compact(x))))}) space";
        }

        foreach (string key in new[] { "anyOf", "oneOf" })
        {
            if (schema.TryGetProperty(key, out JsonElement alts))
            {
                if (alts.ValueKind != JsonValueKind.Array || alts.GetArrayLength() == 0)
                {
                    throw new GpuLlamaException($"{_source}: {at}: {key} must be a non-empty array");
                }

                return "(" + string.Join(" | ", alts.EnumerateArray().Select((x, i) => Rule($"{hint}-{i}", x, $"{at}/{key}/{i}"))) + ")";
            }
        }

        if (!schema.TryGetProperty("type", out JsonElement type))
        {
            // no type: what the other keywords imply, else any value
            return schema.TryGetProperty("properties", out _) || schema.TryGetProperty("additionalProperties", out _) ? Object(schema, at, hint)
                : schema.TryGetProperty("items", out _) || schema.TryGetProperty("prefixItems", out _) ? Array(schema, at, hint)
                : "value";
        }

        if (type.ValueKind == JsonValueKind.Array)
        {
            return "(" + string.Join(" | ", type.EnumerateArray().Select(t => Typed(t.GetString() ?? "", schema, at, hint))) + ")";
        }

        return Typed(type.GetString() ?? "", schema, at, hint);
    }

    private string Typed(string type, JsonElement schema, string at, string hint) => type switch
    {
        "object" => Object(schema, at, hint),
        "array" => Array(schema, at, hint),
        "string" => String(schema, at),
        "number" => "number",
        "integer" => "integer",
        "boolean" => "boolean",
        "null" => "null",
        _ => throw new GpuLlamaException($"{_source}: {at}: unknown type '{type}' (object, array, string, number, integer, boolean, null)"),
    };

    private string String(JsonElement schema, string at)
    {
        int min = Count(schema, "minLength", at, 0), max = Count(schema, "maxLength", at, -1);
        if (min == 0 && max < 0)
        {
            return "string";
        }

        return $"\"\\\"\" char{{{min},{(max < 0 ? "" : max)}}} \"\\\"\" space";
    }

    private string Array(JsonElement schema, string at, string hint)
    {
        int min = Count(schema, "minItems", at, 0), max = Count(schema, "maxItems", at, -1);
        if (schema.TryGetProperty("prefixItems", out JsonElement prefix))
        {
            // a tuple: these items in order (then nothing more)
            string[] items = [.. prefix.EnumerateArray().Select((x, i) => Rule($"{hint}-{i}", x, $"{at}/prefixItems/{i}"))];
            return items.Length == 0 ? "\"[\" space \"]\" space" : $"\"[\" space {string.Join(" \",\" space ", items)} \"]\" space";
        }

        string item = schema.TryGetProperty("items", out JsonElement items1) ? Rule($"{hint}-item", items1, at + "/items") : "value";
        if (max == 0)
        {
            return "\"[\" space \"]\" space";
        }

        if (max >= 0 && max < min)
        {
            throw new GpuLlamaException($"{_source}: {at}: maxItems {max} is below minItems {min}");
        }

        // the first item, then min-1 .. max-1 more, each after a comma; optional as a whole when min is 0
        string list = $"{item} (\",\" space {item}){{{Math.Max(0, min - 1)},{(max < 0 ? "" : max - 1)}}}";
        return min == 0 ? $"\"[\" space ({list})? \"]\" space" : $"\"[\" space {list} \"]\" space";
    }

    /// <summary>
    /// An object: the listed properties in their order, required ones always, the others optional, commas only
    /// between the members present — rules A_i (nothing written yet) and B_i (something written) from property i on.
    /// </summary>
    private string Object(JsonElement schema, string at, string hint)
    {
        var props = new List<(string Name, JsonElement Schema)>();
        if (schema.TryGetProperty("properties", out JsonElement properties))
        {
            props.AddRange(properties.EnumerateObject().Select(p => (p.Name, p.Value)));
        }

        var required = new HashSet<string>(StringComparer.Ordinal);
        if (schema.TryGetProperty("required", out JsonElement req))
        {
            foreach (JsonElement n in req.EnumerateArray())
            {
                string name = n.GetString() ?? "";
                if (!props.Any(p => p.Name == name))
                {
                    throw new GpuLlamaException($"{_source}: {at}: required property '{name}' is not among the properties");
                }

                required.Add(name);
            }
        }

        // extra members: with no properties any (or of additionalProperties' schema), else only where it allows them
        string? extra = null;
        bool hasExtra = schema.TryGetProperty("additionalProperties", out JsonElement additional);
        if (hasExtra ? additional.ValueKind != JsonValueKind.False : props.Count == 0)
        {
            string v = hasExtra && additional.ValueKind == JsonValueKind.Object ? Rule($"{hint}-extra", additional, at + "/additionalProperties") : "value";
            extra = $"string \":\" space {v}";
        }

        // A_i and B_i are named a-i and b-i, reserved before the properties' own rules take names
        string a, b;
        do
        {
            a = Unique($"{hint}-a");
            b = Unique($"{hint}-b");
        }
        while (Enumerable.Range(0, props.Count + 1).Any(i => _names.Contains($"{a}-{i}") || _names.Contains($"{b}-{i}")));

        for (int i = 0; i <= props.Count; i++)
        {
            _names.Add($"{a}-{i}");
            _names.Add($"{b}-{i}");
        }

        for (int i = props.Count; i >= 0; i--)
        {
            string ai = $"{a}-{i}", bi = $"{b}-{i}";
            if (i == props.Count)
            {
                Define(ai, extra is null ? "" : $"({extra} {bi})?");
                Define(bi, extra is null ? "" : $"(\",\" space {extra} {bi})?");
                continue;
            }

            (string name, JsonElement s) = props[i];
            string kv = $"{Literal(JsonSerializer.Serialize(name, s_json))} space \":\" space {Rule($"{hint}-{Sanitize(name)}", s, $"{at}/properties/{name}")}";
            if (required.Contains(name))
            {
                Define(ai, $"{kv} {b}-{i + 1}");
                Define(bi, $"\",\" space {kv} {b}-{i + 1}");
            }
            else
            {
                Define(ai, $"{kv} {b}-{i + 1} | {a}-{i + 1}");
                Define(bi, $"\",\" space {kv} {b}-{i + 1} | {b}-{i + 1}");
            }
        }

        return $"\"{{\" space {a}-0 \"}}\" space";
    }

    private string Ref(string reference, string at)
    {
        if (_refs.TryGetValue(reference, out string? known))
        {
            return known;
        }

        string[] parts = reference.Split('/');
        if (parts.Length != 3 || parts[0] != "#" || parts[1] is not ("$defs" or "definitions")
            || !_root.TryGetProperty(parts[1], out JsonElement defs) || !defs.TryGetProperty(parts[2], out JsonElement target))
        {
            throw new GpuLlamaException($"{_source}: {at}: $ref '{reference}' does not name a schema under #/$defs or #/definitions");
        }

        string name = Unique("ref-" + Sanitize(parts[2]));
        _refs[reference] = name; // before the body: a schema may refer to itself
        Define(name, Value(target, reference, name));
        return name;
    }

    private int Count(JsonElement schema, string key, string at, int absent)
    {
        if (!schema.TryGetProperty(key, out JsonElement v))
        {
            return absent;
        }

        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 0 || n > 10000)
        {
            throw new GpuLlamaException($"{_source}: {at}: {key} must be a whole number from 0 to 10000");
        }

        return n;
    }

    private void Define(string name, string body) => _rules.Append(name).Append(" ::= ").Append(body.Length == 0 ? "\"\"" : body).Append('\n');

    private string Unique(string hint)
    {
        string name = hint;
        for (int i = 2; !_names.Add(name); i++)
        {
            name = $"{hint}{i}";
        }

        return name;
    }

    private static string Sanitize(string name)
    {
        string s = new([.. name.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-')]);
        return s.Length == 0 ? "p" : s;
    }

    private static string Compact(JsonElement e) => JsonSerializer.Serialize(e, s_json);

    /// <summary>JSON text as a GBNF string literal.</summary>
    private static string Literal(string json)
    {
        var sb = new StringBuilder("\"");
        foreach (char ch in json)
        {
            sb.Append(ch switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                < ' ' => $"\\x{(int)ch:X2}",
                _ => ch.ToString(),
            });
        }

        return sb.Append('"').ToString();
    }

    private void Primitives() => _rules.Append("""
        value ::= object | array | string | number | boolean | null
        object ::= "{" space ( string ":" space value ( "," space string ":" space value )* )? "}" space
        array ::= "[" space ( value ( "," space value )* )? "]" space
        string ::= "\"" char* "\"" space
        char ::= [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
        number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? space
        integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) space
        boolean ::= ( "true" | "false" ) space
        null ::= "null" space
        space ::= ( " " | "\n" [ \t]{0,20} )?

        """);
}
