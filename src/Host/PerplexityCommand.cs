using System.CommandLine;
using System.Text.Json.Nodes;
using GpuLlama.Generation;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama perplexity: llama-perplexity's measure of a model on a text file (e.g. wikitext-2's wiki.test.raw), so a
/// quantization or a placement can be judged against llama.cpp's number for the same file.
/// </summary>
public static class PerplexityCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var file = new Option<string>("--file", "-f") { Description = "The text to measure (UTF-8), e.g. wikitext-2-raw's wiki.test.raw.", Required = true };
        var chunks = new Option<int>("--chunks") { Description = "Measure at most this many chunks of --ctx tokens (-1 = all).", DefaultValueFactory = _ => -1 };
        var json = new Option<bool>("--json") { Description = "Print the result as one JSON object." };
        var command = new Command("perplexity", "Perplexity of a text file, measured as llama-perplexity measures it (use the same --ctx to compare).");
        model.AddTo(command);
        foreach (Option o in new Option[] { file, chunks, json })
        {
            command.Options.Add(o);
        }

        command.SetAction(r =>
        {
            string path = r.GetValue(file)!;
            if (!File.Exists(path))
            {
                throw new GpuLlamaException($"--file {path}: file not found");
            }

            bool asJson = r.GetValue(json);
            Action<string>? log = asJson ? null : s => Console.Error.WriteLine(s);
            LoadOptions load = model.ToLoadOptions(r, log);
            // every position of a batch gets logits (the context, at most the batch size)
            load = load with { LogitRows = load.BatchSize };
            using LlamaModel llama = LlamaModel.Load(r.GetValue(model.Model)!, load, Program.Cancellation);
            int[] tokens = llama.Tokenizer.Encode(File.ReadAllText(path), addBos: true);
            log?.Invoke($"perplexity: {tokens.Length} tokens, chunks of {llama.ContextLength}, batch {llama.Transformer.BatchSize}");
            PerplexityResult result = Perplexity.Compute(llama, tokens, r.GetValue(chunks),
                asJson ? null : (i, ppl) => Console.Out.Write($"[{i}]{ppl:F4},"), Program.Cancellation);
            if (asJson)
            {
                Console.Out.WriteLine(new JsonObject
                {
                    ["model"] = r.GetValue(model.Model),
                    ["file"] = path,
                    ["n_ctx"] = llama.ContextLength,
                    ["chunks"] = result.Chunks,
                    ["tokens_scored"] = result.ScoredTokens,
                    ["ppl"] = result.Value,
                    ["ppl_uncertainty"] = result.Uncertainty,
                    ["seconds"] = result.Seconds,
                }.ToJsonString());
            }
            else
            {
                Console.Out.WriteLine();
                Console.Out.WriteLine($"Final estimate: PPL = {result.Value:F4} +/- {result.Uncertainty:F5}");
                Console.Error.WriteLine($"{result.ScoredTokens} tokens scored in {result.Chunks} chunks, {result.Seconds:F1} s");
            }

            return 0;
        });
        return command;
    }
}
