using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CallState.Sip.Transport;

/// <summary>
/// The certificate a TLS listener presents, read from files and read again when they change: a renewed certificate is
/// served to the next connection without a restart. The files are looked at when a connection needs the certificate,
/// at most once per <see cref="CheckInterval"/>; they count as changed when their content does (a rename over them, an
/// atomic symlink swap or an in-place write alike). A change that does not load (a key that does not match, a file
/// half written) keeps the certificate in use and is reported through <see cref="ReloadFailed"/>; the next change is
/// tried again.
/// </summary>
public sealed class SipTlsCertificateSource
{
    /// <summary>How often at most the files are read to see whether they changed.</summary>
    public static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(1);

    private readonly string[] _files;
    private readonly Func<byte[][], (X509Certificate2 Leaf, X509Certificate2Collection Chain)> _load;
    private readonly TimeProvider _timeProvider;
    private readonly Lock _checking = new();
    private State _state;
    private long _lastCheck;
    private long _reloads;
    private long _reloadFailures;

    private SipTlsCertificateSource(string[] files, Func<byte[][], (X509Certificate2, X509Certificate2Collection)> load, TimeProvider? timeProvider)
    {
        _files = files;
        _load = load;
        _timeProvider = timeProvider ?? TimeProvider.System;
        var contents = ReadAll(files);
        _state = Create(contents);
        _lastCheck = _timeProvider.GetTimestamp();
    }

