using System.CommandLine;
using System.Text.Json.Nodes;
using GpuLlama.Formats;
using GpuLlama.Generation;

namespace GpuLlama.Host;

/// <summary>gpullama tokenize: the ids exactly as the model sees them (BOS added when the model adds one, like llama-tokenize).</summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("PATH") { Description = "A model (GGUF, HF directory) or just its tokenizer (vocab-only GGUF, tokenizer.json, tokenizer.model, tokenizer.bin)." };
        var text = new Argument<string>("TEXT") { Description = "Text to tokenize." };
        var json = new Option<bool>("--json") { Description = "Print {\"tokens\": [...], \"pieces\": [...]}." };
        var noBos = new Option<bool>("--no-bos") { Description = "Do not add the BOS token." };
        var command = new Command("tokenize", "Print the token ids of a text.") { path, text, json, noBos };
        command.SetAction(r =>
        {
            string p = r.GetValue(path)!;
            ModelTokenizer tokenizer = Open(p);
            int[] ids = tokenizer.Encode(r.GetValue(text)!, addBos: !r.GetValue(noBos));
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["tokens"] = new JsonArray([.. ids.Select(i => (JsonNode)i)]),
                    ["pieces"] = new JsonArray([.. ids.Select(i => (JsonNode)tokenizer.Piece(i))]),
                };
                Console.Out.WriteLine(o.ToJsonString());
            }
            else
            {
                foreach (int id in ids)
                {
                    Console.Out.WriteLine($"{id,6} -> '{tokenizer.Piece(id)}'");
                }
            }

            return 0;
        });
        return command;
    }

    /// <summary>A tokenizer file is loaded directly; a model directory or checkpoint through its weight source.</summary>
    public static ModelTokenizer Open(string path)
    {
        if (Directory.Exists(path))
        {
            using IWeightSource source = WeightSource.Open(path);
            return ModelTokenizer.ForSource(source);
        }

        return ModelTokenizer.Load(path);
    }
}
