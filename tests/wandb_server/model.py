"""The state of the loopback W&B server: entities, projects, runs, stored blobs and artifact versions.

Rules kept from the real server (what the SDK and our store depend on):
- a version is visible only once committed, and gets the next `vN` of its collection at commit;
- `latest` moves to the newest committed version by itself; an alias is unique in a collection (adding it
  to one version takes it from the other);
- creating an artifact whose digest equals a committed version of the collection returns that version
  (state COMMITTED, so the SDK uploads nothing) and moves the requested aliases onto it;
- aliases containing `/` or `:` are refused;
- unknown entities are refused; projects come into being with their first run, as on wandb.ai.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .executor import GraphQLFailure


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def gid(kind: str, number: int) -> str:
    """Opaque base64 ids like the real server's (the SDK only passes them back)."""
    return base64.b64encode(f"{kind}:{number}".encode()).decode()


@dataclass
class Run:
    id: str
    entity: str
    project: str
    name: str
    config: str = "{}"
    job_type: str | None = None
    used: list[str] = field(default_factory=list)  # artifact ids passed to useArtifact


@dataclass
class Artifact:
    id: str
    entity: str
    project: str
    type: str
    collection: str
    digest: str
    metadata: str | None
    description: str | None
    run: Run | None
    state: str = "PENDING"
    version_index: int | None = None
    files: dict[str, dict] = field(default_factory=dict)  # name -> {storagePath, md5, size}
    manifest_key: str | None = None
    created_at: str = field(default_factory=now)
    pending_aliases: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return f"v{self.version_index}"


@dataclass
class Collection:
    id: str
    entity: str
    project: str
    name: str
    type: str
    versions: list[Artifact] = field(default_factory=list)  # committed, oldest first
    aliases: dict[str, Artifact] = field(default_factory=dict)

    def aliases_of(self, artifact: Artifact) -> list[str]:
        return sorted(a for a, target in self.aliases.items() if target is artifact)


class State:
    """Everything the server knows; one lock, because the SDK's service sends requests in parallel."""

    def __init__(self, entities: tuple[str, ...] = ("ent",)):
        self.lock = threading.RLock()
        self.base_url = ""
        self.entities = set(entities)
        self.viewer = entities[0]
        self.projects: set[tuple[str, str]] = set()
        self.runs: dict[tuple[str, str, str], Run] = {}
        self.blobs: dict[str, bytes] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.collections: dict[tuple[str, str, str], Collection] = {}
        self._ids = itertools.count(1)

    def next_id(self, kind: str) -> str:
        return gid(kind, next(self._ids))

    # ------------------------------------------------------------------ runs
    def upsert_run(self, entity: str | None, project: str | None, name: str | None, **fields) -> Run:
        entity = entity or self.viewer
        project = project or "uncategorized"
        self.require_entity(entity)
        self.projects.add((entity, project))
        key = (entity, project, name)
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = Run(self.next_id("Run"), entity, project, name)
        for attr, value in fields.items():
            if value is not None:
                setattr(run, attr, value)
        return run

    def require_entity(self, entity: str) -> None:
        if entity not in self.entities:
            raise GraphQLFailure(f"entity {entity} not found during upsertBucket")

    def run_by_id(self, run_id: str) -> Run | None:
        return next((r for r in self.runs.values() if r.id == run_id), None)

    # ------------------------------------------------------------------ artifacts
    def create_artifact(self, entity: str, project: str, run_name: str | None, type_name: str, name: str,
                        digest: str, aliases: list[str], metadata: str | None, description: str | None) -> Artifact:
        for alias in aliases:
            if "/" in alias or ":" in alias:
                raise GraphQLFailure(f"Invalid alias: {alias!r} cannot contain '/' or ':'")
        self.require_entity(entity)
        self.projects.add((entity, project))
        key = (entity, project, name)
        collection = self.collections.get(key)
        if collection is None:
            collection = self.collections[key] = Collection(self.next_id("ArtifactSequence"), entity, project,
                                                            name, type_name)
        elif collection.type != type_name:
            raise GraphQLFailure(
                f"artifact collection {name} already exists with type {collection.type}, not {type_name}")
        run = self.runs.get((entity, project, run_name)) if run_name else None
        existing = next((a for a in collection.versions if a.digest == digest), None)
        if existing is not None:
            self.set_aliases(collection, existing, aliases)
            return existing
        artifact = Artifact(self.next_id("Artifact"), entity, project, type_name, name, digest, metadata,
                            description, run, pending_aliases=list(aliases))
        self.artifacts[artifact.id] = artifact
        return artifact

    def commit(self, artifact_id: str) -> Artifact:
        artifact = self.get_artifact(artifact_id)
        if artifact.state == "COMMITTED":
            return artifact
        collection = self.collections[(artifact.entity, artifact.project, artifact.collection)]
        artifact.version_index = len(collection.versions)
        artifact.state = "COMMITTED"
        collection.versions.append(artifact)
        self.set_aliases(collection, artifact, ["latest", *artifact.pending_aliases])
        return artifact

    def set_aliases(self, collection: Collection, artifact: Artifact, aliases: list[str]) -> None:
        if artifact.state != "COMMITTED":
            artifact.pending_aliases = list(dict.fromkeys([*artifact.pending_aliases, *aliases]))
            return
        for alias in aliases:
            collection.aliases[alias] = artifact

    def get_artifact(self, artifact_id: str) -> Artifact:
        artifact = self.artifacts.get(artifact_id)
        if artifact is None:
            raise GraphQLFailure(f"artifact {artifact_id} not found")
        return artifact

    def collection_of(self, artifact: Artifact) -> Collection:
        return self.collections[(artifact.entity, artifact.project, artifact.collection)]

    def find_version(self, entity: str, project: str, name: str, ref: str) -> Artifact | None:
        collection = self.collections.get((entity, project, name))
        if collection is None:
            return None
        if ref in collection.aliases:
            return collection.aliases[ref]
        return next((a for a in collection.versions if a.version == ref), None)

    def manifest_of(self, artifact: Artifact) -> dict:
        return json.loads(self.blobs[artifact.manifest_key]) if artifact.manifest_key else {}
