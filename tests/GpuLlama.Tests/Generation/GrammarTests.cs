using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>GBNF grammars: the parser's forms and errors, the matcher on text and on tokens, and constrained generation.</summary>
public sealed class GrammarTests
{
    private static readonly ModelTokenizer Tokenizer = ModelTokenizer.ForSource(WeightSource.Open("synthetic:tiny"));

    /// <summary>Whether <paramref name="text"/> is allowed (a prefix of a sentence) and whether it is a whole sentence.</summary>
    private static (bool Allowed, bool Complete) Match(string grammar, string text)
    {
        var m = new GrammarMatcher(Grammar.Parse(grammar), Tokenizer);
        bool allowed = m.AcceptText(text);
        return (allowed, allowed && m.IsComplete);
    }

    [Theory]
    [InlineData("root ::= \"a\" [0-9]+ (\"x\" | \"y\")?", "a", true, false)]
    [InlineData("root ::= \"a\" [0-9]+ (\"x\" | \"y\")?", "a1", true, true)]
    [InlineData("root ::= \"a\" [0-9]+ (\"x\" | \"y\")?", "a12x", true, true)]
    [InlineData("root ::= \"a\" [0-9]+ (\"x\" | \"y\")?", "a12xy", false, false)]
    [InlineData("root ::= \"a\" [0-9]+ (\"x\" | \"y\")?", "ab", false, false)]
    [InlineData("root ::= \"ab\"{2,3}", "ab", true, false)]
    [InlineData("root ::= \"ab\"{2,3}", "abab", true, true)]
    [InlineData("root ::= \"ab\"{2,3}", "ababab", true, true)]
    [InlineData("root ::= \"ab\"{2,3}", "abababa", false, false)]
    [InlineData("root ::= [a-c]{2}", "cb", true, true)]
    [InlineData("root ::= [a-c]{2}", "cbc", false, false)]
    [InlineData("root ::= [a-c]{2,}", "abcabc", true, true)]
    [InlineData("root ::= \"x\"*", "", true, true)]
    [InlineData("root ::= [^\"\\\\]+ \"\\\"\"", "it's \"", true, true)]   // [^"\\]+ then a quote
    [InlineData("root ::= [^\"\\\\]+ \"\\\"\"", "a\\", false, false)]
    [InlineData("root ::= \"\\x41\\u00e9\\n\" .", "Aé\n€", true, true)]   // escapes and any character
    [InlineData("root ::= [α-ω]+", "λόγος", false, false)]               // ό is outside α-ω (U+03CC > U+03C9)
    [InlineData("root ::= [α-ω]+", "λογος", true, true)]
    [InlineData("root ::= item (\",\" item)*\nitem ::= [0-9] | \"(\" root \")\"", "1,(2,(3)),4", true, true)]
    [InlineData("root ::= item (\",\" item)*\nitem ::= [0-9] | \"(\" root \")\"", "1,(2,(3),4", true, false)]
    public void Text_is_allowed_and_complete_as_the_grammar_says(string grammar, string text, bool allowed, bool complete)
    {
        Assert.Equal((allowed, complete), Match(grammar, text));
    }

    [Fact]
    public void Comments_newlines_in_groups_and_alternatives_after_a_bar_parse()
    {
        const string g = """
            # a list of greetings
            root ::= greeting ( "," ws
                       greeting )*   # more, in a group over two lines
            greeting ::= "hi" |
                         "hello"
            ws ::= " "?
            """;
        Assert.Equal((true, true), Match(g, "hi, hello,hi"));
        Assert.Equal((false, false), Match(g, "hi;"));
    }

    [Fact]
    public void Tokens_carry_utf8_across_their_boundaries()
    {
        // α is CE B1: the byte tokens <0xCE> then <0xB1>; a lead byte is allowed only where a code point it can start is
        int Byte(int b) => Tokenizer.Find($"<0x{b:X2}>");
        var greek = new GrammarMatcher(Grammar.Parse("root ::= [α-ω]+"), Tokenizer);
        Assert.True(greek.Allows(Byte(0xCE)));
        Assert.False(greek.Allows(Byte(0xE0)));  // E0 starts U+0800.. only, above ω
        Assert.False(greek.Allows(Byte(0x61)));
        greek.Accept(Byte(0xCE));
        Assert.False(greek.IsComplete);
        Assert.False(greek.Allows(Byte(0x41)));  // not a continuation byte
        Assert.True(greek.Allows(Byte(0xB1)));
        greek.Accept(Byte(0xB1));
        Assert.True(greek.IsComplete);

        var ascii = new GrammarMatcher(Grammar.Parse("root ::= [a-z]+"), Tokenizer);
        Assert.False(ascii.Allows(Byte(0xE0)));  // an overlong E0 80 xx would be ASCII, but is not UTF-8
        Assert.False(ascii.Allows(Byte(0xC1)));
        Assert.False(ascii.Allows(Tokenizer.BosId)); // no text: never allowed
        Assert.False(ascii.Allows(Tokenizer.EosIds[0])); // end of sequence only once complete
        ascii.AcceptText("ok");
        Assert.True(ascii.Allows(Tokenizer.EosIds[0]));
    }

