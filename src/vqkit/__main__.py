"""``python -m vqkit`` (also how torchrun starts it: ``torchrun ... -m vqkit train ...``)."""

from vqkit.cli import entry

if __name__ == "__main__":
    entry()
