"""Root GraphQL fields of the loopback W&B server, as resolver trees for `executor.Execution`."""

from __future__ import annotations

from .model import Artifact, Collection, Run

FEATURES = ("ARTIFACT_TAGS", "EXPAND_DEFINED_METRIC_GLOBS")


def root_fields(server, kind: str) -> dict:
    return _mutations(server) if kind == "mutation" else _queries(server)


# ---------------------------------------------------------------- objects
def _entity(state, name: str) -> dict:
    return {"__typename": "Entity", "id": f"entity-{name}", "name": name, "isTeam": False,
            "organization": None, "defaultAccess": None}


def _run(state, run: Run | None) -> dict | None:
    if run is None:
        return None
    return {"__typename": "Run", "id": run.id, "name": run.name, "displayName": run.name, "config": run.config,
            "sweepName": None, "description": None, "historyLineCount": 0, "eventsLineCount": 0,
            "logLineCount": 0, "summaryMetrics": "{}", "wandbConfig": "{}", "projectName": run.project,
            "project": _project(state, run.entity, run.project)}


def _project(state, entity: str, project: str) -> dict | None:
    if (entity, project) not in state.projects:
        return None
    return {"__typename": "Project", "id": f"project-{entity}-{project}", "name": project,
            "internalId": f"project-{entity}-{project}",
            "entityName": entity, "entity": _entity(state, entity),
            "artifactType": lambda name: _artifact_type(state, entity, project, name),
            "artifactCollection": lambda name: _collection(state, state.collections.get((entity, project, name))),
            "artifact": lambda name, **_: _version_by_name(state, entity, project, name),
            "artifactCollectionMembership": lambda name, **_: _membership(
                state, _find_by_name(state, entity, project, name))}


def _artifact_type(state, entity: str, project: str, type_name: str) -> dict | None:
    collections = [c for (e, p, _), c in state.collections.items() if (e, p) == (entity, project) and c.type == type_name]
    if not collections and not any(a.type == type_name and (a.entity, a.project) == (entity, project)
                                   for a in state.artifacts.values()):
        return None
    return {"__typename": "ArtifactType", "id": f"type-{entity}-{project}-{type_name}", "name": type_name,
            "artifactCollection": lambda name: _collection(state, next((c for c in collections if c.name == name), None)),
            "artifactSequence": lambda name: _collection(state, next((c for c in collections if c.name == name), None)),
            "artifactCollections": lambda **_: _connection([_collection(state, c) for c in collections])}


def _connection(nodes: list, cursor_prefix: str = "c") -> dict:
    page = {"__typename": "PageInfo", "endCursor": f"{cursor_prefix}{len(nodes)}", "hasNextPage": False}
    return {"totalCount": len(nodes), "pageInfo": page,
            "edges": [{"node": n, "cursor": f"{cursor_prefix}{i}", "version": n.get("version")}
                      for i, n in enumerate(nodes)]}


def _collection(state, collection: Collection | None) -> dict | None:
    if collection is None:
        return None
    versions = lambda **_: _connection([_artifact(state, a) for a in reversed(collection.versions)])  # noqa: E731
    return {"__typename": "ArtifactSequence", "__implements": ("ArtifactCollection",), "id": collection.id, "name": collection.name,
            "description": None, "createdAt": "2026-01-01T00:00:00", "updatedAt": None, "tags": _connection([]),
            "project": _project(state, collection.entity, collection.project),
            "defaultArtifactType": {"name": collection.type},
            "type": collection.type,
            "latestArtifact": _artifact(state, collection.versions[-1]) if collection.versions else None,
            "artifacts": versions, "artifactMemberships": versions,
            "aliases": lambda **_: _connection([{"alias": a} for a in sorted(collection.aliases)]),
            "artifactMembership": lambda aliasName, **_: _membership(state, state.find_version(
                collection.entity, collection.project, collection.name, aliasName))}


def _find_by_name(state, entity: str, project: str, name: str) -> Artifact | None:
    collection_name, _, ref = name.partition(":")
    return state.find_version(entity, project, collection_name, ref or "latest")


def _version_by_name(state, entity: str, project: str, name: str) -> dict | None:
    return _artifact(state, _find_by_name(state, entity, project, name))


