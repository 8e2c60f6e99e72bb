using System.Buffers;

namespace CallState.Runtime.Rpc;

/// <summary>
/// An <see cref="IBufferWriter{T}"/> over arrays from <see cref="ArrayPool{T}.Shared"/>. Bodies are written here, then
/// the array is handed over (<see cref="Detach"/>) to the frame queue, which returns it to the pool once written.
/// </summary>
internal sealed class PooledBufferWriter : IBufferWriter<byte>, IDisposable
{
    private const int MinimumRent = 256;

    [ThreadStatic]
    private static PooledBufferWriter? t_cached;

    private byte[] _buffer = [];
    private int _written;

    public int WrittenCount => _written;

    public ReadOnlySpan<byte> WrittenSpan => _buffer.AsSpan(0, _written);

    /// <summary>A writer for this thread (one allocation per thread, not per call); give it back with <see cref="ReturnToCache"/>.</summary>
    public static PooledBufferWriter RentFromCache()
    {
        var writer = t_cached ?? new PooledBufferWriter();
        t_cached = null;
        return writer;
    }

    public static void ReturnToCache(PooledBufferWriter writer)
    {
        writer.Dispose();
        t_cached = writer;
    }

    public static void ReturnArray(byte[] array)
    {
        if (array.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(array);
        }
    }

    /// <summary>Copies <paramref name="source"/> into a pooled array (empty bodies cost nothing).</summary>
    public static byte[] RentCopy(in ReadOnlySequence<byte> source)
    {
        if (source.IsEmpty)
        {
            return [];
        }

        var array = ArrayPool<byte>.Shared.Rent((int)source.Length);
        source.CopyTo(array);
        return array;
    }

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > _buffer.Length - _written)
        {
            throw new InvalidOperationException("Advanced past the end of the buffer.");
        }

        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsSpan(_written);
    }

    /// <summary>Forgets what was written, keeping the array.</summary>
    public void Reset() => _written = 0;

    /// <summary>Hands the array (owned by the caller from now on) and the written length over; the writer starts empty.</summary>
    public byte[] Detach(out int length)
    {
        var array = _buffer;
        length = _written;
        _buffer = [];
        _written = 0;
        return array;
    }

    public void Dispose()
    {
        ReturnArray(_buffer);
        _buffer = [];
        _written = 0;
    }

    private void Ensure(int sizeHint)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        var needed = Math.Max(sizeHint, 1);
        if (_buffer.Length - _written >= needed)
        {
            return;
        }

        var size = Math.Max(Math.Max(MinimumRent, _written + needed), _buffer.Length * 2);
        var bigger = ArrayPool<byte>.Shared.Rent(size);
        _buffer.AsSpan(0, _written).CopyTo(bigger);
        ReturnArray(_buffer);
        _buffer = bigger;
    }
}
