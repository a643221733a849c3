"""`python -m dylora_moe …` (also what `torchrun -m dylora_moe` runs)."""

from dylora_moe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
