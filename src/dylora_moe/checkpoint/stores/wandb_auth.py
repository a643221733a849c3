"""Can the W&B SDK authenticate, and may a W&B download start at all? Checked before training starts.

Why ask the SDK: `wandb login` writes `host[:port]` of the SDK's base URL into netrc, and the default host
differs between SDK versions, so the lookup is the SDK's own (the key itself is never read out here).
"""

from __future__ import annotations

import os

from dylora_moe.checkpoint.stores.uri import WANDB_FORM, parse_wandb_uri
from dylora_moe.errors import UserError


def wandb_mode() -> str:
    """WANDB_MODE, lower case ('' when unset): the only place that reads it."""
    return os.environ.get("WANDB_MODE", "").lower()


def wandb_api_key() -> str | None:
    """WANDB_API_KEY (the only place that reads it); never printed: callers use it to hide it."""
    return os.environ.get("WANDB_API_KEY") or None


def wandb_is_offline() -> bool:
    """WANDB_MODE offline/dryrun/disabled: no server, so nothing can be downloaded."""
    return wandb_mode() in ("offline", "dryrun", "disabled")


def wandb_base_url() -> str:
    """The server the SDK will talk to: WANDB_BASE_URL, else the SDK's own default."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    import wandb

    return wandb.Settings().base_url


def wandb_has_credentials() -> bool:
    """An API key (or identity token) in the environment, or the SDK finds a `wandb login` entry for its host."""
    if wandb_api_key() or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib.wbauth import wbnetrc  # wandb >= 0.22
    except ImportError:
        return _older_sdk_has_key()
    try:
        return wbnetrc.read_netrc_auth(host=wandb_base_url()) is not None
    except Exception:  # noqa: BLE001 - a malformed entry: the SDK will say what is wrong with it
        return True


def _older_sdk_has_key() -> bool:
    try:
        import wandb
        from wandb.sdk.lib import apikey

        return bool(apikey.api_key(settings=wandb.Settings(base_url=wandb_base_url())))
    except Exception:  # noqa: BLE001 - unknown SDK layout: let the SDK itself report a missing key
        return True


def check_wandb_download_preconditions(ref: str) -> tuple[str, str, str, str | None]:
    """Fail fast, before training, with one line (malformed path, offline mode, no key); returns the parsed path."""
    try:
        entity, project, name, alias = parse_wandb_uri(ref)
    except UserError:
        raise UserError(f"Failed to download W&B artifact {ref!r}: malformed path; expected {WANDB_FORM}") from None
    shown = f"{entity}/{project}/{name}:{alias or 'latest'}"
    if wandb_is_offline():
        raise UserError(
            f"Failed to download W&B artifact {shown}: resuming from W&B needs online mode but "
            f"WANDB_MODE={wandb_mode()}; unset WANDB_MODE (or set WANDB_MODE=online)"
        )
    if not wandb_has_credentials():
        raise UserError(
            f"Failed to download W&B artifact {shown}: WANDB_API_KEY is not set and `wandb login` has no key for "
            f"{wandb_base_url()}; export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run `wandb login`"
        )
    return entity, project, name, alias
