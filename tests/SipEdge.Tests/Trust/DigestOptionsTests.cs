using System.Text;
using CallState.SipEdge.Trust;
using Microsoft.Extensions.Configuration;

namespace CallState.SipEdge.Tests.Trust;

public sealed class DigestOptionsTests
{
    private static readonly string SecretText = Convert.ToBase64String(TestEdge.Secret);

    private static DigestOptions Valid() => new() { Realm = "callstate.example", Secret = SecretText };

    [Fact]
    public void Every_field_binds_from_its_section()
    {
        var json = $$"""
            { "CallState": { "Trust": { "Digest": {
              "Realm": "callstate.example", "NonceLifetime": "00:00:20", "Secret": "{{SecretText}}",
              "MaxFailures": 5, "FailureWindow": "00:02:00", "BlockTime": "00:10:00", "MaxTrackedSources": 1000,
              "MaxNonceEntries": 2000, "Algorithms": [ "MD5" ] } } } }
            """;
        var options = new DigestOptions();
        new ConfigurationBuilder().AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json))).Build()
            .GetSection(DigestOptions.SectionName).Bind(options);

        Assert.Empty(options.Validate());
        Assert.Equal("callstate.example", options.Realm);
        Assert.Equal(TimeSpan.FromSeconds(20), options.NonceLifetime);
        Assert.Equal(5, options.MaxFailures);
        Assert.Equal(TimeSpan.FromMinutes(2), options.FailureWindow);
        Assert.Equal(TimeSpan.FromMinutes(10), options.BlockTime);
        Assert.Equal(1000, options.MaxTrackedSources);
        Assert.Equal(2000, options.MaxNonceEntries);
        Assert.Equal([DigestAlgorithm.Md5], options.GetAlgorithms());
        Assert.Equal(TestEdge.Secret, options.ReadSecret());
    }

    [Fact]
    public void Defaults_offer_both_algorithms_SHA_256_first()
    {
        var options = Valid();

        Assert.Empty(options.Validate());
        Assert.Equal([DigestAlgorithm.Sha256, DigestAlgorithm.Md5], options.GetAlgorithms());
        Assert.Equal(TimeSpan.FromSeconds(30), options.NonceLifetime);
        Assert.Equal(10, options.MaxFailures);
        Assert.Equal(TimeSpan.FromMinutes(5), options.BlockTime);
    }

    [Fact]
    public void Each_error_names_its_field()
    {
        var options = new DigestOptions
        {
            NonceLifetime = TimeSpan.Zero,
            MaxFailures = 0,
            FailureWindow = TimeSpan.Zero,
            BlockTime = TimeSpan.FromSeconds(-1),
            MaxTrackedSources = 0,
            MaxNonceEntries = 0,
            Algorithms = ["SHA-256", "MD5-sess"],
        };

        var errors = options.Validate();

        string[] expected =
        [
            "CallState:Trust:Digest:Realm: required",
            "CallState:Trust:Digest:NonceLifetime: ",
            "CallState:Trust:Digest:Secret: set exactly one of Secret and SecretFile",
            "CallState:Trust:Digest:MaxFailures: ",
            "CallState:Trust:Digest:FailureWindow: ",
            "CallState:Trust:Digest:BlockTime: ",
            "CallState:Trust:Digest:MaxTrackedSources: ",
            "CallState:Trust:Digest:MaxNonceEntries: ",
            "CallState:Trust:Digest:Algorithms:1: 'MD5-sess'",
        ];
        Assert.Equal(expected.Length, errors.Count);
        Assert.All(expected.Zip(errors), pair => Assert.StartsWith(pair.First, pair.Second, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("callstate.example\r\nVia: x", "CallState:Trust:Digest:Realm: must not contain control characters")]
    [InlineData(null, "CallState:Trust:Digest:Realm: required")]
    public void A_realm_that_would_break_the_header_is_refused(string? realm, string error)
    {
        var options = Valid();
        options.Realm = realm;

        Assert.StartsWith(error, Assert.Single(options.Validate()), StringComparison.Ordinal);
    }

    [Fact]
    public void A_short_or_malformed_secret_is_refused_without_showing_it()
    {
        var shortSecret = Convert.ToBase64String(new byte[31]);
        var options = Valid();
        options.Secret = shortSecret;

        var error = Assert.Single(options.Validate());
        Assert.Equal("CallState:Trust:Digest:Secret: must be at least 32 bytes (was 31)", error);
        var thrown = Assert.Throws<InvalidOperationException>(options.ReadSecret);
        Assert.DoesNotContain(shortSecret, thrown.Message, StringComparison.Ordinal);

        options.Secret = "not base64!";
        Assert.Equal("CallState:Trust:Digest:Secret: not base64", Assert.Single(options.Validate()));

        options.SecretFile = "/somewhere";
        Assert.StartsWith("CallState:Trust:Digest:Secret: set exactly one", Assert.Single(options.Validate()), StringComparison.Ordinal);
    }

    [Fact]
    public void The_secret_can_come_from_a_file()
    {
        var directory = Directory.CreateTempSubdirectory("callstate-digest-");
        try
        {
            var path = Path.Combine(directory.FullName, "nonce-secret");
            File.WriteAllText(path, SecretText + "\n");
            var options = new DigestOptions { Realm = "callstate.example", SecretFile = path };

            Assert.Empty(options.Validate());
            Assert.Equal(TestEdge.Secret, options.ReadSecret());

            options.SecretFile = Path.Combine(directory.FullName, "absent");
            Assert.StartsWith("CallState:Trust:Digest:SecretFile: cannot read", Assert.Single(options.Validate()), StringComparison.Ordinal);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }
}
