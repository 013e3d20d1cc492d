using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuLlama.Devices;
using GpuLlama.Generation;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama run: load, process the prompt, stream generated text to stdout; timings to stderr (or one JSON object).
/// </summary>
public static class RunCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text." };
        var file = new Option<string?>("--file", "-f") { Description = "Read the prompt from a file." };
        var promptTokens = new Option<string?>("--prompt-tokens") { Description = "Prompt as comma-separated token ids (no tokenizer involved, no BOS added)." };
        var sampling = new SamplingOptions();
        var json = new Option<bool>("--json") { Description = "Print one JSON object (prompt_tokens, tokens, text, stop_reason, timings) instead of streaming text." };
        var logitsOut = new Option<string?>("--logits-out") { Description = "Write the logits of the last prompt position to FILE as raw little-endian float32." };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt in the model's chat template as a user message." };
        var system = new Option<string?>("--system") { Description = "System message for --chat." };
        var noShift = new Option<bool>("--no-context-shift")
        {
            Description = "Stop when the context is full; by default (as llama-cli) the older half of the tokens after --keep is dropped and generation goes on.",
        };
        var keep = new Option<int>("--keep")
        {
            Description = "Tokens from the start of the prompt a context shift keeps (-1 = the whole prompt); the BOS token is always kept.",
            DefaultValueFactory = _ => 0,
        };

        var command = new Command("run", "Generate text from a prompt, streaming it to stdout.");
        model.AddTo(command);
        foreach (Option o in new Option[] { prompt, file, promptTokens, json, logitsOut, chat, system, noShift, keep })
        {
            command.Options.Add(o);
        }

        sampling.AddTo(command);
        sampling.Predict.Description = "Tokens to generate (-1 = until end of sequence, shifting a full context; with --no-context-shift until a full context).";
        command.SetAction(r =>
        {
            bool asJson = r.GetValue(json);
            Action<string>? log = asJson ? null : s => Console.Error.WriteLine(s);
            string path = r.GetValue(model.Model)!;
            GenerationOptions gen = sampling.ToGenerationOptions(r);
            string? text = sampling.Text(r, r.GetValue(prompt));
            string? promptFile = r.GetValue(file);
            string? ids = r.GetValue(promptTokens);
            if ((text is not null ? 1 : 0) + (promptFile is not null ? 1 : 0) + (ids is not null ? 1 : 0) > 1)
            {
                throw new GpuLlamaException("give only one of --prompt, --file and --prompt-tokens");
            }

            if (promptFile is not null)
            {
                text = File.Exists(promptFile) ? File.ReadAllText(promptFile) : throw new GpuLlamaException($"--file {promptFile}: file not found");
            }

            using LlamaModel llama = LlamaModel.Load(path, model.ToLoadOptions(r, log), Program.Cancellation);
            log?.Invoke($"load: {llama.LoadTime.TotalSeconds:F2} s, context {llama.ContextLength}, {llama.Config.Layers} layers");
            if (r.GetValue(model.Verbose))
            {
                Diagnostics.PrintMemory(llama);
            }

            int[] tokens;
            if (ids is not null)
            {
                tokens = ParseIds(ids);
            }
            else
            {
                text ??= "";
                if (r.GetValue(chat))
                {
                    var messages = new List<ChatMessage>();
                    if (sampling.Text(r, r.GetValue(system)) is { } sys)
                    {
                        messages.Add(new ChatMessage("system", sys));
                    }

                    messages.Add(new ChatMessage("user", text));
                    text = ChatFormatter.Format(llama.Tokenizer, messages, addGenerationPrompt: true);
                }

                tokens = llama.Tokenizer.Encode(text, addBos: true);
            }

            Generator generator = llama.CreateGenerator();
            gen = gen with { KeepPromptLogits = r.GetValue(logitsOut) is not null, ContextShift = !r.GetValue(noShift), KeepTokens = r.GetValue(keep) };
            var generated = new List<int>();
            var output = new StringBuilder();
            Stream stdout = Console.OpenStandardOutput();
            foreach (GeneratedToken t in generator.Generate(tokens, gen, Program.Cancellation))
            {
                if (t.Id >= 0)
                {
                    generated.Add(t.Id);
                }

                output.Append(t.Text);
                if (!asJson && t.Text.Length > 0)
                {
                    byte[] bytes = Encoding.UTF8.GetBytes(t.Text);
                    stdout.Write(bytes);
                    stdout.Flush();
                }
            }

            if (r.GetValue(model.Verbose) && llama.Transformer.OffloadDevice is { } offload)
            {
                Console.Error.WriteLine($"prompt offload: {llama.Transformer.StreamedLayerRuns} layer run(s) streamed to {offload.Name}");
            }

            if (r.GetValue(logitsOut) is { } logitsPath && generator.LastPromptLogits is { } logits)
            {
                WriteFloats(logitsPath, logits);
            }

            GenerationTimings timing = generator.LastTimings;
            if (asJson)
            {
                var o = new JsonObject
                {
                    ["model"] = path,
                    ["prompt_tokens"] = new JsonArray([.. tokens.Select(x => (JsonNode)x)]),
                    ["tokens"] = new JsonArray([.. generated.Select(x => (JsonNode)x)]),
                    ["text"] = output.ToString(),
                    ["stop_reason"] = StopReasonName(generator.LastStopReason),
                    ["stopping_word"] = generator.LastStopSequence,
                    ["placement"] = LayerPlacement.Describe(llama.Plan),
                    ["context_shifts"] = generator.LastContextShifts,
                    ["timings"] = new JsonObject
                    {
                        ["load_s"] = llama.LoadTime.TotalSeconds,
                        ["prompt_s"] = timing.PromptSeconds,
                        ["prompt_tokens_per_s"] = timing.PromptTokensPerSecond,
                        ["generation_s"] = timing.GenerationSeconds,
                        ["generation_tokens"] = timing.GeneratedTokens,
                        ["generation_tokens_per_s"] = timing.GenerationTokensPerSecond,
                    },
                };
                Console.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            }
            else
            {
                Console.Out.WriteLine();
                Console.Error.WriteLine(
                    $"prompt: {timing.PromptTokens} tokens in {timing.PromptSeconds:F3} s ({timing.PromptTokensPerSecond:F1} tok/s); " +
                    $"generation: {timing.GeneratedTokens} tokens in {timing.GenerationSeconds:F3} s ({timing.GenerationTokensPerSecond:F1} tok/s); " +
                    $"stop: {StopReasonName(generator.LastStopReason)}" + (generator.LastContextShifts > 0 ? $"; context shifts: {generator.LastContextShifts}" : ""));
            }

            return 0;
        });
        return command;
    }

    public static string StopReasonName(StopReason r) => r switch
    {
        StopReason.EndOfSequence => "eos",
        StopReason.MaxTokens => "limit",
        StopReason.ContextFull => "context_full",
        StopReason.Cancelled => "cancelled",
        StopReason.StopSequence => "word",
        _ => "none",
    };

    public static int[] ParseIds(string text)
    {
        var ids = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int id) || id < 0)
            {
                throw new GpuLlamaException($"--prompt-tokens: '{part}' is not a token id");
            }

            ids.Add(id);
        }

        return [.. ids];
    }

    public static void WriteFloats(string path, ReadOnlySpan<float> values)
    {
        try
        {
            using FileStream f = File.Create(path);
            f.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"--logits-out {path}: cannot write ({e.Message})");
        }
    }
}
