using System.Collections.Concurrent;
using System.Security.Cryptography;
using CallState.Silo.Admin;

namespace CallState.Silo.Dashboard;

/// <summary>
/// The dashboard's sign-ins (docs/dashboard.md, "Signing in"). A browser cannot send a bearer token on a navigation or an
/// <c>EventSource</c>, so a token posted once to the login form becomes a session: a random id in an HttpOnly,
/// SameSite=Strict cookie, standing for the token's credential (its name and role) until it expires or the operator
/// signs out. Only the SHA-256 of each id is kept, so a memory dump holds no usable cookie. Sessions live in the process
/// that issued them: a browser talks to one admin listener.
/// </summary>
public sealed class DashboardSessions(TimeProvider time)
{
    /// <summary>The cookie's name.</summary>
    public const string CookieName = "callstate_session";

    /// <summary>How long a sign-in lasts (absolute: an operator signs in again after a shift).</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(8);

    /// <summary>Most sessions kept at once: bounds the memory an authenticated client can make this process hold.</summary>
    public const int MaxSessions = 1000;

    private readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);

    /// <summary>A new session standing for <paramref name="credential"/>; its id goes in the cookie and nowhere else.</summary>
    public (string Id, DateTimeOffset Expires) Create(AdminCredential credential)
    {
        ArgumentNullException.ThrowIfNull(credential);
        var now = time.GetUtcNow();
        if (_sessions.Count >= MaxSessions)
        {
            foreach (var (key, session) in _sessions)
            {
                if (session.Expires <= now)
                {
                    _sessions.TryRemove(key, out _);
                }
            }

            if (_sessions.Count >= MaxSessions)
            {
                // Still full of live sessions: the oldest goes.
                var oldest = _sessions.MinBy(static s => s.Value.Expires);
                _sessions.TryRemove(oldest.Key, out _);
            }
        }

        var id = Base64UrlEncode(RandomNumberGenerator.GetBytes(32));
        var expires = now + Lifetime;
        _sessions[Hash(id)] = new Session(credential, expires);
        return (id, expires);
    }

    /// <summary>The credential the session <paramref name="id"/> stands for; null when unknown or expired.</summary>
    public AdminCredential? Find(string? id)
    {
        if (string.IsNullOrEmpty(id) || id.Length > 100)
        {
            return null;
        }

        var key = Hash(id);
        if (!_sessions.TryGetValue(key, out var session))
        {
            return null;
        }

        if (session.Expires <= time.GetUtcNow())
        {
            _sessions.TryRemove(key, out _);
            return null;
        }

        return session.Credential;
    }

    /// <summary>Ends the session <paramref name="id"/> (sign-out); its live streams stop at their next update.</summary>
    public void Remove(string? id)
    {
        if (!string.IsNullOrEmpty(id))
        {
            _sessions.TryRemove(Hash(id), out _);
        }
    }

    private static string Hash(string id) => Convert.ToHexString(SHA256.HashData(System.Text.Encoding.ASCII.GetBytes(id)));

    private static string Base64UrlEncode(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private sealed record Session(AdminCredential Credential, DateTimeOffset Expires);
}
