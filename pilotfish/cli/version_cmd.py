from __future__ import annotations

import argparse

from pilotfish import __version__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(f"pilotfish {__version__}")
    return 0
