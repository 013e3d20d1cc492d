using System.Globalization;
using System.CommandLine;
using GpuLlama.Generation;

namespace GpuLlama.Host;

/// <summary>Sampling flags with llama.cpp's names and defaults.</summary>
public sealed class SamplingOptions
{
    public Option<int> Predict { get; } = new("--n-predict", "-n", "--predict")
    {
        Description = "Tokens to generate (-1 = until end of sequence or a full context).",
        DefaultValueFactory = _ => -1,
    };

    public Option<float> Temperature { get; } = new("--temp")
    {
        Description = "Temperature; 0 = greedy (argmax on the device).",
        DefaultValueFactory = _ => 0.8f,
    };

    public Option<int> TopK { get; } = new("--top-k")
    {
        Description = "Keep the K most likely tokens (0 = off).",
        DefaultValueFactory = _ => 40,
    };

    public Option<float> TopP { get; } = new("--top-p")
    {
        Description = "Keep the smallest set of tokens whose probability adds up to P (1 = off).",
        DefaultValueFactory = _ => 0.95f,
    };

    public Option<float> Typical { get; } = new("--typical")
    {
        Description = "Locally typical sampling: keep the tokens nearest the entropy up to this probability mass (1 = off).",
        DefaultValueFactory = _ => 1.0f,
    };

    public Option<float> XtcProbability { get; } = new("--xtc-probability")
    {
        Description = "XTC: the chance per token of removing the likeliest candidates (all above --xtc-threshold but the last); 0 = off.",
        DefaultValueFactory = _ => 0f,
    };

    public Option<float> XtcThreshold { get; } = new("--xtc-threshold")
    {
        Description = "XTC's probability threshold (above 0.5: off).",
        DefaultValueFactory = _ => 0.1f,
    };

    public Option<float> MinP { get; } = new("--min-p")
    {
        Description = "Drop tokens less likely than P times the most likely one (0 = off).",
        DefaultValueFactory = _ => 0.05f,
    };

    public Option<float> RepeatPenalty { get; } = new("--repeat-penalty")
    {
        Description = "Penalty for tokens among the last --repeat-last-n (1 = off).",
        DefaultValueFactory = _ => 1.0f,
    };

    public Option<int> RepeatLastN { get; } = new("--repeat-last-n")
    {
        Description = "How many recent tokens the repeat penalty looks at.",
        DefaultValueFactory = _ => 64,
    };

    public Option<float> FrequencyPenalty { get; } = new("--frequency-penalty")
    {
        Description = "Subtract this times a token's count among the last --repeat-last-n from its logit (0 = off).",
        DefaultValueFactory = _ => 0f,
    };

    public Option<float> PresencePenalty { get; } = new("--presence-penalty")
    {
        Description = "Subtract this from the logit of every token among the last --repeat-last-n (0 = off).",
        DefaultValueFactory = _ => 0f,
    };

