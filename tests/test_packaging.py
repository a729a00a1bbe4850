"""What can be checked of the Docker packaging without a Docker engine (none runs here)."""

from __future__ import annotations

import fnmatch
import re

import yaml
from support import REPO


def test_compose_file_declares_cpu_and_gpu_services() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    cpu, gpu = compose["services"]["clustviz"], compose["services"]["clustviz-gpu"]
    for service in (cpu, gpu):
        assert "/health" in " ".join(service["healthcheck"]["test"])
        assert "clustviz-state:/state" in service["volumes"]
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX_URL"]
    assert "clustviz-state" in compose["volumes"]
    ray = compose["services"]["clustviz-ray"]
    assert ray["profiles"] == ["ray"] and ray["environment"]["CLUSTVIZ_EXECUTOR"] == "ray"
    assert "ray-head:6379" in compose["services"]["ray-worker"]["command"][2]
    for name in ("ray-head", "ray-worker", "clustviz-ray"):  # map progress files: README, Ray
        assert "clustviz-state:/state" in compose["services"][name]["volumes"]
    assert compose["services"]["ray-head"]["build"]["args"]["EXTRAS"] == "ray"


def test_dockerfile_copies_only_existing_unignored_paths() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    assert re.search(r'CMD \["python", "-m", "service"\]', dockerfile)
    assert "ARG TORCH_INDEX_URL=" in dockerfile and '"torch==${TORCH_VERSION}"' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
