# SPDX-License-Identifier: BSD-3-Clause
"""``python -m tomodl`` runs the command-line interface."""
from tomodl.cli import main

if __name__ == "__main__":
    main()
