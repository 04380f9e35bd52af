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

docker info *> $null
if ($LASTEXITCODE -ne 0) { throw "the Docker engine does not answer: start Docker Desktop first" }

foreach ($lang in $Languages) {
    $dir = Join-Path $root "images\$lang"
    if (-not (Test-Path (Join-Path $dir "Dockerfile"))) { throw "no images\$lang\Dockerfile (known: python, javascript, go, csharp)" }
    Write-Host "==> building codebeaker-${lang}:latest FROM $BaseImage ..."
    docker build --build-arg "BASE_IMAGE=$BaseImage" -t "codebeaker-${lang}:latest" $dir
    if ($LASTEXITCODE -ne 0) { throw "building codebeaker-${lang}:latest failed" }
}
Write-Host "==> images ready:"
docker images --filter "reference=codebeaker-*"
