using System.CommandLine;
using GpuLlama.Generation;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama chat: an interactive conversation in the model's chat template. Each turn sends only the new part of
/// the rendered conversation, so the KV cache of earlier turns is reused (as llama.cpp's llama-cli -cnv does).
/// </summary>
public static class ChatCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var sampling = new SamplingOptions();
        var system = new Option<string?>("--system") { Description = "System message that starts the conversation." };
        var command = new Command("chat", "Chat with the model: type a message and press Enter; an empty line or end of input ends the chat.");
        model.AddTo(command);
        command.Options.Add(system);
        sampling.AddTo(command);
        command.SetAction(r =>
        {
            using LlamaModel llama = LlamaModel.Load(r.GetValue(model.Model)!, model.ToLoadOptions(r, s => Console.Error.WriteLine(s)), Program.Cancellation);
            GenerationOptions gen = sampling.ToGenerationOptions(r);
            Generator generator = llama.CreateGenerator();
            bool verbose = r.GetValue(model.Verbose);
            var messages = new List<ChatMessage>();
            if (sampling.Text(r, r.GetValue(system)) is { } sys)
            {
                messages.Add(new ChatMessage("system", sys));
            }

            // the conversation as text up to where the KV cache holds it: each turn sends what the rendered
            // conversation adds after it (the previous reply's end-of-turn marker, the new user message, the
            // assistant header), or everything again when the rendering no longer starts with it (null: the cache holds
            // text the conversation does not show)
            string? cached = "";
            while (!Program.Cancellation.IsCancellationRequested)
            {
                Console.Error.Write("> ");
                string? line = Console.In.ReadLine();
                if (string.IsNullOrWhiteSpace(line))
                {
                    break;
                }

                messages.Add(new ChatMessage("user", line));
                string full = ChatFormatter.Format(llama.Tokenizer, messages, addGenerationPrompt: true);
                if (cached is null || !full.StartsWith(cached, StringComparison.Ordinal))
                {
                    generator.Reset();
                    cached = "";
                }

                int[] tokens = llama.Tokenizer.Encode(full[cached.Length..], addBos: generator.Position == 0);
                if (verbose)
                {
                    Console.Error.WriteLine($"turn {messages.Count(m => m.Role == "user")}: {tokens.Length} new prompt tokens at position {generator.Position}");
                }

                var reply = new System.Text.StringBuilder();
                foreach (GeneratedToken t in generator.Generate(tokens, gen, Program.Cancellation))
                {
                    Console.Out.Write(t.Text);
                    Console.Out.Flush();
                    reply.Append(t.Text);
                }

                Console.Out.WriteLine();
                messages.Add(new ChatMessage("assistant", reply.ToString()));

                // the cache now holds the reply's tokens (an end-of-sequence token is not run: the template's marker
                // follows next turn); after a stop string it also holds some of that string, so the next turn starts over
                cached = generator.LastStopReason == StopReason.StopSequence ? null : full + reply;
                if (generator.LastStopReason == StopReason.ContextFull)
                {
                    Console.Error.WriteLine("gpullama: the context is full; starting a new conversation");
                    generator.Reset();
                    messages.RemoveRange(0, messages.Count);
                    cached = "";
                }
            }

            return 0;
        });
        return command;
    }
}
