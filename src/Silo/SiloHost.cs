using CallState.Silo.Admin;
using CallState.Silo.Hosting;
using Microsoft.Extensions.Options;

namespace CallState.Silo;

/// <summary>Builds and runs the silo process; a configuration error stops it before it serves anything.</summary>
public static class SiloHost
{
    /// <summary>Exit code for a configuration that failed validation.</summary>
    public const int ConfigurationErrorExitCode = 2;

    public static async Task<int> RunAsync(string[] args)
    {
        WebApplication app;
        try
        {
            app = Build(args);
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (OptionsValidationException ex)
        {
            await Console.Error.WriteLineAsync("CallState silo: invalid configuration:").ConfigureAwait(false);
            foreach (var failure in ex.Failures)
            {
                await Console.Error.WriteLineAsync("  " + failure).ConfigureAwait(false);
            }

            return ConfigurationErrorExitCode;
        }

        await app.WaitForShutdownAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
        return 0;
    }

    /// <summary>The sections under <c>CallState</c> a silo reads, with their options types.</summary>
    public static readonly IReadOnlyDictionary<string, Type> Sections = new Dictionary<string, Type>(StringComparer.OrdinalIgnoreCase)
    {
        ["Storage"] = typeof(Storage.StorageOptions),
        ["Grains"] = typeof(Grains.GrainOptions),
        ["Limits"] = typeof(Limits.LimitsOptions),
        ["Orleans"] = typeof(Hosting.OrleansClusterOptions),
        ["Admin"] = typeof(Admin.AdminOptions),
    };

    /// <summary>Stops start-up (<see cref="OptionsValidationException"/>) when the configuration has keys nothing reads.</summary>
    public static void ThrowOnUnknownKeys(IConfiguration configuration, IReadOnlyDictionary<string, Type> sections)
    {
        var unknown = Hosting.ConfigurationKeys.FindUnknown(configuration, sections);
        if (unknown.Count > 0)
        {
            throw new OptionsValidationException(Hosting.ConfigurationKeys.Root, typeof(Hosting.ConfigurationKeys), unknown);
        }
    }

    public static WebApplication Build(string[] args)
    {
        // appsettings.json ships beside the binary, so `dotnet run --project src/Silo` from any directory
        // finds it; relative data paths (data/callstate.db) stay relative to the working directory.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddCallStateSettingsDirectory();
        ThrowOnUnknownKeys(builder.Configuration, Sections);
        builder.AddCallStateAdmin();
        builder.AddCallStateTelemetry(Telemetry.SiloService);
        builder.Services.AddCallStateSilo(builder.Configuration);
        var app = builder.Build();
        app.MapCallStateAdminApi();
        return app;
    }
}