    /// <summary>
    /// A certificate from PEM files: <paramref name="certificateFile"/> holds the certificate, then any intermediate CA
    /// certificates (sent to peers with it); <paramref name="keyFile"/> its private key (null: the key is in the certificate file).
    /// </summary>
    /// <exception cref="CryptographicException">The files do not hold a certificate with its private key.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    public static SipTlsCertificateSource FromPem(string certificateFile, string? keyFile, TimeProvider? timeProvider = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(certificateFile);
        string[] files = string.IsNullOrWhiteSpace(keyFile) ? [certificateFile] : [certificateFile, keyFile];
        return new SipTlsCertificateSource(files, contents => LoadPem(contents[0], contents.Length > 1 ? contents[1] : contents[0]), timeProvider);
    }

    /// <summary>A certificate from a PKCS#12 file; its other certificates are sent to peers with it.</summary>
    /// <exception cref="CryptographicException">The file is not PKCS#12, the password does not open it, or it holds no private key.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static SipTlsCertificateSource FromPfx(string pfxFile, string? password, TimeProvider? timeProvider = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pfxFile);
        return new SipTlsCertificateSource([pfxFile], contents => LoadPfx(contents[0], password), timeProvider);
    }

    /// <summary>The certificate in use (with its private key).</summary>
    public X509Certificate2 Certificate => Volatile.Read(ref _state).Leaf;

    /// <summary>Times the files changed and the new certificate was taken into use.</summary>
    public long Reloads => Interlocked.Read(ref _reloads);

    /// <summary>Times the files changed but could not be loaded (the previous certificate stayed in use).</summary>
    public long ReloadFailures => Interlocked.Read(ref _reloadFailures);

    /// <summary>Told of each certificate taken into use after a change of the files.</summary>
    public event Action<X509Certificate2>? Reloaded;

    /// <summary>Told of each change of the files that could not be loaded; the certificate in use stays.</summary>
    public event Action<Exception>? ReloadFailed;

    /// <summary>The certificate to present now, after looking at the files if <see cref="CheckInterval"/> has passed since the last look.</summary>
    internal SslStreamCertificateContext Context
    {
        get
        {
            if (_timeProvider.GetElapsedTime(Interlocked.Read(ref _lastCheck)) >= CheckInterval && _checking.TryEnter())
            {
                // One caller looks; the others (connections arriving meanwhile) go on with the certificate in use.
                try
                {
                    if (_timeProvider.GetElapsedTime(Interlocked.Read(ref _lastCheck)) >= CheckInterval)
                    {
                        CheckFiles();
                        Interlocked.Exchange(ref _lastCheck, _timeProvider.GetTimestamp());
                    }
                }
                finally
                {
                    _checking.Exit();
                }
            }
            return Volatile.Read(ref _state).Context;
        }
    }

    private void CheckFiles()
    {
        var current = Volatile.Read(ref _state);
        byte[][] contents;
        byte[] hash;
        try
        {
            contents = ReadAll(_files);
            hash = Hash(contents);
            if (hash.AsSpan().SequenceEqual(current.Hash))
            {
                return;
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A file missing for a moment (being replaced) is a failed reload, told once per check at most.
            Interlocked.Increment(ref _reloadFailures);
            Tell(ReloadFailed, ex);
            return;
        }
        State next;
        try
        {
            next = Create(contents);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            // Remember what failed so the same content is not tried (and reported) again every second; a further
            // change is tried as soon as it is seen.
            Volatile.Write(ref _state, current with { Hash = hash });
            Interlocked.Increment(ref _reloadFailures);
            Tell(ReloadFailed, new CryptographicException($"The certificate files changed but could not be loaded ({string.Join(", ", _files)}): {ex.Message}", ex));
            return;
        }
        // The previous certificate is not disposed: handshakes under way may still be using it.
        Volatile.Write(ref _state, next);
        Interlocked.Increment(ref _reloads);
        Tell(Reloaded, next.Leaf);
    }

    private static void Tell<T>(Action<T>? listeners, T value)
    {
        try
        {
            listeners?.Invoke(value);
        }
#pragma warning disable CA1031 // A listener's failure must not fail the handshake that happened to look at the files.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private State Create(byte[][] contents)
    {
        var (leaf, chain) = _load(contents);
        try
        {
            // offline: the intermediates are the ones the files hold; nothing is fetched from the addresses a certificate names.
            var context = SslStreamCertificateContext.Create(leaf, chain, offline: true);
            return new State(leaf, context, Hash(contents));
        }
        catch
        {
            leaf.Dispose();
            throw;
        }
    }

    private static byte[][] ReadAll(string[] files)
    {
        var contents = new byte[files.Length][];
        for (var i = 0; i < files.Length; i++)
        {
            contents[i] = File.ReadAllBytes(files[i]);
        }
        return contents;
    }

    private static byte[] Hash(byte[][] contents)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> length = stackalloc byte[sizeof(int)];
        foreach (var content in contents)
        {
            // Each file's length first, so moving bytes from one file to the other is still a change.
            BitConverter.TryWriteBytes(length, content.Length);
            hash.AppendData(length);
            hash.AppendData(content);
        }
        return hash.GetHashAndReset();
    }

    private static (X509Certificate2, X509Certificate2Collection) LoadPem(byte[] certificatePem, byte[] keyPem)
    {
        var certificateText = System.Text.Encoding.ASCII.GetString(certificatePem);
        var leaf = X509Certificate2.CreateFromPem(certificateText, System.Text.Encoding.ASCII.GetString(keyPem));
        if (!leaf.HasPrivateKey)
        {
            leaf.Dispose();
            throw new CryptographicException("the certificate comes with no private key");
        }
        var all = new X509Certificate2Collection();
        all.ImportFromPem(certificateText);
        var chain = new X509Certificate2Collection();
        foreach (var certificate in all)
        {
            if (certificate.RawDataMemory.Span.SequenceEqual(leaf.RawDataMemory.Span))
            {
                certificate.Dispose();
                continue;
            }
            chain.Add(certificate);
        }
        return (UsableKey(leaf), chain);
    }

    private static (X509Certificate2, X509Certificate2Collection) LoadPfx(byte[] pfx, string? password)
    {
        var all = X509CertificateLoader.LoadPkcs12Collection(pfx, password);
        X509Certificate2? leaf = null;
        var chain = new X509Certificate2Collection();
        foreach (var certificate in all)
        {
            if (leaf is null && certificate.HasPrivateKey)
            {
                leaf = certificate;
                continue;
            }
            chain.Add(certificate);
        }
        return leaf is null
            ? throw new CryptographicException("the PKCS#12 file holds no certificate with a private key")
            : (leaf, chain);
    }

    /// <summary>SChannel cannot use the ephemeral key of a PEM file; a PKCS#12 round trip gives it one it can.</summary>
    private static X509Certificate2 UsableKey(X509Certificate2 certificate)
    {
        if (!OperatingSystem.IsWindows())
        {
            return certificate;
        }
        using (certificate)
        {
            return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
        }
    }

    private sealed record State(X509Certificate2 Leaf, SslStreamCertificateContext Context, byte[] Hash);
}
