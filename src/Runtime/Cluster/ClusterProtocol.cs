using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using CallState.Grains;

namespace CallState.Runtime.Cluster;

/// <summary>The RPC methods between edges and silos and between silos.</summary>
public enum ClusterMethod : ushort
{
    /// <summary>The silo's view of the live silos (edges bootstrap from it).</summary>
    GetView = 1,
    CallAdmit = 10,
    CallConfirm = 11,
    CallRenew = 12,
    CallEnd = 13,
    LimitReserve = 20,
    LimitConfirm = 21,
    LimitRenew = 22,
    LimitRelease = 23,
    LimitSet = 24,
}

/// <summary>Flags in the first byte of every request body.</summary>
[Flags]
public enum ClusterRouting : byte
{
    None = 0,

    /// <summary>The caller was redirected (or its owner is unreachable): serve it even if this silo's view names another owner.</summary>
    NoRedirect = 1,
}

/// <summary>
/// Request and reply bodies: a flags byte, then fields in order. Integers are little-endian fixed width; strings are a
/// u16 byte length (0xFFFF for null) and UTF-8. A body that does not parse is a <see cref="FormatException"/> (the
/// RPC answers Error; the connection stays up).
/// </summary>
public static class ClusterProtocol
{
    /// <summary>Longest string field (a call key is at most 1,024 characters, 4 UTF-8 bytes each).</summary>
    public const int MaxStringBytes = 8192;

    /// <summary>Most limits one admission may name.</summary>
    public const int MaxLimitsPerCall = 64;

    private const ushort NullString = 0xFFFF;

    public static void WriteAdmit(IBufferWriter<byte> writer, ClusterRouting flags, string callKey, IReadOnlyList<LimitRequest> limits)
    {
        if (limits.Count > MaxLimitsPerCall)
        {
            throw new ArgumentException($"a call may name at most {MaxLimitsPerCall} limits", nameof(limits));
        }

        var w = new Writer(writer);
        w.U8((byte)flags);
        w.String(callKey);
        w.U8((byte)limits.Count);
        foreach (var limit in limits)
        {
            w.String(limit.Key);
            w.U8((byte)limit.Direction);
            w.I32(limit.PerCallMax ?? -1);
        }
    }

    public static (ClusterRouting Flags, string CallKey, LimitRequest[] Limits) ReadAdmit(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var flags = (ClusterRouting)r.U8();
        var callKey = r.RequiredString();
        var count = r.U8();
        if (count > MaxLimitsPerCall)
        {
            throw new FormatException($"admission names {count} limits (at most {MaxLimitsPerCall})");
        }

        var limits = new LimitRequest[count];
        for (var i = 0; i < count; i++)
        {
            var key = r.RequiredString();
            var direction = r.U8();
            var max = r.I32();
            limits[i] = new LimitRequest(key, (Direction)direction, max < 0 ? null : max);
        }

        r.End();
        return (flags, callKey, limits);
    }

    public static void WriteAdmitResult(IBufferWriter<byte> writer, AdmitResult result)
    {
        var w = new Writer(writer);
        w.U8((byte)result.Status);
        w.U8((byte)result.Reason);
        w.String(result.LimitKey);
        w.I32(result.Limit ?? -1);
        w.I32(result.Current);
        w.String(result.Error);
    }

    public static AdmitResult ReadAdmitResult(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var status = (AdmitStatus)r.U8();
        var reason = (RejectReason)r.U8();
        var key = r.String();
        var limit = r.I32();
        var current = r.I32();
        var error = r.String();
        r.End();
        return new AdmitResult(status, key, reason, limit < 0 ? null : limit, current, error);
    }

    /// <summary>Confirm, renew and end of a call: the call key.</summary>
    public static void WriteCallKey(IBufferWriter<byte> writer, ClusterRouting flags, string callKey)
    {
        var w = new Writer(writer);
        w.U8((byte)flags);
        w.String(callKey);
    }

    public static (ClusterRouting Flags, string CallKey) ReadCallKey(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var flags = (ClusterRouting)r.U8();
        var key = r.RequiredString();
        r.End();
        return (flags, key);
    }

    /// <summary>An operation on one limit for one call (reserve, confirm, renew, release).</summary>
    public static void WriteLimitOp(IBufferWriter<byte> writer, ClusterRouting flags, in LimitOpRequest request)
    {
        var w = new Writer(writer);
        w.U8((byte)flags);
        w.String(request.LimitKey);
        w.String(request.CallKey);
        w.U8((byte)request.Direction);
        w.I64(request.Lease.Ticks);
        w.I32(request.PerCallMax ?? -1);
    }

    public static (ClusterRouting Flags, LimitOpRequest Request) ReadLimitOp(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var flags = (ClusterRouting)r.U8();
        var limitKey = r.RequiredString();
        var callKey = r.RequiredString();
        var direction = (Direction)r.U8();
        var lease = r.I64();
        var max = r.I32();
        r.End();
        if (lease < 0)
        {
            throw new FormatException("negative lease");
        }

        return (flags, new LimitOpRequest(limitKey, callKey, direction, TimeSpan.FromTicks(lease), max < 0 ? null : max));
    }

    public static void WriteReserveOutcome(IBufferWriter<byte> writer, ReserveOutcome outcome)
    {
        var w = new Writer(writer);
        w.U8(outcome.Admitted ? (byte)1 : (byte)0);
        w.U8((byte)outcome.Reason);
        w.I32(outcome.Limit ?? -1);
        w.I32(outcome.Current);
    }

