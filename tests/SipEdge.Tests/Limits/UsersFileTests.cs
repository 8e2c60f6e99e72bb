using System.Globalization;
using System.Text;
using CallState.Grains;
using CallState.Silo.Limits;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace CallState.SipEdge.Tests.Limits;

public sealed class UsersFileTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("callstate-users-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string Write(string content, string name = "users.csv")
    {
        var path = Path.Combine(_directory, name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void A_good_file_with_header_comments_and_empty_fields_loads_every_user()
    {
        var path = Write("""
            # name,total,outbound,inbound
            name,total,outbound,inbound
            alice,2,1,
            bob, 5 , 2 , 3

            # carol has no limits at all
            carol,,,
            dave,0
            erin
            """);

        var users = UsersFile.Read(path, out var errors);

        Assert.Empty(errors);
        Assert.Equal(5, users.Count);
        Assert.Equal(new LimitSettings(2, null, 1), users["alice"].ToSettings());
        Assert.Equal(new LimitSettings(5, 3, 2), users["bob"].ToSettings());
        Assert.Equal(LimitSettings.Unlimited, users["carol"].ToSettings());
        Assert.Equal(new LimitSettings(0, null, null), users["dave"].ToSettings());
        Assert.Equal(LimitSettings.Unlimited, users["erin"].ToSettings());
    }

    [Fact]
    public void The_header_is_optional()
    {
        var users = UsersFile.Read(Write("alice,2,1,\nbob,3,,\n"), out var errors);

        Assert.Empty(errors);
        Assert.Equal(["alice", "bob"], users.Keys.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_bad_line_is_reported_with_file_and_line_and_the_good_lines_still_load()
    {
        var path = Write("name,total,outbound,inbound\nalice,2,1,\nbob,two,1,\ncarol,1,2,\ndave,1,,,extra\n,1,1,1\n");

        var users = UsersFile.Read(path, out var errors);

        Assert.Equal(
        [
            $"{path}:3: total 'two' is not a whole number (leave it empty for unlimited)",
            $"{path}:4:carol:Outbound (2) must not exceed {path}:4:carol:Total (1).",
            $"{path}:5: more than 4 fields (expected name,total,outbound,inbound)",
            $"{path}:6: the user name is empty",
        ], errors);
        Assert.Equal(["alice"], users.Keys);
    }

    [Fact]
    public void A_user_defined_twice_names_both_lines()
    {
        var path = Write("alice,2,1,\nbob,1,,\nalice,3,,\n");

        UsersFile.Read(path, out var errors);

        Assert.Equal([$"{path}:3: user 'alice' is already defined on line 1"], errors);
    }

    [Fact]
    public void Negative_limits_and_a_wrong_header_are_errors()
    {
        var path = Write("name,max,outbound,inbound\nalice,-1,,\n");

        UsersFile.Read(path, out var errors);

        Assert.Equal([$"{path}:1: header must be name,total,outbound,inbound", $"{path}:2:alice:Total must be 0 or more (was -1)."], errors);
    }

    [Fact]
    public void A_missing_file_is_one_error_naming_it()
    {
        var path = Path.Combine(_directory, "absent.csv");

        var users = UsersFile.Read(path, out var errors);

        Assert.Empty(users);
        var error = Assert.Single(errors);
        Assert.StartsWith($"{path}: file not found", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_in_the_wrong_format_reports_a_bounded_number_of_errors()
    {
        var path = Write(string.Concat(Enumerable.Range(0, 200).Select(i => $"user{i};1;1;1 x\n")));

        UsersFile.Read(path, out var errors);

        Assert.Equal(UsersFile.MaxErrors + 1, errors.Count);
        Assert.Equal($"{path}: 150 more error(s) not shown", errors[^1]);
    }

    [Fact]
    public void Five_thousand_users_load_and_give_each_user_its_limits()
    {
        var csv = new StringBuilder("name,total,outbound,inbound\n");
        for (var i = 0; i < 5_000; i++)
        {
            csv.Append(CultureInfo.InvariantCulture, $"u{i},{i % 7 + 1},{(i % 7 == 0 ? "" : "1")},\n");
        }
        var options = new LimitsOptions { UsersFile = Write(csv.ToString()) };

        Assert.Empty(options.Validate());

        Assert.Equal(5_000, options.Users.Count);
        var limits = new ConfiguredLimits(options);
        Assert.Equal(new LimitSettings(2, null, 1), limits.GetLimits(LimitKey.User("u4999"))); // 4999 % 7 == 1
        Assert.Equal(new LimitSettings(1, null, null), limits.GetLimits(LimitKey.User("u0")));
    }

    [Fact]
    public void Validation_loads_the_file_and_prefixes_its_errors_with_the_field()
    {
        var path = Write("alice,x,,\n");
        var options = new LimitsOptions { UsersFile = path };

        var errors = options.Validate().ToList();

        Assert.Equal([$"CallState:Limits:UsersFile: {path}:1: total 'x' is not a whole number (leave it empty for unlimited)"], errors);
    }

    [Fact]
    public void A_user_configured_in_the_users_section_wins_over_the_file()
    {
        var options = new LimitsOptions
        {
            UsersFile = Write("alice,9,9,\nbob,3,,\n"),
            Users = { ["alice"] = new LimitValues { Total = 2, Outbound = 1 } },
        };

        Assert.Empty(options.LoadUsersFile());

        Assert.Equal(2, options.Users["alice"].Total);
        Assert.Equal(3, options.Users["bob"].Total);
    }

    [Fact]
    public void Options_built_by_the_host_include_the_file_users()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["CallState:Limits:UsersFile"] = Write("bob,3,1,\n"),
            ["CallState:Limits:Users:alice:Total"] = "2",
        }).Build();
        var services = new ServiceCollection();
        services.AddOptions<LimitsOptions>().Bind(configuration.GetSection(LimitsOptions.SectionName));
        services.AddLimitsUsersFile();
        services.AddLimitsUsersFile();
        using var provider = services.BuildServiceProvider();

        var options = provider.GetRequiredService<IOptions<LimitsOptions>>().Value;

        Assert.Equal(["alice", "bob"], options.Users.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(new LimitSettings(3, null, 1), new ConfiguredLimits(options).GetLimits(LimitKey.User("bob")));
    }
}
