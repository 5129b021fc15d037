"""LightningCLI recipe: budgetplan as a callback in a config file.

python examples/cli.py fit --config examples/config.yaml
"""

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import DigitsData, ImageClassifier


def main() -> None:
    LightningCLI(ImageClassifier, DigitsData, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