    public Option<string[]> LogitBias { get; } = new("--logit-bias", "-l")
    {
        Description = "Add BIAS to a token's logit, as TOKEN_ID+BIAS or TOKEN_ID-BIAS (e.g. 15043+1, 2-inf bans token 2); repeat for several.",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<int> Mirostat { get; } = new("--mirostat")
    {
        Description = "Mirostat sampling: 0 off, 1 or 2 (its version); replaces --top-k, --top-p, --min-p and the penalties.",
        DefaultValueFactory = _ => 0,
    };

    public Option<float> MirostatLr { get; } = new("--mirostat-lr")
    {
        Description = "Mirostat's learning rate (eta).",
        DefaultValueFactory = _ => 0.1f,
    };

    public Option<float> MirostatEnt { get; } = new("--mirostat-ent")
    {
        Description = "Mirostat's target entropy in bits (tau).",
        DefaultValueFactory = _ => 5.0f,
    };

    public Option<string?> GrammarText { get; } = new("--grammar")
    {
        Description = "Constrain the output to a GBNF grammar (llama.cpp's format; generation starts at root), e.g. 'root ::= (\"yes\" | \"no\")'.",
    };

    public Option<string?> GrammarFile { get; } = new("--grammar-file")
    {
        Description = "Read the GBNF grammar from FILE (e.g. llama.cpp's grammars/json.gbnf).",
    };

    public Option<string?> JsonSchema { get; } = new("--json-schema", "-j")
    {
        Description = "Constrain the output to JSON of this JSON Schema, e.g. '{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},\"required\":[\"name\"]}' ({} = any JSON).",
    };

    public Option<string?> JsonSchemaFile { get; } = new("--json-schema-file")
    {
        Description = "Read the JSON Schema for --json-schema from FILE.",
    };

    public Option<long> Seed { get; } = new("--seed", "-s")
    {
        Description = "Random seed (-1 = random); the same seed gives the same output.",
        DefaultValueFactory = _ => -1,
    };

    public Option<bool> IgnoreEos { get; } = new("--ignore-eos")
    {
        Description = "Keep generating after an end-of-sequence token.",
    };

    public Option<string[]> Stop { get; } = new("--stop", "--reverse-prompt", "-r")
    {
        Description = "Stop generating where the text produces STRING (repeat for several); the output ends just before it.",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<bool> NoEscape { get; } = new("--no-escape")
    {
        Description = "Take --prompt, --system and --stop literally; by default (as llama.cpp) \\n, \\t, \\\\, \\\" and \\xHH in them are processed.",
    };

    /// <summary>Command-line text as the model gets it: llama.cpp's escapes processed unless --no-escape.</summary>
    public string? Text(ParseResult r, string? text) => text is null || r.GetValue(NoEscape) ? text : Escapes.Process(text);

    public void AddTo(Command command)
    {
        foreach (Option o in new Option[] { Predict, Temperature, TopK, TopP, Typical, MinP, XtcProbability, XtcThreshold, RepeatPenalty, RepeatLastN, FrequencyPenalty, PresencePenalty, LogitBias, Mirostat, MirostatLr, MirostatEnt, GrammarText, GrammarFile, JsonSchema, JsonSchemaFile, Seed, IgnoreEos, Stop, NoEscape })
        {
            command.Options.Add(o);
        }
    }

    /// <summary>llama.cpp's --logit-bias values: TOKEN_ID followed by +BIAS or -BIAS (inf allowed).</summary>
    internal static Dictionary<int, float> ParseLogitBias(string[] values)
    {
        var biases = new Dictionary<int, float>();
        foreach (string v in values)
        {
            int sign = v.Length > 1 ? v.IndexOfAny(['+', '-'], 1) : -1;
            if (sign < 0 || !int.TryParse(v.AsSpan(0, sign), NumberStyles.None, CultureInfo.InvariantCulture, out int id) || !TryBias(v[sign..], out float bias))
            {
                throw new GpuLlamaException($"--logit-bias {v}: expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043+1 or 2-inf");
            }

            biases[id] = bias;
        }

        return biases;

        static bool TryBias(string text, out float bias)
        {
            if (text[1..].Equals("inf", StringComparison.OrdinalIgnoreCase))
            {
                bias = text[0] == '-' ? float.NegativeInfinity : float.PositiveInfinity;
                return true;
            }

            return float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out bias) && !float.IsNaN(bias);
        }
    }

    public GenerationOptions ToGenerationOptions(ParseResult r)
    {
        long seed = r.GetValue(Seed);
        if (seed < -1 || seed > uint.MaxValue)
        {
            throw new GpuLlamaException($"--seed {seed}: expected -1 or 0..{uint.MaxValue}");
        }

        float topP = r.GetValue(TopP);
        float minP = r.GetValue(MinP);
        float typical = r.GetValue(Typical);
        if (topP is < 0 or > 1 || minP is < 0 or > 1 || typical is < 0 or > 1)
        {
            throw new GpuLlamaException($"--top-p {topP} / --min-p {minP} / --typical {typical}: must be between 0 and 1");
        }

        string? grammarText = r.GetValue(GrammarText), grammarFile = r.GetValue(GrammarFile);
        string? schema = r.GetValue(JsonSchema), schemaFile = r.GetValue(JsonSchemaFile);
        if (new[] { grammarText, grammarFile, schema, schemaFile }.Count(x => x is not null) > 1)
        {
            throw new GpuLlamaException("give only one of --grammar, --grammar-file, --json-schema and --json-schema-file");
        }

        Grammar? grammar = grammarText is not null ? Grammar.Parse(grammarText, "--grammar")
            : grammarFile is not null ? Grammar.Load(grammarFile)
            : schema is not null ? JsonSchemaGrammar.FromSchema(schema, "--json-schema")
            : schemaFile is not null ? JsonSchemaGrammar.FromSchema(File.Exists(schemaFile) ? File.ReadAllText(schemaFile) : throw new GpuLlamaException($"--json-schema-file {schemaFile}: file not found"), schemaFile)
            : null;
        return new GenerationOptions
        {
            Grammar = grammar,
            MaxTokens = r.GetValue(Predict),
            IgnoreEos = r.GetValue(IgnoreEos),
            StopSequences = r.GetValue(Stop) is { Length: > 0 } stops
                ? stops.Any(string.IsNullOrEmpty) ? throw new GpuLlamaException("--stop: a stop string is empty") : [.. stops.Select(x => Text(r, x)!)]
                : [],
            Sampling = new SamplerSettings
            {
                Temperature = r.GetValue(Temperature),
                TopK = r.GetValue(TopK),
                TopP = topP,
                MinP = minP,
                TypicalP = typical,
                XtcProbability = r.GetValue(XtcProbability) is >= 0 and <= 1 and var xp ? xp : throw new GpuLlamaException($"--xtc-probability {r.GetValue(XtcProbability)}: must be between 0 and 1"),
                XtcThreshold = r.GetValue(XtcThreshold),
                RepeatPenalty = r.GetValue(RepeatPenalty),
                RepeatLastN = r.GetValue(RepeatLastN),
                FrequencyPenalty = r.GetValue(FrequencyPenalty),
                PresencePenalty = r.GetValue(PresencePenalty),
                Mirostat = r.GetValue(Mirostat) is >= 0 and <= 2 and var m ? m : throw new GpuLlamaException($"--mirostat {r.GetValue(Mirostat)}: expected 0 (off), 1 or 2"),
                LogitBias = ParseLogitBias(r.GetValue(LogitBias) ?? []),
                MirostatEta = r.GetValue(MirostatLr),
                MirostatTau = r.GetValue(MirostatEnt),
                Seed = seed < 0 ? null : (uint)seed,
            },
        };
    }
}
