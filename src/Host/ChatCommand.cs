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
            var messages = new List<ChatMessage>();
            if (r.GetValue(system) is { } sys)
            {
                messages.Add(new ChatMessage("system", sys));
            }

            string rendered = "";
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
                string delta = full.StartsWith(rendered, StringComparison.Ordinal) ? full[rendered.Length..] : full;
                if (delta.Length != full.Length - rendered.Length)
                {
                    generator.Reset();
                }

                int[] tokens = llama.Tokenizer.Encode(delta, addBos: generator.Position == 0);
                var reply = new System.Text.StringBuilder();
                foreach (GeneratedToken t in generator.Generate(tokens, gen, Program.Cancellation))
                {
                    Console.Out.Write(t.Text);
                    Console.Out.Flush();
                    reply.Append(t.Text);
                }

                Console.Out.WriteLine();
                messages.Add(new ChatMessage("assistant", reply.ToString()));
                rendered = ChatFormatter.Format(llama.Tokenizer, messages, addGenerationPrompt: false);
                if (generator.LastStopReason == StopReason.ContextFull)
                {
                    Console.Error.WriteLine("gpullama: the context is full; starting a new conversation");
                    generator.Reset();
                    messages.RemoveRange(0, messages.Count);
                    rendered = "";
                }
            }

            return 0;
        });
        return command;
    }
}
