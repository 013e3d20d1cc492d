using System.CommandLine;

namespace GpuLlama.Host;

/// <summary>
/// The gpullama command. This is the one error boundary: a <see cref="GpuLlamaException"/> (bad file, bad flag,
/// out of memory) becomes one line on stderr and exit code 1 — never a stack trace.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("gpullama: run LLaMA-family models on the CPU and GPUs, layer by layer.")
        {
            RunCommand.Create(),
            ChatCommand.Create(),
            TokenizeCommand.Create(),
            InfoCommand.Create(),
            DevicesCommand.Create(),
            PlanCommand.Create(),
            BenchCommand.Create(),
            ExportCommand.Create(),
        };

        return Invoke(root, args);
    }

    /// <summary>Parses and runs; turns user-facing errors into one stderr line.</summary>
    public static int Invoke(RootCommand root, string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            // first Ctrl+C stops generation cleanly; a second one kills the process
            if (!cancel.IsCancellationRequested)
            {
                e.Cancel = true;
                cancel.Cancel();
            }
        };
        Cancellation = cancel.Token;
        try
        {
            ParseResult parsed = root.Parse(args);
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (GpuLlamaException e)
        {
            return Fail(e.Message);
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("gpullama: cancelled");
            return 130;
        }
        catch (OutOfMemoryException)
        {
            return Fail("out of host memory: use a smaller model, a smaller --ctx, or more --gpu-layers");
        }
    }

    /// <summary>Cancelled by Ctrl+C.</summary>
    public static CancellationToken Cancellation { get; private set; }

    public static int Fail(string message)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"gpullama: error: {message}");
        return 1;
    }
}
