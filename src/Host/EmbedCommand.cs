using System.CommandLine;
using System.Text.Json.Nodes;
using GpuLlama.Generation;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>gpullama embed: a text's embedding (llama.cpp's llama-embedding, Ollama's /api/embed), as JSON.</summary>
public static class EmbedCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Text to embed." };
        var file = new Option<string?>("--file", "-f") { Description = "Read the text from a file." };
        var pooling = new Option<string>("--pooling")
        {
            Description = "How token states become the embedding: mean (default), last, cls, or none (one per token).",
            DefaultValueFactory = _ => "mean",
        };
        var normalize = new Option<int>("--embd-normalize")
        {
            Description = "-1 none, 0 max-abs (int16 range), 1 taxicab, 2 Euclidean (default), p > 2: p-norm.",
            DefaultValueFactory = _ => 2,
        };
        var command = new Command("embed", "Print the embedding of a text as JSON (llama-embedding's pooling and normalization).");
        model.AddTo(command);
        foreach (Option o in new Option[] { prompt, file, pooling, normalize })
        {
            command.Options.Add(o);
        }

        command.SetAction(r =>
        {
            string? text = r.GetValue(prompt), path = r.GetValue(file);
            if ((text is null) == (path is null))
            {
                throw new GpuLlamaException("give one of --prompt and --file");
            }

            if (path is not null)
            {
                text = File.Exists(path) ? File.ReadAllText(path) : throw new GpuLlamaException($"--file {path}: file not found");
            }

            Pooling pool = r.GetValue(pooling)!.ToLowerInvariant() switch
            {
                "mean" => Pooling.Mean,
                "last" => Pooling.Last,
                "cls" => Pooling.Cls,
                "none" => Pooling.None,
                string other => throw new GpuLlamaException($"--pooling {other}: expected mean, last, cls or none"),
            };
            int norm = r.GetValue(normalize);
            Embeddings.CheckNormalize(norm); // a bad value fails before the model loads
            using LlamaModel llama = LlamaModel.Load(r.GetValue(model.Model)!, model.ToLoadOptions(r, s => Console.Error.WriteLine(s)), Program.Cancellation);
            int[] tokens = llama.Tokenizer.Encode(text!, addBos: true);
            float[][] vectors = Embeddings.Compute(llama, tokens, pool, norm, Program.Cancellation);
            var data = new JsonArray();
            for (int i = 0; i < vectors.Length; i++)
            {
                data.Add(new JsonObject
                {
                    ["index"] = i,
                    ["embedding"] = new JsonArray([.. vectors[i].Select(v => (JsonNode)JsonValue.Create(v))]),
                });
            }

            Console.Out.WriteLine(new JsonObject
            {
                ["model"] = r.GetValue(model.Model),
                ["pooling"] = pool.ToString().ToLowerInvariant(),
                ["n_tokens"] = tokens.Length,
                ["n_embd"] = llama.Config.Dim,
                ["data"] = data,
            }.ToJsonString());
            return 0;
        });
        return command;
    }
}
