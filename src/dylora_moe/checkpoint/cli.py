"""`dylora-moe checkpoints list|show|download|verify`: a thin layer over the store API."""

from __future__ import annotations

import argparse
from pathlib import Path

from dylora_moe.processes import log_stderr


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("checkpoints", help="list, inspect, download and verify checkpoint versions")
    sub = parser.add_subparsers(dest="checkpoints_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="versions, aliases, step, best metric and size of a store")
    p.add_argument("uri", help="store: path, file://, gs://, s3://, wandb://entity/project/name")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="metadata of one version (default latest) or of a local checkpoint dir")
    p.add_argument("uri", help="STORE[:version|alias] or a checkpoint directory")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("download", help="download and verify one version into DIR")
    p.add_argument("uri", help="STORE[:version|alias]")
    p.add_argument("dest", type=Path, help="destination directory (new or empty)")
    p.set_defaults(func=cmd_download)
    p = sub.add_parser("verify", help="check every file of a checkpoint dir (or a store version) against its manifest")
    p.add_argument("uri", help="checkpoint directory or STORE[:version|alias]")
    p.add_argument("--probe", action="store_true", help=(
        "also score the checkpoint's continuity probe on this machine (loads the model) and compare it with the "
        "loss saved with it; non-zero exit beyond the tolerance"))
    p.set_defaults(func=cmd_verify)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _metric(value) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def _is_local_checkpoint(text: str) -> bool:
    from dylora_moe.checkpoint.manifest import MANIFEST_NAME

    return Path(text).is_dir() and (Path(text) / MANIFEST_NAME).is_file()


def cmd_list(args: argparse.Namespace) -> int:
    from dylora_moe.checkpoint.stores.uri import check_local_store, open_store

    check_local_store(args.uri, "store", must_exist=True)
    store, _ref = open_store(args.uri)
    versions = store.list_versions()
    if not versions:
        print(f"no versions in {store.uri}")
        return 0
    rows = [("VERSION", "ALIASES", "STEP", "BEST_METRIC", "SIZE")]
    for info in versions:
        meta = info.metadata
        rows.append((info.version, ",".join(info.aliases) or "-", str(meta.get("global_step", "-")),
                     _metric(meta.get("best_metric")), _human(info.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _print_metadata(title: str, meta: dict) -> None:
    maturity = meta.get("maturity")
    mature = f"{sum(bool(m) for m in maturity)}/{len(maturity)} mature {maturity}" if isinstance(maturity, list) else "-"
    print(title)
    for key, value in (
        ("experts", meta.get("num_experts", "-")),
        ("maturity", mature),
        ("step", meta.get("global_step", "-")),
        ("epoch", meta.get("epoch", "-")),
        ("best_metric", _metric(meta.get("best_metric"))),
        ("best_step", meta.get("best_global_step", "-")),
        ("base_model", meta.get("base_model", "-")),
        ("lora_r", meta.get("lora_r", "-")),
        ("datasets", ",".join(meta.get("datasets") or []) or "-"),
        ("dataset_fingerprint", meta.get("dataset_fingerprint", "-")),
        ("run", f"{meta.get('run_name', '-')} ({meta.get('run_id', '-')})"),
    ):
        print(f"  {key:<20} {value}")


def cmd_show(args: argparse.Namespace) -> int:
    if _is_local_checkpoint(args.uri):
        from dylora_moe.checkpoint.manifest import read_manifest

        _print_metadata(str(args.uri), read_manifest(args.uri)["metadata"])
        return 0
    from dylora_moe.checkpoint.stores.uri import open_store

    store, ref = open_store(args.uri)
    info = store.resolve(ref)
    aliases = f" ({', '.join(info.aliases)})" if info.aliases else ""
    _print_metadata(f"{store.uri}:{info.version}{aliases}  {_human(info.size)}", info.metadata)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dylora_moe.checkpoint.stores.uri import is_wandb_uri, open_store

    if is_wandb_uri(args.uri):
        from dylora_moe.checkpoint.stores.wandb_store import check_wandb_download_preconditions

        check_wandb_download_preconditions(args.uri)
    store, ref = open_store(args.uri)
    path = store.download(ref, args.dest, log=log_stderr)
    print(path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dylora_moe.checkpoint.manifest import verify_checkpoint, verify_named_checkpoint

    if _is_local_checkpoint(args.uri) or Path(args.uri).is_dir() and not (Path(args.uri) / "index.json").exists():
        _refuse_output_dir(Path(args.uri))
        manifest = verify_named_checkpoint(args.uri, log=log_stderr)
        print(f"OK {args.uri}: {len(manifest['files'])} files match the manifest and parse")
        return _verify_probe(Path(args.uri), args.uri) if args.probe else 0
    from dylora_moe.checkpoint.resolve import fetch_checkpoint

    path = fetch_checkpoint(args.uri, log=log_stderr)
    manifest = verify_checkpoint(path)
    print(f"OK {args.uri}: {len(manifest['files'])} files match the manifest and parse ({path})")
    return _verify_probe(path, args.uri) if args.probe else 0


def _verify_probe(path: Path, label: str) -> int:
    """Score the checkpoint's continuity probe here, as a resume would; beyond the tolerance: one error line."""
    from dylora_moe.errors import UserError
    from dylora_moe.model.loading import load_model_for_inference
    from dylora_moe.training.continuity import PROBE_NAME, check_here, drift_message, read_probe

    probe = read_probe(path)
    if probe is None:
        raise UserError(f"{label} has no {PROBE_NAME} (saved before continuity probes existed): nothing to "
                        "score; a resume from it is not checked for continuity")
    model, _tokenizer = load_model_for_inference(str(path), log=log_stderr)
    verdict = check_here(probe, model)
    if not verdict.ok:
        raise UserError(drift_message(verdict, label, "a resume here needs --accept_probe_drift"))
    print(f"continuity: {verdict.line}")
    return 0


def _refuse_output_dir(path: Path) -> None:
    """A training output dir is not a checkpoint: name its checkpoints instead of calling it interrupted."""
    from dylora_moe.checkpoint.manifest import MANIFEST_NAME, list_checkpoints
    from dylora_moe.errors import UserError

    found = list_checkpoints(path)
    if found and not (path / MANIFEST_NAME).exists():
        raise UserError(f"{path} is a training output directory, not a checkpoint; verify one of its {len(found)} "
                        f"checkpoints, e.g. {found[-1][1]}")
