using CallState.Grains;
using CallState.SipEdge.Admission;
using static CallState.SipEdge.Tests.Admission.Fixtures;

namespace CallState.SipEdge.Tests.Admission;

public sealed class RejectionTests
{
    [Theory]
    [InlineData(RejectionCategory.UserLimit, 486, "Busy Here", 17, false)]
    [InlineData(RejectionCategory.TrunkLimit, 480, "Temporarily Unavailable", 34, true)]
    [InlineData(RejectionCategory.PerKeyLimit, 480, "Temporarily Unavailable", 34, true)]
    [InlineData(RejectionCategory.OutgoingBarred, 403, "Forbidden", 52, false)]
    [InlineData(RejectionCategory.IncomingBarred, 403, "Forbidden", 54, false)]
    [InlineData(RejectionCategory.Unavailable, 503, "Service Unavailable", 42, true)]
    public void Defaults_are_the_design_table(RejectionCategory category, int status, string phrase, int cause, bool retryAfter)
    {
        Assert.Equal(new SipRejection(status, phrase, cause, retryAfter), SipRejection.Default(category));
        Assert.Equal(new SipRejection(status, phrase, cause, retryAfter), RejectCodesOptions.Resolve(category, new RejectCodesOptions()));
    }

    [Fact]
    public void The_reason_header_carries_the_q850_cause()
    {
        Assert.Equal("Q.850;cause=17", SipRejection.Default(RejectionCategory.UserLimit).ReasonHeader);
        Assert.Null(new SipRejection(486, "Busy Here", 0, false).ReasonHeader);
    }

    [Fact]
    public void Alice_at_her_limit_gets_486_with_cause_17()
    {
        var classifier = Classifier();
        var call = classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        var rejection = classifier.RejectionFor(call, RejectReason.UserOutLimitReached, "user/alice");

        Assert.Equal(new SipRejection(486, "Busy Here", 17, false), rejection);
    }

