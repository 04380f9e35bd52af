# Builds the CodeBeaker sandbox images on Windows (Docker Desktop), as the usage guide shows:
#   .\scripts\build-runtime-images.ps1 [-Languages python,go] [-BaseImage debian:bookworm-slim]
# Docker Desktop reaches a registry, so the images start FROM the official Debian image; the Linux script
# (scripts/build-runtime-images.sh) builds the same Dockerfiles from a debootstrap base instead.
param(
    [string[]]$Languages = @("python", "javascript", "go", "csharp"),
    [string]$BaseImage = "debian:bookworm-slim"
)
$ErrorActionPreference = "Stop"
$root = Split-Path -Parent $PSScriptRoot

# The sandbox uid:gid, from the line `const UID, GID = 71000, 71000` of sandbox/uid.go.
$ids = Select-String -Path (Join-Path $root "sandbox\uid.go") -Pattern '^const UID, GID = (\d+), (\d+)$'
if (-not $ids) { throw "cannot read 'const UID, GID = <uid>, <gid>' from sandbox\uid.go" }
$uid = $ids.Matches[0].Groups[1].Value
$gid = $ids.Matches[0].Groups[2].Value

docker info *> $null
if ($LASTEXITCODE -ne 0) { throw "the Docker engine does not answer: start Docker Desktop first" }

foreach ($lang in $Languages) {
    $dir = Join-Path $root "images\$lang"
    if (-not (Test-Path (Join-Path $dir "Dockerfile"))) { throw "no images\$lang\Dockerfile (known: python, javascript, go, csharp)" }
    Write-Host "==> building codebeaker-${lang}:latest FROM $BaseImage ..."
    docker build --build-arg "BASE_IMAGE=$BaseImage" --build-arg "SANDBOX_UID=$uid" --build-arg "SANDBOX_GID=$gid" -t "codebeaker-${lang}:latest" $dir
    if ($LASTEXITCODE -ne 0) { throw "building codebeaker-${lang}:latest failed" }
}
Write-Host "==> images ready:"
docker images --filter "reference=codebeaker-*"
