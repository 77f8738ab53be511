"""``python -m sanas``: the ``sanas`` command (what ``torchrun -m sanas train ...`` runs)."""

from sanas.cli import main

if __name__ == "__main__":
    main()
