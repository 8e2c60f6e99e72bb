using System.Text;
using CallState.SipEdge.Trust;

namespace CallState.SipEdge.Tests.Trust;

public sealed class DigestVerifierTests
{
    [Theory]
    [InlineData("SHA-256")]
    [InlineData("MD5")]
    public void A_client_answering_the_challenge_is_authenticated(string algorithm)
    {
        var edge = new TestEdge();
        var answer = DigestClient.Answer(edge.Challenged(algorithm), "alice", "wonderland", "INVITE", Requests.BobUri);
        using var invite = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + answer);

        var result = edge.Verifier.Verify(invite, DigestRole.Proxy, out var index);

        Assert.Equal(new DigestResult(DigestOutcome.Authenticated, "alice"), result);
        Assert.False(result.IsFailure);
        Assert.Equal("Proxy-Authorization", Encoding.ASCII.GetString(invite.Fields[index].Name.Of(invite.Span)));
    }

    [Fact]
    public void A_server_uses_WWW_Authenticate_and_Authorization()
    {
        var edge = new TestEdge(role: DigestRole.Server);
        var challenge = edge.Challenged();
        Assert.Equal("WWW-Authenticate", challenge.Header);
        var answer = DigestClient.Answer(challenge, "bob", "builder", "INVITE", Requests.BobUri);

        using var asProxy = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + answer);
        Assert.Equal(DigestOutcome.Missing, edge.Verifier.Verify(asProxy, DigestRole.Server, out _).Outcome);

        using var invite = Requests.Invite(Requests.BobUri, "Authorization: " + answer);
        Assert.Equal(new DigestResult(DigestOutcome.Authenticated, "bob"), edge.Verifier.Verify(invite, DigestRole.Server, out _));
    }

    [Fact]
    public void Without_credentials_the_request_is_missing_them_which_is_no_failure()
    {
        var edge = new TestEdge();
        using var invite = Requests.Invite();

        var result = edge.Verifier.Verify(invite, DigestRole.Proxy, out var index);

        Assert.Equal(DigestOutcome.Missing, result.Outcome);
        Assert.False(result.IsFailure);
        Assert.Equal(-1, index);
        Assert.Equal(DigestOutcome.Missing, edge.Verify(" ").Outcome);
    }

    [Fact]
    public void A_wrong_password_is_a_bad_response()
    {
        var edge = new TestEdge();
        var result = edge.Verify(DigestClient.Answer(edge.Challenged(), "alice", "guess", "INVITE", Requests.BobUri));

        Assert.Equal(new DigestResult(DigestOutcome.BadResponse, "alice"), result);
        Assert.True(result.IsFailure);
    }

    [Fact]
    public void An_unknown_user_is_reported_and_counts_as_a_failure()
    {
        var edge = new TestEdge();
        var result = edge.Verify(DigestClient.Answer(edge.Challenged(), "mallory", "x", "INVITE", Requests.BobUri));

        Assert.Equal(new DigestResult(DigestOutcome.UnknownUser, "mallory"), result);
        Assert.True(result.IsFailure);
    }

    [Fact]
    public void A_store_entry_that_is_not_ha1_hex_counts_as_no_entry()
    {
        var edge = new TestEdge(store: new BrokenStore());

        Assert.Equal(DigestOutcome.UnknownUser, edge.Verify(DigestClient.Answer(edge.Challenged(), "alice", "wonderland", "INVITE", Requests.BobUri)).Outcome);
    }

    [Fact]
    public void The_right_password_on_an_expired_nonce_is_stale_and_a_wrong_one_a_bad_response()
    {
        var edge = new TestEdge();
        var challenge = edge.Challenged();
        edge.Time.Advance(NonceService.DefaultLifetime + TimeSpan.FromSeconds(1));

        var stale = edge.Verify(DigestClient.Answer(challenge, "alice", "wonderland", "INVITE", Requests.BobUri));
        Assert.Equal(new DigestResult(DigestOutcome.Stale, "alice"), stale);
        Assert.False(stale.IsFailure);
        Assert.Equal(DigestOutcome.BadResponse, edge.Verify(DigestClient.Answer(challenge, "alice", "guess", "INVITE", Requests.BobUri)).Outcome);
    }

    [Fact]
    public void A_replayed_nonce_count_is_refused_and_the_next_count_accepted()
    {
        var edge = new TestEdge();
        var challenge = edge.Challenged();
        var first = DigestClient.Answer(challenge, "alice", "wonderland", "INVITE", Requests.BobUri, nc: 1);

        Assert.Equal(DigestOutcome.Authenticated, edge.Verify(first).Outcome);
        var replay = edge.Verify(first);
        Assert.Equal(DigestOutcome.Replay, replay.Outcome);
        Assert.True(replay.IsFailure);
        Assert.Equal(DigestOutcome.Authenticated, edge.Verify(DigestClient.Answer(challenge, "alice", "wonderland", "INVITE", Requests.BobUri, nc: 2)).Outcome);
    }

    [Fact]
    public void Another_edge_sharing_the_secret_accepts_the_nonce_and_keeps_its_own_counts()
    {
        var first = new TestEdge();
        var second = new TestEdge();
        var answer = DigestClient.Answer(first.Challenged(), "alice", "wonderland", "INVITE", Requests.BobUri);

        Assert.Equal(DigestOutcome.Authenticated, second.Verify(answer).Outcome);
        Assert.Equal(DigestOutcome.Authenticated, first.Verify(answer).Outcome);
        Assert.Equal(DigestOutcome.Replay, second.Verify(answer).Outcome);
    }

    [Fact]
    public void A_nonce_from_an_edge_with_another_secret_is_invalid()
    {
        var secret = TestEdge.Secret.ToArray();
        secret[0] ^= 0x80;
        var foreign = new TestEdge(secret: secret);
        var edge = new TestEdge();

        var result = edge.Verify(DigestClient.Answer(foreign.Challenged(), "alice", "wonderland", "INVITE", Requests.BobUri));

        Assert.Equal(new DigestResult(DigestOutcome.InvalidNonce, "alice"), result);
        Assert.True(result.IsFailure);
    }

    [Fact]
    public void A_tampered_nonce_is_invalid_even_with_a_response_computed_over_it()
    {
        var edge = new TestEdge();
        var challenge = edge.Challenged();
        var nonce = challenge.Nonce.ToCharArray();
        nonce[3] = nonce[3] == 'x' ? 'y' : 'x';

        var result = edge.Verify(DigestClient.Answer(challenge, "alice", "wonderland", "INVITE", Requests.BobUri, nonce: new string(nonce)));

        Assert.Equal(DigestOutcome.InvalidNonce, result.Outcome);
    }

    [Fact]
    public void Credentials_for_another_request_uri_are_refused()
    {
        var edge = new TestEdge();
        var answer = DigestClient.Answer(edge.Challenged(), "alice", "wonderland", "INVITE", "sip:carol@callstate.example");

        Assert.Equal(new DigestResult(DigestOutcome.Malformed, "alice"), edge.Verify(answer));
        using var invite = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + answer);
        Assert.Equal(DigestOutcome.Malformed, edge.Verifier.Verify(invite, DigestRole.Proxy, out _).Outcome);
    }

    [Theory]
    [InlineData("sip:bob@callstate.example", "sip:callstate.example", true)]
    [InlineData("sip:bob@callstate.example:5060", "sip:callstate.example:5060", true)]
    [InlineData("sip:bob@callstate.example", "sip:bob@callstate.example", true)]
    [InlineData("sip:bob@callstate.example", "sip:other.example", false)]
    [InlineData("sip:bob@callstate.example", "sip:callstate.example:5060", false)]
    [InlineData("sip:callstate.example", "sip:callstate.example:5", false)]
    [InlineData("sip:bob@callstate.example", "sips:callstate.example", false)]
    public void The_uri_is_the_request_uri_or_it_without_its_user_part(string requestUri, string uri, bool matches) =>
        Assert.Equal(matches, DigestVerifier.UriMatches(Encoding.ASCII.GetBytes(uri), Encoding.ASCII.GetBytes(requestUri)));

    [Fact]
    public void The_method_is_covered_by_the_response()
    {
        var edge = new TestEdge();
        var answer = DigestClient.Answer(edge.Challenged(), "alice", "wonderland", "BYE", Requests.BobUri);

        Assert.Equal(DigestOutcome.BadResponse, edge.Verify(answer).Outcome);
    }

    [Fact]
    public void Credentials_for_another_realm_are_wrong_realm_and_ours_is_found_among_several()
    {
        var edge = new TestEdge();
        var challenge = edge.Challenged();
        var other = DigestClient.Answer(challenge with { Realm = "upstream.example" }, "alice", "elsewhere", "INVITE", Requests.BobUri);
        var ours = DigestClient.Answer(challenge, "alice", "wonderland", "INVITE", Requests.BobUri);

        Assert.Equal(new DigestResult(DigestOutcome.WrongRealm, "alice"), edge.Verify(other));
        using var onlyOther = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + other);
        Assert.Equal(DigestOutcome.WrongRealm, edge.Verifier.Verify(onlyOther, DigestRole.Proxy, out _).Outcome);

        // RFC 3261 22.3: each proxy reads the Proxy-Authorization of its own realm.
        using var both = Requests.Invite(Requests.BobUri, "Proxy-Authorization: " + other, "proxy-authorization: " + ours);
        Assert.Equal(DigestOutcome.Authenticated, edge.Verifier.Verify(both, DigestRole.Proxy, out var index).Outcome);
        Assert.Equal("proxy-authorization", Encoding.ASCII.GetString(both.Fields[index].Name.Of(both.Span)));
    }

    [Fact]
    public void A_malformed_header_is_reported_with_its_reason()
    {
        var edge = new TestEdge();
        using var invite = Requests.Invite(Requests.BobUri, "Proxy-Authorization: Digest username=\"alice\", realm=\"callstate.example\"");

        Assert.Equal(new DigestResult(DigestOutcome.Malformed, null, DigestCredentialsError.MissingParameter),
            edge.Verifier.Verify(invite, DigestRole.Proxy, out _));
        Assert.Equal(DigestCredentialsError.BadNonceCount,
            edge.Verify(DigestClient.Answer(edge.Challenged(), "alice", "wonderland", "INVITE", Requests.BobUri, nc: 0)).Error);
    }

    [Fact]
    public void An_algorithm_that_was_not_offered_is_refused()
    {
        var md5Edge = new TestEdge();
        var sha256Only = new TestEdge(algorithms: [DigestAlgorithm.Sha256]);

        var result = sha256Only.Verify(DigestClient.Answer(md5Edge.Challenged("MD5"), "alice", "wonderland", "INVITE", Requests.BobUri));

        Assert.Equal(new DigestResult(DigestOutcome.Malformed, "alice", DigestCredentialsError.UnsupportedAlgorithm), result);
    }

    [Fact]
    public void Escaped_user_names_are_read_unescaped()
    {
        const string user = "o\"brien\\x";
        var edge = new TestEdge(store: new TestStore(TestEdge.Realm, (user, "pw")));

        var result = edge.Verify(DigestClient.Answer(edge.Challenged(), user, "pw", "INVITE", Requests.BobUri));

        Assert.Equal(new DigestResult(DigestOutcome.Authenticated, user), result);
    }

    [Fact]
    public void A_full_replay_cache_answers_stale_so_the_client_retries_later()
    {
        var edge = new TestEdge(maxNonces: 1);
        Assert.Equal(DigestOutcome.Authenticated, edge.Verify(DigestClient.Answer(edge.Challenged(), "alice", "wonderland", "INVITE", Requests.BobUri)).Outcome);

        edge.Time.Advance(TimeSpan.FromMilliseconds(5));
        var second = DigestClient.Answer(edge.Challenged(), "bob", "builder", "INVITE", Requests.BobUri);
        Assert.Equal(DigestOutcome.Stale, edge.Verify(second).Outcome);

        edge.Time.Advance(NonceService.DefaultLifetime);
        Assert.Equal(DigestOutcome.Authenticated, edge.Verify(DigestClient.Answer(edge.Challenged(), "bob", "builder", "INVITE", Requests.BobUri)).Outcome);
    }

    private sealed class BrokenStore : IDigestCredentialStore
    {
        public bool TryGetHa1(string user, DigestAlgorithm algorithm, out string ha1Hex)
        {
            ha1Hex = "not-hex";
            return true;
        }
    }
}
