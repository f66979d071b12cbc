"""`python -m sddkd` is the `sddkd` command (also under torchrun)."""

from sddkd.cli import main

if __name__ == "__main__":
    main()
