using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>JSON Schemas as grammars: instances of the schema are whole sentences of it, others are refused.</summary>
public sealed class JsonSchemaGrammarTests
{
    private static readonly ModelTokenizer Tokenizer = ModelTokenizer.ForSource(WeightSource.Open("synthetic:tiny"));

    private static bool Accepts(string schema, string json)
    {
        var m = new GrammarMatcher(JsonSchemaGrammar.FromSchema(schema), Tokenizer);
        return m.AcceptText(json) && m.IsComplete;
    }

    private const string Person = """
        {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"},
         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}}, "required": ["name", "age"]}
        """;

    [Theory]
    [InlineData(Person, "{\"name\": \"Ada\", \"age\": 36}", true)]
    [InlineData(Person, "{ \"name\":\"Ada\" ,\n  \"age\":-1, \"tags\": [\"b\", \"a\"] }", true)]
    [InlineData(Person, "{\"name\": \"Ada\"}", false)]                               // age is required
    [InlineData(Person, "{\"age\": 36}", false)]                                     // name is required
    [InlineData(Person, "{\"name\": \"Ada\", \"age\": 3.5}", false)]                 // an integer
    [InlineData(Person, "{\"name\": \"Adalbert\", \"age\": 3}", false)]              // maxLength 6
    [InlineData(Person, "{\"name\": \"Ada\", \"age\": 3, \"tags\": [\"a\", \"b\", \"a\"]}", false)] // maxItems 2
    [InlineData(Person, "{\"name\": \"Ada\", \"age\": 3, \"tags\": [\"c\"]}", false)] // not in the enum
    [InlineData(Person, "{\"name\": \"Ada\", \"age\": 3, \"x\": 1}", false)]          // no other properties
    [InlineData(Person, "{\"age\": 3, \"name\": \"Ada\"}", false)]                    // the properties' order
    [InlineData("""{"properties": {"a": {"type": "number"}, "b": {"type": "boolean"}}}""", "{}", true)]
    [InlineData("""{"properties": {"a": {"type": "number"}, "b": {"type": "boolean"}}}""", "{\"b\": true}", true)]
    [InlineData("""{"properties": {"a": {"type": "number"}, "b": {"type": "boolean"}}}""", "{\"a\": 1e3, \"b\": false}", true)]
    [InlineData("""{"properties": {"a": {"type": "number"}, "b": {"type": "boolean"}}}""", "{, \"b\": true}", false)]
    [InlineData("""{"properties": {"a": {"type": "number"}}, "additionalProperties": true}""", "{\"a\": 1, \"z\": [null]}", true)]
    [InlineData("""{"type": "object", "additionalProperties": {"type": "integer"}}""", "{\"x\": 1, \"y\": 2}", true)]
    [InlineData("""{"type": "object", "additionalProperties": {"type": "integer"}}""", "{\"x\": \"1\"}", false)]
    [InlineData("""{"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}""", "[\"a\"]", false)]
    [InlineData("""{"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}""", "[\"a\", \"b\"]", true)]
    [InlineData("""{"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}""", "[\"a\",\"b\",\"c\"]", true)]
    [InlineData("""{"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}""", "[\"a\",\"b\",\"c\",\"d\"]", false)]
    [InlineData("""{"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}""", "[1, \"x\"]", true)]
    [InlineData("""{"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}""", "[\"x\", 1]", false)]
    [InlineData("""{"type": ["string", "null"]}""", "null", true)]
    [InlineData("""{"type": ["string", "null"]}""", "0", false)]
    [InlineData("""{"anyOf": [{"const": 42}, {"type": "boolean"}]}""", "42", true)]
    [InlineData("""{"anyOf": [{"const": 42}, {"type": "boolean"}]}""", "43", false)]
    [InlineData("""{"enum": ["red", 7, null, {"k": [1]}]}""", "{\"k\":[1]}", true)]
    [InlineData("""{"properties": {"café": {"enum": ["a<b", "ü"]}}, "required": ["café"]}""", "{\"café\": \"a<b\"}", true)] // written as a model writes them, not \u-escaped
    [InlineData("""{"type": "string", "minLength": 2}""", "\"é\"", false)]
    [InlineData("""{"type": "string", "minLength": 2}""", "\"é\\n\"", true)]
    [InlineData("""{}""", "{\"any\": [1, \"json\", {\"at\": null}]}", true)]
    [InlineData("""{"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}}, "$ref": "#/$defs/node"}""",
        "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": [{\"v\": 4, \"kids\": []}]}]}", true)]
    [InlineData("""{"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}}, "$ref": "#/$defs/node"}""",
        "{\"v\": 1, \"kids\": [{\"kids\": []}]}", false)]
    public void Instances_of_the_schema_and_only_they_are_accepted(string schema, string json, bool valid)
    {
        Assert.Equal(valid, Accepts(schema, json));
    }

    [Theory]
    [InlineData("""{"type": "string", "pattern": "^a"}""", "'pattern' is not supported")]
    [InlineData("""{"properties": {"n": {"type": "integer", "minimum": 0}}}""", "/properties/n: 'minimum' is not supported")]
    [InlineData("""{"$ref": "#/$defs/missing"}""", "$ref '#/$defs/missing' does not name a schema")]
    [InlineData("""{"properties": {"a": {}}, "required": ["b"]}""", "required property 'b' is not among the properties")]
    [InlineData("""{"type": "text"}""", "unknown type 'text'")]
    [InlineData("""{"type": "array", "minItems": 3, "maxItems": 2}""", "maxItems 2 is below minItems 3")]
    [InlineData("""{"type": "object",""", "not valid JSON")]
    public void Schemas_it_cannot_follow_are_one_line_errors(string schema, string message)
    {
        var e = Assert.Throws<GpuLlamaException>(() => JsonSchemaGrammar.FromSchema(schema));
        Assert.StartsWith("--json-schema: ", e.Message);
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Generated_text_is_an_instance_of_the_schema()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny");
        int[] prompt = model.Tokenizer.Encode("Data:", addBos: true);
        Grammar person = JsonSchemaGrammar.FromSchema(Person);
        for (uint seed = 0; seed < 4; seed++)
        {
            Generator g = model.CreateGenerator();
            string text = string.Concat(g.Generate(prompt, new GenerationOptions { Grammar = person, MaxTokens = 200, Sampling = new SamplerSettings { Seed = seed } }).Select(t => t.Text));
            Assert.Equal(StopReason.EndOfSequence, g.LastStopReason);
            using JsonDocument d = JsonDocument.Parse(text);
            Assert.Equal(JsonValueKind.String, d.RootElement.GetProperty("name").ValueKind);
            Assert.True(d.RootElement.GetProperty("age").TryGetInt64(out _), text);
            Assert.True(d.RootElement.EnumerateObject().All(p => p.Name is "name" or "age" or "tags"), text);
        }
    }
}
