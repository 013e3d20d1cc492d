using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;
using GpuLlama.Devices;

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
            PerplexityCommand.Create(),
            EmbedCommand.Create(),
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
            if (CpuDevice.CheckPrefetchSetting() is string prefetchError)
            {
                return Fail(prefetchError, code: 2);
            }

            ParseResult parsed = root.Parse(args.Length == 0 ? ["--help"] : args);
            if (parsed.Errors.Count > 0)
            {
                return Fail(ParseErrorLine(parsed), code: 2);
            }

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

    /// <summary>
    /// "unknown option '--ctx-siz' (did you mean --ctx-size?)" for each unmatched flag — the word after it is taken
    /// as its value, not reported again — and "unexpected argument" for other stray words.
    /// </summary>
    private static IEnumerable<string> UnknownTokens(ParseResult parsed)
    {
        Command command = parsed.CommandResult.Command;
        string[] flags = command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)).Where(n => n.StartsWith('-')).Distinct().ToArray();
        string[] commands = command.Subcommands.Select(c => c.Name).ToArray();
        IReadOnlyList<string> tokens = parsed.UnmatchedTokens;
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            if (t.StartsWith('-') && t.Length > 1 && !double.TryParse(t, out _))
            {
                string? near = flags
                    .Select(n => (Name: n, Distance: t.Length > 3 && n.StartsWith(t, StringComparison.Ordinal) ? 0 : EditDistance(t, n)))
                    .Where(c => c.Distance <= Math.Max(2, t.Length / 4))
                    .OrderBy(c => c.Distance)
                    .Select(c => c.Name)
                    .FirstOrDefault();
                yield return near is null ? $"unknown option '{t}'" : $"unknown option '{t}' (did you mean {near}?)";
                if (i + 1 < tokens.Count && !tokens[i + 1].StartsWith('-'))
                {
                    i++;
                }
            }
            else
            {
                string? near = commands.Where(n => EditDistance(t, n) <= Math.Min(2, n.Length / 2)).OrderBy(n => EditDistance(t, n)).FirstOrDefault();
                yield return near is not null ? $"unknown command '{t}' (did you mean {near}?)"
                    : commands.Length > 0 && i == 0 ? $"unknown command '{t}'"
                    : $"unexpected argument '{t}'";
            }
        }
    }

    private static int EditDistance(string a, string b)
    {
        int[] prev = new int[b.Length + 1], cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++)
        {
            prev[j] = j;
        }

        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                cur[j] = Math.Min(Math.Min(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            }

            (prev, cur) = (cur, prev);
        }

        return prev[b.Length];
    }

    private static string Friendlier(string text)
    {
        // a typo suggestion comes as "… Did you mean one of the following?" and one candidate per line
        string[] lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string message = lines.Length == 0 ? "" : lines[0].TrimEnd('.');
        const string suggest = "Did you mean one of the following?";
        if (message.EndsWith(suggest, StringComparison.Ordinal))
        {
            message = message[..^suggest.Length].TrimEnd().TrimEnd('.');
            message = Regex.Replace(message, " as expected type '[^']*'$", "");
            message += lines.Length > 1 ? $": expected one of {string.Join(", ", lines[1..])}" : "";
        }

        foreach ((string type, string what) in new[]
                 {
                     ("System.Int32", "an integer"), ("System.Int64", "an integer"), ("System.Single", "a number"),
                     ("System.Double", "a number"), ("System.Boolean", "true or false"),
                 })
        {
            message = message.Replace($" as expected type '{type}'", $": expected {what}");
        }

        return message;
    }

    /// <summary>Cancelled by Ctrl+C.</summary>
    public static CancellationToken Cancellation { get; private set; }

    public static int Fail(string message, int code = 1)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"gpullama: error: {message}");
        return code;
    }

    /// <summary>
    /// The parser's complaints as one line, with where to look: System.CommandLine would print each on its own line
    /// (typo suggestions as a list) followed by the whole help text, which buries the actual problem.
    /// </summary>
    private static string ParseErrorLine(ParseResult parsed)
    {
        List<string> messages = parsed.Errors
            .Where(e => !e.Message.StartsWith("Unrecognized command or argument", StringComparison.Ordinal))
            .Select(e => Friendlier(e.Message))
            .Where(m => m.Length > 0)
            .Distinct()
            .ToList();
        messages.AddRange(UnknownTokens(parsed));
        if (messages.Count > 1)
        {
            messages.Remove("Required command was not provided"); // the unrecognized word that follows says more
        }

        var path = new List<string>();
        for (SymbolResult? r = parsed.CommandResult; r is CommandResult c; r = c.Parent)
        {
            if (c.Command is not RootCommand)
            {
                path.Insert(0, c.Command.Name);
            }
        }

        string help = path.Count == 0 ? "gpullama --help" : $"gpullama {string.Join(' ', path)} --help";
        return $"{string.Join("; ", messages)} (see `{help}`)";
    }
}
