using CallState.SipEdge;

return await EdgeHost.RunAsync(args).ConfigureAwait(false);
