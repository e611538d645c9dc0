"""The ``actormux`` command.

``actormux [hydra overrides]`` runs an experiment (see ``conf/``); for example
``actormux experiment=oversub_250_on_8 policy=substrate``. ``actormux --help`` shows
Hydra's help with every config group and its options.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``actormux`` console script."""
    from experiments.app import run_experiment

    run_experiment()


if __name__ == "__main__":
    main()