def _membership(state, artifact: Artifact | None) -> dict | None:
    """A version as a member of its collection (what `Api().artifact(name)` reads)."""
    node = _artifact(state, artifact)
    if node is None:
        return None
    return {"__typename": "ArtifactCollectionMembership", "id": f"membership-{artifact.id}",
            "versionIndex": artifact.version_index, "createdAt": artifact.created_at, "aliases": node["aliases"],
            "artifactCollection": node["artifactSequence"], "artifact": node, "files": node["files"]}


def _artifact(state, artifact: Artifact | None) -> dict | None:
    if artifact is None:
        return None
    committed = artifact.state == "COMMITTED"
    collection = state.collections.get((artifact.entity, artifact.project, artifact.collection))
    aliases = collection.aliases_of(artifact) if collection and committed else []
    manifest = state.manifest_of(artifact)
    size = sum(int(e.get("size") or 0) for e in manifest.get("contents", {}).values())
    seq = _collection_ref(state, collection)
    return {
        "__typename": "Artifact", "id": artifact.id, "artifactId": artifact.id, "state": artifact.state,
        "digest": artifact.digest, "description": artifact.description, "metadata": artifact.metadata,
        "size": size, "fileCount": len(manifest.get("contents", {})), "commitHash": artifact.digest[:12],
        "versionIndex": artifact.version_index, "version": artifact.version if committed else None,
        "createdAt": artifact.created_at, "updatedAt": artifact.created_at, "ttlDurationSeconds": -2,
        "ttlIsInherited": True, "historyStep": None, "tags": [], "storageRegion": None,
        "artifactType": {"__typename": "ArtifactType", "id": f"type-{artifact.type}", "name": artifact.type,
                         "project": _project(state, artifact.entity, artifact.project)},
        "artifactSequence": seq, "artifactCollection": seq, "sourceCollection": seq,
        "artifactCollectionName": artifact.collection, "sourceEntity": _entity(state, artifact.entity),
        "sourceProject": _project(state, artifact.entity, artifact.project),
        "aliases": [{"__typename": "ArtifactAlias", "id": f"alias-{a}", "alias": a,
                     "artifactCollection": seq} for a in aliases],
        "artifactMemberships": _connection([]),
        "createdBy": _run(state, artifact.run),
        "currentManifest": _manifest_ref(state, artifact),
        "files": lambda **kw: _files(state, artifact, **kw),
        "filesByManifestEntries": lambda **kw: _files(state, artifact, **kw),
    }


def _collection_ref(state, collection: Collection | None) -> dict | None:
    if collection is None:
        return None
    return {"__typename": "ArtifactSequence", "__implements": ("ArtifactCollection",), "id": collection.id, "name": collection.name,
            "project": _project(state, collection.entity, collection.project),
            "defaultArtifactType": {"name": collection.type},
            "latestArtifact": {"id": collection.versions[-1].id} if collection.versions else None}


def _manifest_ref(state, artifact: Artifact) -> dict | None:
    if not artifact.manifest_key:
        return None
    url = f"{state.base_url}/storage/{artifact.manifest_key}"
    return {"id": f"manifest-{artifact.id}", "file": {"id": f"file-{artifact.manifest_key}", "directUrl": url,
                                                      "url": url, "uploadUrl": url, "uploadHeaders": []}}


def _files(state, artifact: Artifact, names=None, **_) -> dict:
    nodes = []
    for name, entry in sorted(artifact.files.items()):
        if names and name not in names:
            continue
        url = f"{state.base_url}/storage/{entry['storagePath']}"
        nodes.append({"__typename": "File", "id": f"file-{entry['storagePath']}", "name": name,
                      "displayName": name, "directUrl": url, "url": url, "sizeBytes": entry.get("size"),
                      "digest": entry.get("md5"), "md5": entry.get("md5"), "storagePath": entry["storagePath"],
                      "mimetype": None, "updatedAt": None})
    return _connection(nodes)