    [Fact]
    public void A_full_trunk_gets_480_with_retry_after_and_cause_34()
    {
        var classifier = Classifier();
        var call = classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));

        Assert.Equal(new SipRejection(480, "Temporarily Unavailable", 34, true), classifier.RejectionFor(call, RejectReason.TrunkInLimitReached, "trunk/carrier"));
        Assert.Equal(new SipRejection(480, "Temporarily Unavailable", 34, true), classifier.RejectionFor(call, RejectReason.TrunkTotalLimitReached, "trunk/carrier"));
    }

    [Fact]
    public void A_barred_direction_gets_403_with_the_cause_of_the_refused_limits_direction()
    {
        var classifier = Classifier();
        var inbound = classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));
        var outbound = classifier.Classify(Invite("alice@127.0.0.1", "+4420123@127.0.0.1", "127.0.0.1"));

        Assert.Equal(new SipRejection(403, "Forbidden", 54, false), classifier.RejectionFor(inbound, RejectReason.DirectionBarred, "trunk/carrier"));
        Assert.Equal(new SipRejection(403, "Forbidden", 52, false), classifier.RejectionFor(outbound, RejectReason.DirectionBarred, "trunk/carrier"));
        Assert.Equal(52, classifier.RejectionFor(outbound, RejectReason.DirectionBarred, "user/alice").Q850Cause);
    }

    [Fact]
    public void A_per_key_limit_gets_480()
    {
        var classifier = Classifier();
        var call = classifier.Classify(Invite("bob@127.0.0.1", "+1234567@127.0.0.1", "127.0.0.1"));

        Assert.Equal(480, classifier.RejectionFor(call, RejectReason.InPerKeyCacLimitReached, "key/bob").Status);
    }

    [Fact]
    public void Failing_closed_answers_503_with_retry_after_and_cause_42()
    {
        var classifier = Classifier();

        Assert.Equal(new SipRejection(503, "Service Unavailable", 42, true), classifier.UnavailableRejection(null));
    }

    [Fact]
    public void An_overridden_status_gets_its_own_standard_phrase_and_keeps_the_other_defaults()
    {
        var admission = SampleAdmission();
        admission.RejectCodes.UserLimit = new RejectionOptions { Status = 600 };
        var classifier = Classifier(admission);
        var call = classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        Assert.Equal(new SipRejection(600, "Busy Everywhere", 17, false), classifier.RejectionFor(call, RejectReason.UserTotalLimitReached, "user/alice"));
    }

    [Fact]
    public void A_trunk_override_applies_to_refusals_by_its_limit_and_to_calls_from_it()
    {
        var admission = SampleAdmission();
        admission.RejectCodes.TrunkLimit = new RejectionOptions { ReasonPhrase = "Capacity" };
        admission.Trunks["carrier"].RejectCodes = new RejectCodesOptions
        {
            TrunkLimit = new RejectionOptions { Status = 503, Q850Cause = 34 },
            UserLimit = new RejectionOptions { Status = 480, RetryAfter = true },
            Unavailable = new RejectionOptions { Status = 500, ReasonPhrase = "Try Later" },
        };
        var classifier = Classifier(admission);
        var fromCarrier = classifier.Classify(Invite("+4420123@carrier.net", "alice@127.0.0.1", "127.0.0.2"));
        var toCarrier = classifier.Classify(Invite("alice@127.0.0.1", "+4420123@127.0.0.1", "127.0.0.1"));
        var internalCall = classifier.Classify(Invite("alice@127.0.0.1", "bob@127.0.0.1", "127.0.0.1"));

        // The trunk's status wins; the global phrase belonged to another status, so the standard phrase of 503 is used.
        Assert.Equal(new SipRejection(503, "Service Unavailable", 34, true), classifier.RejectionFor(toCarrier, RejectReason.TrunkOutLimitReached, "trunk/carrier"));
        Assert.Equal(new SipRejection(480, "Temporarily Unavailable", 17, true), classifier.RejectionFor(fromCarrier, RejectReason.UserInLimitReached, "user/alice"));
        Assert.Equal(new SipRejection(486, "Busy Here", 17, false), classifier.RejectionFor(internalCall, RejectReason.UserOutLimitReached, "user/alice"));
        Assert.Equal(new SipRejection(500, "Try Later", 42, true), classifier.UnavailableRejection(fromCarrier));
        Assert.Equal(new SipRejection(503, "Service Unavailable", 42, true), classifier.UnavailableRejection(internalCall));
    }

    [Fact]
    public void A_global_phrase_without_a_status_keeps_the_default_status()
    {
        var codes = new RejectCodesOptions { TrunkLimit = new RejectionOptions { ReasonPhrase = "Trunk Busy", Q850Cause = 0 } };

        var rejection = RejectCodesOptions.Resolve(RejectionCategory.TrunkLimit, codes);

        Assert.Equal(new SipRejection(480, "Trunk Busy", 0, true), rejection);
        Assert.Null(rejection.ReasonHeader);
    }

    [Theory]
    [InlineData(RejectReason.UserTotalLimitReached, Direction.Inbound, RejectionCategory.UserLimit)]
    [InlineData(RejectReason.UserInLimitReached, Direction.Inbound, RejectionCategory.UserLimit)]
    [InlineData(RejectReason.UserOutLimitReached, Direction.Outbound, RejectionCategory.UserLimit)]
    [InlineData(RejectReason.TrunkTotalLimitReached, Direction.Outbound, RejectionCategory.TrunkLimit)]
    [InlineData(RejectReason.TrunkInLimitReached, Direction.Inbound, RejectionCategory.TrunkLimit)]
    [InlineData(RejectReason.TrunkOutLimitReached, Direction.Outbound, RejectionCategory.TrunkLimit)]
    [InlineData(RejectReason.InPerKeyCacLimitReached, Direction.Inbound, RejectionCategory.PerKeyLimit)]
    [InlineData(RejectReason.OutPerKeyCacLimitReached, Direction.Outbound, RejectionCategory.PerKeyLimit)]
    [InlineData(RejectReason.DirectionBarred, Direction.Inbound, RejectionCategory.IncomingBarred)]
    [InlineData(RejectReason.DirectionBarred, Direction.Outbound, RejectionCategory.OutgoingBarred)]
    public void Every_refusal_reason_has_a_category(RejectReason reason, Direction direction, RejectionCategory category)
    {
        Assert.Equal(category, SipRejection.CategoryOf(reason, direction));
    }
}
