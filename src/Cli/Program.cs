return await CallState.Cli.CliApp.RunAsync(args, Spectre.Console.AnsiConsole.Console).ConfigureAwait(false);