# ---------------------------------------------------------------- roots
def _queries(server) -> dict:
    state = server.state
    return {
        "viewer": {"__typename": "User", "id": "user-1", "entity": state.viewer, "username": state.viewer,
                   "email": "loopback@example.invalid", "flags": "{}", "admin": False,
                   "teams": _connection([{"name": e} for e in sorted(state.entities)]),
                   "defaultEntity": _entity(state, state.viewer)},
        "serverInfo": {"features": [{"name": f, "isEnabled": True} for f in FEATURES],
                       "cliVersionInfo": {"max_cli_version": "99.0.0"}, "latestLocalVersionInfo": None},
        "project": lambda name=None, entityName=None, **_: _project(state, entityName or state.viewer, name),
        "model": lambda name=None, entityName=None, **_: _model(state, entityName or state.viewer, name),
        "entity": lambda name=None, **_: _entity(state, name) if name in state.entities else None,
        "artifact": lambda id=None, **_: _artifact(state, state.artifacts.get(id)),
        "artifactCollection": lambda id=None, **_: _collection(
            state, next((c for c in state.collections.values() if c.id == id), None)),
    }


def _mutations(server) -> dict:
    state = server.state
    return {
        "upsertBucket": lambda input: _upsert_bucket(state, input),
        "createRunFiles": lambda input: _create_run_files(state, input),
        "createArtifact": lambda input: {"artifact": _artifact(state, _create_artifact(state, input))},
        "createArtifactFiles": lambda input: _create_artifact_files(state, input),
        "createArtifactManifest": lambda input: _create_manifest(state, input),
        "commitArtifact": lambda input: {"artifact": _artifact(state, state.commit(input["artifactID"]))},
        "useArtifact": lambda input: _use_artifact(state, input),
    }


def _model(state, entity: str, project: str) -> dict | None:
    """The project under its old name `model`, with its runs as `bucket`s (the SDK's resume check)."""
    node = _project(state, entity, project)
    if node is not None:
        node["bucket"] = lambda name, **_: _run(state, state.runs.get((entity, project, name)))
    return node


def _upsert_bucket(state, spec: dict) -> dict:
    run = state.upsert_run(spec.get("entityName"), spec.get("modelName"), spec.get("name"),
                           config=spec.get("config"), job_type=spec.get("jobType"))
    return {"bucket": _run(state, run), "inserted": True}


def _create_run_files(state, spec: dict) -> dict:
    run = state.runs.get((spec["entityName"], spec["projectName"], spec["runName"]))
    prefix = f"run/{spec['entityName']}/{spec['projectName']}/{spec['runName']}"
    return {"runID": run.id if run else None, "uploadHeaders": [],
            "files": [{"name": f, "uploadUrl": f"{state.base_url}/storage/{prefix}/{f}"} for f in spec["files"]]}


def _create_artifact(state, spec: dict) -> Artifact:
    aliases = [a["alias"] if isinstance(a, dict) else a for a in spec.get("aliases") or []]
    return state.create_artifact(
        spec["entityName"], spec["projectName"], spec.get("runName"), spec["artifactTypeName"],
        spec["artifactCollectionName"] if "artifactCollectionName" in spec else spec["artifactCollectionNames"][0],
        spec["digest"], aliases, spec.get("metadata"), spec.get("description"))


def _create_artifact_files(state, spec: dict) -> dict:
    nodes = []
    for item in spec["artifactFiles"]:
        artifact = state.get_artifact(item["artifactID"])
        key = f"artifact/{artifact.id}/{item['name']}"
        artifact.files[item["name"]] = {"storagePath": key, "md5": item.get("md5")}
        nodes.append({"storagePath": key, "uploadUrl": f"{state.base_url}/storage/{key}", "uploadHeaders": [],
                      "uploadMultipartUrls": None, "artifact": {"id": artifact.id}})
    return {"files": _connection(nodes)}


def _create_manifest(state, spec: dict) -> dict:
    artifact = state.get_artifact(spec["artifactID"])
    artifact.manifest_key = f"manifest/{artifact.id}/{spec.get('name', 'wandb_manifest.json')}"
    return {"artifactManifest": _manifest_ref(state, artifact)}


def _use_artifact(state, spec: dict) -> dict:
    artifact = state.get_artifact(spec["artifactID"])
    run = state.runs.get((spec.get("entityName"), spec.get("projectName"), spec.get("runName")))
    if run is not None:
        run.used.append(artifact.id)
    return {"artifact": {"id": artifact.id}}