    public static ReserveOutcome ReadReserveOutcome(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var admitted = r.U8() == 1;
        var reason = (RejectReason)r.U8();
        var limit = r.I32();
        var current = r.I32();
        r.End();
        return new ReserveOutcome(admitted, reason, limit < 0 ? null : limit, current);
    }

    /// <summary>Run-time limits of a user or trunk; <paramref name="limits"/> null clears them.</summary>
    public static void WriteLimitSet(IBufferWriter<byte> writer, ClusterRouting flags, string limitKey, LimitSettings? limits)
    {
        var w = new Writer(writer);
        w.U8((byte)flags);
        w.String(limitKey);
        w.U8(limits is null ? (byte)0 : (byte)1);
        w.I32(limits?.Total ?? -1);
        w.I32(limits?.Inbound ?? -1);
        w.I32(limits?.Outbound ?? -1);
    }

    public static (ClusterRouting Flags, string LimitKey, LimitSettings? Limits) ReadLimitSet(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var flags = (ClusterRouting)r.U8();
        var key = r.RequiredString();
        var present = r.U8() == 1;
        var total = r.I32();
        var inbound = r.I32();
        var outbound = r.I32();
        r.End();
        static int? N(int v) => v < 0 ? null : v;
        return (flags, key, present ? new LimitSettings(N(total), N(inbound), N(outbound)) : null);
    }

    public static void WriteBool(IBufferWriter<byte> writer, bool value) => new Writer(writer).U8(value ? (byte)1 : (byte)0);

    public static bool ReadBool(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var value = r.U8() == 1;
        r.End();
        return value;
    }

    /// <summary>A view: the live silos (redirects carry the sender's view; GetView answers with it).</summary>
    public static void WriteView(IBufferWriter<byte> writer, ClusterView view)
    {
        var w = new Writer(writer);
        w.U16((ushort)view.Members.Count);
        foreach (var member in view.Members)
        {
            w.String(member.SiloId);
            w.String(member.Address);
            w.I64(member.Epoch);
        }
    }

    public static ClusterView ReadView(ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        var count = r.U16();
        if (count > 4096)
        {
            throw new FormatException($"a view of {count} silos");
        }

        var members = new List<SiloMember>(count);
        for (var i = 0; i < count; i++)
        {
            members.Add(new SiloMember(r.RequiredString(), r.RequiredString(), r.I64()));
        }

        r.End();
        return new ClusterView(members);
    }

    /// <summary>The first byte of a request body.</summary>
    public static ClusterRouting PeekFlags(ReadOnlySpan<byte> body) => body.IsEmpty ? ClusterRouting.None : (ClusterRouting)body[0];

    private ref struct Writer(IBufferWriter<byte> writer)
    {
        public readonly void U8(byte value)
        {
            writer.GetSpan(1)[0] = value;
            writer.Advance(1);
        }

        public readonly void U16(ushort value)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(writer.GetSpan(2), value);
            writer.Advance(2);
        }

        public readonly void I32(int value)
        {
            BinaryPrimitives.WriteInt32LittleEndian(writer.GetSpan(4), value);
            writer.Advance(4);
        }

        public readonly void I64(long value)
        {
            BinaryPrimitives.WriteInt64LittleEndian(writer.GetSpan(8), value);
            writer.Advance(8);
        }

        public readonly void String(string? value)
        {
            if (value is null)
            {
                U16(NullString);
                return;
            }

            var length = Encoding.UTF8.GetByteCount(value);
            if (length > MaxStringBytes)
            {
                throw new ArgumentException($"a string field of {length} bytes (at most {MaxStringBytes})", nameof(value));
            }

            U16((ushort)length);
            var written = Encoding.UTF8.GetBytes(value, writer.GetSpan(length));
            writer.Advance(written);
        }
    }

    private ref struct Reader(ReadOnlySpan<byte> body)
    {
        private readonly ReadOnlySpan<byte> _body = body;
        private int _position;

        public byte U8()
        {
            Need(1);
            return _body[_position++];
        }

        public ushort U16()
        {
            Need(2);
            var value = BinaryPrimitives.ReadUInt16LittleEndian(_body[_position..]);
            _position += 2;
            return value;
        }

        public int I32()
        {
            Need(4);
            var value = BinaryPrimitives.ReadInt32LittleEndian(_body[_position..]);
            _position += 4;
            return value;
        }

        public long I64()
        {
            Need(8);
            var value = BinaryPrimitives.ReadInt64LittleEndian(_body[_position..]);
            _position += 8;
            return value;
        }

        public string? String()
        {
            var length = U16();
            if (length == NullString)
            {
                return null;
            }

            if (length > MaxStringBytes)
            {
                throw new FormatException($"a string field of {length} bytes (at most {MaxStringBytes})");
            }

            Need(length);
            var value = Encoding.UTF8.GetString(_body.Slice(_position, length));
            _position += length;
            return value;
        }

        public string RequiredString() => String() is { Length: > 0 } value ? value : throw new FormatException("a required string field is empty");

        public readonly void End()
        {
            if (_position != _body.Length)
            {
                throw new FormatException($"{_body.Length - _position} bytes after the last field");
            }
        }

        private readonly void Need(int count)
        {
            if (_body.Length - _position < count)
            {
                throw new FormatException("the body ends inside a field");
            }
        }
    }
}

/// <summary>One operation on a limit, as sent between silos.</summary>
public readonly record struct LimitOpRequest(string LimitKey, string CallKey, Direction Direction, TimeSpan Lease, int? PerCallMax);
