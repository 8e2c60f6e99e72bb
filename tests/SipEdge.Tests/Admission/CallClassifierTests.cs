using System.Net;
using CallState.Grains;
using CallState.Silo.Limits;
using CallState.SipEdge.Admission;
using static CallState.SipEdge.Tests.Admission.Fixtures;

namespace CallState.SipEdge.Tests.Admission;

public sealed class CallClassifierTests
{
    private readonly CallClassifier _classifier = Classifier();

    [Theory]
    [InlineData("")]
    [InlineData(null)]
    public void Without_a_from_tag_the_call_is_named_by_its_call_id_alone(string? fromTag)
    {
        // RFC 4475 3.4.1: a caller following RFC 2543 sends no From tag.
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1") with { CallId = "call@host", FromTag = fromTag });

        Assert.True(call.Succeeded);
        Assert.Equal("call@host;", call.CallKey);
    }

    [Fact]
    public void Call_key_is_call_id_and_from_tag()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1", callId: "a84b4c76e66710@pc33", fromTag: "1928301774"));

        Assert.True(call.Succeeded, call.Error);
        Assert.Equal("a84b4c76e66710@pc33;1928301774", call.CallKey);
        Assert.Equal(CallKeys.Create("a84b4c76e66710@pc33", "1928301774"), call.CallKey);
    }

    [Theory]
    [InlineData("", "tag", "Call-ID")]
    [InlineData(null, "tag", "Call-ID")]
    public void A_missing_call_id_is_a_failure_that_reserves_nothing(string? callId, string? fromTag, string named)
    {
        var input = Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1") with { CallId = callId, FromTag = fromTag };

        var call = _classifier.Classify(input);

        Assert.False(call.Succeeded);
        Assert.Contains(named, call.Error, StringComparison.Ordinal);
        Assert.Empty(call.Limits);
        Assert.Equal("", call.CallKey);
    }

    [Fact]
    public void A_call_key_longer_than_the_runtime_accepts_is_a_failure()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1", callId: new string('c', GrainTypes.MaxCallKeyLength)));

        Assert.False(call.Succeeded);
        Assert.Contains("1024", call.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Alice_calling_a_local_user_counts_her_outbound_and_the_called_user_inbound()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/alice out", "user/bob in"], Requests(call));
        Assert.Equal(CallOrigin.LocalUser, call.Origin);
        Assert.Equal(CallDestination.LocalUser, call.Destination);
        Assert.Equal("alice", call.CallerUser);
        Assert.Equal("bob", call.CalledUser);
        Assert.Equal(IPEndPoint.Parse("127.0.0.1:5090"), call.NextHop);
        Assert.False(call.IsEmergency);
    }

    [Fact]
    public void A_call_from_the_trunk_source_to_alice_counts_the_trunk_and_alice_inbound()
    {
        var call = _classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));

        Assert.Equal(["trunk/carrier in", "user/alice in"], Requests(call));
        Assert.Equal(CallOrigin.Trunk, call.Origin);
        Assert.Equal("carrier", call.SourceTrunk);
        Assert.Equal(CallDestination.LocalUser, call.Destination);
        Assert.Equal(IPEndPoint.Parse("127.0.0.1:5090"), call.NextHop);
    }

    [Fact]
    public void The_trunk_is_recognised_by_source_address_whatever_the_from_header_says()
    {
        // A carrier can put a local-looking From in its INVITE; the packet source decides.
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.2"));

        Assert.Equal(["trunk/carrier in", "user/bob in"], Requests(call));
    }

    /// <summary>A client certificate's SHA-256 as the TLS connection reports it: upper-case hex, no colons.</summary>
    private const string CarrierSha256 = "3F2A9C0B7D41E5A8C6F1023B4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F70";

    private const string OtherSha256 = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";

    /// <summary>A configured form: hex pairs with colons as <c>openssl x509 -fingerprint -sha256</c> prints them, here in lower case.</summary>
    private static string WithColons(string hex) => string.Join(':', hex.Chunk(2).Select(c => new string(c))).ToLowerInvariant();

    [Fact]
    public void A_client_certificate_thumbprint_names_its_trunk_from_any_address()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].CertificateThumbprints = [WithColons(CarrierSha256)];
        var classifier = Classifier(admission);
        var input = Invite("+4420123@carrier.net", "alice@127.0.0.1", "198.51.100.7") with { CertificateSha256 = CarrierSha256 };

        var call = classifier.Classify(input);

        Assert.Equal(["trunk/carrier in", "user/alice in"], Requests(call));
        Assert.Equal(CallOrigin.Trunk, call.Origin);
        Assert.Equal(new TrunkSource(TrunkMatch.Certificate, "carrier"), classifier.SourceTrunkOf(IPAddress.Parse("198.51.100.7"), CarrierSha256));
        Assert.True(classifier.IsTrunkSource(IPAddress.Parse("198.51.100.7"), CarrierSha256));

        // Another certificate from the same address names nothing: that address is nobody's.
        Assert.Null(classifier.Classify(input with { CertificateSha256 = OtherSha256 }).SourceTrunk);
        Assert.False(classifier.IsTrunkSource(IPAddress.Parse("198.51.100.7"), OtherSha256));
    }

    [Fact]
    public void A_client_certificate_dns_name_names_its_trunk_whatever_its_case()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].CertificateNames = ["sbc.carrier.example.net"];
        var classifier = Classifier(admission);
        var input = Invite("+4420123@carrier.net", "alice@127.0.0.1", "198.51.100.7") with
        {
            CertificateSha256 = OtherSha256,
            CertificateNames = ["www.carrier.example.net", "SBC.Carrier.Example.NET"],
        };

        Assert.Equal("carrier", classifier.Classify(input).SourceTrunk);

        // Exact names only: a name under the listed one is not it.
        Assert.Null(classifier.Classify(input with { CertificateNames = ["a.sbc.carrier.example.net"] }).SourceTrunk);
    }

    [Fact]
    public void A_certificate_match_wins_over_an_address_match()
    {
        var admission = SampleAdmission();
        admission.Trunks["wholesale"] = new AdmissionTrunkOptions { Sources = ["198.51.100.0/24"], CertificateThumbprints = [CarrierSha256] };
        var classifier = Classifier(admission);

        // From carrier's address, with wholesale's certificate.
        var call = classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2") with { CertificateSha256 = CarrierSha256 });

        Assert.Equal("wholesale", call.SourceTrunk);
        Assert.Equal(["trunk/wholesale in", "user/alice in"], Requests(call));
    }

    [Fact]
    public void A_call_from_the_address_of_a_trunk_that_requires_a_certificate_is_refused_without_one()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].RequireCertificate = true;
        admission.Trunks["carrier"].CertificateThumbprints = [CarrierSha256];
        var classifier = Classifier(admission);
        var carrierAddress = IPAddress.Parse("127.0.0.2");
        var input = Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2");

        var withoutCertificate = classifier.Classify(input);
        var withAnother = classifier.Classify(input with { CertificateSha256 = OtherSha256, CertificateNames = ["sbc.carrier.example.net"] });
        var withItsOwn = classifier.Classify(input with { CertificateSha256 = CarrierSha256 });

        Assert.False(withoutCertificate.Succeeded);
        Assert.Equal("the source address is trunk 'carrier''s, which requires a client certificate, and no certificate of a trunk came with the call", withoutCertificate.Error);
        Assert.Empty(withoutCertificate.Limits);
        Assert.False(withAnother.Succeeded);
        Assert.Equal(new TrunkSource(TrunkMatch.CertificateRequired, "carrier"), classifier.SourceTrunkOf(carrierAddress));
        Assert.False(classifier.IsTrunkSource(carrierAddress));
        Assert.Equal(["trunk/carrier in", "user/alice in"], Requests(withItsOwn));
        Assert.True(classifier.IsTrunkSource(carrierAddress, CarrierSha256));
    }

    [Fact]
    public void Without_require_certificate_the_address_still_names_the_trunk_when_no_certificate_matches()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].CertificateThumbprints = [CarrierSha256];
        var classifier = Classifier(admission);

        var call = classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2") with { CertificateSha256 = OtherSha256 });

        Assert.Equal("carrier", call.SourceTrunk);
        Assert.Equal(new TrunkSource(TrunkMatch.Address, "carrier"), classifier.SourceTrunkOf(IPAddress.Parse("127.0.0.2"), OtherSha256));
    }

    [Fact]
    public void An_ipv4_mapped_source_from_a_dual_stack_socket_matches_the_ipv4_trunk_source()
    {
        var input = Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2") with { Source = IPAddress.Parse("::ffff:127.0.0.2") };

        var call = _classifier.Classify(input);

        Assert.Equal("carrier", call.SourceTrunk);
        Assert.Equal(IPAddress.Parse("127.0.0.2"), call.Source);
    }

    [Fact]
    public void A_plus_number_is_routed_to_the_trunk_and_counts_the_trunk_outbound()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "+442071234567@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/alice out", "trunk/carrier out"], Requests(call));
        Assert.Equal(CallDestination.Trunk, call.Destination);
        Assert.Equal("carrier", call.DestinationTrunk);
        Assert.Null(call.CalledUser);
        Assert.Equal(IPEndPoint.Parse("127.0.0.2:5090"), call.NextHop);
        Assert.Equal("+", call.RoutePrefix);
    }

    [Fact]
    public void A_route_to_a_trunk_wins_over_a_default_user_at_a_local_domain()
    {
        // With DefaultUser set every user at a local domain is local, but a number routed to the trunk leaves.
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "+15551234@example.com", "127.0.0.1"));

        Assert.Equal(["user/alice out", "trunk/carrier out"], Requests(call));
    }

    [Fact]
    public void The_longest_route_prefix_wins()
    {
        var toTrunk = _classifier.Classify(Invite("bob@127.0.0.1", "+1299@127.0.0.1", "127.0.0.1"));
        var toUpstream = _classifier.Classify(Invite("bob@127.0.0.1", "+1234@127.0.0.1", "127.0.0.1"));
        var toDefault = _classifier.Classify(Invite("bob@127.0.0.1", "carol@127.0.0.1", "127.0.0.1"));

        Assert.Equal(("+", IPEndPoint.Parse("127.0.0.2:5090")), (toTrunk.RoutePrefix, toTrunk.NextHop));
        Assert.Equal(("+123", IPEndPoint.Parse("127.0.0.1:5090")), (toUpstream.RoutePrefix, toUpstream.NextHop));
        Assert.Equal(("", IPEndPoint.Parse("127.0.0.1:5090")), (toDefault.RoutePrefix, toDefault.NextHop));
    }

    [Fact]
    public void Without_a_matching_route_the_next_hop_is_the_proxy_default()
    {
        var admission = SampleAdmission();
        admission.Routes.RemoveAt(2);

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "carol@127.0.0.1", "127.0.0.1"));

        Assert.Null(call.NextHop);
        Assert.Null(call.RoutePrefix);
        Assert.Equal(["user/bob out", "user/carol in"], Requests(call));
    }

    [Fact]
    public void A_plus_123_call_gets_a_per_key_limit_keyed_by_from_user_with_the_dial_plan_maximum()
    {
        var call = _classifier.Classify(Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/bob out", "user/+1234567 in", "key/bob in max 3"], Requests(call));
    }

    [Fact]
    public void A_plus_123_call_keyed_by_source_ip_uses_the_packet_source()
    {
        var admission = SampleAdmission();
        admission.SetupRules[0].Key = "SourceIp";

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.3"));

        Assert.Contains("key/127.0.0.3 in max 3", Requests(call));
    }

    [Fact]
    public void A_per_key_limit_keyed_by_source_ip_names_an_ipv6_source_canonically()
    {
        var admission = SampleAdmission();
        admission.SetupRules[0].Key = "SourceIp";
        var input = Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.1") with { Source = IPAddress.Parse("2001:DB8:0:0::7") };

        var call = Classifier(admission).Classify(input);

        Assert.Contains("key/2001:db8::7 in max 3", Requests(call));
    }

    [Fact]
    public void A_rule_whose_tag_the_call_lacks_adds_nothing()
    {
        var admission = SampleAdmission();
        admission.SetupRules[0].Prefix = null; // every called number, but only +123 has the tag

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "carol@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/bob out", "user/carol in"], Requests(call));
    }

    [Fact]
    public void A_rule_whose_prefix_does_not_match_adds_nothing()
    {
        var admission = SampleAdmission();
        admission.SetupRules.Add(new SetupRule { Prefix = "+44", Key = "FromUser", Max = "7", Direction = "Out" });

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.1"));

        Assert.DoesNotContain(call.Limits, l => l.PerCallMax == 7);
    }

    [Fact]
    public void The_longest_dial_plan_prefix_gives_the_tags()
    {
        var admission = SampleAdmission();
        admission.DialPlan.Add(new DialPlanEntry { Prefix = "+1234", Tags = "cacMax=1;class=gold" });
        admission.DialPlan.Add(new DialPlanEntry { Prefix = "+12", Tags = "cacMax=9" });
        admission.SetupRules[0].Prefix = "+12";
        var classifier = Classifier(admission);

        Assert.Contains("key/bob in max 1", Requests(classifier.Classify(Invite("bob@127.0.0.1", "+123456@127.0.0.1", "127.0.0.1"))));
        Assert.Contains("key/bob in max 3", Requests(classifier.Classify(Invite("bob@127.0.0.1", "+123999@127.0.0.1", "127.0.0.1"))));
        Assert.Contains("key/bob in max 9", Requests(classifier.Classify(Invite("bob@127.0.0.1", "+129@127.0.0.1", "127.0.0.1"))));
    }

    [Fact]
    public void Constant_rules_key_by_to_user_and_count_the_given_direction()
    {
        var admission = SampleAdmission();
        admission.SetupRules = [new SetupRule { Key = "ToUser", Max = "2", Direction = "Out" }];

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "carol@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/bob out", "user/carol in", "key/carol out max 2"], Requests(call));
    }

    [Fact]
    public void Two_rules_yielding_the_same_key_request_it_once_with_the_first_rules_maximum()
    {
        var admission = SampleAdmission();
        admission.SetupRules.Add(new SetupRule { Key = "FromUser", Max = "10", Direction = "Out" });

        var call = Classifier(admission).Classify(Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.1"));

        Assert.Single(call.Limits, l => l.Key == "key/bob");
        Assert.Contains("key/bob in max 3", Requests(call));
    }

    [Fact]
    public void An_empty_from_user_yields_no_per_key_limit()
    {
        var call = _classifier.Classify(Invite("127.0.0.9", "+1234567@127.0.0.1", "127.0.0.9"));

        Assert.DoesNotContain(call.Limits, l => l.Key.StartsWith("key/", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("112")]
    [InlineData("911")]
    public void An_emergency_number_is_marked_and_still_counted(string number)
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", number + "@127.0.0.1", "127.0.0.1"));

        Assert.True(call.IsEmergency);
        Assert.Equal(["user/alice out", $"user/{number} in"], Requests(call));
        Assert.Contains("EMERGENCY", call.Description, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0112")]
    [InlineData("1123")]
    [InlineData("9110")]
    public void Only_the_exact_emergency_numbers_are_emergencies_not_numbers_that_start_or_end_with_them(string number)
    {
        Assert.False(_classifier.Classify(Invite("alice@127.0.0.1", number + "@127.0.0.1", "127.0.0.1")).IsEmergency);
    }

    [Fact]
    public void An_emergency_number_written_with_visual_separators_or_escapes_is_still_an_emergency()
    {
        Assert.True(_classifier.Classify(Invite("alice@127.0.0.1", "1-1-2@127.0.0.1", "127.0.0.1")).IsEmergency);
        Assert.True(_classifier.Classify(Invite("alice@127.0.0.1", "%39%311@127.0.0.1", "127.0.0.1")).IsEmergency);
    }

    [Theory]
    [InlineData("alice")]
    [InlineData("Alice")]
    [InlineData("ALICE")]
    [InlineData("%61lice")]
    [InlineData("%41LiCe")]
    public void Every_spelling_of_alice_is_counted_as_alice(string spelling)
    {
        var call = _classifier.Classify(Invite(spelling + "@example.com", "bob@example.com", "127.0.0.1"));

        Assert.Equal(["user/alice out", "user/bob in"], Requests(call));
    }

    [Fact]
    public void With_case_sensitive_user_names_Alice_is_not_alice()
    {
        var limits = SampleLimits();
        limits.UserNames = UserNameMatching.CaseSensitive;
        var classifier = Classifier(limits: limits);

        Assert.Equal(["user/Alice out", "user/bob in"], Requests(classifier.Classify(Invite("Alice@example.com", "bob@example.com", "127.0.0.1"))));
        Assert.Equal(["user/alice out", "user/bob in"], Requests(classifier.Classify(Invite("%61lice@example.com", "bob@example.com", "127.0.0.1"))));
    }

    [Theory]
    [InlineData("+123-456")]
    [InlineData("+1.23.456")]
    [InlineData("+1(23)4-56")]
    [InlineData("+%31%323456")]
    public void A_called_number_with_visual_separators_meets_the_per_key_rule_of_its_digits(string called)
    {
        var call = _classifier.Classify(Invite("bob@example.com", called + "@example.com", "127.0.0.1"));

        // The +123 rule keys by the caller with the dial plan's cacMax=3.
        Assert.Contains("key/bob in max 3", Requests(call));
        Assert.Equal("+123", call.RoutePrefix);
    }

    [Fact]
    public void A_user_name_that_is_not_a_number_keeps_its_dots_and_dashes()
    {
        var call = _classifier.Classify(Invite("bob@example.com", "carol.smith-jones@example.com", "127.0.0.1"));

        Assert.Equal(["user/bob out", "user/carol.smith-jones in"], Requests(call));
    }

    [Fact]
    public void A_trunk_with_inbound_zero_is_still_classified_the_grain_answers_403()
    {
        var limits = SampleLimits();
        limits.Trunks["carrier"].Inbound = 0;

        var call = Classifier(limits: limits).Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));

        Assert.True(call.Succeeded);
        Assert.Equal(["trunk/carrier in", "user/alice in"], Requests(call));
    }

    [Fact]
    public void A_user_with_total_zero_is_still_classified()
    {
        var limits = SampleLimits();
        limits.Users["alice"].Total = 0;
        limits.Users["alice"].Outbound = 0;

        var call = Classifier(limits: limits).Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/alice out", "user/bob in"], Requests(call));
    }

    [Fact]
    public void An_unknown_caller_from_an_unknown_source_counts_only_the_destination_and_per_key_limits()
    {
        var toUser = _classifier.Classify(Invite("mallory@elsewhere.org", "alice@127.0.0.1", "192.0.2.50"));
        var toTrunk = _classifier.Classify(Invite("mallory@elsewhere.org", "+4420123@127.0.0.1", "192.0.2.50"));
        var perKey = _classifier.Classify(Invite("mallory@elsewhere.org", "+1234567@127.0.0.1", "192.0.2.50"));

        Assert.Equal(CallOrigin.Unknown, toUser.Origin);
        Assert.Equal(["user/alice in"], Requests(toUser));
        Assert.Equal(["trunk/carrier out"], Requests(toTrunk));
        Assert.Equal(["user/+1234567 in", "key/mallory in max 3"], Requests(perKey));
    }

    [Fact]
    public void A_call_between_unknown_parties_may_touch_no_limit()
    {
        var limits = SampleLimits();
        limits.DefaultUser = null;

        var call = Classifier(limits: limits).Classify(Invite("x@elsewhere.org", "y@other.org", "192.0.2.50"));

        Assert.True(call.Succeeded);
        Assert.Empty(call.Limits);
        Assert.Equal(CallDestination.Other, call.Destination);
        Assert.Contains("limits none", call.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_a_default_user_only_listed_users_are_local()
    {
        var limits = SampleLimits();
        limits.DefaultUser = null;

        var call = Classifier(limits: limits).Classify(Invite("bob@127.0.0.1", "alice@127.0.0.1", "127.0.0.1"));

        Assert.Equal(CallOrigin.Unknown, call.Origin);
        Assert.Equal(["user/alice in"], Requests(call));
    }

    [Theory]
    [InlineData("example.com", true)]
    [InlineData("EXAMPLE.COM", true)]
    [InlineData("example.com.", true)]
    [InlineData("127.0.0.1", true)]
    [InlineData("sub.example.com", false)]
    [InlineData("example.org", false)]
    [InlineData("127.0.0.3", false)]
    public void With_a_default_user_a_user_is_local_when_the_host_is_a_local_domain(string host, bool local)
    {
        var call = _classifier.Classify(Invite($"bob@{host}", "alice@127.0.0.1", "192.0.2.50"));

        Assert.Equal(local ? CallOrigin.LocalUser : CallOrigin.Unknown, call.Origin);
        Assert.Equal(local, call.Limits.Any(l => l.Key == "user/bob"));
    }

    [Fact]
    public void A_listed_user_is_local_at_any_host()
    {
        var call = _classifier.Classify(Invite("alice@192.168.1.20", "+4420123@127.0.0.1", "192.168.1.20"));

        Assert.Equal(["user/alice out", "trunk/carrier out"], Requests(call));
    }

    [Fact]
    public void The_edges_own_addresses_are_local_domains()
    {
        var classifier = Classifier(ownHosts: ["10.9.9.9", "[2001:db8::5]", "edge.example.net"]);

        Assert.Equal(CallDestination.LocalUser, classifier.Classify(Invite("x@elsewhere.org", "carol@10.9.9.9", "192.0.2.50")).Destination);
        Assert.Equal(CallDestination.LocalUser, classifier.Classify(Invite("x@elsewhere.org", "carol@[2001:db8:0::5]", "192.0.2.50")).Destination);
        Assert.Equal(CallDestination.LocalUser, classifier.Classify(Invite("x@elsewhere.org", "carol@Edge.Example.Net", "192.0.2.50")).Destination);
        Assert.Equal(CallDestination.Other, Classifier().Classify(Invite("x@elsewhere.org", "carol@10.9.9.9", "192.0.2.50")).Destination);
    }

    [Fact]
    public void Own_hosts_of_the_sip_options_skip_a_wildcard_listen_address()
    {
        var hosts = CallClassifier.OwnHostsOf(new Sip.Proxy.SipProxyOptions { ListenAddress = "0.0.0.0", ViaHost = "10.0.0.5", AdvertisedHost = "sip.example.com" });

        Assert.Equal(["10.0.0.5", "sip.example.com"], hosts);
    }

    [Fact]
    public void The_called_user_comes_from_the_to_header_when_the_request_uri_has_none()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@example.com", "127.0.0.1", requestUri: "example.com"));

        Assert.Equal(["user/alice out", "user/bob in"], Requests(call));
    }

    [Fact]
    public void The_request_uri_decides_the_called_user_over_the_to_header()
    {
        // After a retarget the To still names the original party; the Request-URI is where the call goes.
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1", requestUri: "carol@127.0.0.1"));

        Assert.Equal("carol", call.CalledUser);
    }

    [Fact]
    public void A_user_calling_herself_counts_once_outbound()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "alice@127.0.0.1", "127.0.0.1"));

        Assert.Equal(["user/alice out"], Requests(call));
    }

    [Fact]
    public void A_call_from_the_trunk_routed_back_to_it_counts_the_trunk_once_inbound()
    {
        var call = _classifier.Classify(Invite("+4420123@carrier.net", "+4420999@127.0.0.1", "127.0.0.2"));

        Assert.Equal(["trunk/carrier in"], Requests(call));
        Assert.Equal(CallDestination.Trunk, call.Destination);
        Assert.Equal(IPEndPoint.Parse("127.0.0.2:5090"), call.NextHop);
    }

    [Fact]
    public void A_transit_call_counts_the_source_trunk_inbound_and_the_destination_trunk_outbound()
    {
        var admission = SampleAdmission();
        admission.Trunks["wholesale"] = new AdmissionTrunkOptions { Sources = ["198.51.100.0/24"], NextHop = "198.51.100.1:5060" };
        admission.Routes.Add(new AdmissionRoute { Prefix = "+49", Trunk = "wholesale" });

        var call = Classifier(admission).Classify(Invite("+4420123@carrier.net", "+49301234@127.0.0.1", "127.0.0.2"));

        Assert.Equal(["trunk/carrier in", "trunk/wholesale out"], Requests(call));
        Assert.Equal(IPEndPoint.Parse("198.51.100.1:5060"), call.NextHop);
    }

    [Fact]
    public void The_most_specific_trunk_source_wins()
    {
        var admission = SampleAdmission();
        admission.Trunks["wide"] = new AdmissionTrunkOptions { Sources = ["10.0.0.0/8"], NextHop = "10.0.0.1:5060" };
        admission.Trunks["narrow"] = new AdmissionTrunkOptions { Sources = ["10.1.0.0/16", "10.1.2.3"], NextHop = "10.1.2.3:5060" };
        var classifier = Classifier(admission);

        Assert.Equal("narrow", classifier.Classify(Invite("a@x", "alice@127.0.0.1", "10.1.2.3")).SourceTrunk);
        Assert.Equal("narrow", classifier.Classify(Invite("a@x", "alice@127.0.0.1", "10.1.9.9")).SourceTrunk);
        Assert.Equal("wide", classifier.Classify(Invite("a@x", "alice@127.0.0.1", "10.200.0.1")).SourceTrunk);
        Assert.Null(classifier.Classify(Invite("a@x", "alice@127.0.0.1", "11.0.0.1")).SourceTrunk);
    }

    [Fact]
    public void An_ipv6_cidr_identifies_a_trunk()
    {
        var admission = SampleAdmission();
        admission.Trunks["v6"] = new AdmissionTrunkOptions { Sources = ["2001:db8:1::/48"], NextHop = "[2001:db8:1::1]:5060" };

        var call = Classifier(admission).Classify(Invite("a@x", "alice@127.0.0.1", "2001:db8:1:ffff::9"));

        Assert.Equal(["trunk/v6 in", "user/alice in"], Requests(call));
    }

    [Fact]
    public void A_user_part_too_long_for_a_limit_key_fails_rather_than_skipping_the_limit()
    {
        var longUser = new string('u', 300);

        var call = _classifier.Classify(Invite($"{longUser}@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        Assert.False(call.Succeeded);
        Assert.Contains("256", call.Error, StringComparison.Ordinal);
        Assert.Empty(call.Limits);
    }

    [Fact]
    public void Direction_of_reports_what_the_call_asked_of_a_limit()
    {
        var call = _classifier.Classify(Invite("alice@127.0.0.1", "+4420123@127.0.0.1", "127.0.0.1"));

        Assert.Equal(Grains.Direction.Outbound, call.DirectionOf("trunk/carrier"));
        Assert.Null(call.DirectionOf("user/bob"));
    }

    [Fact]
    public void The_description_names_origin_destination_limits_and_next_hop()
    {
        var call = _classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));

        Assert.Equal("from trunk carrier (127.0.0.2) to user alice; limits trunk/carrier in, user/alice in; next hop 127.0.0.1:5090 (route '')", call.Description);
    }

    [Fact]
    public void An_invalid_configuration_cannot_build_a_classifier()
    {
        var admission = SampleAdmission();
        admission.Trunks["carrier"].Sources.Add("300.1.1.1");

        var ex = Assert.Throws<ArgumentException>(() => Classifier(admission));

        Assert.Contains("CallState:Admission:Trunks:carrier:Sources:1: '300.1.1.1' is not an IP address or CIDR", ex.Message, StringComparison.Ordinal);
    }
}
