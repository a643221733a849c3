"""Secrets travel as Secret Manager resource names, never as values.

A Vertex job spec is readable by anyone who can describe the job, so `dylora-moe submit vertex` puts only
`DYLORA_SECRET_<NAME>=projects/…/secrets/…/versions/…` into the container env; the container entrypoint reads
the value from Secret Manager at start and exports it as `<NAME>`. A plain `<NAME>` already in the environment
wins, so local runs (and `docker run -e WANDB_API_KEY=…`) work without Secret Manager.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping

from dylora_moe.errors import UserError

SECRET_ENV_PREFIX = "DYLORA_SECRET_"
# Names whose literal values must never be put into a job spec.
KNOWN_SECRET_NAMES = frozenset(
    {"WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "GITHUB_TOKEN"}
)
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_ACCESS_KEY", "_SECRET_KEY")
# Words in a name that may carry a credential, wherever they appear: the broader test, for scrubbing output.
_SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESOURCE = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$")


def looks_secret(name: str) -> bool:
    """True for env names that carry credentials (a literal value for them is refused)."""
    upper = name.upper()
    return upper in KNOWN_SECRET_NAMES or upper.endswith(_SECRET_SUFFIXES)


def may_hold_secret(name: str) -> bool:
    """True for env names whose values are scrubbed from output (`looks_secret` and any name with KEY, TOKEN,
    SECRET, PASSWORD or CREDENTIAL in it): a false positive only hides a value, a miss leaks one."""
    return looks_secret(name) or bool(_SECRET_WORDS.search(name))


def check_env_name(name: str, flag: str) -> None:
    if not _ENV_NAME.match(name):
        raise UserError(
            f"{flag}: {name!r} is not a valid environment variable name; expected letters, digits and _ "
            f"(not starting with a digit); fix the name before '='"
        )


def parse_secret_ref(spec: str) -> tuple[str, str]:
    """`NAME=projects/P/secrets/S[/versions/V]` -> (NAME, full version resource name; default version latest)."""
    name, sep, resource = spec.partition("=")
    if not sep or not name or not resource:
        raise UserError(
            f"--secret-env {spec!r}: expected NAME=projects/PROJECT/secrets/SECRET/versions/VERSION; "
            f"pass the Secret Manager resource name, never the secret value"
        )
    check_env_name(name, "--secret-env")
    if not _RESOURCE.match(resource):
        raise UserError(
            f"--secret-env {name}=…: the value is not a Secret Manager resource name; expected "
            f"projects/PROJECT/secrets/SECRET[/versions/VERSION]; create one with `gcloud secrets create` "
            f"and pass its name, not the secret value"
        )
    if "/versions/" not in resource:
        resource += "/versions/latest"
    return name, resource


def secret_env_name(name: str) -> str:
    """The env variable that carries the resource name of secret `name` inside the job spec."""
    return f"{SECRET_ENV_PREFIX}{name}"


SecretFetcher = Callable[[str], str]


def _secret_manager_fetcher() -> SecretFetcher:
    """Build the real fetcher; imported lazily so the package works without google-cloud-secret-manager."""
    try:
        from google.cloud import secretmanager
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(
            "DYLORA_SECRET_* variables are set but google-cloud-secret-manager is not installed; "
            "install `dylora-moe[cloud]` or set the secret variables directly"
        ) from exc
    client = secretmanager.SecretManagerServiceClient()

    def fetch(resource: str) -> str:
        response = client.access_secret_version(request={"name": resource})
        return response.payload.data.decode("utf-8")

    return fetch


def resolve_secrets(env: MutableMapping[str, str], fetch: SecretFetcher | None = None) -> dict[str, str]:
    """Export every `DYLORA_SECRET_<NAME>` as `<NAME>` in `env`; returns {NAME: source} (never values).

    A non-empty `<NAME>` already in `env` wins (source "environment"); otherwise the value comes from
    Secret Manager (source "secret-manager"), trailing whitespace/newlines stripped.
    """
    sources: dict[str, str] = {}
    for key in sorted(env):
        if not key.startswith(SECRET_ENV_PREFIX) or len(key) == len(SECRET_ENV_PREFIX):
            continue
        name, resource = key[len(SECRET_ENV_PREFIX) :], env[key]
        if env.get(name):
            sources[name] = "environment"
            continue
        if fetch is None:
            fetch = _secret_manager_fetcher()
        try:
            value = fetch(resource)
        except Exception as exc:  # the API's errors name the resource, never a value
            raise UserError(
                f"could not read secret {name} from {resource}: {type(exc).__name__}: {exc}; check the "
                f"name and grant the job's service account roles/secretmanager.secretAccessor"
            ) from exc
        env[name] = value.strip()
        sources[name] = "secret-manager"
    return sources
