"""What the libraries under a command print: transformers' and datasets' bars and info logs only with --verbose.

Their bars ("Loading weights", dataset maps) are tqdm bars: in a log file each is a run of carriage-return
updates, and they say nothing the command's own lines do not. Warnings and errors always come through.
"""

from __future__ import annotations

import argparse
import sys


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """--verbose on a command that loads models or data (train, eval, generate)."""
    parser.add_argument("--verbose", action="store_true",
                        help="also show transformers' and datasets' info logs and progress bars (loading weights, "
                        "dataset maps)")


def configure_library_output(verbose: bool) -> None:
    """With `verbose`, the libraries' info logs and bars; otherwise no bars (on a terminal the hub's download
    bars stay: a download can take minutes) and their default warning level."""
    import datasets
    import huggingface_hub.utils
    import transformers

    if verbose:
        transformers.logging.set_verbosity_info()
        transformers.logging.enable_progress_bar()
        datasets.logging.set_verbosity_info()
        datasets.enable_progress_bars()
        return
    transformers.logging.disable_progress_bar()  # also turns the hub's off
    datasets.disable_progress_bars()
    if sys.stderr.isatty():
        huggingface_hub.utils.enable_progress_bars()
