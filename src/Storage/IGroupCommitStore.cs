namespace CallState.Storage;

/// <summary>A state store whose writes go through a <see cref="GroupCommitter"/>, exposed for its batch statistics.</summary>
public interface IGroupCommitStore : IStateStore
{
    /// <summary>The committer of this store's writes; null until <see cref="IStateStore.InitializeAsync"/> has completed.</summary>
    GroupCommitter? GroupCommit { get; }
}
