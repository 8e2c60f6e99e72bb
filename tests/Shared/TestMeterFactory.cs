using System.Diagnostics.Metrics;

namespace CallState.Testing;

/// <summary>
/// An <see cref="IMeterFactory"/> for tests: it keeps every meter it creates, so a listener can tell the meters of the
/// component under test (<see cref="Owns"/>) from those of anything else running in the test process, and disposes them.
/// </summary>
internal sealed class TestMeterFactory : IMeterFactory
{
    private readonly List<Meter> _meters = [];

    public Meter Create(MeterOptions options)
    {
        var meter = new Meter(options.Name, options.Version, options.Tags, scope: this);
        lock (_meters)
        {
            _meters.Add(meter);
        }

        return meter;
    }

    public bool Owns(Meter meter)
    {
        lock (_meters)
        {
            return _meters.Contains(meter);
        }
    }

    public void Dispose()
    {
        lock (_meters)
        {
            _meters.ForEach(m => m.Dispose());
            _meters.Clear();
        }
    }
}
