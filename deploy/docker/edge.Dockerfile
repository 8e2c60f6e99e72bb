# syntax=docker/dockerfile:1
# The CallState SIP edge (src/SipEdge): SIP over UDP and TCP, admission through the silos. Build from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t callstate/edge .
# The second way, without this file: dotnet publish src/SipEdge -c Release /t:PublishContainer (docs/deploy.md).

# Build: the SDK image restores and publishes; nothing of it reaches the running image.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/Sip/CallState.Sip.csproj src/Sip/
COPY src/Grains/CallState.Grains.csproj src/Grains/
COPY src/Storage/CallState.Storage.csproj src/Storage/
COPY src/Silo/CallState.Silo.csproj src/Silo/
COPY src/SipEdge/CallState.SipEdge.csproj src/SipEdge/
RUN dotnet restore src/SipEdge/CallState.SipEdge.csproj
COPY samples/standalone/ samples/standalone/
COPY src/Sip/ src/Sip/
COPY src/Grains/ src/Grains/
COPY src/Storage/ src/Storage/
COPY src/Silo/ src/Silo/
COPY src/SipEdge/ src/SipEdge/
RUN dotnet publish src/SipEdge/CallState.SipEdge.csproj -c Release --no-restore -o /app /p:UseAppHost=false

# Run: the ASP.NET Core runtime on chiseled Ubuntu (no shell, no package manager), as the image's non-root user.
FROM mcr.microsoft.com/dotnet/aspnet:10.0-noble-chiseled AS runtime
WORKDIR /app
COPY --from=build /app ./
# The root file system is mounted read-only in the pods; the runtime's scratch space is the only writable path.
VOLUME ["/tmp"]
ENV DOTNET_EnableDiagnostics=0
# SIP (CallState:Sip:Port, UDP and TCP), admin /metrics (Urls), health probes (CallState:Admin:HealthPort). A non-root
# user binds 5060: Linux lets anyone bind ports from 1024 up, and 5060 is above that.
EXPOSE 5060/udp 5060/tcp 8082/tcp 8092/tcp
USER 1654:1654
ENTRYPOINT ["dotnet", "CallState.SipEdge.dll"]
