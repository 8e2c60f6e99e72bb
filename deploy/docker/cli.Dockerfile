# syntax=docker/dockerfile:1
# The `callstate` command (src/Cli), for a one-off pod or a Job that talks to a silo's admin API. Build from the
# repository root:
#   docker build -f deploy/docker/cli.Dockerfile -t callstate/cli .
# The second way, without this file: dotnet publish src/Cli -c Release /t:PublishContainer (docs/deploy.md).

# Build: the SDK image restores and publishes; nothing of it reaches the running image.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/Cli/CallState.Cli.csproj src/Cli/
RUN dotnet restore src/Cli/CallState.Cli.csproj
COPY src/Cli/ src/Cli/
RUN dotnet publish src/Cli/CallState.Cli.csproj -c Release --no-restore -o /app /p:UseAppHost=false

# Run: the .NET runtime on chiseled Ubuntu (a console program needs no ASP.NET Core), as the image's non-root user.
FROM mcr.microsoft.com/dotnet/runtime:10.0-noble-chiseled AS runtime
WORKDIR /app
COPY --from=build /app ./
VOLUME ["/tmp"]
ENV DOTNET_EnableDiagnostics=0
USER 1654:1654
ENTRYPOINT ["dotnet", "callstate.dll"]
