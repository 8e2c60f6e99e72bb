namespace CallState.Cli;

/// <summary>What <c>callstate</c> exits with, for scripts (docs/operations.md, "CLI").</summary>
public static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Ok = 0;

    /// <summary>Nothing to act on: an unknown limit or call, a call that was not held.</summary>
    public const int NotFound = 1;

    /// <summary>Bad command line or a request the API refused as invalid (400).</summary>
    public const int Usage = 2;

    /// <summary>No token, an unknown token (401), or a read token asked to write (403).</summary>
    public const int Denied = 3;

    /// <summary>The API could not be reached, or failed (5xx).</summary>
    public const int Unavailable = 4;
}
