"""The model registry: every next-best-action model version a tenant may be served.

A version is an artifact directory (``nba.pt`` + ``nba.json``, see ``memcrm.models.nba``): the
manifest carries the version, the sha256 of the weights, the metrics and the description of
the training data. The registry holds

- the *default* model: the one ``MEMCRM_NBA_MODEL_DIR`` names, or the shipped artifact;
- every version registered under the registry directory (``MEMCRM_MODEL_REGISTRY_DIR``), one
  sub-directory per version, named by it. ``register`` copies an artifact there after loading
  it (so a corrupted or unscorable artifact is refused before it can be activated).

Which version serves which tenant is not the registry's business: activations are records in
PostgreSQL (``memcrm.memory.activations``). Models are loaded on first use and kept, so a
tenant switching to another version costs one load, not a restart.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memcrm.core.errors import ConfigError, NotFound
from memcrm.models.nba import ARTIFACT_NAME, NbaScorer, default_artifact_dir


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A registered version as its manifest describes it."""

    version: str
    sha256: str
    created_at: str
    path: Path
    default: bool
    metrics: dict[str, Any]
    training_data: dict[str, Any]

    @classmethod
    def read(cls, path: Path, *, default: bool = False) -> ModelEntry:
        manifest_path = path / f"{ARTIFACT_NAME}.json"
        try:
            manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
            return cls(
                version=str(manifest["version"]),
                sha256=str(manifest["sha256"]),
                created_at=str(manifest.get("created_at", "")),
                path=path,
                default=default,
                metrics=dict(manifest.get("metrics", {})),
                training_data=dict(manifest.get("training_data", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"model registry: cannot read {manifest_path}: {exc}") from None


class ModelRegistry:
    def __init__(self, root: Path | None, default_dir: Path | None = None) -> None:
        self._root = root
        self._default_dir = default_dir or default_artifact_dir()
        self._scorers: dict[str, NbaScorer] = {}
        self._lock = threading.Lock()
        self.default = ModelEntry.read(self._default_dir, default=True)
        if root is not None and not root.is_dir():
            raise ConfigError(f"model registry: {root} is not a directory")

    def entries(self) -> list[ModelEntry]:
        """The default model first, then the registered versions by version."""
        found = {self.default.version: self.default}
        if self._root is not None:
            for path in sorted(self._root.iterdir()):
                if not _plain(path.name) or path.name in found:
                    continue  # e.g. a registration still being copied in
                if (path / f"{ARTIFACT_NAME}.json").is_file():
                    found[path.name] = ModelEntry.read(path)
        return list(found.values())

    def entry(self, version: str) -> ModelEntry:
        if version == self.default.version:
            return self.default
        if self._root is not None and _plain(version):
            path = self._root / version
            if (path / f"{ARTIFACT_NAME}.json").is_file():
                return ModelEntry.read(path)
        raise NotFound("model version", version)

    def scorer(self, version: str) -> NbaScorer:
        """The loaded model of ``version`` (sha256-checked on first load, then kept)."""
        with self._lock:
            scorer = self._scorers.get(version)
            if scorer is None:
                scorer = NbaScorer(self.entry(version).path)
                if scorer.version != version:
                    raise ConfigError(
                        f"model registry: {self.entry(version).path} holds {scorer.version}, "
                        f"not {version}"
                    )
                self._scorers[version] = scorer
            return scorer

    def register(self, artifact_dir: Path) -> ModelEntry:
        """Copy a trained artifact into the registry under its version (refused when it does
        not load, or when another artifact already holds that version)."""
        if self._root is None:
            raise ConfigError("model registry: no registry directory is configured")
        scorer = NbaScorer(artifact_dir)  # verifies the sha256 and that it loads
        if not _plain(scorer.version):
            raise ConfigError(f"model registry: version {scorer.version!r} is not a plain name")
        target = self._root / scorer.version
        if target.exists() or scorer.version == self.default.version:
            existing = self.entry(scorer.version)
            if existing.sha256 != scorer.sha256:
                raise ConfigError(
                    f"model registry: version {scorer.version} is already registered with "
                    f"sha256 {existing.sha256}"
                )
            return existing
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self._root))
        for suffix in (".pt", ".json"):
            shutil.copy2(artifact_dir / f"{ARTIFACT_NAME}{suffix}", staging)
        staging.rename(target)  # a version appears whole or not at all
        return ModelEntry.read(target)


def _plain(version: str) -> bool:
    return bool(version) and all(c.isalnum() or c in "-_." for c in version) and version[0] != "."
