using System.CommandLine;
using GpuLlama.Generation;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama chat: an interactive conversation in the model's chat template, a shell over <see cref="ChatSession"/>
/// (each turn sends only the new part of the conversation, as llama.cpp's llama-cli -cnv does).
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
            var session = new ChatSession(llama, sampling.Text(r, r.GetValue(system)));
            bool verbose = r.GetValue(model.Verbose);
            while (!Program.Cancellation.IsCancellationRequested)
            {
                Console.Error.Write("> ");
                string? line = Console.In.ReadLine();
                if (string.IsNullOrWhiteSpace(line))
                {
                    break;
                }

                try
                {
                    foreach (GeneratedToken t in session.Send(line, gen, Program.Cancellation))
                    {
                        Console.Out.Write(t.Text);
                        Console.Out.Flush();
                    }
                }
                catch (GpuLlamaException e)
                {
                    // a message the context cannot hold: say so and let the user go on
                    Console.Error.WriteLine($"gpullama: {e.Message}");
                    continue;
                }

                Console.Out.WriteLine();
                if (verbose)
                {
                    Console.Error.WriteLine($"turn {session.Messages.Count(m => m.Role == "user")}: {session.LastPrompt.Tokens} new prompt tokens at position {session.LastPrompt.Position}");
                }

                if (session.LastStopReason == StopReason.ContextFull)
                {
                    Console.Error.WriteLine("gpullama: the context is full; the next turn leaves the oldest ones out");
                }
            }

            return 0;
        });
        return command;
    }
}
