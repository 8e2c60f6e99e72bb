# syntax=docker/dockerfile:1
# The CallState silo (src/Silo): an Orleans silo with the admin API. Build from the repository root:
#   docker build -f deploy/docker/silo.Dockerfile -t callstate/silo .
# The second way, without this file: dotnet publish src/Silo -c Release /t:PublishContainer (docs/deploy.md).

# Build: the SDK image restores and publishes; nothing of it reaches the running image.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/Grains/CallState.Grains.csproj src/Grains/
COPY src/Storage/CallState.Storage.csproj src/Storage/
COPY src/Silo/CallState.Silo.csproj src/Silo/
RUN dotnet restore src/Silo/CallState.Silo.csproj
COPY src/Grains/ src/Grains/
COPY src/Storage/ src/Storage/
COPY src/Silo/ src/Silo/
RUN dotnet publish src/Silo/CallState.Silo.csproj -c Release --no-restore -o /app /p:UseAppHost=false

# Run: the ASP.NET Core runtime on chiseled Ubuntu (no shell, no package manager), as the image's non-root user.
FROM mcr.microsoft.com/dotnet/aspnet:10.0-noble-chiseled AS runtime
WORKDIR /app
COPY --from=build /app ./
# The root file system is mounted read-only in the pods; the runtime's scratch space is the only writable path.
VOLUME ["/tmp"]
ENV DOTNET_EnableDiagnostics=0
# Admin API and /metrics (Urls), health probes (CallState:Admin:HealthPort), silo-to-silo (SiloPort), gateway (GatewayPort).
EXPOSE 8081/tcp 8091/tcp 11111/tcp 30000/tcp
USER 1654:1654
ENTRYPOINT ["dotnet", "CallState.Silo.dll"]