    [Theory]
    [InlineData("root ::= foo", "1:10", "rule 'foo' is used but not defined")]
    [InlineData("start ::= \"a\"", null, "no 'root' rule")]
    [InlineData("root ::= root \"a\"", null, "'root' is left-recursive")]
    [InlineData("root ::= a \"x\"\na ::= \"b\"? root", null, "left-recursive")]  // through a rule that can be empty
    [InlineData("root ::= \"abc", "1:14", "unterminated string literal")]
    [InlineData("root ::= [a-z", "1:14", "unterminated character class")]
    [InlineData("root ::= \"\\q\"", "1:11", "unknown escape")]
    [InlineData("root ::= \"a\"{3,2}", "1:18", "the maximum is below the minimum")]
    [InlineData("root ::= \"a\"\nroot ::= \"b\"", "2:1", "defined twice")]
    [InlineData("root ::= [z-a]", "1:14", "backwards")]
    [InlineData("root ::= * \"a\"", "1:10", "nothing before it to repeat")]
    [InlineData("root = \"a\"", "1:6", "expected '::='")]
    public void Mistakes_are_one_line_naming_where(string grammar, string? where, string message)
    {
        var e = Assert.Throws<GpuLlamaException>(() => Grammar.Parse(grammar, "g.gbnf"));
        Assert.Contains(message, e.Message);
        Assert.StartsWith(where is null ? "g.gbnf: " : $"g.gbnf:{where}: ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Rules_that_match_nothing_nested_too_deep_are_an_error_not_a_stack_overflow()
    {
        var e = Assert.Throws<GpuLlamaException>(() => new GrammarMatcher(Grammar.Parse("root ::= (\"a\"?){0,3000}"), Tokenizer));
        Assert.Contains("deep", e.Message);
        Assert.True(new GrammarMatcher(Grammar.Parse("root ::= (\"a\"?){0,500}"), Tokenizer).AcceptText("aaa"));
    }

    [Theory]
    [InlineData("{\"a\": [1, -2.5e3, \"x\\n\\u00e9\"], \"b\": {\"c\": null}, \"d\": true}", true)]
    [InlineData("  [ ]  ", true)]
    [InlineData("\"plain\"", true)]
    [InlineData("0.5", true)]
    [InlineData("{\"a\" 1}", false)]
    [InlineData("[01]", false)]
    [InlineData("{\"a\": \"tab\there\"}", false)] // a raw control character in a string
    public void The_json_grammar_takes_json(string text, bool valid)
    {
        var m = new GrammarMatcher(Grammar.Json, Tokenizer);
        Assert.Equal(valid, m.AcceptText(text) && m.IsComplete);
    }

    [Fact]
    public void Generation_follows_the_grammar_and_ends_where_it_is_complete()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny");
        int[] prompt = model.Tokenizer.Encode("Answer:", addBos: true);
        var yesNo = Grammar.Parse("root ::= (\"yes\" | \"no\") \".\"");
        for (uint seed = 0; seed < 4; seed++)
        {
            Generator g = model.CreateGenerator();
            string text = string.Concat(g.Generate(prompt, new GenerationOptions { Grammar = yesNo, MaxTokens = 20, Sampling = new SamplerSettings { Seed = seed } }).Select(t => t.Text));
            Assert.Contains(text, new[] { "yes.", "no." });
            Assert.Equal(StopReason.EndOfSequence, g.LastStopReason);
        }

        // JSON at a high temperature, greedy too: what comes out is JSON, or (cut by the limit) the start of some
        foreach (SamplerSettings s in new[] { new SamplerSettings { Temperature = 1.5f, TopK = 0, MinP = 0, Seed = 5 }, new SamplerSettings { Temperature = 0 } })
        {
            Generator g = model.CreateGenerator();
            string text = string.Concat(g.Generate(prompt, new GenerationOptions { Grammar = Grammar.Json, MaxTokens = 40, Sampling = s }).Select(t => t.Text));
            var m = new GrammarMatcher(Grammar.Json, model.Tokenizer);
            Assert.True(m.AcceptText(text), text);
            if (g.LastStopReason == StopReason.EndOfSequence)
            {
                using JsonDocument _ = JsonDocument.Parse(text);
            }
            else
            {
                Assert.Equal(StopReason.MaxTokens, g.LastStopReason);
            }
        }
    }
}
