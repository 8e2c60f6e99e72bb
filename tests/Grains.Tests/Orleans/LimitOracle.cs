namespace CallState.Grains.Tests.Orleans;

/// <summary>
/// Counts the calls a test holds between the answer "admitted" and the start of their end: the most held at once can
/// never exceed the limit, whatever the grains did in between.
/// </summary>
internal sealed class LimitOracle(int limit)
{
    private int _held;
    private int _max;

    public int MaxSeen => Volatile.Read(ref _max);

    public void Admitted()
    {
        var held = Interlocked.Increment(ref _held);
        int max;
        while (held > (max = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, held, max) != max)
        {
        }

        Assert.True(held <= limit, $"{held} calls held at once, limit {limit}");
    }

    public void Releasing() => Interlocked.Decrement(ref _held);
}
