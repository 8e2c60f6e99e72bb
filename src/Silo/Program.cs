using CallState.Silo;

return await SiloHost.RunAsync(args).ConfigureAwait(false);
