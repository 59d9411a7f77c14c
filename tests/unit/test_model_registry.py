"""The model registry: the default model, registered versions, integrity and lookup."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from memcrm.core.errors import ConfigError, NotFound
from memcrm.models.nba import NbaScorer, default_artifact_dir, write_artifact
from memcrm.models.registry import ModelRegistry


def perturbed_artifact(out: Path, seed: int) -> dict[str, Any]:
    """The shipped model's weights plus seeded Gaussian noise, as a new version: a different
    model for registry tests (not a trained one, and its manifest says so)."""
    shipped = NbaScorer()
    net = copy.deepcopy(shipped.net).float()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    manifest = dict(shipped.manifest)
    for key in ("sha256", "size_bytes", "artifact", "format", "profile"):
        manifest.pop(key, None)
    manifest["version"] = f"nba-test-noise{seed}-{{sha}}"
    manifest["training_data"] = {
        "description": f"{shipped.version} plus N(0, 0.05) noise, seed {seed}: a test fixture"
    }
    return write_artifact(net, out, manifest)


def test_the_default_model_is_always_there(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    default = registry.default
    assert default.default and default.version == NbaScorer().version
    assert [e.version for e in registry.entries()] == [default.version]
    assert registry.scorer(default.version).sha256 == default.sha256
    with pytest.raises(NotFound):
        registry.entry("nba-nope")
    with pytest.raises(NotFound):
        registry.entry("../artifacts")


def test_a_registered_version_is_listed_loaded_and_kept_whole(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    registry = ModelRegistry(root)
    made = perturbed_artifact(tmp_path / "trained", seed=1)
    entry = registry.register(tmp_path / "trained")
    assert entry.version == made["version"] and entry.sha256 == made["sha256"]
    assert (root / entry.version / "nba.pt").is_file()
    assert [e.version for e in registry.entries()] == [registry.default.version, entry.version]
    assert "test fixture" in entry.training_data["description"]
    scorer = registry.scorer(entry.version)
    assert scorer.version == entry.version and scorer.sha256 == entry.sha256
    assert registry.register(tmp_path / "trained") == entry, "registering again is a no-op"

    # A tampered copy of a registered version is refused at load.
    tampered = tmp_path / "tampered"
    shutil.copytree(root / entry.version, tampered)
    with (tampered / "nba.pt").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        registry.register(tampered)


def test_without_a_registry_directory_only_the_default_serves() -> None:
    registry = ModelRegistry(None)
    assert [e.version for e in registry.entries()] == [registry.default.version]
    with pytest.raises(ConfigError, match="no registry directory"):
        registry.register(default_artifact_dir())
    with pytest.raises(ConfigError, match="not a directory"):
        ModelRegistry(Path("/nonexistent/registry"))
