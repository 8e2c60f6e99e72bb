namespace CallState.Sip.Messages;

/// <summary>The methods a proxy treats specially; any other token is <see cref="Extension"/> (RFC 3261 7.1: methods are case-sensitive).</summary>
public enum SipMethod : byte
{
    /// <summary>A method token this proxy has no special rule for; forwarded like any non-INVITE request.</summary>
    Extension = 0,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
}

/// <summary>Byte-level lookup of method tokens.</summary>
public static class SipMethods
{
    /// <summary>Maps a method token to its <see cref="SipMethod"/>, by exact (case-sensitive) byte comparison.</summary>
    public static SipMethod Parse(ReadOnlySpan<byte> token) => token.Length switch
    {
        3 when token.SequenceEqual("ACK"u8) => SipMethod.Ack,
        3 when token.SequenceEqual("BYE"u8) => SipMethod.Bye,
        4 when token.SequenceEqual("INFO"u8) => SipMethod.Info,
        5 when token.SequenceEqual("PRACK"u8) => SipMethod.Prack,
        5 when token.SequenceEqual("REFER"u8) => SipMethod.Refer,
        6 when token.SequenceEqual("INVITE"u8) => SipMethod.Invite,
        6 when token.SequenceEqual("CANCEL"u8) => SipMethod.Cancel,
        6 when token.SequenceEqual("NOTIFY"u8) => SipMethod.Notify,
        6 when token.SequenceEqual("UPDATE"u8) => SipMethod.Update,
        7 when token.SequenceEqual("OPTIONS"u8) => SipMethod.Options,
        7 when token.SequenceEqual("PUBLISH"u8) => SipMethod.Publish,
        7 when token.SequenceEqual("MESSAGE"u8) => SipMethod.Message,
        8 when token.SequenceEqual("REGISTER"u8) => SipMethod.Register,
        9 when token.SequenceEqual("SUBSCRIBE"u8) => SipMethod.Subscribe,
        _ => SipMethod.Extension,
    };

    /// <summary>The token of a known method (empty for <see cref="SipMethod.Extension"/>, whose token is in the message).</summary>
    public static ReadOnlySpan<byte> Token(SipMethod method) => method switch
    {
        SipMethod.Invite => "INVITE"u8,
        SipMethod.Ack => "ACK"u8,
        SipMethod.Bye => "BYE"u8,
        SipMethod.Cancel => "CANCEL"u8,
        SipMethod.Options => "OPTIONS"u8,
        SipMethod.Register => "REGISTER"u8,
        SipMethod.Prack => "PRACK"u8,
        SipMethod.Subscribe => "SUBSCRIBE"u8,
        SipMethod.Notify => "NOTIFY"u8,
        SipMethod.Publish => "PUBLISH"u8,
        SipMethod.Info => "INFO"u8,
        SipMethod.Refer => "REFER"u8,
        SipMethod.Message => "MESSAGE"u8,
        SipMethod.Update => "UPDATE"u8,
        _ => default,
    };
}
