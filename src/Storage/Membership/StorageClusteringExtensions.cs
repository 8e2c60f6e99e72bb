using Microsoft.Extensions.DependencyInjection;

namespace CallState.Storage.Membership;

/// <summary>Registration of <see cref="StorageMembershipTable"/> on a silo.</summary>
public static class StorageClusteringExtensions
{
    /// <summary>
    /// Makes <see cref="StorageMembershipTable"/> the silo's <see cref="IMembershipTable"/>, over the database that
    /// <see cref="StorageOptions"/> in DI names (the host registers them, e.g. with <c>AddStateStore</c>). A clustering
    /// provider registered after this call replaces it.
    /// </summary>
    public static ISiloBuilder UseStorageClustering(this ISiloBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddSingleton<IMembershipTable, StorageMembershipTable>();
        return builder;
    }
}
